"""`genrec-bench check`: a run's rows beside a published table and RecBole's parity figures."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.errors import ConfigError
from benchmarks.reference_check import check_rows, load_references, write_check
from benchmarks.rundir import RESULT_COLUMNS


def _results(path: Path, rows: list[tuple]) -> Path:
    """results.csv with test / all rows: (dataset, method, protocol, seed, recall@10, ndcg@10)."""
    out = []
    for d, m, p, seed, r10, n10 in rows:
        for metric, v in (("recall", r10), ("ndcg", n10)):
            out.append({"dataset": d, "method": m, "family": "traditional", "seed": seed, "protocol": p,
                        "split": "test", "subset": "all", "metric": metric, "k": 10, "value": v,
                        "n_users": 100, "config_hash": "abc"})
            out.append({**out[-1], "split": "valid", "value": 0.9})        # never read
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(out, columns=RESULT_COLUMNS).to_csv(path / "results.csv", index=False)
    return path


def _reference(path: Path, rows: list[dict], **over) -> Path:
    doc = {"name": "Paper T1", "source": "A et al., Table 1", "tolerance": 0.10, "check": ["recall@10", "ndcg@10"],
           "rows": rows, **over}
    path.write_text(yaml.safe_dump(doc))
    return path


def _parity(path: Path, rows: list[tuple]) -> Path:
    """parity.csv rows: (dataset, protocol, ours, recbole, recall@10, ndcg@10)."""
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"dataset": d, "protocol": p, "ours": o, "recbole": rb, "recbole_test_recall@10": r,
                   "recbole_test_ndcg@10": n} for d, p, o, rb, r, n in rows]).to_csv(path / "parity.csv", index=False)
    return path


def test_the_shipped_tables_load():
    letter = load_references("letter-table1")
    assert letter.tolerance == 0.10 and letter.check == ["recall@10", "ndcg@10"] and len(letter.rows) == 42
    sasrec = [r for r in letter.rows if r["dataset"] == "beauty" and r["method"] == "SASRec"][0]
    assert sasrec["ours"] == ["sasrec-bce", "sasrec"] and sasrec["recall@10"] == 0.0588
    assert load_references("rpg-table2").name == "RPG Table 2"
    issue20 = load_references("letter-issue20")
    assert issue20.tolerance == 0.05 and issue20.rows[0]["ours"] == ["sasrec"] and issue20.protocol == "unmasked"


def test_a_reference_that_states_its_protocol_is_compared_with_that_protocol_only(tmp_path):
    run = _results(tmp_path / "run", [("beauty", "sasrec", "masked", 0, 0.0940, 0.0572),
                                      ("beauty", "sasrec", "unmasked", 0, 0.0791, 0.0391)])
    df = check_rows([run], [load_references("letter-issue20")], [])
    assert list(df["verdict"]) == ["no reference", "meets LETTER issue 20 (RecBole SASRec-CE)"]
    with pytest.raises(ConfigError, match=r"t\.yaml: protocol: expected the protocol"):
        load_references(_reference(tmp_path / "t.yaml", [{"dataset": "b", "method": "M", "ours": ["m"],
                                                          "recall@10": 0.1}], protocol=3))


def test_each_row_gets_its_gaps_and_one_verdict(tmp_path):
    run = _results(tmp_path / "run", [
        ("beauty", "mf", "masked", 0, 0.0360, 0.0180), ("beauty", "mf", "masked", 1, 0.0380, 0.0186),
        ("beauty", "mf", "unmasked", 0, 0.0276, 0.0114),
        ("beauty", "hgn", "masked", 0, 0.0543, 0.0280),
        ("beauty", "caser", "masked", 0, 0.0487, 0.0249),
        ("beauty", "mostpop", "masked", 0, 0.0115, 0.0055)])
    ref = load_references(_reference(tmp_path / "t1.yaml", [
        {"dataset": "beauty", "method": "MF", "ours": ["mf"], "recall@10": 0.0474, "ndcg@10": 0.0191},
        {"dataset": "beauty", "method": "HGN", "ours": ["hgn"], "recall@10": 0.0512, "ndcg@10": 0.0266},
        {"dataset": "beauty", "method": "Caser", "ours": ["caser"], "recall@10": 0.0347, "ndcg@10": 0.0176}]))
    par = _parity(tmp_path / "par", [("beauty", "masked", "mf", "BPR", 0.0376, 0.0183),
                                     ("beauty", "unmasked", "caser", "Caser", 0.0300, 0.0150),
                                     ("beauty", "masked", "caser", "Caser", 0.0456, 0.0243),
                                     ("beauty", "masked", "hgn", "HGN", 0.0400, 0.0200)])
    df = check_rows([run], [ref], [par])
    mf = df[(df["method"] == "mf") & (df["protocol"] == "masked")].set_index("kind")
    assert mf.loc["published", "seeds"] == 2 and mf.loc["published", "ours_recall@10"] == pytest.approx(0.0370)
    assert mf.loc["published", "gap_recall@10"] == pytest.approx(0.0370 / 0.0474 - 1)
    assert mf.loc["published", "within"] == False            # noqa: E712  -22 % from the paper
    assert mf.loc["implementation", "within"] == True        # noqa: E712  -1.6 % / +0.5 % from RecBole's BPR
    assert set(mf["verdict"]) == {"meets RecBole BPR (par)"}
    assert set(df[(df["method"] == "mf") & (df["protocol"] == "unmasked")]["verdict"]) == {"meets none"}
    # +6 % / +5 % of the paper; +36 % / +40 % of RecBole's HGN: met, and marked far above
    assert set(df[df["method"] == "hgn"]["verdict"]) == {"meets Paper T1; RecBole HGN (par) (far above: more than +25 %)"}
    assert list(df[df["method"] == "hgn"]["far_above"]) == [False, True]
    caser = df[df["method"] == "caser"]                 # only the masked parity row: the same protocol
    assert list(caser["kind"]) == ["published", "implementation"]
    assert caser.iloc[1]["gap_ndcg@10"] == pytest.approx(0.0249 / 0.0243 - 1)      # better than RecBole's
    assert set(caser["verdict"]) == {"meets RecBole Caser (par)"}
    assert set(df[df["method"] == "mostpop"]["verdict"]) == {"no reference"}
    assert list(dict.fromkeys(df["method"])) == ["mf", "hgn", "caser", "mostpop"]   # the run's order
    out, md = write_check([run], [ref], [par], tmp_path / "out")
    assert (out / "check.md").is_file() and len(pd.read_csv(out / "check.csv")) == len(df)
    assert "| beauty | mf | `masked` | 2 | 0.0370 ± 0.0014 | 0.0183 ± 0.0004 | Paper T1: MF |" in md
    assert "yes (±10 %) | meets Paper T1; RecBole HGN (par) (far above" in md and "yes (±5 % or better)" in md
    assert "yes (±5 % or better), far above |" in md


def test_a_cell_given_twice_is_an_error(tmp_path):
    a = _results(tmp_path / "a", [("beauty", "mf", "masked", 0, 0.03, 0.01)])
    b = _results(tmp_path / "b", [("beauty", "mf", "masked", 0, 0.04, 0.02)])
    ref = load_references("letter-table1")
    with pytest.raises(ConfigError, match=r"beauty / mf / protocol masked / seed 0 is in more than one run"):
        check_rows([a, b], [ref], [])


@pytest.mark.parametrize("change, message", [
    ({"tolerance": 10}, r"t\.yaml: tolerance: expected a relative tolerance in \(0, 1\)"),
    ({"check": ["hit@10"]}, r"t\.yaml: check: expected a list of metric@k"),
    ({"extra": 1}, r"t\.yaml: unknown key\(s\) \['extra'\]"),
    ({"rows": [{"dataset": "b", "method": "MF", "recall@10": 0.1}]}, r"rows\[0\]\.ours: expected a non-empty list"),
    ({"rows": [{"dataset": "b", "method": "MF", "ours": ["mf"], "recall@10": "x"}]},
     r"rows\[0\]\.recall@10: expected a figure >= 0"),
    ({"rows": [{"dataset": "b", "method": "MF", "ours": ["mf"], "hr@10": 0.1}]}, r"rows\[0\]: unknown key\(s\) \['hr@10'\]"),
    ({"rows": [{"dataset": "b", "method": "MF", "ours": ["mf"], "recall@20": 0.1}]},
     r"rows\[0\]: none of the checked metrics"),
    ({"rows": [{"dataset": "b", "method": "MF", "ours": ["mf"], "recall@10": 0.1}] * 2},
     r"rows\[1\]: a second row for b / MF"),
])
def test_a_bad_reference_file_names_the_file_the_row_and_what_was_expected(tmp_path, change, message):
    rows = change.pop("rows", [{"dataset": "b", "method": "MF", "ours": ["mf"], "recall@10": 0.1}])
    path = _reference(tmp_path / "t.yaml", rows, **change)
    with pytest.raises(ConfigError, match=message):
        load_references(path)


def test_an_unknown_reference_or_a_missing_parity_table_says_what_exists(tmp_path):
    with pytest.raises(ConfigError, match=r"nope: no such reference file, and not a shipped one \(.*letter-table1"):
        load_references("nope")
    run = _results(tmp_path / "run", [("beauty", "mf", "masked", 0, 0.03, 0.01)])
    with pytest.raises(ConfigError, match=r"parity\.csv: no parity table"):
        check_rows([run], [load_references("letter-table1")], [tmp_path / "nothing"])


def test_the_command_line_writes_and_prints_the_check(tmp_path, capsys):
    from benchmarks.cli import main
    run = _results(tmp_path / "run", [("yelp", "sasrec-bce", "masked", 0, 0.0250, 0.0150)])
    par = _parity(tmp_path / "par", [("yelp", "masked", "sasrec-bce", "SASRec", 0.0240, 0.0140)])
    assert main(["check", str(run), "--parity", str(par)]) == 0         # default: LETTER Table 1
    out = capsys.readouterr().out
    assert "| yelp | sasrec-bce | `masked` | 1 | 0.0250 | 0.0150 | LETTER Table 1: SASRec | 0.0238 | 0.0146 |" in out
    assert (run / "check.md").is_file() and (run / "check.csv").is_file()
