"""The report names each decoding method's own decoding (beam search; RPG's graph walk) in the
decoded-vs-global table, and compares set generation only with the beam searches."""

import pandas as pd

from benchmarks.report import decoding_names, write_report
from benchmarks.rundir import RESULT_COLUMNS, RunDir


def _rows(method, family, h, values):
    out = []
    for (subset, metric), v in values.items():
        out.append({"dataset": "d", "method": method, "family": family, "seed": 0, "split": "test",
                    "subset": subset, "metric": metric, "k": 10, "value": v, "n_users": 50, "config_hash": h})
    return out


def test_decoded_vs_global_rows_say_graph_for_rpg_and_beam_for_the_rest(tmp_path):
    ranked = {("all", "recall"): 0.1, ("all", "ndcg"): 0.05, ("beam", "recall"): 0.1, ("beam", "ndcg"): 0.05,
              ("global", "recall"): 0.12, ("global", "ndcg"): 0.06}
    rows = (_rows("tiger", "codebook", "h1", {**ranked, ("all", "users_per_s"): 100.0, ("all", "ms_per_user"): 10.0})
            + _rows("rpg", "codebook", "h2", {**ranked, ("beam", "recall"): 0.11, ("all", "users_per_s"): 900.0,
                                                ("all", "ms_per_user"): 1.1})
            + _rows("setrec-t5", "set", "h3", {("all", "recall"): 0.1, ("all", "ndcg"): 0.05,
                                                ("all", "users_per_s"): 400.0, ("all", "ms_per_user"): 2.5}))
    for r in rows:
        r["protocol"] = "masked"
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(tmp_path / "results.csv", index=False)
    run = RunDir(tmp_path)
    for method, h, log in (("tiger", "h1", {"epochs": []}), ("rpg", "h2", {"epochs": [], "decoding": "graph"}),
                           ("setrec-t5", "h3", {"epochs": []})):
        run.cell("d", method, 0, h).write_train_log(log)
    assert decoding_names(run.cells_of(run.results())) == {("d", "rpg"): "graph"}
    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| d | rpg | graph | 0.1100 | 0.1200 | 0.0500 | 0.0600 | 50 |" in text
    assert "| d | tiger | beam | 0.1000 | 0.1200 | 0.0500 | 0.0600 | 50 |" in text
    # SETRec's speed-up is over the beam search only, not over RPG's graph walk
    assert "| d | setrec-t5 | tiger | 4.0x |" in text
    assert "| d | setrec-t5 | rpg |" not in text
