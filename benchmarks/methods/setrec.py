"""SETRec: order-agnostic set identifiers with simultaneous generation (Lin et al., SIGIR 2025).

| method | backbone | defaults (the paper's / its code's) |
|---|---|---|
| ``setrec-t5`` | T5 encoder-decoder (:class:`backbones.t5.SetT5`) | n_sem 4, alpha 0.7, lr 1e-3, 30 epochs |
| ``setrec-causal`` | Qwen2 / LLaMA (:class:`backbones.causal.SetCausalLM`), LoRA r 8, alpha 16, dropout 0.02 on q_proj, v_proj for checkpoints | n_sem 6, alpha 0.5, lr 3e-4, 20 epochs |

Both: batch 512, AdamW, linear warm-up over 100 steps then cosine decay, CF token from a 64-d
SASRec (the dataset's published embeddings where it ships them), semantic tokens from the suite's
text embeddings (all-MiniLM-L6-v2 by default) through the 512-256-128 autoencoder.

One item = a set of n_cf + n_sem continuous tokens (:class:`identifiers.setrec.SetTokenizer`).
The history [prompt] + items + [response] goes through the backbone with shared positions per
item and the sparse attention mask; n_query = n_cf + n_sem learnable queries yield n_query
vectors in ONE forward pass; s_q(i) = o_q . t_q(i) for every item by one batched matrix product.

- Training loss: mean over queries of the cross-entropy over ALL items (target = the next item)
  + alpha x the autoencoder's reconstruction MSE (over the batch's history items, as the
  authors' code does; ``recon_on: all`` for every item).
- Ranking score: (1 - beta) s_0 + beta sum_{q >= 1} s_q (s_0: the CF query). beta is chosen on
  validation from ``betas`` (0.1 ... 1.0) at EVERY validation of the training loop (the backbone
  runs once, the grounding once per beta) and kept with the model state of the best epoch; the
  fit log records the chosen beta and the validation NDCG@10 of every beta. ``beta`` fixes it.
  With one kind of token only (n_cf = 0 or no semantic tokens) there is nothing to choose.
- Datasets without item text (e.g. ``setrec-beauty``) run the CF-token-only variant
  automatically; the fit log says so (its ``notes``, printed by the report; the token layout
  in ``setrec.variant``).

Ablations by config: ``n_cf: 0`` (no CF token), ``n_sem: 0`` (no semantic tokens),
``single_query: true`` (ONE query whose output is grounded against every token kind),
``sparse_mask: false`` (plain causal / plain full attention), ``shared_positions: false``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from backbones.set_decoding import ground
from baselines.sasrec import SASRecConfig
from benchmarks.config import build_config
from benchmarks.protocol import UserBatch, Validator, history_window
from benchmarks.registry import BACKBONES, config_class, register_method
from benchmarks.training import TorchRecommender, TrainConfig, train_loop, warmup_decay_scheduler
from identifiers.setrec import SetTokenizer

log = logging.getLogger(__name__)

BETA_GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))
#: SETRec's own backbone_config defaults per backbone; on the decoder-only LM its LoRA on
#: checkpoints (paper: r 8, alpha 16, dropout 0.02, q_proj and v_proj)
BACKBONE_DEFAULTS = {"causal": {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.02,
                                "lora_targets": ("q_proj", "v_proj")}}


@dataclass
class SETRecConfig(TrainConfig):
    backbone: str = "t5"                    # a registered backbone: t5 | causal
    backbone_config: dict = field(default_factory=dict)   # that backbone's Config fields
    n_cf: int = 1                           # 0 or 1
    n_sem: int = 4
    cf_dim: int = 64                        # the CF model's dimension (SETRec's SASRec: 64)
    cf_source: str = "auto"                 # auto | sasrec | published (FeatureStore.cf_embeddings)
    cf_sasrec_config: dict = field(default_factory=dict)  # SASRec overrides when CF embeddings are trained
    ae_layers: tuple[int, ...] = (512, 256, 128)
    ae_dropout: float = 0.0
    alpha: float = 0.7                      # weight of the reconstruction MSE
    recon_on: str = "history"               # history (the batch's history items) | all
    betas: tuple[float, ...] = BETA_GRID
    beta: float | None = None               # fixed beta (no selection); None = chosen on validation
    single_query: bool = False
    sparse_mask: bool = True
    shared_positions: bool = True
    intra_item: str = "bidirectional"       # causal LM: bidirectional | self (the authors' Qwen code)
    prompt: bool = True
    instruction: str = "Which item will the user choose next after these items:"
    response: str = "? Next item:"
    text_tokenizer: str = "all-MiniLM-L6-v2"   # prompt tokens of from-scratch backbones
    max_history: int | None = None          # None: the dataset's cap (20); at most that (history_window)
    train_last_n: int | None = None         # keep each user's last n training prefixes (CPU scale)
    warmup_steps: int = 100
    schedule: str = "cosine"                # cosine | linear | constant
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 512
    epochs: int = 30
    patience: int = 10

    def nested_configs(self) -> dict[str, type]:
        """The dataclasses ``backbone_config`` and ``cf_sasrec_config`` must fit (checked by
        ``build_config``)."""
        return {"backbone_config": config_class(BACKBONES, self.backbone, "backbone"),
                "cf_sasrec_config": SASRecConfig}


# --------------------------------------------------------------------------- scoring helpers
def combine_scores(per_query: torch.Tensor, beta: float, n_cf: int) -> torch.Tensor:
    """[Q, B, N] per-query scores -> [B, N]: (1 - beta) * CF queries + beta * semantic queries
    (the semantic ones summed); with one kind only, that kind's sum."""
    if n_cf == 0:
        return per_query.sum(0)
    cf = per_query[:n_cf].sum(0)
    if per_query.shape[0] == n_cf:
        return cf
    return (1.0 - beta) * cf + beta * per_query[n_cf:].sum(0)


def sweep_beta(evaluate: Callable[[float], float], grid: tuple[float, ...]) -> tuple[float, dict[float, float]]:
    """Evaluate every beta of ``grid``; -> (the best beta, {beta: value}). Ties: the first
    (smallest) beta of the grid."""
    table = {float(b): float(evaluate(float(b))) for b in grid}
    best = max(table, key=table.get)
    return best, table


# --------------------------------------------------------------------------- the module
class SETRecModule(nn.Module):
    """Set tokenizer + backbone + the chosen beta (a buffer, so the best state carries it)."""

    def __init__(self, tokenizer: SetTokenizer, backbone: nn.Module, prefix_ids: list[int],
                 suffix_ids: list[int], beta: float):
        super().__init__()
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.register_buffer("prefix_ids", torch.tensor(prefix_ids, dtype=torch.long), persistent=False)
        self.register_buffer("suffix_ids", torch.tensor(suffix_ids, dtype=torch.long), persistent=False)
        self.register_buffer("beta", torch.tensor(float(beta), dtype=torch.float64))

    def query_outputs(self, tokens: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """``tokens`` [N + 1, n_tokens, d] (the item table), ``hist`` [B, H] -> [B, n_tokens, d]
        (a single query's output repeated for every token kind)."""
        out = self.backbone(tokens[hist], hist > 0, self.prefix_ids, self.suffix_ids)
        return out.expand(-1, tokens.shape[1], -1) if out.shape[1] != tokens.shape[1] else out

    def per_query_scores(self, tokens: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """[Q, B, N]: every query against the matching token of every real item."""
        return ground(outputs.to(tokens.dtype), tokens[1:].transpose(0, 1))


def _trim(hist: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row (left-padded histories)."""
    real = (hist > 0).any(0)
    if not real.any():
        return hist[:, -1:]
    return hist[:, int(real.nonzero()[0]):]


# --------------------------------------------------------------------------- the recommender
class SETRec(TorchRecommender):
    """SETRec on a T5 or decoder-only backbone (see the module docstring)."""

    family = "set"
    Config = SETRecConfig
    needs = frozenset({"text", "cf"})

    def __init__(self, config: SETRecConfig, ctx):
        from benchmarks.utils import seed_everything

        self._setup(config, ctx)
        # features may have been trained (SASRec) or read from the cache: re-seed so the
        # module's initialisation does not depend on which
        seed_everything(ctx.seed)
        super().__init__(config, ctx)
        self._eval_tokens: torch.Tensor | None = None
        self._sweeping = False
        self._out_cache: dict | None = None
        self._sweeps: list[dict] = []

    def cold_scoring(self) -> str | None:
        """Semantic tokens come from item text, so cold items are scored from their content;
        the CF-token-only variant (no item text) cannot score them."""
        return "content" if self.variant["n_sem"] else None

    # ------------------------------------------------------------------ set-up
    def _setup(self, cfg: SETRecConfig, ctx) -> None:
        from benchmarks.features import MissingTextError

        if cfg.n_cf not in (0, 1):
            raise ValueError(f"n_cf must be 0 or 1, got {cfg.n_cf}")
        if cfg.recon_on not in ("history", "all"):
            raise ValueError(f"recon_on must be 'history' or 'all', got {cfg.recon_on!r}")
        if ctx.features is None:
            raise ValueError("SETRec needs the FeatureStore (CF and text embeddings) in its Context")
        ds = ctx.dataset
        self.variant: dict = {"n_cf": cfg.n_cf, "n_sem": cfg.n_sem}
        self.notes = ""
        self.cf_table = ctx.features.cf_embeddings(cfg.cf_dim, cfg.cf_source, cfg.cf_sasrec_config) if cfg.n_cf else None
        self.text_table = None
        if cfg.n_sem:
            try:
                self.text_table = ctx.features.text_embeddings()
            except MissingTextError as exc:
                if not cfg.n_cf:
                    raise
                self.variant.update(n_sem=0)
                self.notes = f"CF-token-only variant: {exc}"
                log.warning("setrec on %s: no item text, running the CF-token-only variant", ds.name)
        self.max_history = history_window(cfg.max_history, ds.max_history, type(cfg).__qualname__)
        users, hist, targets = ds.training_samples(self.max_history, cfg.train_last_n)
        self.samples = {"hist": hist, "targets": targets}

    def _backbone_config(self) -> dict:
        cfg = self.config
        base = dict(BACKBONE_DEFAULTS.get(cfg.backbone, {}))
        return {**base, **cfg.backbone_config}

    def _prompt(self, checkpoint: str | None) -> tuple[list[int], list[int], int]:
        """(prefix ids, suffix ids, vocabulary size of a from-scratch model). From scratch the
        prompt's tokens get a compact vocabulary of their own (1 .. V-1; 0 = padding)."""
        cfg = self.config
        if not cfg.prompt:
            return [], [], 2
        from benchmarks.methods.token_space import load_text_tokenizer

        tok = load_text_tokenizer(checkpoint or cfg.text_tokenizer)
        pre = tok.encode(cfg.instruction, add_special_tokens=False)
        suf = tok.encode(cfg.response, add_special_tokens=False)
        if checkpoint:
            return pre, suf, 2
        vocab = {t: i + 1 for i, t in enumerate(sorted(set(pre) | set(suf)))}
        return [vocab[t] for t in pre], [vocab[t] for t in suf], len(vocab) + 1

    def build(self) -> SETRecModule:
        cfg = self.config
        bcfg = self._backbone_config()
        pre, suf, vocab = self._prompt(bcfg.get("checkpoint"))
        n_tokens = cfg.n_cf + self.variant["n_sem"]
        n_query = 1 if cfg.single_query else n_tokens
        if n_tokens == 0:
            raise ValueError("SETRec needs at least one token per item (n_cf or n_sem)")
        family = BACKBONES.get(cfg.backbone)
        backbone = family.set_model(build_config(family.Config, bcfg), n_query, vocab, sparse_mask=cfg.sparse_mask,
                                    shared_positions=cfg.shared_positions, intra_item=cfg.intra_item)
        tokenizer = SetTokenizer(backbone.hidden, cf_table=self.cf_table,
                                 text_table=self.text_table if self.variant["n_sem"] else None,
                                 n_sem=self.variant["n_sem"], ae_layers=cfg.ae_layers, ae_dropout=cfg.ae_dropout)
        beta = cfg.beta if cfg.beta is not None else 0.5
        return SETRecModule(tokenizer, backbone, pre, suf, beta)

    @property
    def n_cf(self) -> int:
        return self.module.tokenizer.n_cf

    @property
    def n_sem(self) -> int:
        return self.module.tokenizer.n_sem

    # ------------------------------------------------------------------ training
    def n_batches(self) -> int:
        return -(-len(self.samples["targets"]) // self.config.batch_size)

    def batches(self, rng):
        for idx in self.shuffled_slices(rng, len(self.samples["targets"])):
            hist = _trim(torch.from_numpy(self.samples["hist"][idx]))
            yield hist.to(self.device), torch.from_numpy(self.samples["targets"][idx]).to(self.device)

    def loss(self, batch) -> torch.Tensor:
        hist, targets = batch
        recon_items = hist[hist > 0] if self.config.recon_on == "history" else None
        tokens, recon = self.module.tokenizer(recon_items)
        out = self.module.query_outputs(tokens, hist)
        scores = self.module.per_query_scores(tokens, out)                  # [Q, B, N]
        q, b, n = scores.shape
        ce = F.cross_entropy(scores.reshape(q * b, n).float(), (targets - 1).repeat(q))
        return ce + self.config.alpha * recon

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.module.parameters() if p.requires_grad],
                                 lr=self.config.lr, weight_decay=self.config.weight_decay)

    def memory_estimate(self, batch, eval_batch, *, e, mask_bytes, autocast):
        """The T5 / decoder-only stack formulas of :mod:`benchmarks.memory` over the set layout
        (prompt + history items x tokens per item (+ the queries on the decoder-only LM); T5's
        decoder reads the queries), without an LM head, plus SETRec's head: every item's
        token table [N + 1, n_tokens, h] and the batch's history tokens gathered from it, and
        the fp32 scores of every query against every item with their log-softmax [Q, B, N].
        Evaluation: one layer's activations over ``eval_batch``'s layout, its mask, the token
        table and the scores."""
        from benchmarks.memory import Stack, causal_activations, t5_activations

        cfg = self.config
        net = self.module.backbone
        st = Stack.of(net)
        hist, _ = batch
        b, width = hist.shape[0], hist.shape[1]
        n_tok, q, n = self.n_cf + self.n_sem, net.n_query, self.n_items
        prompt = len(self.module.prefix_ids) + len(self.module.suffix_ids)
        ea = 4 if autocast and st.kind == "t5" else e
        table = (n + 1) * n_tok * st.hidden * ea
        head = lambda users, h: table + users * h * n_tok * st.hidden * ea + 2 * q * users * n * 4
        if st.kind == "t5":
            act = t5_activations(st, b, prompt + width * n_tok, q, e=e, mask_bytes=mask_bytes,
                                 checkpointing=cfg.gradient_checkpointing, lm_head=False, autocast=autocast)
        else:
            act = causal_activations(st, b, prompt + width * n_tok + q, logit_positions=0, e=e,
                                     checkpointing=cfg.gradient_checkpointing, lm_head=False, autocast=autocast)
        users, ev_width = eval_batch.history.shape[0], int((eval_batch.history > 0).sum(1).max())
        length = prompt + ev_width * n_tok + q
        ev = users * length * (3 * st.hidden + 2 * st.ffn) * ea + users * length * length * ea + head(users, ev_width)
        return {"held": act["held"] + head(b, width), "peak": act["peak"] + head(b, width), "eval": ev,
                "formula": f"set-{st.kind}"}

    def scheduler(self, optimizer, total_steps: int):
        return warmup_decay_scheduler(optimizer, self.config.schedule, self.config.warmup_steps, total_steps)

    def fit(self, validator: Validator | None = None) -> dict:
        cfg = self.config
        choose = validator is not None and cfg.beta is None and self.n_cf and self.n_sem
        self._sweeps = []
        val = (lambda model: self._validate_with_beta(validator)) if choose else validator
        out = train_loop(self, val)
        validated = [e["epoch"] for e in out["epochs"] if "valid_ndcg10" in e]
        sweeps = [{"epoch": ep, **s} for ep, s in zip(validated, self._sweeps)]
        best = next((s for s in sweeps if s["epoch"] == out["best_epoch"]), None)
        n_params = sum(p.numel() for p in self.module.parameters())
        out["setrec"] = {
            "variant": {**self.variant, "n_sem": self.n_sem,
                        "tokens": (["cf"] if self.n_cf else []) + [f"sem{k}" for k in range(1, self.n_sem + 1)],
                        "queries": self.module.backbone.n_query},
            "beta": float(self.module.beta) if self.n_cf and self.n_sem else None,
            "beta_source": ("fixed" if cfg.beta is not None else "validation" if choose else "default")
                           if self.n_cf and self.n_sem else "n/a (one token kind)",
            "beta_valid_ndcg10": best["valid_ndcg10_by_beta"] if best else None,
            "beta_per_validation": [{"epoch": s["epoch"], "beta": s["beta"]} for s in sweeps],
            "backbone": cfg.backbone, "backbone_config": {k: (list(v) if isinstance(v, tuple) else v)
                                                          for k, v in self._backbone_config().items()},
            "parameters": n_params,
            "backbone_parameters": sum(p.numel() for p in self.module.backbone.parameters()),
            "trainable_parameters": sum(p.numel() for p in self.module.parameters() if p.requires_grad),
            "training_samples": int(len(self.samples["targets"])),
        }
        if self.notes:
            out["notes"] = self.notes
        return out

    def loop_state(self) -> dict:
        """The beta sweeps of the validations so far (a resumed training's log keeps them)."""
        return {"sweeps": self._sweeps}

    def load_loop_state(self, state: dict) -> None:
        self._sweeps = list(state["sweeps"])

    def _validate_with_beta(self, validator: Validator) -> float:
        """Validation NDCG@10 of every beta of the grid (the backbone's outputs cached across the
        grid); the best beta is set on the module (and saved with the best state)."""
        self._sweeping, self._out_cache = True, {}
        try:
            def evaluate(beta: float) -> float:
                self.module.beta.fill_(beta)
                return validator(self)
            best, table = sweep_beta(evaluate, tuple(self.config.betas))
        finally:
            self._sweeping, self._out_cache = False, None
        self.module.beta.fill_(best)
        self._sweeps.append({"beta": best, "valid_ndcg10_by_beta": table})
        return table[best]

    def train(self):
        self._eval_tokens = None
        return super().train()

    def eval(self):
        if not self._sweeping:
            self._eval_tokens = None
        return super().eval()

    # ------------------------------------------------------------------ inference
    def _tokens(self) -> torch.Tensor:
        if self._eval_tokens is None:
            self._eval_tokens = self.module.tokenizer(torch.zeros(0, dtype=torch.long, device=self.device))[0]
        return self._eval_tokens

    def per_query_scores(self, batch: UserBatch) -> torch.Tensor:
        """[Q, B, N] scores of every query for every item (column i-1 = item i)."""
        tokens = self._tokens()
        hist = _trim(batch.history[:, -self.max_history:]).to(self.device)
        key = None
        if self._out_cache is not None:
            key = (batch.users.cpu().numpy().tobytes(), hist.cpu().numpy().tobytes())
        out = self._out_cache.get(key) if key is not None else None
        if out is None:
            out = self.module.query_outputs(tokens, hist)
            if key is not None:
                self._out_cache[key] = out
        return self.module.per_query_scores(tokens, out)

    @torch.no_grad()
    def score(self, batch: UserBatch) -> torch.Tensor:
        combined = combine_scores(self.per_query_scores(batch), float(self.module.beta), self.n_cf)
        scores = torch.full((combined.shape[0], self.n_items + 1), float("-inf"), device=combined.device)
        scores[:, 1:] = combined
        return scores


# --------------------------------------------------------------------------- registered methods
_SMOKE = {"epochs": 2, "batch_size": 64, "warmup_steps": 2, "n_sem": 2, "cf_dim": 16,
          "ae_layers": [32, 16], "cf_sasrec_config": {"epochs": 3}}


@register_method("setrec-t5")
class SETRecT5(SETRec):
    """SETRec on T5 (the paper's T5 setting: n_sem 4, alpha 0.7, lr 1e-3, 30 epochs)."""

    Config = SETRecConfig
    smoke_config = {**_SMOKE, "backbone_config": dict(BACKBONES.get("t5").smoke_config)}


@dataclass
class SETRecCausalConfig(SETRecConfig):
    backbone: str = "causal"
    n_sem: int = 6
    alpha: float = 0.5
    lr: float = 3e-4
    epochs: int = 20


@register_method("setrec-causal")
class SETRecCausal(SETRec):
    """SETRec on a decoder-only LM (the authors' Qwen example: n_sem 6, alpha 0.5, lr 3e-4,
    20 epochs; LoRA r 8, alpha 16, dropout 0.02 on q_proj, v_proj for checkpoints)."""

    Config = SETRecCausalConfig
    smoke_config = {**_SMOKE, "lr": 1e-3, "backbone_config": dict(BACKBONES.get("causal").smoke_config)}
