"""A tensorised prefix tree over item token sequences, for constrained decoding.

Nodes are integers (0 = root). The children of every node are stored CSR-style, sorted by
token: ``child_ptr[n] : child_ptr[n + 1]`` indexes ``child_tok`` / ``child_node``. All queries
work on whole batches by tensor ops:

- :meth:`Trie.allowed` — bool [M, V]: the valid next tokens of M nodes (one scatter);
- :meth:`Trie.advance` — the child reached from each node by a token (one ``searchsorted`` over
  the sorted edge keys ``parent * V + token``);
- ``leaf_item[n]`` — the item whose sequence ends at node n (0 for inner nodes).

Sequences are rows of an int64 [N, L] table padded with ``pad`` beyond each item's length; two
items may not share a full sequence, and no sequence may be a proper prefix of another (the
harness appends an end token to variable-length identifiers to guarantee it).
"""

from __future__ import annotations

import numpy as np
import torch


class Trie:
    def __init__(self, sequences: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor,
                 vocab_size: int, pad: int):
        seqs = torch.as_tensor(sequences, dtype=torch.long).cpu().numpy()
        items = torch.as_tensor(items, dtype=torch.long).cpu().numpy()
        if seqs.ndim != 2 or len(seqs) != len(items):
            raise ValueError("sequences must be [N, L] with one item id per row")
        self.vocab_size = int(vocab_size)
        self.pad = int(pad)
        self.max_len = int(seqs.shape[1])
        lengths = (seqs != pad).sum(1)
        if (lengths == 0).any():
            raise ValueError("every item needs at least one token")
        if not all(((seqs[i, :lengths[i]] != pad).all() and (seqs[i, lengths[i]:] == pad).all())
                   for i in range(len(seqs))):
            raise ValueError("pad tokens may only follow an item's tokens")
        n_items = len(seqs)
        node = np.zeros(n_items, dtype=np.int64)           # current node of every sequence
        parents, tokens, children = [], [], []
        n_nodes = 1
        leaf_item = {}
        for depth in range(self.max_len):
            active = np.nonzero(lengths > depth)[0]
            if not len(active):
                break
            keys = node[active] * self.vocab_size + seqs[active, depth]
            uniq, inverse = np.unique(keys, return_inverse=True)
            new_ids = np.arange(n_nodes, n_nodes + len(uniq))
            n_nodes += len(uniq)
            parents.append(uniq // self.vocab_size)
            tokens.append(uniq % self.vocab_size)
            children.append(new_ids)
            node[active] = new_ids[inverse]
            ended = active[lengths[active] == depth + 1]
            for i in ended:
                if int(node[i]) in leaf_item:
                    raise ValueError(f"items {leaf_item[int(node[i])]} and {int(items[i])} share a token sequence")
                leaf_item[int(node[i])] = int(items[i])
        parents = np.concatenate(parents)
        tokens = np.concatenate(tokens)
        children = np.concatenate(children)
        leaf = np.zeros(n_nodes, dtype=np.int64)
        for n, it in leaf_item.items():
            leaf[n] = it
        inner = np.zeros(n_nodes, dtype=bool)
        inner[parents] = True
        if (inner & (leaf > 0)).any():
            raise ValueError("an identifier is a proper prefix of another: add an end token")
        order = np.lexsort((tokens, parents))
        self.edge_key = torch.from_numpy(parents[order] * self.vocab_size + tokens[order])
        self.child_tok = torch.from_numpy(tokens[order])
        self.child_node = torch.from_numpy(children[order])
        self.child_ptr = torch.from_numpy(np.searchsorted(parents[order], np.arange(n_nodes + 1)))
        self.leaf_item = torch.from_numpy(leaf)
        self.n_nodes = n_nodes
        self.n_items = n_items

    def to(self, device: torch.device | str) -> "Trie":
        for name in ("edge_key", "child_tok", "child_node", "child_ptr", "leaf_item"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.leaf_item[nodes] > 0

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every child edge of M nodes as flat tensors (row in ``nodes``, token, child node)."""
        start = self.child_ptr[nodes]
        count = self.child_ptr[nodes + 1] - start
        total = int(count.sum())
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), count)
        offset = torch.arange(total, device=nodes.device) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count)
        edge = start[rows] + offset
        return rows, self.child_tok[edge], self.child_node[edge]

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        """bool [M, V]: tokens that extend each node's prefix towards some item."""
        mask = torch.zeros(len(nodes), self.vocab_size, dtype=torch.bool, device=nodes.device)
        rows, tokens, _ = self.children(nodes)
        mask[rows, tokens] = True
        return mask

    def advance(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node along each token; -1 where that edge does not exist."""
        key = nodes * self.vocab_size + tokens
        pos = torch.searchsorted(self.edge_key, key).clamp(max=len(self.edge_key) - 1)
        found = self.edge_key[pos] == key
        return torch.where(found, self.child_node[pos], torch.full_like(nodes, -1))
