"""RPG's network: a small GPT-2 over items given as pooled code embeddings, m parallel heads, and
the per-digit log-probability table that scores every item exactly (Hou et al., KDD 2025;
facebookresearch/RPG_KDD2025 ``genrec/models/RPG/model.py``).

- Token table: one embedding row per (digit j, code c), token id 1 + offset_j + c (0 =
  padding), GPT-2's own ``wte``. An item's input vector is the mean (``pooling: max``: the
  element-wise max) of its m token rows; the padding item is token 0's row (masked anyway).
- Backbone: transformers' ``GPT2Model`` built from a config (no checkpoint), fed
  ``inputs_embeds``; learned absolute positions counted from the first real item of the
  (left-padded) history, as the official code's right-padded rows count them; embedding
  dropout and attention dropout ``embd_dropout`` / ``attn_dropout``, residual dropout
  ``resid_dropout``, LayerNorm eps ``layer_norm_eps``, GPT-2's initialisation.
- Heads: g_j(h) = h + SiLU(W_j h + b_j), W_j zero-initialised (an identity map at the start;
  b_j keeps ``nn.Linear``'s default initialisation, as in the official ResBlock); the m heads
  are one batched product (:class:`ParallelHeads`).
- Tied output: logit(j, c) = cos(g_j(h), e_{j,c}) / τ over digit j's rows of the same table.
- Loss: the cross-entropy over digit j's codes of the target item's code, averaged over the
  digits (and over the supervised positions).
- Scores: L[j, c] = log_softmax over c of digit j's logits (:meth:`RPGNetwork.log_probs`, one
  row of width Σ_j K_j per user); item i's score is mean_j L[j, c_j(i)]
  (:func:`code_scores`: a gather of m entries per item). The paper sums; the ranking is the
  same. Items with the same code tuple get the same score (RPG keeps ties).

Digits may have different sizes (``sizes``): OPQ's are all 256, other level-structured codes
(RQ-KMeans with ties) work as well.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ParallelHeads(nn.Module):
    """The m residual heads g_j(h) = h + SiLU(W_j h + b_j), all at once: ``weight`` [m, d, d]
    (W_j, zero-initialised: every head starts as the identity map) and ``bias`` [m, d]
    (``nn.Linear``'s default initialisation, as the official ResBlock's). One batched product
    instead of m small ones; the same function as m separate ResBlocks."""

    def __init__(self, m: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(m, hidden, hidden))
        bound = 1.0 / math.sqrt(hidden)
        self.bias = nn.Parameter(torch.empty(m, hidden).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[P, d] -> [P, m, d]."""
        return h.unsqueeze(1) + F.silu(torch.einsum("pi,joi->pjo", h, self.weight) + self.bias)


def flat_codes(codes: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """[N, m] within-digit codes -> [N, m] column indices into a per-user row of width Σ sizes
    (digit j's codes start at Σ_{j' < j} sizes[j'])."""
    offsets = torch.tensor([0] + list(sizes[:-1]), dtype=torch.long, device=codes.device).cumsum(0)
    return codes + offsets


def code_scores(logp: torch.Tensor, flat: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores mean_j L[j, c_j(i)] of ``items`` [B, X] (per user) or [X] (the same for all
    users) from ``logp`` [B, Σ K] and ``flat`` [N + 1, m] (:func:`flat_codes`, row = item id)
    -> [B, X]: one gather per digit, summed digit after digit and divided by m. Every scorer
    (exact and graph) uses this one, so both give bit-equal scores for the same item."""
    columns = flat.T.contiguous()                                       # [m, N + 1]: one digit a row
    flat_items = items.reshape(-1)
    acc = None
    for j in range(columns.shape[0]):
        col = columns[j].index_select(0, flat_items)
        part = logp.index_select(1, col) if items.dim() == 1 else logp.gather(1, col.view_as(items))
        acc = part if acc is None else acc.add_(part)
    return acc / columns.shape[0]


def exact_scores(logp: torch.Tensor, flat: torch.Tensor, n_items: int, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """[B, n_items + 1] exact scores of every item (column 0, padding, -inf), in item chunks
    of at most ``chunk_elems`` scores."""
    b = logp.shape[0]
    out = torch.full((b, n_items + 1), float("-inf"), device=logp.device)
    step = max(1, chunk_elems // max(b, 1))
    for s in range(1, n_items + 1, step):
        items = torch.arange(s, min(s + step, n_items + 1), device=logp.device)
        out[:, s:s + len(items)] = code_scores(logp, flat, items)
    return out


class RPGNetwork(nn.Module):
    """GPT-2 + m heads over code-pooled items (see the module docstring).

    ``codes`` [N + 1, m]: each item's within-digit codes (row 0, padding, ignored);
    ``sizes``: codes per digit."""

    def __init__(self, codes: torch.Tensor, sizes: list[int], *, hidden: int, n_layers: int, n_heads: int,
                 inner: int, max_len: int, activation: str = "gelu_new", embd_dropout: float = 0.5,
                 attn_dropout: float = 0.5, resid_dropout: float = 0.0, layer_norm_eps: float = 1e-12,
                 init_range: float = 0.02, temperature: float = 0.07, pooling: str = "mean"):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        if hidden % n_heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by n_heads ({n_heads})")
        if codes.shape[1] != len(sizes):
            raise ValueError(f"codes have {codes.shape[1]} digits, sizes {len(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.m = len(self.sizes)
        self.temperature = float(temperature)
        self.pooling = pooling
        flat = flat_codes(codes.long(), self.sizes)
        tokens = flat + 1
        tokens[0] = 0                                                    # the padding item
        self.register_buffer("codes", codes.long().clone(), persistent=False)
        self.register_buffer("flat", flat, persistent=False)
        self.register_buffer("tokens", tokens, persistent=False)
        config = GPT2Config(vocab_size=1 + sum(self.sizes), n_positions=max_len, n_embd=hidden,
                            n_layer=n_layers, n_head=n_heads, n_inner=inner, activation_function=activation,
                            resid_pdrop=resid_dropout, embd_pdrop=embd_dropout, attn_pdrop=attn_dropout,
                            layer_norm_epsilon=layer_norm_eps, initializer_range=init_range,
                            bos_token_id=None, eos_token_id=None, pad_token_id=None)
        self.gpt2 = GPT2Model(config)
        self.heads = ParallelHeads(self.m, hidden)
        # digit j's codes in a [m, K_max] grid (K_max = the largest digit): where each flat
        # column sits, and which grid cells are real codes (digits of different sizes)
        k_max = max(self.sizes)
        grid = torch.arange(k_max).unsqueeze(0) < torch.tensor(self.sizes).unsqueeze(1)      # [m, K_max]
        self.register_buffer("valid", grid, persistent=False)
        self.register_buffer("grid_index", torch.nonzero(grid.flatten()).flatten(), persistent=False)

    @property
    def token_table(self) -> torch.Tensor:
        """The code rows [Σ K, d] of the token table (row 0, padding, excluded)."""
        return self.gpt2.wte.weight[1:]

    def digit_tables(self) -> list[torch.Tensor]:
        """Digit j's code embeddings [K_j, d], j = 0 .. m-1."""
        return list(torch.split(self.token_table, self.sizes, dim=0))

    def item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """[...] item ids -> [..., d] pooled code embeddings (one embedding bag per item: the
        [..., m, d] rows are never materialised)."""
        bags = self.tokens[items.reshape(-1)]                            # [n, m]
        pooled = F.embedding_bag(bags, self.gpt2.wte.weight, mode=self.pooling)
        return pooled.view(*items.shape, -1)

    def hidden_states(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded item ids -> last-layer states [B, L, d] (causal)."""
        mask = (items > 0).long()
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        return self.gpt2(inputs_embeds=self.item_inputs(items), attention_mask=mask,
                         position_ids=pos).last_hidden_state

    def _grid_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[P, d] states -> [P, m, K_max] logits cos(g_j(h), e_{j,c}) / τ (-inf off the grid)."""
        table = F.normalize(self.token_table, dim=-1)
        k_max = max(self.sizes)
        grid = table.new_zeros((self.m * k_max, table.shape[1]))
        grid[self.grid_index] = table
        grid = grid.view(self.m, k_max, -1)                                  # [m, K_max, d]
        states = F.normalize(self.heads(h), dim=-1)                          # [P, m, d]
        logits = torch.einsum("pjd,jkd->pjk", states, grid) / self.temperature
        return logits.masked_fill(~self.valid, float("-inf")) if not bool(self.valid.all()) else logits

    def _flat(self, grid: torch.Tensor) -> torch.Tensor:
        """[P, m, K_max] -> [P, Σ K] (each digit's real codes, digit after digit)."""
        return grid.reshape(grid.shape[0], -1).index_select(1, self.grid_index)

    def digit_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[P, d] states -> [P, Σ K] logits cos(g_j(h), e_{j,c}) / τ, digit after digit."""
        return self._flat(self._grid_logits(h))

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-digit cross-entropy of the target items' codes, averaged over digits and
        positions: ``h`` [P, d] states, ``targets`` [P] item ids."""
        logits = self._grid_logits(h).float()                               # [P, m, K_max]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.codes[targets].reshape(-1))

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """[B, d] last states -> [B, Σ K]: log_softmax over each digit's codes (the table L)."""
        return self._flat(F.log_softmax(self._grid_logits(h).float(), -1))

    def user_log_probs(self, history: torch.Tensor) -> torch.Tensor:
        """[B, H] left-padded histories -> [B, Σ K] per-digit log-probabilities of the next item."""
        return self.log_probs(self.hidden_states(history)[:, -1])
