"""The throughput benchmark scripts run end to end on toy data and report what they claim."""

from __future__ import annotations

import json

from benchmarks.data.toy import write_toy_recbole

TINY_T5 = ["--d-model", "16", "--layers", "1", "--heads", "2", "--d-kv", "8", "--d-ff", "32"]


def test_bench_setrec_times_and_counts_both_searches(tmp_path):
    from benchmarks import bench_setrec

    entry = write_toy_recbole(tmp_path / "toy")
    out = tmp_path / "bench.json"
    res = bench_setrec.main(["--dataset", json.dumps(entry), *TINY_T5, "--users", "16", "--batch", "8",
                             "--beams", "4", "--k", "4", "--hf-users", "8", "--cf-source", "sasrec",
                             "--json", str(out)])
    assert json.loads(out.read_text()) == res
    assert res["users"] == 16 and res["setrec"]["users_per_s"] > 0 and res["tiger"]["users_per_s"] > 0
    # equal backbone blocks, so the comparison is like for like
    assert res["setrec"]["block_parameters"] == res["tiger"]["block_parameters"]
    # one pass of 5 queries costs less arithmetic than 4-beam search over 4 code levels, and
    # transformers' generate (encoder output repeated per beam) costs more than our search
    s, t, hf = res["setrec"]["gflop_per_user"], res["tiger"]["gflop_per_user"], res["tiger_hf_generate"]["gflop_per_user"]
    assert 0 < s < t < hf
    assert abs(res["flop_ratio"] - t / s) < 0.05 * t / s + 0.01


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
