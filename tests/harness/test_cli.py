"""The command line: data stats, plugins, run + report, and one-line errors."""

import json

import yaml

from benchmarks.cli import main
from benchmarks.data.toy import toy_raw, write_toy_recbole


def _ml100k_copy(folder):
    """A local 'ml-100k' folder in the publisher's format, built from the toy data."""
    folder.mkdir(parents=True)
    raw = toy_raw()
    users = {u: n + 1 for n, u in enumerate(dict.fromkeys(raw.interactions["user"]))}
    (folder / "u.data").write_text("".join(f"{users[u]}\t{i}\t4\t{int(t)}\n"
                                           for u, i, t in raw.interactions.itertuples(index=False)))
    flags = "|".join(["0"] * 19)
    (folder / "u.item").write_text("".join(f"{i}|{r.title} (1995)|01-Jan-1995||http://x|{flags}\n"
                                           for i, r in raw.items.iterrows()))


def test_data_stats_uses_a_local_copy(tmp_path, monkeypatch, capsys):
    _ml100k_copy(tmp_path / "data" / "ml-100k")
    monkeypatch.setenv("GENREC_BENCH_DATA", str(tmp_path / "data"))
    assert main(["data", "stats", "ml-100k", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 60 and stats["items"] == 30 and stats["split"] == "loo"
    assert stats["source"].startswith("local copy")
    for key in ("interactions", "mean_seq_len", "density", "valid_users", "test_users"):
        assert key in stats


def test_plugins_lists_the_baselines(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "sasrec" in out and "baselines.mf" in out


def test_plugins_and_results_read_a_methods_family_from_one_place(capsys, tmp_path):
    """A generative method's family is its identifier scheme's: plugins lists p5-id as ID,
    p5-tid and bigrec as textual, the same groups the runner writes into the result rows."""
    from benchmarks.matrix import expand, parse_matrix
    from benchmarks.registry import IDENTIFIERS, METHODS

    assert main(["plugins"]) == 0
    methods_table = capsys.readouterr().out.split("\n\n")[0].splitlines()[2:]
    listed = {line.split()[0]: line.split()[1] for line in methods_table}
    assert sorted(listed) == METHODS.names()
    assert listed["p5-id"] == "id" and listed["p5-tid"] == listed["bigrec"] == "textual"
    assert listed["tiger"] == "codebook" and listed["setrec-t5"] == "set" and listed["generative"] == "(its"
    entry = write_toy_recbole(tmp_path / "data")
    cells = expand(parse_matrix({"name": "f", "datasets": [entry], "methods": [
        "p5-id", "bigrec", {"name": "generative", "label": "g", "config": {"identifier": "textual"}}]}, "f.yaml"))
    assert [c.resolved["family"] for c in cells] == ["id", "textual", IDENTIFIERS.get("textual").family]


def test_run_and_report(tmp_path, capsys):
    entry = write_toy_recbole(tmp_path / "data")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "cli", "datasets": [entry], "seeds": [0],
                                      "methods": ["mostpop", "mf"]}))
    out = tmp_path / "run"
    assert main(["run", str(matrix), "--methods", "mostpop", "--seeds", "3", "--output", str(out), "--quiet"]) == 0
    assert "mostpop" in capsys.readouterr().out
    assert [p.name for p in (out / "cells" / "toy").iterdir()] == ["mostpop"]
    assert next((out / "cells" / "toy" / "mostpop").iterdir()).name.startswith("seed3-")
    assert main(["report", str(out)]) == 0
    assert (out / "table.md").is_file() and (out / "table.tex").is_file() and (out / "report.md").is_file()
    # a second run under a named protocol (the toy data resolves `auto` to unmasked), reported with the first
    other = tmp_path / "run-masked"
    assert main(["run", str(matrix), "--methods", "mostpop", "--seeds", "3", "--protocol", "masked",
                 "--output", str(other), "--quiet"]) == 0
    both = tmp_path / "both"
    assert main(["report", str(both), "--cells-from", str(out), str(other)]) == 0
    text = (both / "report.md").read_text()
    assert "mixes evaluation protocols" in text and "# Protocol `masked`" in text


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [ml-100k]\nmethods: [{name: mf, confg: {}}]\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.yaml: methods[0]" in err and "\n" not in err
    assert main(["run", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["run", "--preset", "quick", "--precision", "fp8"]) == 2
    assert "--precision: expected one of 'auto', 'fp32', 'bf16', 'fp16', got 'fp8'" in capsys.readouterr().err


def test_data_stats_counts_duplicates(tmp_path, monkeypatch, capsys):
    _ml100k_copy(tmp_path / "data" / "ml-100k")
    udata = tmp_path / "data" / "ml-100k" / "u.data"
    lines = udata.read_text().splitlines(keepends=True)
    udata.write_text("".join(lines + lines[:4]))          # four rows written twice
    monkeypatch.setenv("GENREC_BENCH_DATA", str(tmp_path / "data"))
    assert main(["data", "stats", "ml-100k", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["duplicate_rows"] == 4 and stats["dropped_duplicates"] == 4
    assert main(["data", "stats", "ml-100k"]) == 0
    out = capsys.readouterr().out
    assert "duplicate_rows" in out and "users_valid_item_is_test_item" in out
