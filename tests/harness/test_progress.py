"""Progress bars on a terminal, one log line per epoch in a log file (README "Command line")."""

import io
import os
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.data.toy import write_toy_recbole
from benchmarks.utils import progress_bar, show_progress

ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_are_drawn_on_a_terminal_only(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert show_progress(True) and not show_progress(False)
    assert not progress_bar(range(3), enabled=True).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())       # redirected to a file or a pipe
    assert not show_progress(True)
    bar = progress_bar(range(3), enabled=True)
    assert bar.disable and list(bar) == [0, 1, 2]


def test_a_run_logged_to_a_file_has_epoch_lines_and_no_bar_redraws(tmp_path):
    """`genrec-bench run ... 2> log`: the log held mostly tqdm redraws (\\r lines and cursor
    escape codes); now one line per epoch, and no bar."""
    entry = write_toy_recbole(tmp_path / "data")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "p", "datasets": [entry], "methods": [
        {"name": "sasrec", "config": {"epochs": 3, "hidden": 16, "inner": 32, "n_layers": 1, "patience": 5}}]}))
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = tmp_path / "run.log"
    with open(log, "wb") as err:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "run", str(matrix), "--output",
                               str(tmp_path / "run")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text and "\x1b[" not in text
    epochs = [line for line in text.splitlines() if "benchmarks.training: sasrec epoch" in line]
    assert [line.split("sasrec epoch ")[1].split(":")[0] for line in epochs] == ["1", "2", "3"]
    assert all("loss" in line and "valid NDCG@10" in line for line in epochs)


def test_loading_the_text_encoder_in_a_log_draws_no_bar(tmp_path):
    """The MiniLM load (transformers' "Loading weights" bar) wrote a bar into the quick run's log."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    code = ("from benchmarks.features import load_text_encoder, DEFAULT_ENCODER\n"
            "from transformers.utils import logging as l\n"
            "m = load_text_encoder(DEFAULT_ENCODER)\n"
            "assert l.is_progress_bar_enabled()\n"   # the library's setting restored afterwards
            "print(m.encode(['a']).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Loading weights" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
