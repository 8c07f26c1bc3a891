"""RPG (rpg.md "What to verify"): the exact scorer against a per-item loop, graph decoding with
k = N against the exact top-K, digit-permutation invariance, the beam's mean score never
dropping, the initial per-digit cross-entropy, exclusions inside the walk, the chunked graph,
the training-row layout and the fit log."""

import math

import numpy as np
import pytest
import torch

from backbones.graph_decoding import graph_walk, neighbour_graph, random_starts
from backbones.rpg import RPGNetwork, code_scores, exact_scores, flat_codes
from benchmarks.config import build_config
from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig, Evaluator, user_batch
from benchmarks.methods.rpg import RPG, training_rows
from benchmarks.protocol import Context, topk_from_scores
from benchmarks.registry import IDENTIFIERS
from benchmarks.rundir import CellDir
from tests.identifiers.test_codebook_schemes import ToyFeatures


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    ds = toy_dataset()
    return ds, ToyFeatures(ds, tmp_path_factory.mktemp("features"), progress=False)


def _net(n_items=40, m=4, k=16, hidden=32, seed=0, **kw):
    torch.manual_seed(seed)
    codes = torch.randint(k, (n_items + 1, m))
    return RPGNetwork(codes, [k] * m, hidden=hidden, n_layers=1, n_heads=2, inner=64, max_len=20, **kw).eval()


def _model(toy, tmp_path, protocol="auto", **over):
    ds, store = toy
    cfg = build_config(RPG.Config, {**RPG.smoke_config, **over})
    model = RPG(cfg, Context(ds, store, "cpu", 0, cache=tmp_path / "cache", progress=False))
    log = model.fit(Evaluator(ds, EvalConfig(ks=(5, 10), protocol=protocol)).validation_ndcg)
    return model, log


def test_exact_scorer_equals_a_per_item_loop_and_sum_ranks_like_mean():
    net = _net()
    hist = torch.randint(1, 41, (3, 6))
    with torch.no_grad():
        logp = net.user_log_probs(hist)
    scores = exact_scores(logp, net.flat, 40, chunk_elems=50)          # several item chunks
    table = [torch.split(row, net.sizes) for row in logp]              # per user: m rows of K
    for u in range(3):
        assert scores[u, 0] == float("-inf")
        for item in range(1, 41):
            by_hand = sum(float(table[u][j][net.codes[item, j]]) for j in range(net.m)) / net.m
            assert float(scores[u, item]) == pytest.approx(by_hand, abs=1e-5)
    # the per-digit table is normalised: every digit's probabilities sum to one
    for row in table[0]:
        assert float(row.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    total = scores[:, 1:] * net.m                                      # the paper's sum
    assert torch.equal(topk_from_scores(scores.clone(), 10)[0],
                       topk_from_scores(torch.cat([scores[:, :1], total], 1), 10)[0])


def test_scores_are_invariant_to_a_consistent_digit_permutation():
    """Digits carry no order: permuting them in the codes, the token table and the heads
    together leaves every score unchanged."""
    net = _net(m=5)
    torch.nn.init.normal_(net.heads.weight, std=0.1)   # non-zero head weights: the heads differ
    perm = [3, 0, 4, 1, 2]
    other = RPGNetwork(net.codes[:, perm], [net.sizes[j] for j in perm], hidden=32, n_layers=1, n_heads=2,
                       inner=64, max_len=20).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    k = net.sizes[0]
    rows = state["gpt2.wte.weight"]
    state["gpt2.wte.weight"] = torch.cat([rows[:1]] + [rows[1 + j * k:1 + (j + 1) * k] for j in perm])
    state["heads.weight"], state["heads.bias"] = state["heads.weight"][perm], state["heads.bias"][perm]
    other.load_state_dict(state)
    hist = torch.randint(1, 41, (4, 7))
    with torch.no_grad():
        a = exact_scores(net.user_log_probs(hist), net.flat, 40)
        b = exact_scores(other.user_log_probs(hist), other.flat, 40)
        unpermuted = RPGNetwork(net.codes[:, perm], net.sizes, hidden=32, n_layers=1, n_heads=2, inner=64,
                                max_len=20).eval()
        unpermuted.load_state_dict(net.state_dict())        # codes permuted, nothing else
        c = exact_scores(unpermuted.user_log_probs(hist), unpermuted.flat, 40)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_initial_per_digit_cross_entropy_is_about_ln_256():
    """Zero-initialised heads and GPT-2's N(0, 0.02) code rows: the cosine logits / τ are about
    N(0, 1 / (τ² d)), so the CE is ln 256 + 1 / (2 τ² d) (5.77 at the paper's d 448, τ 0.07),
    and exactly ln 256 as τ grows."""
    torch.manual_seed(0)
    codes = torch.randint(256, (301, 8))
    for tau, expected in ((0.07, math.log(256) + 1 / (2 * 0.07 ** 2 * 448)), (1e3, math.log(256))):
        net = RPGNetwork(codes, [256] * 8, hidden=448, n_layers=2, n_heads=4, inner=1024, max_len=20,
                         temperature=tau).eval()
        with torch.no_grad():
            h = net.hidden_states(torch.randint(1, 301, (32, 20)))
            ce = float(net.loss(h.reshape(-1, 448), torch.randint(1, 301, (640,))))
        assert ce == pytest.approx(expected, abs=0.05)
        assert abs(ce - math.log(256)) < 0.3


def test_chunked_graph_equals_the_dense_top_k_with_the_item_itself_first():
    net = _net(n_items=30, m=3, k=4)                   # 4 codes per digit: many shared tuples
    tables = [t.detach() for t in net.digit_tables()]
    adj = neighbour_graph(tables, net.codes, 6, chunk=4)
    assert adj.shape == (31, 6) and not adj[0].any() and torch.equal(adj[1:, 0], torch.arange(1, 31))
    e = [torch.nn.functional.normalize(t, dim=-1) for t in tables]
    dense = sum(0.5 * (1 + e[j][net.codes[1:, j]] @ e[j][net.codes[1:, j]].T) for j in range(3)) / 3
    for i in range(30):
        got = dense[i, adj[i + 1, 1:] - 1]
        others = torch.cat([dense[i, :i], dense[i, i + 1:]])
        assert torch.allclose(got, others.topk(5).values, atol=1e-6)  # the 5 best others, best first
    assert torch.equal(neighbour_graph(tables, net.codes, 6, chunk=1000), adj)


def test_graph_walk_with_every_item_as_neighbour_is_the_exact_top_k():
    net = _net(n_items=50, m=4, k=8)
    logp = net.user_log_probs(torch.randint(1, 51, (6, 5)))
    adj = neighbour_graph([t.detach() for t in net.digit_tables()], net.codes, 50)
    starts = random_starts(np.arange(6), 0, 12, 50)
    items, scores, _ = graph_walk(logp, net.flat, adj, starts, 1)
    exact_items, exact_vals = topk_from_scores(exact_scores(logp, net.flat, 50), 12)
    assert torch.equal(items, exact_items) and torch.equal(scores, exact_vals)


def test_the_beam_mean_score_never_drops_and_visits_are_counted():
    net = _net(n_items=200, m=4, k=8)
    logp = net.user_log_probs(torch.randint(1, 201, (16, 5)))
    adj = neighbour_graph([t.detach() for t in net.digit_tables()], net.codes, 5)
    starts = random_starts(np.arange(16), 3, 8, 200)
    assert all(len(set(r)) == 8 for r in starts.tolist())            # distinct starts
    items, scores, info = graph_walk(logp, net.flat, adj, starts, 6, count_visited=True)
    means = info["beam_means"]
    assert means.shape == (7, 16) and bool((means[1:] >= means[:-1] - 1e-6).all())
    assert bool((means[-1] > means[0]).any())
    assert bool((info["visited"] >= 8).all()) and bool((info["visited"] <= 8 + 6 * 8 * 5).all())
    assert torch.allclose(scores, code_scores(logp, net.flat, items))   # the scores are exact
    assert all(s == sorted(s, reverse=True) for s in scores.tolist())


def test_random_starts_depend_on_seed_and_user_not_on_the_batch():
    a = random_starts(np.array([3, 4, 5]), 0, 5, 100)
    b = random_starts(np.array([5, 9]), 0, 5, 100)
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(random_starts(np.array([3]), 1, 5, 100)[0], a[0])
    allowed = torch.zeros((1, 101), dtype=torch.bool)
    allowed[0, [7, 8, 9]] = True
    assert random_starts(np.array([3]), 0, 5, 100, allowed)[0].tolist()[3:] == [0, 0]
    assert sorted(random_starts(np.array([3]), 0, 5, 100, allowed)[0].tolist()[:3]) == [7, 8, 9]


def test_training_rows_layout():
    seqs = [np.array([1, 2, 3, 4, 5, 6, 7]), np.array([8, 9]), np.array([5])]
    inputs, labels = training_rows(seqs, 4)
    # first window of 5 items: 4 inputs, every position supervised; then one row per later target
    assert inputs.tolist() == [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6], [0, 0, 0, 8]]
    assert labels.tolist() == [[2, 3, 4, 5], [0, 0, 0, 6], [0, 0, 0, 7], [0, 0, 0, 9]]
    # every training target exactly once, with the longest history the cap allows
    assert sorted(labels[labels > 0].tolist()) == [2, 3, 4, 5, 6, 7, 9]
    inputs, labels = training_rows(seqs, 4, last_n=3)            # the last 3 targets: 5, 6, 7
    assert inputs.tolist() == [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6], [0, 0, 0, 8]]
    assert labels.tolist() == [[0, 0, 0, 5], [0, 0, 0, 6], [0, 0, 0, 7], [0, 0, 0, 9]]


def test_fit_validates_exactly_then_decodes_by_graph_and_logs_it(toy, tmp_path):
    model, log = _model(toy, tmp_path, graph_grid=[[10, 4, 1], [10, 12, 2]])
    ds, _ = toy
    g = log["rpg"]["graph"]
    assert log["decoding"] == "graph" and set(g["valid_ndcg10_by_setting"]) == {"10/4/1", "10/12/2"}
    best = max(g["valid_ndcg10_by_setting"], key=g["valid_ndcg10_by_setting"].get)
    assert f"{g['beams']}/{g['edges']}/{g['steps']}" == best and g["chosen_on"] == "validation"
    assert 0 < g["visited_share"] <= 1 and g["edges_built"] == 12
    assert log["rpg"]["shared_code_share_before"] == log["rpg"]["shared_code_share_after"]
    assert "ties kept" in log["notes"] and "graph decoding" in log["notes"]
    assert g["valid_ndcg10_exact"] == log["best_valid_ndcg10"]
    cell = CellDir(tmp_path / "cell")
    model.write_artefacts(cell)                                             # the cell's code usage
    assert cell.identifier_stats() is not None and cell.identifiers(ds.item_ids).tokens == model.identifiers.tokens
    # rank walks the graph now; with every item as a neighbour it is the exact top-K
    model.setting = (10, ds.n_items, 1)
    users = np.arange(ds.n_users)
    walked, _ = model.rank(user_batch(ds, "test", users), 10)
    exact, _ = topk_from_scores(model.score(user_batch(ds, "test", users)), 10)
    assert torch.equal(walked, exact)


def test_exclusions_stay_out_of_the_walk_at_full_beam_width(toy, tmp_path, monkeypatch):
    from benchmarks.methods import rpg as rpg_module

    model, _ = _model(toy, tmp_path)
    ds, _ = toy
    seen = []
    real = rpg_module.graph_walk

    def spy(logp, flat, adjacency, starts, steps, allowed=None, **kw):
        seen.append((starts.shape[1], allowed))
        return real(logp, flat, adjacency, starts, steps, allowed, **kw)
    monkeypatch.setattr(rpg_module, "graph_walk", spy)
    users = np.arange(ds.n_users)
    hist = torch.from_numpy(ds.history_matrix("test", users))
    items, scores = model.rank(user_batch(ds, "test", users), 10, exclude=hist)
    assert seen[0][0] == model.config.beams                       # the beam keeps its width
    for row, banned in zip(items.tolist(), hist.tolist()):
        assert not set(row) & (set(banned) - {0}) and 0 not in row
    assert not bool(seen[0][1][torch.arange(len(users)).unsqueeze(1), hist].any())
    cand = torch.zeros(ds.n_items + 1, dtype=torch.bool)
    cand[5:15] = True
    items, _ = model.rank(user_batch(ds, "test", users), 5, candidates=cand, exclude=hist)
    assert all(5 <= i < 15 or i == 0 for row in items.tolist() for i in row)
    with pytest.raises(ValueError, match="beams"):
        model.rank(user_batch(ds, "test", users[:2]), 20)


def test_the_walk_excludes_what_the_evaluation_protocol_says(toy, tmp_path, monkeypatch):
    """Through the evaluator: under ``masked`` the walk's allowed items are every item but the
    user's whole (uncapped) history, and none of those is returned; under ``unmasked`` the walk
    gets no mask and history items do come back (the official code's ranking)."""
    from benchmarks.methods import rpg as rpg_module

    model, _ = _model(toy, tmp_path)
    ds, _ = toy
    seen = []
    real = rpg_module.graph_walk

    def spy(logp, flat, adjacency, starts, steps, allowed=None, **kw):
        seen.append(allowed)
        return real(logp, flat, adjacency, starts, steps, allowed, **kw)
    monkeypatch.setattr(rpg_module, "graph_walk", spy)
    users = ds.eval_users("test")
    hist = ds.history("test", users)
    ranked = {}
    for protocol in ("masked", "unmasked"):
        seen.clear()
        ev = Evaluator(ds, EvalConfig(ks=(5, 10), protocol=protocol, batch_size=16))
        assert ev.protocol.name == protocol
        ranked[protocol], _ = ev.rank(model, "test", users)
        if protocol == "unmasked":
            assert seen and all(a is None for a in seen)
            continue
        allowed = torch.cat(seen)
        assert allowed.shape == (len(users), ds.n_items + 1) and not allowed[:, 0].any()
        for row, h, ok in zip(ranked[protocol].tolist(), hist, allowed):
            assert not set(row) & set(h.tolist()) and 0 not in row
            assert not ok[torch.from_numpy(h)].any() and int(ok.sum()) == ds.n_items - len(set(h.tolist()))
    assert any(set(row) & set(h.tolist()) for row, h in zip(ranked["unmasked"].tolist(), hist))


@pytest.mark.parametrize("over, key", [({"beams": 0}, "beams"), ({"pooling": "sum"}, "pooling"),
                                       ({"validate_with": "beam"}, "validate_with"),
                                       ({"hidden": 30, "n_heads": 4}, "hidden"),
                                       ({"graph_grid": [[10, 0, 2]]}, "graph_grid"),
                                       ({"identifier": "textual", "identifier_config": {}}, "identifier")])
def test_bad_config_names_the_key(toy, tmp_path, over, key):
    ds, store = toy
    with pytest.raises(ConfigError, match=key):
        RPG(build_config(RPG.Config, {**RPG.smoke_config, **over}),
            Context(ds, store, "cpu", 0, progress=False))


def test_rpg_runs_on_rq_kmeans_ties_codes(toy, tmp_path):
    """Any level-structured codes with one code per digit work (the paper's "RQ instead of OPQ"
    ablation): digits sized by the scheme's levels."""
    model, log = _model(toy, tmp_path, identifier="rq-kmeans",
                        identifier_config={**IDENTIFIERS.get("rq-kmeans").smoke_config, "collision": "ties"})
    assert log["rpg"]["digits"] == 3 and model.sizes == [8, 8, 8]
    ds, _ = toy
    items, _ = model.rank(user_batch(ds, "test", np.arange(10)), 10)
    assert all(len(set(r)) == 10 for r in items.tolist())
    assert torch.equal(flat_codes(torch.tensor([[1, 2, 3]]), [8, 8, 8]), torch.tensor([[1, 10, 19]]))


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_an_item_enters_as_the_pool_of_its_code_rows(pooling):
    net = _net(pooling=pooling)
    items = torch.randint(0, 41, (3, 5))
    rows = net.gpt2.wte(net.tokens[items])                         # [3, 5, m, d]
    expected = rows.mean(-2) if pooling == "mean" else rows.amax(-2)
    assert torch.allclose(net.item_inputs(items), expected, atol=1e-6)
    # token id of code c at digit j: 1 + 16 j + c (0 = padding, the padding item's tokens)
    assert torch.equal(net.tokens[7], net.codes[7] + torch.arange(4) * 16 + 1) and not net.tokens[0].any()


def test_stable_top_is_a_stable_descending_sort_cut_at_k():
    from backbones.graph_decoding import stable_top

    gen = torch.Generator().manual_seed(0)
    s = torch.randint(0, 6, (50, 40), generator=gen).float()          # many ties
    s[s == 0] = float("-inf")
    for k in (1, 5, 17, 40):
        expected = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(stable_top(s, k), expected)
