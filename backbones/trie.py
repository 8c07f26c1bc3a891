"""A tensorised prefix tree over item token sequences, for constrained decoding.

Nodes are integers (0 = root). The children of every node are stored CSR-style, sorted by
token: ``child_ptr[n] : child_ptr[n + 1]`` indexes ``child_tok`` / ``child_node``. All queries
work on whole batches by tensor ops:

- :meth:`Trie.allowed` — bool [M, V]: the valid next tokens of M nodes (one scatter);
- :meth:`Trie.advance` — the child reached from each node by a token (one ``searchsorted`` over
  the sorted edge keys ``parent * V + token``);
- ``leaf_item[n]`` — the item whose sequence ends at node n (0 for inner nodes);
- :meth:`Trie.child_slots` — the children of M nodes as FIXED-width [M, F] tensors (F = the
  widest fan-out at their depth, ``fanout[d]``), padded and masked: what the beam search
  gathers without learning a data-dependent size on the host;
- :meth:`Trie.excluded` / :meth:`Trie.is_excluded` — per-row exclusion of items (e.g. a
  user's history): the nodes whose every leaf is excluded for that row, so that a search never
  enters a subtree holding only excluded items and never finishes on an excluded item.

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
        real = seqs != pad
        if (real[:, 1:] & ~real[:, :-1]).any():          # a token after a pad
            raise ValueError("pad tokens may only follow an item's tokens")
        n_items = len(seqs)
        node = np.zeros(n_items, dtype=np.int64)           # current node of every sequence
        paths = np.full((n_items, self.max_len), -1, dtype=np.int64)   # node at each depth
        parents, tokens, children = [], [], []
        n_nodes = 1
        leaf_nodes, leaf_rows = [], []
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
            paths[active, depth] = node[active]
            ended = active[lengths[active] == depth + 1]
            leaf_nodes.append(node[ended])
            leaf_rows.append(ended)
        # the widest fan-out among the nodes of each depth: a search whose live beams all sit at
        # depth d gathers that many child slots per beam (fixed width, no host round trip)
        self.fanout = [int(np.unique(p, return_counts=True)[1].max()) for p in parents]
        self.fixed_length = bool((lengths == self.max_len).all())
        parents = np.concatenate(parents)
        tokens = np.concatenate(tokens)
        children = np.concatenate(children)
        leaf_nodes, leaf_rows = np.concatenate(leaf_nodes), np.concatenate(leaf_rows)
        # two sequences ending at one node: name the first repeat in (depth, row) order, and
        # the earlier item at its node, as a walk through the table would
        order = np.argsort(leaf_nodes, kind="stable")
        by_node = leaf_nodes[order]
        repeat = np.flatnonzero(by_node[1:] == by_node[:-1]) + 1
        if len(repeat):
            j = repeat[np.argmin(order[repeat])]
            first = order[np.searchsorted(by_node, by_node[j])]
            raise ValueError(f"items {int(items[leaf_rows[first]])} and {int(items[leaf_rows[order[j]]])} "
                             "share a token sequence")
        leaf = np.zeros(n_nodes, dtype=np.int64)
        leaf[leaf_nodes] = items[leaf_rows]
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
        # per-row exclusion: each item's path of nodes (row of the trie's item list), the
        # trie row of every item id (-1: not in this trie), the number of leaves under a node
        self.item_paths = torch.from_numpy(paths)
        row_of_item = np.full(int(items.max(initial=0)) + 1, -1, dtype=np.int64)
        row_of_item[items] = np.arange(n_items)
        self.row_of_item = torch.from_numpy(row_of_item)
        self.n_leaves = torch.from_numpy(np.bincount(paths[paths >= 0], minlength=n_nodes))

    def to(self, device: torch.device | str) -> "Trie":
        for name in ("edge_key", "child_tok", "child_node", "child_ptr", "leaf_item", "item_paths",
                     "row_of_item", "n_leaves"):
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

    def child_slots(self, nodes: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, child nodes, valid) [M, width]: slot j of row m is the j-th child of
        ``nodes[m]`` (token order); slots beyond its child count are invalid (token 0, node 0).
        ``width`` must be at least the nodes' fan-out (``fanout[depth]``). Nodes < 0 have none."""
        safe = nodes.clamp(min=0)
        start = self.child_ptr[safe]
        count = torch.where(nodes >= 0, self.child_ptr[safe + 1] - start, torch.zeros_like(start))
        slot = torch.arange(width, device=nodes.device)
        valid = slot.unsqueeze(0) < count.unsqueeze(1)
        edge = (start.unsqueeze(1) + slot.unsqueeze(0)).clamp(max=max(len(self.child_tok) - 1, 0))
        tok = torch.where(valid, self.child_tok[edge], torch.zeros_like(edge))
        child = torch.where(valid, self.child_node[edge], torch.zeros_like(edge))
        return tok, child, valid

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

    def excluded(self, exclude: torch.Tensor) -> torch.Tensor:
        """Sorted keys ``row * n_nodes + node`` of the nodes that hold ONLY excluded items for
        that row (an excluded leaf, and every ancestor all of whose leaves are excluded).

        ``exclude``: [B, M] item ids per row, 0 = none; ids not in this trie (e.g. outside a
        candidate subset) and repeats are ignored."""
        dev = self.item_paths.device
        exclude = exclude.to(dev)
        ids = exclude.clamp(min=0, max=len(self.row_of_item) - 1)
        trie_row = self.row_of_item[ids]
        valid = (exclude > 0) & (exclude < len(self.row_of_item)) & (trie_row >= 0)
        b, _ = valid.nonzero(as_tuple=True)
        pair = torch.unique(b * self.n_items + trie_row[valid])        # distinct (row, item)
        b, r = pair // self.n_items, pair % self.n_items
        path = self.item_paths[r]                                     # [P, max_len]
        on = path >= 0
        keys = (b.unsqueeze(1) * self.n_nodes + path)[on]
        keys, counts = torch.unique(keys, return_counts=True)          # sorted
        return keys[counts == self.n_leaves[keys % self.n_nodes]]

    def is_excluded(self, dead: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """bool per (row, node) pair: is the node in ``dead`` (from :meth:`excluded`) for that row."""
        if not len(dead):
            return torch.zeros(len(nodes), dtype=torch.bool, device=nodes.device)
        key = rows * self.n_nodes + nodes
        pos = torch.searchsorted(dead, key).clamp(max=len(dead) - 1)
        return dead[pos] == key
