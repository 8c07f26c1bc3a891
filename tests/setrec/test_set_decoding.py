"""SETRec's backbone parts on tiny random models: order-agnostic items, independent queries,
the decoder-only sparse mask, padding, grounding."""

import pytest
import torch

from backbones.causal import CausalBackboneConfig, SetCausalLM
from backbones.set_decoding import causal_set_mask, ground, set_layout
from backbones.t5 import SetT5, T5BackboneConfig

D, N_TOK = 16, 3
PREFIX, SUFFIX = torch.tensor([1, 2, 3]), torch.tensor([4])


def _model(kind, **kw):
    torch.manual_seed(0)
    if kind == "t5":
        cfg = T5BackboneConfig(d_model=D, n_layers=2, n_heads=2, d_kv=8, d_ff=32, dropout=0.0)
        return SetT5(cfg, N_TOK, 6, **kw).eval()
    cfg = CausalBackboneConfig(hidden=D, n_layers=2, n_heads=2, n_kv_heads=1, intermediate=32)
    return SetCausalLM(cfg, N_TOK, 6, **kw).eval()


def _history(b=3, h=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(b, h, N_TOK, D, generator=g)
    mask = torch.ones(b, h, dtype=torch.bool)
    mask[0, :2] = False                      # left padding
    if b > 1:
        mask[1, :1] = False
    return items, mask


def _shuffle_inside_items(items, seed=2):
    """A different permutation of the n tokens of every item."""
    g = torch.Generator().manual_seed(seed)
    b, h, n, _ = items.shape
    out = items.clone()
    for i in range(b):
        for j in range(h):
            perm = torch.randperm(n, generator=g)
            while n > 1 and torch.equal(perm, torch.arange(n)):
                perm = torch.randperm(n, generator=g)
            out[i, j] = items[i, j, perm]
    return out


@pytest.mark.parametrize("kind", ["t5", "causal"])
@torch.no_grad()
def test_permuting_tokens_inside_an_item_leaves_every_score_unchanged(kind):
    model = _model(kind)
    items, mask = _history()
    table = torch.randn(N_TOK, 7, D)                 # token q of 7 items
    base = model(items, mask, PREFIX, SUFFIX)
    perm = model(_shuffle_inside_items(items), mask, PREFIX, SUFFIX)
    assert torch.allclose(base, perm, atol=1e-5)
    assert torch.allclose(ground(base, table), ground(perm, table), atol=1e-4)
    # the check has teeth: without shared positions (T5) / the sparse mask (causal) order leaks in
    leaky = _model(kind, shared_positions=False) if kind == "t5" else _model(kind, sparse_mask=False)
    a = leaky(items, mask, PREFIX, SUFFIX)
    b = leaky(_shuffle_inside_items(items), mask, PREFIX, SUFFIX)
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("kind", ["t5", "causal"])
@torch.no_grad()
def test_queries_do_not_see_each_other(kind):
    model = _model(kind)
    items, mask = _history()
    base = model(items, mask, PREFIX, SUFFIX)
    model.queries[1] += torch.randn(D)
    moved = model(items, mask, PREFIX, SUFFIX)
    others = [0, 2]
    assert torch.allclose(base[:, others], moved[:, others], atol=1e-5)
    assert not torch.allclose(base[:, 1], moved[:, 1], atol=1e-4)
    # without the sparse mask the queries do interact
    full = _model(kind, sparse_mask=False)
    base = full(items, mask, PREFIX, SUFFIX)
    full.queries[1] += torch.randn(D)
    assert not torch.allclose(base[:, [0, 2] if kind == "t5" else [2]],
                              full(items, mask, PREFIX, SUFFIX)[:, [0, 2] if kind == "t5" else [2]], atol=1e-4)


@torch.no_grad()
def test_decoder_only_mask_is_causal_across_items_and_bidirectional_inside():
    model = _model("causal")
    items, mask = _history(b=1, h=4)
    mask[:] = True
    p, n = len(PREFIX), N_TOK
    _, hidden = model(items, mask, PREFIX, SUFFIX, return_hidden=True)
    # a later item changes: every earlier token (prompt and items 0..2) keeps its hidden state
    later = items.clone()
    later[0, 3] += torch.randn(n, D)
    _, h2 = model(later, mask, PREFIX, SUFFIX, return_hidden=True)
    cut = p + 3 * n
    assert torch.allclose(hidden[:, :cut], h2[:, :cut], atol=1e-5)
    assert not torch.allclose(hidden[:, cut:], h2[:, cut:], atol=1e-4)
    # inside an item: changing its LAST token changes its FIRST token's state (bidirectional)
    inner = items.clone()
    inner[0, 1, n - 1] += torch.randn(D)
    _, h3 = model(inner, mask, PREFIX, SUFFIX, return_hidden=True)
    first_of_item1 = p + 1 * n
    assert not torch.allclose(hidden[:, first_of_item1], h3[:, first_of_item1], atol=1e-4)
    assert torch.allclose(hidden[:, :first_of_item1], h3[:, :first_of_item1], atol=1e-5)
    # the authors' variant ("self"): a token sees only itself inside its item
    selfish = _model("causal", intra_item="self")
    _, a = selfish(items, mask, PREFIX, SUFFIX, return_hidden=True)
    _, b = selfish(inner, mask, PREFIX, SUFFIX, return_hidden=True)
    assert torch.allclose(a[:, first_of_item1], b[:, first_of_item1], atol=1e-5)


def test_sparse_mask_by_hand():
    items = torch.zeros(1, 2, 2, 4)
    lay = set_layout(items, torch.tensor([[False, True]]), torch.zeros(1, 4), None, torch.zeros(2, 4))
    # tokens: prompt | item0 (pad) x2 | item1 x2 | query x2
    assert lay.positions.tolist() == [[0, 0, 0, 1, 1, 2, 2]]
    allowed = causal_set_mask(lay)[0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],   # padding rows see only real earlier tokens and themselves
        [1, 0, 1, 0, 0, 0, 0],
        [1, 0, 0, 1, 1, 0, 0],   # item 1: both of its tokens
        [1, 0, 0, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 1, 0],   # queries: the history and themselves
        [1, 0, 0, 1, 1, 0, 1],
    ]


@pytest.mark.parametrize("kind", ["t5", "causal"])
@torch.no_grad()
def test_left_padding_changes_nothing(kind):
    model = _model(kind)
    items, mask = _history(b=1, h=3)
    mask[:] = True
    padded = torch.cat([torch.randn(1, 2, N_TOK, D), items], 1)
    pmask = torch.cat([torch.zeros(1, 2, dtype=torch.bool), mask], 1)
    assert torch.allclose(model(items, mask, PREFIX, SUFFIX), model(padded, pmask, PREFIX, SUFFIX), atol=1e-5)


def test_ground_is_one_batched_product():
    out, table = torch.randn(4, 3, 5), torch.randn(3, 6, 5)
    scores = ground(out, table)
    assert scores.shape == (3, 4, 6)
    for q in range(3):
        assert torch.allclose(scores[q], out[:, q] @ table[q].T, atol=1e-5)


def test_lora_trains_only_adapters_and_queries():
    torch.manual_seed(0)
    cfg = CausalBackboneConfig(family="llama", hidden=D, n_layers=1, n_heads=2, n_kv_heads=1, intermediate=32,
                               lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.02)
    model = SetCausalLM(cfg, N_TOK, 6)
    items, mask = _history()
    model(items, mask, PREFIX, SUFFIX).sum().backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "queries" in trainable
    assert all(n == "queries" or "lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable if "lora_" in n} == {"q_proj", "v_proj"}
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
