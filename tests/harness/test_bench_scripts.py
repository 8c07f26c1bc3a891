"""The throughput benchmark scripts run end to end on toy data and report what they claim."""

from __future__ import annotations

import json

import pytest

from benchmarks.data.toy import write_toy_recbole

TINY_T5 = ["--d-model", "16", "--layers", "1", "--heads", "2", "--d-kv", "8", "--d-ff", "32"]


def test_bench_setrec_times_and_counts_both_searches(tmp_path):
    from benchmarks import bench_setrec

    entry = write_toy_recbole(tmp_path / "toy")
    out = tmp_path / "bench.json"
    res = bench_setrec.main(["--dataset", json.dumps(entry), *TINY_T5, "--users", "16", "--batch", "8",
                             "--beams", "4", "--k", "4", "--hf-users", "8", "--cf-source", "sasrec",
                             "--count-all", "--json", str(out)])
    assert json.loads(out.read_text()) == res
    assert res["users"] == 16 and res["setrec"]["users_per_s"] > 0 and res["tiger"]["users_per_s"] > 0
    assert res["counted_users"] == 16                   # --count-all: both timed batches counted
    # equal backbone blocks, so the comparison is like for like
    assert res["setrec"]["block_parameters"] == res["tiger"]["block_parameters"]
    # one pass of 5 queries costs less arithmetic than 4-beam search over 4 code levels, and
    # transformers' generate (encoder output repeated per beam) costs more than our search
    s, t, hf = res["setrec"]["gflop_per_user"], res["tiger"]["gflop_per_user"], res["tiger_hf_generate"]["gflop_per_user"]
    assert 0 < s < t < hf
    assert abs(res["flop_ratio"] - t / s) < 0.05 * t / s + 0.01
    ph = res["tiger"]["phases"]
    # the search's phases add up to its counted arithmetic over the same users: the encoder,
    # then one decoder pass per code level (the first from the start token)
    assert ph["users"] == 16 and ph["gflop_per_user"] == pytest.approx(t, rel=1e-3)
    assert ph["prefill"]["head_gflop_per_user"] == 0 and all(s_["gflop_per_user"] > 0 for s_ in ph["per_step"])


def test_bench_setrec_causal_shape_times_lcrec_and_setrec_and_splits_the_search(tmp_path, capsys):
    """--backbone causal --shape: LC-Rec's 4-code beam search against SETRec-causal on one
    decoder-only shape (Qwen2.5-0.5B's config, shrunk to a tiny width here)."""
    from benchmarks import bench_setrec

    entry = write_toy_recbole(tmp_path / "toy")
    tiny = {"hidden": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "intermediate": 64, "text_vocab": 3000}
    res = bench_setrec.main(["--dataset", json.dumps(entry), "--backbone", "causal", "--shape", "qwen2.5-0.5b",
                             "--backbone-config", json.dumps(tiny),
                             "--identifier-config", json.dumps({"epochs": 3, "hidden": [32], "codebook_size": 8}),
                             "--users", "16", "--batch", "8", "--beams", "4", "--k", "4", "--n-sem", "2",
                             "--cf-source", "sasrec"])
    lc, st = res["lcrec"], res["setrec"]
    assert res["users"] == 16 and lc["users_per_s"] > 0 and st["users_per_s"] > 0
    assert lc["method"] == "lcrec" and st["method"] == "setrec-causal" and st["n_query"] == 3
    assert res["model"]["rope_theta"] == 1e6 and res["model"]["n_layers"] == 1     # the shape, then the overrides
    assert lc["block_parameters"] == st["block_parameters"]                          # one shape on both sides
    assert lc["vocab_rows"] == 3000 + 1 + 4 * 8            # text rows + separator + 4 levels of 8 codes
    ph = lc["phases"]
    # the phases add up to the whole search's counted arithmetic: prefill, then one step per
    # code level, the first free (the prefill gave its distribution)
    assert len(ph["per_step"]) == 4 and ph["users"] == 8 and res["counted_users"] == 8   # the first batch
    assert ph["per_step"][0]["gflop_per_user"] == 0
    assert ph["gflop_per_user"] == pytest.approx(lc["gflop_per_user"], rel=1e-3)
    assert ph["prefill"]["gflop_per_user"] + ph["steps"]["gflop_per_user"] == pytest.approx(ph["gflop_per_user"], rel=1e-3)
    # every step runs the output head over all 3,033 rows for 4 beams; the prefill for 1 position
    head = 2 * 32 * 3033 / 1e9
    assert ph["per_step"][1]["head_gflop_per_user"] == pytest.approx(4 * head, rel=1e-3)
    assert ph["prefill"]["head_gflop_per_user"] == pytest.approx(head, rel=1e-3)
    assert 0 < st["grounding_gflop_per_user"] < st["gflop_per_user"]
    assert res["flop_ratio"] == pytest.approx(lc["gflop_per_user"] / st["gflop_per_user"], rel=0.02)
    for bad, says in ((["--shape", "qwen2.5-0.5b"], "needs --backbone causal"),            # a T5 has no shape
                      (["--backbone", "causal", "--shape", "qwen9"], "unknown causal backbone shape 'qwen9'"),
                      (["--backbone", "causal", "--d-model", "64"], "are T5 sizes")):
        with pytest.raises(SystemExit):
            bench_setrec.main(["--dataset", json.dumps(entry), *bad])
        assert says in capsys.readouterr().err


def test_bench_generation_times_masked_search_at_the_configured_beam(tmp_path):
    from benchmarks import bench_generation

    entry = write_toy_recbole(tmp_path / "toy")
    res = bench_generation.main(["--dataset", json.dumps(entry), "--identifier", "id", *TINY_T5,
                                 "--users", "12", "--batch", "6", "--beams", "10"])
    assert res["users"] == 12
    assert res["masked_users_per_s"] > 0 and res["masked_slowdown"] > 0
    # the old way widened the beam by the longest history (toy histories are 7-14 items)
    assert res["widened_beams_mean"] > res["beams"]


def test_bench_rpg_times_and_counts_three_decodings_on_two_catalogue_sizes(tmp_path):
    from benchmarks import bench_rpg

    entry = write_toy_recbole(tmp_path / "toy")
    out = tmp_path / "bench.json"
    res = bench_rpg.main(["--dataset", json.dumps(entry), *TINY_T5, "--users", "12", "--batch", "6",
                          "--beams", "5", "--k", "5", "--scale", "3", "--features", "random",
                          "--rpg-layers", "1", "--rpg-heads", "2", "--rpg-inner", "32", "--digits", "4",
                          "--pca-dim", "8", "--opq-iters", "2", "--graph", "6/8/2", "--n-sem", "2",
                          "--json", str(out)])
    assert json.loads(out.read_text()) == res
    small, large = res["catalogues"]
    assert large["n_items"] == 3 * small["n_items"] and large["synthetic"] and not small["synthetic"]
    for cat in (small, large):
        for entry_ in (cat["rpg"]["graph"], cat["rpg"]["exact"], cat["tiger"], cat["setrec"]):
            assert entry_["users_per_s"] > 0 and entry_["gflop_per_user"] > 0
        assert cat["tiger"]["block_parameters"] == cat["setrec"]["block_parameters"]   # the same T5
        assert 0 < cat["rpg"]["graph"]["visited_share"] <= 1
        assert cat["rpg"]["graph"]["scored_per_user"] == 6 * 8 * 2
    # RPG's arithmetic is its network's, whatever the catalogue; SETRec's grows with the items
    assert small["rpg"]["graph"]["gflop_per_user"] == large["rpg"]["graph"]["gflop_per_user"]
    assert large["setrec"]["gflop_per_user"] > small["setrec"]["gflop_per_user"]


def test_bench_scale_runs_every_stage_and_fits_slopes(tmp_path):
    """The scale benchmark end to end at two toy catalog sizes, in this process: every stage
    measured (RPG's hook reports 'not available' where its module is absent), the table, the
    csv and the figure written, a slope fitted per stage."""
    import pandas as pd

    from benchmarks import bench_scale

    out = tmp_path / "scale"
    budget = ["--in-process", "--output", str(out), "--users", "16", "--beam-users", "8", "--global-users", "2",
              "--batch", "8", "--codes-steps", "20", "--d-model", "16", "--layers", "1", "--heads", "2",
              "--d-kv", "8", "--d-ff", "32"]
    res = bench_scale.main(["--sizes", "200,2000", *budget])
    df = pd.read_csv(out / "scale.csv")
    assert set(df["n_items"]) == {200, 2000}
    assert set(df["stage"]) == set(bench_scale.STAGES)
    rpg = df["stage"] == "rpg_graph_decoding"
    import importlib.util
    if importlib.util.find_spec("benchmarks.methods.rpg") is None:
        assert (df.loc[rpg, "status"] == "not available").all()
    ok = df[~rpg]
    assert (ok["status"] == "ok").all(), ok[ok["status"] != "ok"]
    assert (ok["seconds"] > 0).all() and (ok["peak_mb"] >= 0).all()
    # the catalogs hold what they were asked for, and the preprocessing keeps every item
    assert {n: c["stats"]["dataset_items"] for n, c in res["catalogs"].items()} == {200: 200, 2000: 2000}
    slopes = {r["stage"]: r for r in res["slopes"]}
    assert slopes["trie"]["slope_seconds"] is not None and slopes["metrics"]["slope_peak_mb"] is not None
    table = (out / "table.md").read_text()
    assert "| p5cid | all |" in table and "slope s" in table
    assert (out / "scale.png").stat().st_size > 0 and (out / "scale.pdf").stat().st_size > 0
    # --resume keeps every record and runs only the pairs it lacks (here: the trie at N = 500)
    more = bench_scale.main(["--sizes", "500", "--stages", "trie", "--resume", *budget])
    assert more["sizes"] == [200, 500, 2000]
    assert more["records"][:len(res["records"])] == res["records"]
    assert [(r["n_items"], r["stage"]) for r in more["records"][len(res["records"]):]] == [(500, "trie")]
    # another budget is refused, naming what differs
    with pytest.raises(SystemExit, match="another budget.*beams"):
        bench_scale.main(["--sizes", "500", "--stages", "trie", "--resume", "--beams", "5", *budget])

