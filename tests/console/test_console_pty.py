"""The CLI on a real 80-column pseudo-terminal: distill's own view, no Ray log blocks, every
column of the comparison table visible. Runs the tiny job end to end (a local Ray cluster)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml

pexpect = pytest.importorskip("pexpect")

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
# What Ray, Tune and Ray Data print on a driver's console when left alone
RAY_NOISE = (
    "Started a local Ray instance",
    "INFO worker.py",
    "WARNING",
    "core_worker.cc",
    "pid=",
    "Trial status",
    "== Status ==",
    "Running Dataset",
    "Starting execution of Dataset",
    "Tune Experiment",
    "Configuration for experiment",
    "Loading weights",
    "Warning",
    "Traceback",
)


@pytest.mark.slow
@pytest.mark.extended
def test_quick_run_in_an_80_column_terminal(tiny_job, tmp_path):
    job = tmp_path / "tiny.yaml"
    job.write_text(yaml.safe_dump(tiny_job))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TERM": "xterm-256color",
        "COLUMNS": "80",
        "LINES": "40",
    }
    env.pop("RAY_ADDRESS", None)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "distill", "quick", "--job", str(job)],
        cwd=str(tmp_path),
        env=env,
        dimensions=(40, 80),
        encoding="utf-8",
        codec_errors="replace",
        timeout=600,
    )
    child.expect(pexpect.EOF)
    child.close()
    raw = child.before
    (tmp_path / "terminal.txt").write_text(raw)  # what the terminal received, for a failing run
    screen = ANSI.sub("", raw)
    assert child.exitstatus == 0, screen[-3000:]

    for noise in RAY_NOISE:
        assert noise not in screen, noise
    assert " INFO " not in screen
    out = Path(tiny_job["output_dir"])
    log_line = f"Ray, Tune and library logs: {out / 'logs' / 'run.log'}"
    assert log_line in screen.replace("\n", "")  # the path may wrap at 80 columns
    logged = (out / "logs" / "run.log").read_text()
    for moved in ("Started a local Ray instance", "core_worker.cc", "Trial status"):  # moved there, not lost
        assert moved in logged, moved

    # progress: the embedding bar and the trial table were drawn (rich, in place) on the terminal
    assert "\x1b[" in raw  # a real terminal session: rich drew with escape codes
    assert re.search(r"embed .* 24/24 rows .*rows/s", screen)
    assert re.search(r"\[distill\] embed done in \d+\.\ds", screen)
    assert "Tune trials: 2/2 finished" in screen
    for trial in ("random-s0", "balanced_lengths-s0"):
        assert re.search(trial + r" +done +2/2 +\d+\.\d{4} +\d+s", screen), trial
    for stage in ("data", "model", "select", "report"):
        assert re.search(r"\[distill\] " + stage + r"\S* .*done in \d+\.\ds", screen), stage

    # the comparison table: every column header visible, no line wider than the terminal
    table = screen[screen.index("Method comparison") : screen.index("p: ROUGE-L vs random")]
    assert max(len(line) for line in table.splitlines()) <= 80
    for header in (
        "Method",
        "ROUGE-L",
        "95% CI",
        "BERTScore",
        "% of full",
        "vs random",
        "p (Holm)",
        "Samples",
        "Seeds",
        "Time (s)",
    ):
        assert header in table, header
    assert "random" in table and "balanced_lengths" in table
