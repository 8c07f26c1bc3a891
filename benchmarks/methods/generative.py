"""The generative recommender: an identifier scheme + a backbone + a decoding, wired together.

This is the only place where identifiers and backbones meet (backbones see token ids only).
:class:`GenerativeRecommender` runs ANY registered identifier scheme on ANY registered backbone
(``backbone: t5`` or ``causal``, :data:`benchmarks.registry.BACKBONES`) by config; the papers'
combinations with their defaults (``tiger``, ``lcrec``, ``p5-id``, ``bigrec`` ...) are rows of
the table in :mod:`benchmarks.methods.papers`, and the token vocabulary is
:class:`benchmarks.methods.token_space.TokenSpace`.

Inputs: the user's last ``max_history`` items, each written as its identifier tokens followed
by a separator token (TIGER flattens the codes likewise), optionally preceded by a hashed
user-id token (TIGER) and wrapped in an instruction prompt (``prompt: true``, LC-Rec; templates
in :mod:`benchmarks.prompts`). Targets: the next item's identifier tokens, plus an end token
where identifiers differ in length (digit ids, cluster paths, titles), so that none is a
prefix of another. Text (titles, prompts) is tokenised by ``text_tokenizer`` (default: the
bundled all-MiniLM-L6-v2 WordPiece tokenizer, so CPU runs need no download) or by the
checkpoint's tokenizer when the backbone is loaded from one.

Decoding: trie-constrained beam search (``decoding: beam``), or BIGRec's free greedy
generation grounded to items by L2 distance in text-embedding space (``free-grounded``), both
from :mod:`backbones.generation`. Identifiers with ties (``ItemIdentifiers.ties``, e.g.
RQ-KMeans with ``collision: ties``): the trie holds each shared identifier once; decoding it
returns all of its items with its score, in item-id order (the harness's tie rule), and the
global ranking scores them equally.

Training uses the suite's one loop (early stopping on validation NDCG@10 computed by beam
search, best state restored) with AdamW, linear warm-up and cosine (or linear) decay, and the
ranking-guided loss: cross-entropy of logits / τ (LETTER; τ = 1 is the plain loss). A finished
cell keeps the identifiers and their code usage (:meth:`GenerativeRecommender.write_artefacts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backbones.base import GenerativeBackbone
from backbones.generation import beam_search, global_scores, greedy_decode
from backbones.trie import Trie
from benchmarks.config import build_config
from benchmarks.methods.token_space import TokenSpace
from benchmarks.prompts import TASKS, split_template
from benchmarks.protocol import UserBatch, history_window, topk_from_scores
from benchmarks.registry import BACKBONES, IDENTIFIERS, config_class
from benchmarks.training import TorchRecommender, TrainConfig, warmup_decay_scheduler
from identifiers.base import load_or_build


@dataclass
class GenerativeConfig(TrainConfig):
    identifier: str = "tiger"
    identifier_config: dict = field(default_factory=dict)
    backbone: str = "t5"                    # a registered backbone: t5 | causal
    backbone_config: dict = field(default_factory=dict)   # that backbone's Config fields
    temperature: float = 1.0                # LETTER's τ (1.0 = plain cross-entropy)
    beams: int = 20
    decoding: str = "beam"                  # beam | free-grounded (BIGRec)
    max_history: int | None = None          # None: the dataset's cap (20); at most that (history_window)
    train_last_n: int | None = None         # keep each user's last n training prefixes (quick scale)
    max_input_tokens: int = 512
    max_title_tokens: int = 32
    user_tokens: int = 0                    # TIGER: 2000 hashed user-id tokens
    tasks: tuple[str, ...] = ("seq",)
    prompt: bool = False
    text_tokenizer: str = "all-MiniLM-L6-v2"
    compact_vocab: bool = True              # from scratch: only the text tokens the data uses (TokenSpace)
    warmup_steps: int = 100
    schedule: str = "cosine"                # cosine | linear | constant
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10

    def nested_configs(self) -> dict[str, type]:
        """The dataclasses ``identifier_config`` and ``backbone_config`` must fit (checked by
        ``build_config``)."""
        return {"identifier_config": config_class(IDENTIFIERS, self.identifier, "identifier"),
                "backbone_config": config_class(BACKBONES, self.backbone, "backbone")}


def fully_excluded_groups(exclude: torch.Tensor, members: torch.Tensor, rep_of: torch.Tensor) -> torch.Tensor:
    """[B, M] representatives of the tie groups ALL of whose members ``exclude`` [B, M] lists
    for that row (0 elsewhere): what a search over one leaf per group may prune."""
    size = (members > 0).sum(1)                                     # members per representative
    rep = rep_of[exclude.clamp(min=0)] * (exclude > 0)
    b = torch.arange(len(exclude), device=exclude.device).unsqueeze(1).expand_as(rep)
    pair = torch.unique(torch.stack([b[rep > 0], exclude[rep > 0]], 1), dim=0)   # distinct (row, item)
    key = pair[:, 0] * len(rep_of) + rep_of[pair[:, 1]]
    keys, counts = torch.unique(key, return_counts=True)
    full = keys[counts == size[keys % len(rep_of)]]
    out = torch.zeros_like(exclude)
    rows, reps = full // len(rep_of), full % len(rep_of)
    slot = torch.arange(len(full), device=exclude.device) - torch.searchsorted(rows, rows)
    out[rows, slot] = reps
    return out


def compact_left(ids: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the pad tokens of every row to its left end (order of real tokens kept) and drop
    all-pad columns -> (ids, mask)."""
    real = ids != pad
    order = torch.sort(real.to(torch.int8), dim=1, stable=True).indices
    ids = ids.gather(1, order)
    real = real.gather(1, order)
    keep = real.any(0)
    first = int(keep.nonzero()[0]) if keep.any() else ids.shape[1] - 1
    return ids[:, first:], real[:, first:].long()


# --------------------------------------------------------------------------- the recommender
class GenerativeRecommender(TorchRecommender):
    """An identifier scheme on a generative backbone (see the module docstring)."""

    family = None              # the identifier scheme's: family_of
    Config = GenerativeConfig
    needs = frozenset({"text", "cf"})
    decodes = True

    @classmethod
    def family_of(cls, config: GenerativeConfig | None = None) -> str | None:
        """The family of the identifier scheme the config runs (``IdentifierScheme.family``);
        with ``config=None``, that of the method's default scheme, or None where the method
        sets none of its own (``generative``: whatever the config chooses)."""
        if config is None:
            if cls.Config is GenerativeConfig:
                return None
            config = cls.Config()
        return IDENTIFIERS.get(config.identifier).family

    def __init__(self, config: GenerativeConfig, ctx):
        self._setup(config, ctx)
        super().__init__(config, ctx)

    def write_artefacts(self, cell) -> None:
        """The cell keeps the identifiers it ran on and their code usage (the report's table
        and LETTER Fig. 6)."""
        from benchmarks.analysis import code_usage

        cell.write_identifiers(self.identifiers, self.dataset.item_ids, code_usage(self.identifiers))

    def cold_scoring(self) -> str | None:
        return "content" if IDENTIFIERS.get(self.config.identifier).reads_item_content() else None

    # ------------------------------------------------------------------ set-up
    def _setup(self, config: GenerativeConfig, ctx) -> None:
        ds = ctx.dataset
        scheme = IDENTIFIERS.get(config.identifier)
        id_cfg = build_config(scheme.Config, config.identifier_config)
        self.identifiers = load_or_build(config.identifier, id_cfg, ds, ctx.features, ctx.seed, ctx.cache,
                                         progress=ctx.progress)
        needs_text = (self.identifiers.kind == "text" or config.prompt
                      or any(t != "seq" for t in config.tasks)
                      or bool(config.backbone_config.get("checkpoint")))
        tokenizer = None
        if needs_text:
            tokenizer = config.backbone_config.get("checkpoint") or config.text_tokenizer
        titles = None
        if any(t != "seq" for t in config.tasks):
            titles = ctx.features.item_texts("{title}")
        unknown = set(config.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; known: {sorted(TASKS)}")
        checkpoint = bool(config.backbone_config.get("checkpoint"))
        prompt_texts = [lit for t in config.tasks for lit, _ in split_template(TASKS[t][0])] if config.prompt else []
        self.space = TokenSpace(self.identifiers, text_tokenizer=tokenizer, user_tokens=config.user_tokens,
                                max_title_tokens=config.max_title_tokens, titles=titles,
                                compact=config.compact_vocab and not checkpoint, texts=prompt_texts)
        self.max_history = history_window(config.max_history, ds.max_history, type(config).__qualname__)
        if config.decoding not in ("beam", "free-grounded"):
            raise ValueError(f"decoding must be 'beam' or 'free-grounded', got {config.decoding!r}")
        self.decodes = config.decoding == "beam"   # free generation + grounding scores every item
        self._prompts = {t: self._prompt_parts(t) for t in config.tasks} if config.prompt else {}
        users, hist, targets = ds.training_samples(self.max_history, config.train_last_n)
        self.samples = {"users": users, "hist": hist, "targets": targets}
        # one sample per (task, row): seq tasks over the training prefixes, item tasks per item
        rows = []
        for t_id, task in enumerate(config.tasks):
            n = len(targets) if task in ("seq", "seq2title") else ds.n_items
            rows.append(np.stack([np.full(n, t_id), np.arange(n)], 1))
        self.rows = np.concatenate(rows)
        self._tries: dict[bytes, Trie] = {}

    def _prompt_parts(self, task: str) -> list[tuple[list[int], str | None]]:
        return [(self.space.text(lit) if lit else [], name) for lit, name in split_template(TASKS[task][0])]

    def build(self) -> GenerativeBackbone:
        cfg, sp = self.config, self.space
        family = BACKBONES.get(cfg.backbone)
        return family.sequence_model(build_config(family.Config, cfg.backbone_config), sp.vocab_size,
                                     sp.pad_id, sp.eos_id, sp.new_token_ids)

    # ------------------------------------------------------------------ encoding
    def _history_tokens(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, H] item ids (left-padded) -> [B, H * (L + 1)] tokens: each item's tokens (no end
        token) then a separator; padding items give pad tokens."""
        table = self.space.item_table
        toks = table[hist]                                            # [B, H, L]
        if self.space.variable:
            toks = torch.where(toks == self.space.eos_id, torch.full_like(toks, self.space.pad_id), toks)
        sep = torch.where(hist > 0, torch.full_like(hist, self.space.sep_id), torch.full_like(hist, self.space.pad_id))
        return torch.cat([toks, sep.unsqueeze(2)], 2).reshape(hist.shape[0], -1)

    def _wrap(self, task: str, slots: dict[str, torch.Tensor], b: int) -> torch.Tensor:
        """Fill the task's prompt (or no prompt) with the given token blocks [B, *]."""
        if task not in self._prompts:
            return torch.cat([slots[k] for k in ("history", "title", "item") if k in slots], 1)
        parts = []
        for lit, name in self._prompts[task]:
            if lit:
                parts.append(torch.tensor(lit, dtype=torch.long).expand(b, -1))
            if name is not None:
                parts.append(slots[name])
        return torch.cat(parts, 1)

    def encode_inputs(self, task: str, users: np.ndarray, hist: torch.Tensor | None = None,
                      items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(users)
        slots: dict[str, torch.Tensor] = {}
        if hist is not None:
            slots["history"] = self._history_tokens(hist)
        if items is not None:
            if task == "item2index":
                slots["title"] = self.space.title_table[items]
            else:
                slots["item"] = self.space.item_table[items]
        ids = self._wrap(task, slots, b)
        if self.config.user_tokens and hist is not None:
            utok = torch.tensor([self.space.user_token(self.dataset.user_ids[u]) for u in users])
            ids = torch.cat([utok.unsqueeze(1), ids], 1)
        if self.space.variable or items is not None:
            ids = torch.where(ids == self.space.eos_id, torch.full_like(ids, self.space.pad_id), ids)
        ids, mask = compact_left(ids, self.space.pad_id)
        if ids.shape[1] > self.config.max_input_tokens:          # keep the most recent tokens
            ids, mask = ids[:, -self.config.max_input_tokens:], mask[:, -self.config.max_input_tokens:]
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ training
    def _epoch_batches(self, rng) -> list[np.ndarray]:
        """One epoch: each task's rows shuffled and cut into batches of that task alone (one
        optimiser step each), the batches of all tasks in a random order."""
        bs = self.config.batch_size
        out = []
        for t_id in range(len(self.config.tasks)):
            rows = self.rows[self.rows[:, 0] == t_id]
            rows = rows[rng.permutation(len(rows))]
            out += [rows[i:i + bs] for i in range(0, len(rows), bs)]
        return [out[i] for i in rng.permutation(len(out))]

    def n_batches(self) -> int:
        """Optimiser steps per epoch (what the LR schedule counts)."""
        counts = np.bincount(self.rows[:, 0], minlength=len(self.config.tasks))
        return int(sum(-(-int(c) // self.config.batch_size) for c in counts))

    def batches(self, rng):
        s = self.samples
        for rows in self.share(self._epoch_batches(rng), rng):
            task = self.config.tasks[int(rows[0, 0])]
            idx = rows[:, 1]
            if task in ("seq", "seq2title"):
                inputs, mask = self.encode_inputs(task, s["users"][idx], hist=torch.from_numpy(s["hist"][idx]))
                tgt_items = torch.from_numpy(s["targets"][idx])
            else:
                tgt_items = torch.from_numpy(idx + 1)
                inputs, mask = self.encode_inputs(task, idx, items=tgt_items)
            table = self.space.item_table if TASKS[task][1] == "item" else self.space.title_table
            targets = table[tgt_items]
            targets = targets[:, :int((targets != self.space.pad_id).sum(1).max())]
            yield inputs, mask, targets.to(self.device)

    def loss(self, batch) -> torch.Tensor:
        inputs, mask, targets = batch
        return self.module.loss(inputs, mask, targets, self.config.temperature)

    def loss_count(self, batch) -> torch.Tensor:
        """The loss is a mean over target tokens (pads ignored): ``grad_accum`` weighs by them."""
        return (batch[2] != self.space.pad_id).sum()

    def optimizer(self):
        return torch.optim.AdamW([p for p in self.module.parameters() if p.requires_grad],
                                 lr=self.config.lr, weight_decay=self.config.weight_decay)

    def scheduler(self, optimizer, total_steps: int):
        return warmup_decay_scheduler(optimizer, self.config.schedule, self.config.warmup_steps, total_steps)

    def memory_estimate(self, batch, eval_batch, *, e, mask_bytes, autocast):
        """The T5 / decoder-only formulas of :mod:`benchmarks.memory` at this batch's input and
        target lengths; evaluation: the beam search over ``eval_batch`` (``beams`` rows per
        user, targets as long as the longest identifier; BIGRec: one greedy row per user for
        ``max_title_tokens + 1`` steps)."""
        from benchmarks.memory import Stack, causal_activations, kv_cache_causal, kv_cache_t5, t5_activations

        cfg = self.config
        st = Stack.of(self.module)
        inputs, _, targets = batch
        micro = inputs.shape[0]
        s, t = inputs.shape[1], targets.shape[1]
        ev_inputs, _ = self._inputs(eval_batch)
        if cfg.decoding == "beam":
            beams, steps = cfg.beams, self.space.item_table.shape[1]
        else:
            beams, steps = 1, cfg.max_title_tokens + 1
        if st.kind == "t5":
            act = t5_activations(st, micro, s, t, e=e, mask_bytes=mask_bytes,
                                 checkpointing=cfg.gradient_checkpointing, autocast=autocast)
            ev = kv_cache_t5(st, ev_inputs.shape[0], beams, ev_inputs.shape[1], steps, 4 if autocast else e)
        else:
            act = causal_activations(st, micro, s + t, logit_positions=t, e=e,
                                     checkpointing=cfg.gradient_checkpointing, autocast=autocast)
            ev = kv_cache_causal(st, ev_inputs.shape[0], beams, ev_inputs.shape[1], steps, e)
        return {**act, "eval": ev["total"], "formula": st.kind}

    # ------------------------------------------------------------------ inference
    def _trie(self, candidates: torch.Tensor | None) -> Trie:
        return self._trie_and_ties(candidates)[0]

    def _trie_and_ties(self, candidates: torch.Tensor | None) -> tuple[Trie, torch.Tensor | None]:
        """The trie over the candidates' identifiers and, for identifiers with ties, the tie
        table [n_items + 1, G] (row r lists the candidates, ascending ids, 0-padded, that share
        the identifier of r, the lowest id among them, which is the one the trie holds) and
        ``rep_of`` [n_items + 1]: the item the trie holds for each candidate (0: none)."""
        key = b"all" if candidates is None else candidates.cpu().numpy().tobytes()
        if key not in self._tries:
            items = (np.arange(1, self.n_items + 1) if candidates is None
                     else np.nonzero(candidates.cpu().numpy()[1:])[0] + 1)
            ties = None
            if self.identifiers.ties:
                rows = self.space.item_table[torch.as_tensor(items)].numpy()
                _, first, group = np.unique(rows, axis=0, return_index=True, return_inverse=True)
                group = group.reshape(-1)
                reps = items[first]                      # items ascend: the lowest id of each group
                order = np.argsort(group, kind="stable")
                sizes = np.bincount(group)
                ties = torch.zeros((self.n_items + 1, int(sizes.max())), dtype=torch.long)
                slot = np.arange(len(items)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
                ties[torch.as_tensor(reps[group[order]]), torch.as_tensor(slot)] = torch.as_tensor(items[order])
                rep_of = torch.zeros(self.n_items + 1, dtype=torch.long)
                rep_of[torch.as_tensor(items)] = torch.as_tensor(reps[group])
                items = reps
                ties = (ties.to(self.device), rep_of.to(self.device))
            self._tries[key] = (self.space.trie(items).to(self.device), ties)
        return self._tries[key]

    def _inputs(self, batch: UserBatch) -> tuple[torch.Tensor, torch.Tensor]:
        hist = batch.history.cpu()[:, -self.max_history:]
        return self.encode_inputs("seq", batch.users.cpu().numpy(), hist=hist)

    @torch.no_grad()
    def rank(self, batch, k, candidates=None, exclude=None):
        if self.config.decoding == "free-grounded":
            return topk_from_scores(self.grounded_scores(batch), k, candidates, exclude)
        if k > self.config.beams:
            raise ValueError(f"{self.name}: top-{k} needs beams >= {k}, the config has beams = {self.config.beams}")
        inputs, mask = self._inputs(batch)
        trie, ties = self._trie_and_ties(candidates)
        if ties is None:
            # exclusions (the masked protocol's history items) are applied inside the search:
            # the beam stays the configured width (backbones.generation.beam_search)
            return beam_search(self.module, inputs, mask, trie, self.config.beams, k, exclude=exclude)
        members, rep_of = ties
        # an identifier shared by several items is pruned from the search only where ALL of
        # them are excluded; the excluded members of the others are dropped after expansion
        whole = None if exclude is None else fully_excluded_groups(exclude.to(rep_of.device), members, rep_of)
        items, scores = beam_search(self.module, inputs, mask, trie, self.config.beams, exclude=whole)
        grp = members[items]                                          # [B, beams, G]: all tied
        scores = scores.unsqueeze(2).expand_as(grp).masked_fill(grp == 0, float("-inf"))
        items, scores = grp.flatten(1), scores.flatten(1)
        if exclude is not None:
            drop = (items.unsqueeze(2) == exclude.to(items.device).unsqueeze(1)).any(2) & (items > 0)
            scores = scores.masked_fill(drop, float("-inf"))
            items = items.masked_fill(drop, 0)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return items.gather(1, order)[:, :k], scores.gather(1, order)[:, :k]

    @torch.no_grad()
    def score(self, batch: UserBatch) -> torch.Tensor:
        """Exact global ranking scores: log p(item | history) for every item."""
        if self.config.decoding == "free-grounded":
            return self.grounded_scores(batch)
        inputs, mask = self._inputs(batch)
        return global_scores(self.module, inputs, mask, self.space.item_table.to(self.device), self.n_items)

    @torch.no_grad()
    def grounded_scores(self, batch: UserBatch) -> torch.Tensor:
        """BIGRec: generate a title freely (greedy, no constraint), embed it with the text
        encoder, score items by minus the L2 distance to their text embeddings."""
        inputs, mask = self._inputs(batch)
        gen = greedy_decode(self.module, inputs, mask, self.config.max_title_tokens + 1, self.space.eos_id).cpu()
        texts = [self.space.decode(row) for row in gen.tolist()]
        from benchmarks.features import load_text_encoder

        if not hasattr(self, "_encoder"):
            self._encoder = load_text_encoder(self.ctx.features.text_encoder, str(self.device))
            self._item_emb = torch.as_tensor(self.ctx.features.text_embeddings("{title}"), device=self.device)
        q = torch.as_tensor(self._encoder.encode(texts, convert_to_numpy=True), device=self.device)
        return -torch.cdist(q, self._item_emb)
