"""Pretrained checkpoints by local folder or by hub name, one loader for every model and tokenizer.

``backbone_config: {checkpoint: ...}`` names either a local folder (a ``save_pretrained``
output: config, weights, tokenizer files) or a model on the Hugging Face hub
(``google-t5/t5-small``, ``Qwen/Qwen2.5-0.5B``), which transformers loads through its hub
cache (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``): downloaded on first use when
online, read from the cache alone under ``HF_HUB_OFFLINE=1``. Whatever goes wrong is one
:class:`~benchmarks.errors.CheckpointError` naming the checkpoint, whether the hub was offline
and what to do, instead of transformers' multi-paragraph OSError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.errors import CheckpointError
from benchmarks.utils import hf_progress_bars


def hub_offline() -> bool:
    """Whether the hub client is in offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
    as the hub library read them when it was imported: what transformers obeys)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_hub_name(checkpoint: str) -> bool:
    """Whether ``checkpoint`` can name a hub model (``name`` or ``namespace/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(checkpoint)
    except HFValidationError:
        return False
    return True


def from_pretrained(loader: Any, checkpoint: str, **kwargs) -> Any:
    """``loader.from_pretrained`` (a transformers model or tokenizer class) of ``checkpoint``:
    a local folder when one of that name exists, else a hub model through the hub cache."""
    checkpoint = str(checkpoint)
    folder = Path(checkpoint).expanduser()
    what = getattr(loader, "__name__", str(loader))
    if folder.is_dir():
        try:
            with hf_progress_bars():
                return loader.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint!r}: the folder holds no {what} that transformers "
                                  f"can load (expected save_pretrained's files: config.json, the weights, "
                                  f"the tokenizer files): {_first_line(exc)}") from None
    if not is_hub_name(checkpoint):
        raise CheckpointError(f"checkpoint {checkpoint!r}: no such folder, and not a hub model name "
                              f"(expected a local save_pretrained folder or a hub name such as "
                              f"google-t5/t5-small)")
    offline = hub_offline()
    try:
        with hf_progress_bars():
            return loader.from_pretrained(checkpoint, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        if offline:
            raise CheckpointError(
                f"checkpoint {checkpoint!r}: HF_HUB_OFFLINE is set and the hub cache "
                f"({_cache_dir()}) holds no {what} of this model; run once online (HF_HUB_OFFLINE "
                f"unset) to download it, or point checkpoint at a local folder") from None
        raise CheckpointError(
            f"checkpoint {checkpoint!r}: no local folder of that name, and the hub gave no {what} of "
            f"this model ({_first_line(exc)}); check the name and the network, or, with the model in "
            f"the hub cache ({_cache_dir()}), set HF_HUB_OFFLINE=1") from None


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
