"""Numeric precision of a run: which dtype the forward passes compute in, on which device.

One setting, ``precision``, for the whole run (a matrix's ``precision`` key, ``--precision`` on
the command line, ``build_context(precision=...)``), like the device:

- ``fp32``: plain float32; on CUDA, matmuls in full fp32 (TF32 off), the reproducible choice.
- ``bf16``: forward passes (training losses, decoding, scoring) under ``torch.autocast`` with
  bfloat16; parameters, gradients and optimiser state stay float32; on CUDA, the float32
  matmuls left outside autocast use TF32.
- ``fp16``: the same with float16, and a gradient scaler (``torch.amp.GradScaler``) against
  underflowing gradients.
- ``auto`` (the default): ``bf16`` on a CUDA device that supports it, else ``fp32`` (CPU runs
  stay in fp32 unless asked).

:func:`resolve_precision` turns a setting and a device into one of the three;
:func:`autocast`, :func:`grad_scaler` and :func:`set_matmul_precision` are what the training
loop (:mod:`benchmarks.training`) and the evaluator apply.
"""

from __future__ import annotations

import contextlib

import torch

from benchmarks.errors import ConfigError

#: the values the ``precision`` key may take
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: object, where: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ConfigError naming ``where``."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def resolve_precision(precision: str | None, device: str | torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` (None = auto) on ``device``: auto is bf16
    on a CUDA device with bf16 support, else fp32. An unknown value, or bf16 asked on a CUDA
    device without it, is a ConfigError naming the ``precision`` key."""
    precision = check_precision("auto" if precision is None else precision)
    cuda = _device_type(device) == "cuda"
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision: 'bf16' asked, but {device} does not support bfloat16; use 'fp16' or 'fp32'")
    return precision


def autocast(precision: str, device: str | torch.device):
    """The context forward passes run under: ``torch.autocast`` in bf16 / fp16, nothing in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(_device_type(device), dtype=_DTYPES[check_precision(precision)])


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (elsewhere its calls pass through unchanged)."""
    return torch.amp.GradScaler(_device_type(device), enabled=precision == "fp16")


def set_matmul_precision(precision: str, device: str | torch.device) -> None:
    """TF32 matmuls on CUDA for bf16 / fp16 runs, full fp32 for fp32 runs (process-wide; CPU
    runs are left as they are)."""
    if _device_type(device) == "cuda":
        torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
