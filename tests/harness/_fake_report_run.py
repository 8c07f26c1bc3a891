"""A run folder for report tests, written without training (tests/harness/test_report_html.py).

It imports only what benchmarks/report.py has had since before report.html, so the golden
report.md of the fake run can be written by an older checkout of the suite as well:
``PYTHONPATH=<checkout>:. python -c "from tests.harness._fake_report_run import fake_run; ..."``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.rundir import RESULT_COLUMNS, RunDir


def fake_run(root: Path) -> None:
    """A run folder written without training (every figure from a seeded generator): two
    datasets (one with cold items), four methods of three families, two seeds, per-user arrays
    (so the paired tests and daggers run), popularity groups, beam vs global, throughput, run
    records and a fit-log note: every section of report.md."""
    rng = np.random.default_rng(7)
    fams = {"mostpop": "traditional", "sasrec": "traditional", "tiger": "codebook", "setrec-t5": "set"}
    skill = {"mostpop": 0.02, "sasrec": 0.09, "tiger": 0.05, "setrec-t5": 0.06}
    run, rows = RunDir(root), []
    for d, n_users in (("toy-a", 60), ("toy-cold", 40)):
        for m, fam in fams.items():
            for seed in (0, 1):
                h = f"{m[:3]}{seed}{d[-1]}"
                cell = run.cell(d, m, seed, h)
                arrays = {("test", "all", "users"): np.arange(n_users)}

                def row(split, subset, metric, k, value, n=n_users):
                    rows.append({"dataset": d, "method": m, "family": fam, "seed": seed, "protocol": "masked",
                                 "split": split, "subset": subset, "metric": metric, "k": k,
                                 "value": round(float(value), 6), "n_users": n, "config_hash": h})

                for split in ("test", "valid"):
                    for metric in ("recall", "ndcg"):
                        for k in (5, 10):
                            per = np.clip(skill[m] * (k / 5) + rng.normal(0, 0.04, n_users), 0, 1).round(4)
                            row(split, "all", metric, k, per.mean())
                            if split == "test":
                                arrays[("test", "all", f"{metric}@{k}")] = per
                if d == "toy-cold":
                    for subset, n in (("warm", 30), ("cold", 10)):
                        for metric in ("recall", "ndcg"):
                            row("test", subset, metric, 10, rng.uniform(0, 0.2), n)
                for g in (1, 2):
                    row("test", f"pop{g}", "ndcg", 10, rng.uniform(0, 0.1), n_users // 2)
                    row("test", f"pop{g}", "share_generated", 10, 0.8 if g == 1 else 0.2)
                    row("test", f"pop{g}", "share_targets", 10, 0.6 if g == 1 else 0.4)
                if fam in ("codebook", "set"):
                    for subset in ("beam", "global"):
                        for metric in ("recall", "ndcg"):
                            row("test", subset, metric, 10, rng.uniform(0, 0.1))
                row("test", "all", "users_per_s", 10, {"traditional": 5e4, "codebook": 700, "set": 1800}[fam]
                    * rng.uniform(0.9, 1.1))
                row("test", "all", "ms_per_user", 10, rng.uniform(0.01, 2))
                cell.write_per_user(arrays)
                cell.write_run({"versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6"},
                                "device": "cpu (x86_64, 2 cores, 1 torch threads)", "deterministic_kernels": True,
                                "git_commit": "0123abc", "cold_items": None if m == "mostpop" else "content",
                                "protocol": {"label": "masked", "reason": "no target in its user's history"},
                                "dataset": {"info": {"source": "tests/harness/_fake_report_run.py"}}})
                cell.write_train_log({"epochs": [], **({"notes": "CF and semantic tokens"} if m == "setrec-t5" else {})})
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(root / "results.csv", index=False)
    run.write_matrix({"name": "fake", "methods": [{"name": m} for m in ("sasrec", "mostpop", "setrec-t5", "tiger")]})
