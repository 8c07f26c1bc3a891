"""SETRec's set tokenizer: every item becomes an order-agnostic SET of continuous tokens.

Lin et al., "Order-agnostic Identifier for Large Language Model-based Generative
Recommendation" (SIGIR 2025), Section 4.1:

- CF token (``n_cf = 1``): the item's embedding from a pre-trained CF model (SASRec, 64-d as in
  the paper's code), FROZEN, projected to the backbone's hidden size by one trainable linear
  layer;
- semantic tokens (``n_sem``, 4 by default for T5): the item's text embedding goes through an MLP
  autoencoder (encoder in_dim -> 512 -> 256 -> 128 -> hidden * n_sem, decoder mirrored;
  Xavier-normal weights, zero biases, ReLU between layers and none after the last); the
  encoder's output cut into ``n_sem`` vectors of the hidden size are the semantic tokens. No
  quantisation: the tokens are continuous and train jointly with the recommender, whose loss
  adds alpha x the autoencoder's reconstruction MSE.

Not an :class:`identifiers.base.IdentifierScheme`. That contract is a ``build()`` that returns
each item's identifier as a tuple of token STRINGS, computed once before the recommender and
cached; SETRec's tokens are real vectors that change with every training step of the
recommender, so they cannot be written as strings nor built ahead. This module is therefore a
torch module used by the ``setrec-*`` methods (:mod:`benchmarks.methods.setrec`), not a
registered scheme.

Ablations: no CF token (``cf_table=None``), no semantic tokens (``n_sem=0`` or
``text_table=None``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from identifiers.quantizers import mlp


class SemanticAutoencoder(nn.Module):
    """x [*, in_dim] -> (z [*, out_dim], x_hat [*, in_dim]); see the module docstring."""

    def __init__(self, in_dim: int, out_dim: int, layers: tuple[int, ...] = (512, 256, 128), dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, *layers, out_dim]
        self.encoder = mlp(dims, dropout)
        self.decoder = mlp(dims[::-1], dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)

    def reconstruction_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error between ``x`` and its reconstruction (over every element)."""
        return F.mse_loss(self(x)[1], x)


class SetTokenizer(nn.Module):
    """Every item's set of ``n_tokens = n_cf + n_sem`` vectors of size ``hidden``.

    ``cf_table`` [n_items + 1, cf_dim] (row 0 = padding; None: no CF token) is a frozen buffer;
    ``text_table`` [n_items + 1, text_dim] (None or ``n_sem = 0``: no semantic tokens) is the
    autoencoder's input. Token 0 is the CF token (when present), tokens n_cf .. are the semantic
    tokens in the order the autoencoder's output is cut.
    """

    def __init__(self, hidden: int, *, cf_table=None, text_table=None, n_sem: int = 4,
                 ae_layers: tuple[int, ...] = (512, 256, 128), ae_dropout: float = 0.0):
        super().__init__()
        self.hidden = hidden
        self.n_cf = 0 if cf_table is None else 1
        self.n_sem = 0 if text_table is None else int(n_sem)
        if self.n_cf + self.n_sem == 0:
            raise ValueError("a set identifier needs at least one token (a CF table or n_sem > 0 with item text)")
        if self.n_cf:
            cf = torch.as_tensor(np.asarray(cf_table, dtype=np.float32))
            self.register_buffer("cf_table", cf, persistent=False)
            self.cf_proj = nn.Linear(cf.shape[1], hidden)
        if self.n_sem:
            text = torch.as_tensor(np.asarray(text_table, dtype=np.float32))
            self.register_buffer("text_table", text, persistent=False)
            self.ae = SemanticAutoencoder(text.shape[1], hidden * self.n_sem, tuple(ae_layers), ae_dropout)
        self.n_items = (cf.shape[0] if self.n_cf else text.shape[0]) - 1

    @property
    def n_tokens(self) -> int:
        return self.n_cf + self.n_sem

    def forward(self, recon_items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens [n_items + 1, n_tokens, hidden] with row 0 zeros, reconstruction MSE).

        The reconstruction loss is taken over ``recon_items`` (item ids, repeats count; None:
        every item); 0 without semantic tokens or with no items given."""
        parts = []
        loss = torch.zeros((), device=self._device())
        if self.n_cf:
            parts.append(self.cf_proj(self.cf_table[1:]).unsqueeze(1))
        if self.n_sem:
            x = self.text_table[1:]
            z = self.ae.encoder(x)
            parts.append(z.view(x.shape[0], self.n_sem, self.hidden))
            if recon_items is None:
                loss = F.mse_loss(self.ae.decoder(z), x)
            elif recon_items.numel():
                # the MSE over the given items, repeats counted: each distinct item decoded once
                # and weighted by its count (the same value and gradient, far fewer rows)
                idx, counts = torch.unique(recon_items.reshape(-1) - 1, return_counts=True)
                err = (self.ae.decoder(z[idx]) - x[idx]).pow(2).mean(1)
                loss = (err * counts).sum() / counts.sum()
        tokens = torch.cat(parts, 1)
        pad = torch.zeros((1, *tokens.shape[1:]), dtype=tokens.dtype, device=tokens.device)
        return torch.cat([pad, tokens], 0), loss

    def _device(self) -> torch.device:
        return next(self.parameters()).device
