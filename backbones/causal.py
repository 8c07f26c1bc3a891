"""Decoder-only causal LM backbone (Qwen2 / LLaMA families through transformers), optional LoRA.

LC-Rec (Zheng et al., ICDE 2024) fine-tunes LLaMA-7B with LoRA on its task mix, the item code
tokens added to the vocabulary; SETRec and LETTER-LC-Rec likewise (Qwen2.5 / LLaMA). Here:

- ``checkpoint``: any causal LM of those families, a local ``save_pretrained`` folder or a hub
  name such as ``Qwen/Qwen2.5-0.5B`` (:mod:`backbones.hub`); its embedding matrix is
  resized to the harness's vocabulary (its tokenizer + the identifier tokens). Without a
  checkpoint, a TINY model is built from a config (``family``: qwen2 or llama; the sizes
  below) for CPU runs and tests, or one of a published model's shape (:data:`SHAPES`, e.g.
  Qwen2.5-0.5B's layer sizes, rope theta, norm eps and tokenizer vocabulary; random weights)
  for cost and memory measurements: ``shape_config("qwen2.5-0.5b")`` gives its config fields;
  ``dtype`` is that of its weights too.
- ``lora``: "auto" (LoRA on a checkpoint, full training of a from-config model, whose random
  weights LoRA could not adapt), True or False. LoRA: rank ``lora_r``, ``lora_alpha``,
  ``lora_dropout`` on ``lora_targets`` (default q_proj, v_proj as LC-Rec and SETRec), and the
  NEW token rows trainable: peft's ``trainable_token_indices`` on the input embedding (which
  also trains the output rows where the head is tied, as in Qwen2.5); an untied output head
  (LLaMA) is trained whole (``modules_to_save``).
- Sequences: the prompt is LEFT-padded, the target appended right after it; positions come
  from the attention mask, so padding does not shift them. Loss on target tokens only.

Registered as backbone ``causal`` (:class:`Causal`): :class:`CausalBackbone` for sequence
identifiers, :class:`SetCausalLM` for SETRec's set identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from backbones.base import Backbone, GenerativeBackbone, tempered_cross_entropy
from backbones.hub import from_pretrained
from backbones.set_decoding import additive, causal_set_mask, set_layout
from backbones.t5 import cache_kw, out_cache
from benchmarks.registry import register_backbone


@dataclass
class CausalBackboneConfig:
    family: str = "qwen2"          # qwen2 | llama (from-config builds)
    hidden: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    intermediate: int = 512
    max_positions: int = 2048
    rope_theta: float | None = None  # None: transformers' default for the family
    rms_eps: float | None = None     # None: transformers' default for the family
    text_vocab: int | None = None    # from-config builds: text token rows before the harness's new tokens
    tie_embeddings: bool = True      # from-config builds: the output head is the input embedding (Qwen2.5-0.5B /
                                     # 1.5B); False: a head of its own (LLaMA). A checkpoint has its own setting
    checkpoint: str | None = None
    lora: bool | Literal["auto"] = "auto"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    dtype: str = "float32"         # float32 | bfloat16 | float16 (checkpoints on GPUs)


def shape_of(folder: str) -> dict | None:
    """A local checkpoint folder's shape as ``CausalBackboneConfig`` fields (read from its
    config.json, no weights), or None where ``folder`` holds no config.json. A model type
    other than qwen2 / llama is a ValueError naming the file."""
    import json
    from pathlib import Path

    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    conf = json.loads(path.read_text())
    if conf.get("model_type") not in ("qwen2", "llama"):
        raise ValueError(f"{path}: model_type {conf.get('model_type')!r}: expected qwen2 or llama")
    heads = conf["num_attention_heads"]
    if "tie_word_embeddings" in conf:
        tie = bool(conf["tie_word_embeddings"])
    else:                    # absent: the model type's own default (transformers' config class)
        from transformers import LlamaConfig, Qwen2Config
        tie = bool((Qwen2Config if conf["model_type"] == "qwen2" else LlamaConfig)().tie_word_embeddings)
    return {"family": conf["model_type"], "tie_embeddings": tie, "hidden": conf["hidden_size"], "n_layers": conf["num_hidden_layers"],
            "n_heads": heads, "n_kv_heads": conf.get("num_key_value_heads") or heads,
            "intermediate": conf["intermediate_size"], "max_positions": conf.get("max_position_embeddings", 2048),
            "text_vocab": conf["vocab_size"], **({"rope_theta": float(conf["rope_theta"])} if "rope_theta" in conf else {}),
            **({"rms_eps": float(conf["rms_norm_eps"])} if "rms_norm_eps" in conf else {})}


#: Published decoder-only models' shapes as CausalBackboneConfig fields, for from-config models
#: of LLM size (random weights: the cost of a pass does not depend on them; nothing is
#: downloaded). ``text_vocab``: the checkpoint's embedding rows (its tokenizer vocabulary,
#: padded), which the harness's new tokens (separator, item codes) are added to.
SHAPES: dict[str, dict] = {
    # Qwen/Qwen2.5-0.5B, config.json on the Hugging Face hub: hidden_size 896,
    # num_hidden_layers 24, num_attention_heads 14, num_key_value_heads 2, intermediate_size
    # 4864, max_position_embeddings 32768, rope_theta 1000000.0, rms_norm_eps 1e-06,
    # vocab_size 151936, tie_word_embeddings true (0.49B parameters, 0.36B without embeddings)
    "qwen2.5-0.5b": {"family": "qwen2", "hidden": 896, "n_layers": 24, "n_heads": 14, "n_kv_heads": 2,
                     "intermediate": 4864, "max_positions": 32768, "rope_theta": 1000000.0,
                     "rms_eps": 1e-06, "text_vocab": 151936},
    # Qwen/Qwen2.5-1.5B, config.json on the Hugging Face hub: hidden_size 1536,
    # num_hidden_layers 28, num_attention_heads 12, num_key_value_heads 2, intermediate_size
    # 8960, rope_theta 1000000.0, rms_norm_eps 1e-06, vocab_size 151936, tie_word_embeddings
    # true (1.54B parameters): the paper preset's LLM. max_positions 32768 here (rotary
    # positions have no parameters; the sequences here are a few hundred tokens)
    "qwen2.5-1.5b": {"family": "qwen2", "hidden": 1536, "n_layers": 28, "n_heads": 12, "n_kv_heads": 2,
                     "intermediate": 8960, "max_positions": 32768, "rope_theta": 1000000.0,
                     "rms_eps": 1e-06, "text_vocab": 151936},
    # LLaMA-7B (LC-Rec's and LETTER's LLM; huggyllama/llama-7b's config.json): hidden_size 4096,
    # num_hidden_layers 32, num_attention_heads 32 (no grouped keys / values), intermediate_size
    # 11008, max_position_embeddings 2048, rms_norm_eps 1e-06, rope_theta 10000 (the default),
    # vocab_size 32000, tie_word_embeddings false: its output head is a matrix of its own (6.74B
    # parameters), which LoRA trains whole there (modules_to_save)
    "llama-7b": {"family": "llama", "hidden": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 32,
                 "intermediate": 11008, "max_positions": 2048, "rope_theta": 10000.0, "rms_eps": 1e-06,
                 "text_vocab": 32000, "tie_embeddings": False},
}


def shape_config(name: str) -> dict:
    """The CausalBackboneConfig fields of the named published shape (:data:`SHAPES`; the name
    in any case, e.g. ``Qwen2.5-1.5B``), a copy."""
    if name.lower() not in SHAPES:
        raise ValueError(f"unknown causal backbone shape {name!r}; known: {', '.join(sorted(SHAPES))}")
    return dict(SHAPES[name.lower()])


def lm_rows(cfg: CausalBackboneConfig, vocab_size: int, n_new: int) -> int:
    """Embedding (and tied output) rows of a from-config model: the harness's ``vocab_size``,
    or, with ``text_vocab``, that many text rows plus the ``n_new`` new tokens (the harness's
    own ids all fall inside: its text part is at most ``text_vocab``)."""
    if cfg.text_vocab is None:
        return vocab_size
    if cfg.checkpoint:
        raise ValueError("backbone_config.text_vocab is for from-config builds; "
                         f"the checkpoint {cfg.checkpoint!r} has its own vocabulary")
    rows = cfg.text_vocab + n_new
    if vocab_size > rows:
        raise ValueError(f"backbone_config.text_vocab = {cfg.text_vocab} is smaller than the text vocabulary "
                         f"the harness uses ({vocab_size - n_new} ids before its {n_new} new tokens)")
    return rows


@dataclass
class _CausalState:
    mask: torch.Tensor
    positions: torch.Tensor
    cache: Any = None
    first_logits: torch.Tensor | None = None


class CausalBackbone(GenerativeBackbone):
    input_side = "left"

    def __init__(self, vocab_size: int, pad_id: int, eos_id: int, cfg: CausalBackboneConfig,
                 new_token_ids: list[int] | None = None):
        super().__init__()
        from transformers import AutoModelForCausalLM

        dtype = getattr(torch, cfg.dtype)
        vocab_size = lm_rows(cfg, vocab_size, len(new_token_ids or ()))
        if cfg.checkpoint:
            model = from_pretrained(AutoModelForCausalLM, cfg.checkpoint, dtype=dtype)
            model.resize_token_embeddings(vocab_size)
        else:
            model = AutoModelForCausalLM.from_config(self._config(vocab_size, pad_id, eos_id, cfg), dtype=dtype)
        model.config.pad_token_id = pad_id
        model.config.eos_token_id = eos_id
        self._kw = cache_kw(model)
        use_lora = bool(cfg.checkpoint) if cfg.lora == "auto" else bool(cfg.lora)
        self.lora = use_lora
        if use_lora:
            from peft import LoraConfig, get_peft_model

            tied = bool(getattr(model.config, "tie_word_embeddings", False))
            lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM",
                              trainable_token_indices=list(new_token_ids or []) or None,
                              modules_to_save=None if tied else ["lm_head"])
            model = get_peft_model(model, lcfg)
        self.model = model
        self.pad_id = pad_id
        self.vocab_size = vocab_size

    @staticmethod
    def _config(vocab_size: int, pad_id: int, eos_id: int, cfg: CausalBackboneConfig):
        from transformers import LlamaConfig, Qwen2Config

        common = dict(vocab_size=vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                      num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_positions,
                      pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id,
                      tie_word_embeddings=cfg.tie_embeddings)
        if cfg.rope_theta is not None:
            common["rope_theta"] = cfg.rope_theta
        if cfg.rms_eps is not None:
            common["rms_norm_eps"] = cfg.rms_eps
        if cfg.family == "qwen2":
            return Qwen2Config(**common)
        if cfg.family == "llama":
            return LlamaConfig(**common)
        raise ValueError(f"causal family must be qwen2 or llama, got {cfg.family!r}")

    def _forward(self, ids, mask, positions, cache=None, use_cache=False, keep: int | torch.Tensor = 0):
        """``keep``: compute logits for the last ``keep`` positions only (0 = all), or for the
        positions a 1-D index tensor lists."""
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=use_cache, logits_to_keep=keep, **{self._kw: cache})

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(1) - 1).clamp(min=0)

    def loss(self, inputs, input_mask, targets, temperature=1.0):
        tmask = (targets != self.pad_id).long()
        ids = torch.cat([inputs, targets], 1)
        mask = torch.cat([input_mask, tmask], 1)
        # position j predicts token j + 1: the targets come from the last prompt position on,
        # so the vocabulary projection is computed for those T positions only (given as
        # indices: no logits for the last position and no strided copy to drop them)
        s, t = inputs.shape[1], targets.shape[1]
        keep = torch.arange(s - 1, s + t - 1, device=ids.device)
        pred = self._forward(ids, mask, self._positions(mask), keep=keep).logits
        return tempered_cross_entropy(pred, targets, self.pad_id, temperature)

    def begin(self, inputs, input_mask, beams):
        positions = self._positions(input_mask)
        out = self._forward(inputs, input_mask, positions, use_cache=True, keep=1)
        cache = out_cache(out)
        cache.batch_repeat_interleave(beams)
        return _CausalState(mask=input_mask.repeat_interleave(beams, 0),
                            positions=positions[:, -1:].repeat_interleave(beams, 0),
                            cache=cache, first_logits=out.logits[:, -1].repeat_interleave(beams, 0))

    def step(self, state: _CausalState, tokens):
        if tokens is None:
            return state.first_logits
        state.mask = torch.cat([state.mask, torch.ones_like(state.mask[:, :1])], 1)
        state.positions = state.positions + 1
        out = self._forward(tokens.unsqueeze(1), state.mask, state.positions, state.cache, use_cache=True)
        state.cache = out_cache(out)
        return out.logits[:, -1]

    def reorder(self, state: _CausalState, index):
        state.cache.reorder_cache(index)
        state.mask = state.mask[index]
        state.positions = state.positions[index]

    def candidate_logprobs(self, inputs, input_mask, candidates):
        """[B, C] log p(candidate | prompt), the prompt encoded once and its cache shared."""
        b, c = inputs.shape[0], candidates.shape[0]
        positions = self._positions(input_mask)
        out = self._forward(inputs, input_mask, positions, use_cache=True, keep=1)
        cache = out_cache(out)
        cache.batch_repeat_interleave(c)
        first = torch.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(c, 0)   # [B*C, V]
        targets = candidates.repeat(b, 1)                                                     # [B*C, L]
        tmask = (targets != self.pad_id).long()
        mask = torch.cat([input_mask.repeat_interleave(c, 0), tmask[:, :-1]], 1)
        pos = positions[:, -1:].repeat_interleave(c, 0) + torch.arange(1, targets.shape[1], device=inputs.device)
        logp0 = first.gather(1, targets[:, :1]).squeeze(1)
        if targets.shape[1] > 1:
            rest = self._forward(targets[:, :-1], mask, pos, cache, use_cache=True).logits
            logp = torch.log_softmax(rest.float(), -1).gather(2, targets[:, 1:].unsqueeze(2)).squeeze(2)
            total = logp0 + (logp * tmask[:, 1:]).sum(1)
        else:
            total = logp0
        return total.view(b, c)


# --------------------------------------------------------------------------- set identifiers (SETRec)
class SetCausalLM(nn.Module):
    """A decoder-only LM (Qwen2 / LLaMA) for set identifiers (:mod:`backbones.set_decoding`
    has the layout and :func:`~backbones.set_decoding.causal_set_mask` the attention mask).

    ``cfg``: :class:`backbones.causal.CausalBackboneConfig`: a tiny model from a config (full
    training) or a ``checkpoint`` with LoRA (``lora="auto"``; rank, alpha, dropout and
    target modules from the config). Only the transformer stack is kept (the LM head is never
    used: outputs are grounded against item tokens)."""

    def __init__(self, cfg: CausalBackboneConfig, n_query: int, vocab_size: int = 2, *,
                 sparse_mask: bool = True, shared_positions: bool = True, intra_item: str = "bidirectional"):
        super().__init__()
        from transformers import AutoModelForCausalLM

        rows = lm_rows(cfg, max(vocab_size, 2), 0)   # no new tokens: set tokens are continuous
        if cfg.checkpoint:
            full = from_pretrained(AutoModelForCausalLM, cfg.checkpoint, dtype=getattr(torch, cfg.dtype))
        else:
            full = AutoModelForCausalLM.from_config(CausalBackbone._config(rows, 0, 0, cfg),
                                                    dtype=getattr(torch, cfg.dtype))
        stack = full.base_model
        use_lora = bool(cfg.checkpoint) if cfg.lora == "auto" else bool(cfg.lora)
        if use_lora:
            from peft import LoraConfig, get_peft_model

            stack = get_peft_model(stack, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout,
                                                     target_modules=list(cfg.lora_targets),
                                                     task_type="FEATURE_EXTRACTION"))
        self.lm = stack
        self.lora = use_lora
        self.hidden = int(full.config.hidden_size)
        self.n_query = n_query
        self.sparse_mask = sparse_mask
        self.shared_positions = shared_positions
        if intra_item not in ("bidirectional", "self"):
            raise ValueError(f"intra_item must be 'bidirectional' or 'self', got {intra_item!r}")
        self.intra_item = intra_item
        self.queries = nn.Parameter(torch.empty(n_query, self.hidden))
        nn.init.normal_(self.queries, mean=0.0, std=0.02)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def forward(self, items: torch.Tensor, item_mask: torch.Tensor, prefix_ids: torch.Tensor | None = None,
                suffix_ids: torch.Tensor | None = None, return_hidden: bool = False):
        """Like :meth:`SetT5.forward`; ``return_hidden`` also returns the hidden states of the
        whole flattened sequence [B, L, d] (queries last)."""
        dtype = self.dtype
        prefix = None if prefix_ids is None or not len(prefix_ids) else self.embed(prefix_ids)
        suffix = None if suffix_ids is None or not len(suffix_ids) else self.embed(suffix_ids)
        lay = set_layout(items.to(dtype), item_mask, prefix, suffix, self.queries.to(dtype), self.shared_positions)
        mask = additive(causal_set_mask(lay, self.sparse_mask, self.intra_item), dtype)
        hidden = self.lm(inputs_embeds=lay.embeds, attention_mask=mask, position_ids=lay.positions,
                         use_cache=False).last_hidden_state
        out = hidden[:, -self.n_query:].float()
        return (out, hidden) if return_hidden else out


# --------------------------------------------------------------------------- the registered backbone
@register_backbone("causal")
class Causal(Backbone):
    """Decoder-only LM (Qwen2 / LLaMA; tiny from a config, or a checkpoint with LoRA)."""

    Config = CausalBackboneConfig
    smoke_config = {"hidden": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "intermediate": 64}

    @classmethod
    def sequence_model(cls, config, vocab_size, pad_id, eos_id, new_token_ids=()):
        return CausalBackbone(vocab_size, pad_id, eos_id, config, new_token_ids)

    @classmethod
    def set_model(cls, config, n_query, vocab_size, *, sparse_mask=True, shared_positions=True,
                  intra_item="bidirectional"):
        return SetCausalLM(config, n_query, vocab_size, sparse_mask=sparse_mask,
                           shared_positions=shared_positions, intra_item=intra_item)
