"""Trie, constrained beam search and exact global ranking on tiny random backbones."""

import numpy as np
import pytest
import torch

from backbones.causal import CausalBackbone, CausalBackboneConfig
from backbones.generation import beam_search, global_scores, hf_constrained_generate
from backbones.t5 import T5Backbone, T5BackboneConfig
from backbones.trie import Trie

PAD, EOS, V = 0, 1, 24


def _codes(n_items=30, levels=3, size=4, seed=0):
    """Unique fixed-length codes over tokens 2..; level l uses its own range."""
    rng = np.random.default_rng(seed)
    seen, rows = set(), []
    while len(rows) < n_items:
        row = tuple(int(2 + l * size + rng.integers(size)) for l in range(levels))
        if row not in seen:
            seen.add(row)
            rows.append(row)
    table = np.zeros((n_items + 1, levels), dtype=np.int64)
    table[1:] = rows
    return torch.from_numpy(table)


def _variable(n_items=25, seed=1):
    """Variable-length digit-like ids ending in EOS (no id a prefix of another)."""
    rng = np.random.default_rng(seed)
    seen, rows = set(), []
    while len(rows) < n_items:
        length = int(rng.integers(1, 4))
        row = tuple(int(x) for x in rng.integers(2, 8, size=length)) + (EOS,)
        if row not in seen:
            seen.add(row)
            rows.append(row)
    width = max(len(r) for r in rows)
    table = np.zeros((n_items + 1, width), dtype=np.int64)
    for i, r in enumerate(rows, start=1):
        table[i, :len(r)] = r
    return torch.from_numpy(table)


def _t5(seed=0):
    torch.manual_seed(seed)
    return T5Backbone(V, PAD, EOS, T5BackboneConfig(d_model=16, n_layers=1, n_heads=2, d_kv=8, d_ff=32,
                                                    dropout=0.0)).eval()


def _causal(seed=0):
    torch.manual_seed(seed)
    return CausalBackbone(V, PAD, EOS, CausalBackboneConfig(hidden=16, n_layers=1, n_heads=2, n_kv_heads=1,
                                                            intermediate=32)).eval()


def _inputs(b=4, length=6, side="right", seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (b, length), generator=g)
    mask = torch.ones_like(ids)
    # ragged: row r has r padding positions
    for r in range(b):
        if r:
            if side == "right":
                ids[r, -r:], mask[r, -r:] = PAD, 0
            else:
                ids[r, :r], mask[r, :r] = PAD, 0
    return ids, mask


@pytest.mark.parametrize("table_fn", [_codes, _variable])
def test_trie_walks_exactly_the_item_sequences(table_fn):
    table = table_fn()
    trie = Trie(table[1:], np.arange(1, len(table)), V, PAD)
    for item in range(1, len(table)):
        node = torch.tensor([0])
        for tok in table[item][table[item] != PAD].tolist():
            assert bool(trie.allowed(node)[0, tok])
            node = trie.advance(node, torch.tensor([tok]))
            assert int(node) > 0
        assert int(trie.leaf_item[node]) == item
    # an edge that does not exist
    bad = [t for t in range(V) if not trie.allowed(torch.tensor([0]))[0, t]][0]
    assert int(trie.advance(torch.tensor([0]), torch.tensor([bad]))) == -1


def test_trie_rejects_duplicates_and_prefixes():
    with pytest.raises(ValueError, match="share a token sequence"):
        Trie(torch.tensor([[2, 3], [2, 3]]), [1, 2], V, PAD)
    with pytest.raises(ValueError, match="prefix"):
        Trie(torch.tensor([[2, 0], [2, 3]]), [1, 2], V, PAD)
    # the pair named is the first repeat a walk through the table meets (shallowest first,
    # then in row order), with the earlier item at that node
    with pytest.raises(ValueError, match="items 1 and 3 share"):
        Trie(torch.tensor([[2, 3], [4, 5], [2, 3], [4, 5]]), [1, 2, 3, 4], V, PAD)
    with pytest.raises(ValueError, match="items 3 and 4 share"):
        Trie(torch.tensor([[7, 8, 9], [7, 8, 9], [2, PAD, PAD], [2, PAD, PAD]]), [1, 2, 3, 4], V, PAD)
    with pytest.raises(ValueError, match="pad tokens may only follow"):
        Trie(torch.tensor([[2, PAD, 3], [4, 5, 6]]), [1, 2], V, PAD)


def test_trie_leaves_are_the_items_at_the_end_of_their_paths():
    """The vectorised construction puts each item at the node its sequence ends on (what the
    per-item loop it replaced did), for a large variable-length table."""
    rng = np.random.default_rng(0)
    n = 3000
    lengths = rng.integers(1, 5, n)
    table = np.full((n, 5), PAD)
    for i, ln in enumerate(lengths):          # distinct sequences, none a prefix of another
        table[i, :ln] = rng.integers(2, V, ln)
        table[i, ln] = 1                          # an end token
    table = np.unique(table, axis=0)
    items = rng.permutation(len(table)) + 1
    trie = Trie(table, items, V, PAD)
    ends = (table != PAD).sum(1) - 1
    end_nodes = trie.item_paths[torch.arange(len(table)), torch.from_numpy(ends)]
    assert torch.equal(trie.leaf_item[end_nodes], torch.from_numpy(items))
    assert int((trie.leaf_item > 0).sum()) == len(table)


def _walk_duplicate(table, items):
    """The per-item walk the vectorised construction replaced: depth by depth, rows in order,
    the first item to end on an occupied node -> (the item already there, that item)."""
    owner = {}
    lengths = (table != PAD).sum(1)
    for depth in range(table.shape[1]):
        for i in np.flatnonzero(lengths == depth + 1):
            key = tuple(table[i, :depth + 1])
            if key in owner:
                return owner[key], int(items[i])
            owner[key] = int(items[i])
    return None


@pytest.mark.parametrize("seed", range(6))
def test_trie_names_the_duplicate_the_per_item_walk_meets_first(seed):
    """Random small tables with repeats: the error names the same pair as the walk."""
    rng = np.random.default_rng(seed)
    n = 60
    lengths = rng.integers(1, 4, n)
    table = np.full((n, 4), PAD)
    for i, ln in enumerate(lengths):
        table[i, :ln] = rng.integers(2, 5, ln)     # few tokens: repeats are certain
        table[i, ln] = EOS
    items = rng.permutation(n) + 1
    first, second = _walk_duplicate(table, items)
    with pytest.raises(ValueError, match=f"items {first} and {second} share a token sequence"):
        Trie(table, items, V, PAD)


@pytest.mark.parametrize("backbone_fn,side", [(_t5, "right"), (_causal, "left")])
@pytest.mark.parametrize("table_fn", [_codes, _variable])
def test_beam_search_is_valid_and_distinct(backbone_fn, side, table_fn):
    model, table = backbone_fn(), table_fn()
    inputs, mask = _inputs(side=side)
    trie = Trie(table[1:], np.arange(1, len(table)), V, PAD)
    items, scores = beam_search(model, inputs, mask, trie, beams=8, k=5)
    assert items.shape == (4, 5)
    for row in items.tolist():
        assert all(1 <= i < len(table) for i in row) and len(set(row)) == 5
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.parametrize("backbone_fn,side", [(_t5, "right"), (_causal, "left")])
@pytest.mark.parametrize("table_fn", [_codes, _variable])
def test_full_beam_equals_global_ranking(backbone_fn, side, table_fn):
    model, table = backbone_fn(seed=3), table_fn()
    n = len(table) - 1
    inputs, mask = _inputs(side=side, seed=5)
    trie = Trie(table[1:], np.arange(1, n + 1), V, PAD)
    items, scores = beam_search(model, inputs, mask, trie, beams=n, k=n)
    exact = global_scores(model, inputs, mask, table, n)
    # probabilities over all items sum to 1 under a constrained model? no: but every item's
    # exact log-prob must equal the beam's score for it, and the orders must agree
    top = torch.sort(exact[:, 1:], dim=1, descending=True, stable=True)
    assert torch.equal(items, top.indices + 1)
    assert torch.allclose(scores, top.values, atol=1e-4)


def test_candidate_restriction_and_hf_reference_agree():
    model, table = _t5(seed=7), _codes()
    inputs, mask = _inputs(side="right", seed=9)
    keep = np.arange(1, 31, 2)                       # odd items only
    trie = Trie(table[keep], keep, V, PAD)
    items, scores = beam_search(model, inputs, mask, trie, beams=6)
    assert set(items.flatten().tolist()) <= set(keep.tolist())
    ref_items, ref_scores = hf_constrained_generate(model.model, inputs, mask, trie, beams=6, decoder_start=PAD)
    assert torch.equal(items, ref_items)
    assert torch.allclose(scores, ref_scores.float(), atol=1e-4)


def _history(b, n, m=9, seed=11):
    """[b, m] random excluded item ids per row (0 = none), ragged, with a repeat."""
    g = torch.Generator().manual_seed(seed)
    ex = torch.randint(1, n + 1, (b, m), generator=g)
    for r in range(b):
        ex[r, :r] = 0                      # row r excludes fewer items
    ex[0, -1] = ex[0, -2]                  # a repeated id counts once
    return ex


@pytest.mark.parametrize("table_fn", [_codes, _variable])
def test_trie_exclusion_prunes_exactly_the_fully_excluded_subtrees(table_fn):
    table = table_fn()
    n = len(table) - 1
    trie = Trie(table[1:], np.arange(1, n + 1), V, PAD)
    ex = _history(4, n)
    dead = trie.excluded(ex)
    for row in range(4):
        banned = set(ex[row][ex[row] > 0].tolist())
        for node in range(1, trie.n_nodes):
            under = {int(i) for i in range(1, n + 1)
                     if node in trie.item_paths[trie.row_of_item[i]].tolist()}
            want = under <= banned
            got = bool(trie.is_excluded(dead, torch.tensor([row]), torch.tensor([node]))[0])
            assert got == want, (row, node, under)


@pytest.mark.parametrize("backbone_fn,side", [(_t5, "right"), (_causal, "left")])
@pytest.mark.parametrize("table_fn", [_codes, _variable])
def test_beam_search_with_exclusions(backbone_fn, side, table_fn):
    """Excluded items never appear; the beam keeps its width; with a beam as wide as the
    catalog the result is the exact top-k among the non-excluded items; with no exclusions
    (all zeros) the search is unchanged."""
    model, table = backbone_fn(seed=3), table_fn()
    n = len(table) - 1
    inputs, mask = _inputs(side=side, seed=5)
    trie = Trie(table[1:], np.arange(1, n + 1), V, PAD)
    ex = _history(4, n)
    items, scores = beam_search(model, inputs, mask, trie, beams=8, k=5, exclude=ex)
    for row, banned in zip(items.tolist(), ex.tolist()):
        assert all(i > 0 and i not in banned for i in row) and len(set(row)) == 5
    exact = global_scores(model, inputs, mask, table, n)
    exact[torch.arange(4).unsqueeze(1).expand_as(ex)[ex > 0], ex[ex > 0]] = float("-inf")
    full_items, full_scores = beam_search(model, inputs, mask, trie, beams=n, k=5, exclude=ex)
    top = torch.sort(exact[:, 1:], dim=1, descending=True, stable=True)
    assert torch.equal(full_items, top.indices[:, :5] + 1)
    assert torch.allclose(full_scores, top.values[:, :5], atol=1e-4)
    plain = beam_search(model, inputs, mask, trie, beams=8, k=5)
    zeros = beam_search(model, inputs, mask, trie, beams=8, k=5, exclude=torch.zeros_like(ex))
    assert torch.equal(plain[0], zeros[0]) and torch.equal(plain[1], zeros[1])


def test_beam_search_when_every_item_is_excluded():
    model, table = _t5(), _codes(n_items=6)
    inputs, mask = _inputs(b=2)
    trie = Trie(table[1:], np.arange(1, 7), V, PAD)
    ex = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0]])
    items, scores = beam_search(model, inputs, mask, trie, beams=4, k=4, exclude=ex)
    assert (items[0] == 0).all() and torch.isinf(scores[0]).all()
    assert sorted(items[1, :3].tolist()) == [4, 5, 6] and items[1, 3] == 0
    both = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    items, _ = beam_search(model, inputs, mask, trie, beams=4, k=4, exclude=both)
    assert (items == 0).all()


NEG_INF = float("-inf")


def _csr_beam_search(backbone, inputs: torch.Tensor, input_mask: torch.Tensor,
                trie: Trie, beams: int, k: int | None = None,
                exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The search as written before its host syncs were removed (CSR children, sort and
    bincount per step): the reference the fixed-width search must equal."""
    k = beams if k is None else k
    if k > beams:
        raise ValueError(f"top-{k} needs at least {k} beams, got {beams}")
    b = inputs.shape[0]
    dev = inputs.device
    state = backbone.begin(inputs, input_mask, beams)
    nodes = torch.zeros(b * beams, dtype=torch.long, device=dev)           # all at the root
    scores = torch.full((b * beams,), NEG_INF, device=dev)
    scores[::beams] = 0.0                                                  # one live beam per input
    tokens = None
    pad = backbone.pad_id
    dead = None if exclude is None or not bool((exclude > 0).any()) else trie.excluded(exclude)
    for _ in range(trie.max_len):
        live = scores > NEG_INF
        done = live & trie.is_leaf(nodes.clamp(min=0))
        grow = (live & ~done).nonzero().squeeze(1)
        if not len(grow):
            break
        logp = torch.log_softmax(backbone.step(state, tokens).float(), dim=-1)
        rows, tok, child = trie.children(nodes[grow])
        rows = grow[rows]
        if dead is not None:
            keep = ~trie.is_excluded(dead, rows // beams, child)
            rows, tok, child = rows[keep], tok[keep], child[keep]
        fin = done.nonzero().squeeze(1)        # a finished beam continues only by padding, at no cost
        c_rows = torch.cat([rows, fin])
        c_tok = torch.cat([tok, torch.full_like(fin, pad)])
        c_node = torch.cat([child, nodes[fin]])
        c_score = torch.cat([scores[rows] + logp[rows, tok], scores[fin]])
        if not len(c_rows):                    # every remaining item excluded for every input
            scores = torch.full_like(scores, NEG_INF)
            break
        # each input's candidates into one row of a padded [B, width] matrix, then top-beams
        user = c_rows // beams
        order = torch.argsort(user, stable=True)
        c_rows, c_tok, c_node, c_score, user = c_rows[order], c_tok[order], c_node[order], c_score[order], user[order]
        count = torch.bincount(user, minlength=b)
        pos = torch.arange(len(user), device=dev) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        width = max(int(count.max()), beams)
        table = torch.full((b, width), NEG_INF, device=dev)
        table[user, pos] = c_score
        top, idx = table.topk(beams, dim=1)
        flat = torch.repeat_interleave(torch.cumsum(count, 0) - count, beams).view(b, beams) + idx
        ok = top > NEG_INF
        flat = torch.where(ok, flat, torch.zeros_like(flat)).view(-1)
        src = torch.where(ok.view(-1), c_rows[flat], torch.arange(b * beams, device=dev))
        backbone.reorder(state, src)
        nodes = torch.where(ok.view(-1), c_node[flat], torch.full_like(nodes, -1))
        tokens = torch.where(ok.view(-1), c_tok[flat], torch.full_like(nodes, pad))
        scores = top.reshape(-1)
    items = trie.leaf_item[nodes.clamp(min=0)].view(b, beams)
    scores = scores.view(b, beams)
    items = torch.where(scores > NEG_INF, items, torch.zeros_like(items))
    scores = torch.where(items > 0, scores, torch.full_like(scores, NEG_INF))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return items.gather(1, order)[:, :k], scores.gather(1, order)[:, :k]



@pytest.mark.parametrize("backbone_fn,side", [(_t5, "right"), (_causal, "left")])
@pytest.mark.parametrize("table_fn", [_codes, _variable])
@pytest.mark.parametrize("beams", [3, 8])
def test_fixed_width_search_equals_the_csr_search(backbone_fn, side, table_fn, beams):
    """Removing the per-step host syncs changed no result: the same items and scores as the
    earlier CSR implementation, with and without exclusions, on all items and on a subset."""
    model, table = backbone_fn(seed=beams), table_fn()
    n = len(table) - 1
    inputs, mask = _inputs(side=side, seed=beams + 1)
    for keep in (np.arange(1, n + 1), np.arange(2, n + 1, 3)):
        trie = Trie(table[keep], keep, V, PAD)
        for ex in (None, _history(4, n, seed=beams)):
            got = beam_search(model, inputs, mask, trie, beams, exclude=ex)
            want = _csr_beam_search(model, inputs, mask, trie, beams, exclude=ex)
            assert torch.equal(got[0], want[0])
            assert torch.allclose(got[1], want[1], atol=1e-5)


def test_causal_loss_projects_only_the_target_positions_and_equals_the_full_logits_loss():
    """The loss computes logits for the T positions that predict the targets (an index list):
    the same value as the cross-entropy over the full forward's logits at those positions."""
    from backbones.base import tempered_cross_entropy

    m = _causal()
    ids, mask = _inputs(side="left")
    targets = torch.tensor([[3, 4, EOS], [5, EOS, PAD], [6, 7, EOS], [8, EOS, PAD]])
    full_ids = torch.cat([ids, targets], 1)
    full_mask = torch.cat([mask, (targets != PAD).long()], 1)
    logits = m._forward(full_ids, full_mask, m._positions(full_mask)).logits   # every position
    s, t = ids.shape[1], targets.shape[1]
    want = torch.nn.functional.cross_entropy(logits[:, s - 1:s + t - 1].reshape(-1, V), targets.reshape(-1),
                                             ignore_index=PAD)
    assert torch.allclose(m.loss(ids, mask, targets), want, atol=1e-6)
    for tau in (1.0, 0.5):   # τ = 1 skips the division; other τ divide
        got = tempered_cross_entropy(logits[:, s - 1:s + t - 1], targets, PAD, tau)
        ref = torch.nn.functional.cross_entropy((logits[:, s - 1:s + t - 1] / tau).reshape(-1, V),
                                                targets.reshape(-1), ignore_index=PAD)
        assert torch.equal(got, ref)
