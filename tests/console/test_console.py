"""The run console: stage lines, progress and the trial table on a terminal and off it, library
output sent to the run log, and the comparison table fitted to 80 columns without losing a column."""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import sys
import warnings

import pytest
from rich.console import Console

from distill.console import run as run_console
from distill.console.run import PlainCounter, RunConsole, TrialBoard, TrialRow, quiet_libraries
from distill.report.table import CONSOLE_COLUMNS, ConsoleColumn, console_table

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal(width: int = 80) -> RunConsole:
    """A RunConsole that believes it is on a terminal (as it does in a pty), writing to a buffer."""
    rc = RunConsole(file=io.StringIO())
    rc.console = Console(file=rc.console.file, force_terminal=True, force_interactive=True, width=width)
    rc.interactive = True
    return rc


def text_of(rc: RunConsole) -> str:
    return ANSI.sub("", rc.console.file.getvalue())


def test_without_a_terminal_the_console_is_plain_lines():
    rc = RunConsole(file=io.StringIO())
    assert not rc.interactive  # a StringIO is not a terminal: CI and `ray job submit` logs
    with rc.stage("embed"):
        with rc.progress("embed", total=10, unit="rows") as advance:
            advance(4)
            advance(6)
    out = rc.console.file.getvalue()
    assert "\x1b[" not in out  # no cursor movement or colour in a log file
    assert out.splitlines()[0] == "[distill] embed …"
    assert "[distill] embed: 10/10 rows," in out and "rows/s" in out
    assert re.search(r"\[distill\] embed done in \d+\.\ds", out.splitlines()[-1])


def test_verbose_is_never_interactive():
    rc = RunConsole(file=io.StringIO(), verbose=True)
    assert not rc.interactive


def test_plain_progress_is_periodic_with_rate_and_eta(monkeypatch):
    lines = []
    counter = PlainCounter("embed", 100, "rows", lines.append)
    counter.advance(10)
    assert lines == []  # within PLAIN_EVERY_S of the start: nothing yet
    monkeypatch.setattr(run_console, "PLAIN_EVERY_S", 0.0)
    counter.advance(15)
    counter.finish()
    assert lines[0].startswith("embed: 25/100 rows, ") and "ETA" in lines[0]
    assert lines[-1].startswith("embed: 25/100 rows")


def test_trial_board_plain_lines_follow_tune_events():
    lines = []
    board = TrialBoard({"random-s0": TrialRow("random-s0")}, say=lines.append)
    board.started("random-s0")
    board.result("random-s0", 1, 2, 3.5)  # within PLAIN_EVERY_S: no line for an intermediate step
    board.result("random-s0", 2, 2, 3.25)  # the last step: training is over, evaluation starts
    board.finished("random-s0")
    assert lines[0].startswith("trial random-s0: status training, step —")
    assert lines[1].startswith("trial random-s0: status evaluating, step 2/2, loss 3.2500")
    assert lines[2].startswith("trial random-s0: status done, step 2/2")
    assert len(lines) == 3


def test_trial_board_survives_tunes_pickling_of_callbacks():
    rc = RunConsole(file=open(os.devnull, "w"))  # a console holds an open file, which cannot be pickled
    with rc.trial_board(["random-s0"]) as board:
        copy = pickle.loads(pickle.dumps(board))
    assert copy.rows["random-s0"].status == "pending" and copy.say is None


def test_terminal_shows_progress_bar_trial_table_and_stage_line():
    rc = terminal()
    with rc.stage("embed"):
        with rc.progress("embed", total=24, unit="rows") as advance:
            advance(8)
            rc.console.print(rc)  # what the live view draws at this moment
            advance(16)
    with rc.stage("train"):
        with rc.trial_board(["random-s0", "balanced_lengths-s0"]) as board:
            board.started("random-s0")
            board.result("random-s0", 1, 2, 2.5)
            board.finished("random-s0")
            board.finished("balanced_lengths-s0", failed=True)
    out = text_of(rc)
    assert re.search(r"embed … \d+s\nembed .* 8/24 rows", out)  # the spinner line, then the bar under it
    assert re.search(r"embed .* 24/24 rows .*rows/s", out)  # the final count and rate stay on screen
    assert re.search(r"\[distill\] embed done in \d+\.\ds", out)
    # the final table is printed when Tune is done, with every column
    assert "Tune trials: 2/2 finished" in out
    for column in ("trial", "status", "step", "loss", "elapsed"):
        assert column in out
    assert re.search(r"random-s0 +done +1/2 +2\.5000 +\d+s", out)
    assert "error" in out


def test_library_output_goes_to_the_run_log(tmp_path):
    buffer = io.StringIO()
    rc = RunConsole(file=buffer)
    ray_logger = logging.getLogger("ray")
    ray_handler = logging.StreamHandler(sys.stderr)  # as Ray's logging config installs it at import
    ray_logger.addHandler(ray_handler)
    try:
        with quiet_libraries(tmp_path / "logs", rc) as path:
            print("(pid=123) a worker line Ray streams to the driver")
            ray_logger.warning("Started a local Ray instance.")
            warnings.warn("a deprecation from a library", DeprecationWarning, stacklevel=1)
            os.write(2, b"[E core_worker.cc] written straight to file descriptor 2\n")
            rc.log("distill's own line")
    finally:
        ray_logger.removeHandler(ray_handler)
    assert buffer.getvalue().splitlines() == [
        f"[distill] Ray, Tune and library logs: {path} (--verbose shows them here)",
        "[distill] distill's own line",
    ]
    logged = path.read_text()
    for line in (
        "(pid=123) a worker line",
        "Started a local Ray instance.",
        "a deprecation from a library",
        "core_worker.cc] written straight",
    ):
        assert line in logged
    assert ray_handler.stream is sys.stderr  # back on the console after the run


def test_verbose_leaves_library_output_on_the_console(tmp_path, capsys):
    rc = RunConsole(file=io.StringIO(), verbose=True)
    with quiet_libraries(tmp_path / "logs", rc):
        print("a raw Ray line")
    assert "a raw Ray line" in capsys.readouterr().out
    assert not (tmp_path / "logs").exists()


# ----------------------------------------------------------------------------- comparison table


def rows(n_methods: int = 6) -> list[dict]:
    names = ["random", "diversity_sampling", "embedding_centroid", "high_info_density", "semantic_dedup", "full"]
    out = []
    for i, name in enumerate(names[:n_methods]):
        out.append(
            {
                "method": name,
                "rougeL": 0.2 + i / 100,
                "rougeL_ci95": [0.18 + i / 100, 0.22 + i / 100],
                "bertscore_f1": 0.5123,
                "pct_of_full": 100.0 * (0.2 + i / 100) / 0.25,
                "vs_random_pct": None if i == 0 else -12.5 + i,
                "vs_random": None
                if i in (0, 5)
                else {"rougeL": {"diff": 0.01, "p_holm": 0.0004 * i, "significant": i == 1}},
                "samples": 1000 if name == "full" else 100,
                "seeds": 3,
                "time_s": 1234.5,
            }
        )
    return out


def rendered(table, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(table)
    return console.file.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 200])
def test_comparison_table_fits_and_keeps_every_column(width):
    data = rows()
    lines = rendered(console_table(data, width), width)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    for column in CONSOLE_COLUMNS:
        assert column.header in text, column.header
        for row in data:
            assert column.cell(row) in text, (column.header, column.cell(row))


def test_wide_terminal_has_one_column_each_narrow_one_stacks():
    data = rows()
    wide, narrow = console_table(data, 200), console_table(data, 80)
    assert [c.header for c in wide.columns] == [c.header for c in CONSOLE_COLUMNS]
    assert len(narrow.columns) < len(CONSOLE_COLUMNS)
    assert "ROUGE-L\n95% CI" in [c.header for c in narrow.columns]


def test_an_extra_column_folds_into_the_compact_layout():
    extra = (*CONSOLE_COLUMNS, ConsoleColumn("MDE", lambda r: "0.0123", under="vs random"))
    lines = rendered(console_table(rows(), 80, extra), 80)
    assert max(len(line) for line in lines) <= 80
    assert "MDE" in "\n".join(lines) and "0.0123" in "\n".join(lines)


def test_distill_loggers_reach_the_console_through_one_handler(tmp_path, caplog):
    """Modules log to named loggers; the console shows them as `[distill]` lines, never in the run log."""
    buffer = io.StringIO()
    rc = RunConsole(file=buffer)
    run_console._ACTIVE.append(rc)
    try:
        with quiet_libraries(tmp_path / "logs", rc) as path, caplog.at_level(logging.INFO, logger="distill"):
            logging.getLogger("distill.runtime.features").info("features: %d × %d embeddings", 24, 64)
            logging.getLogger("distill.store.artifacts").warning("damaged artifact x.json: truncated")
            logging.getLogger("distill.features.embed").debug("not shown")
    finally:
        run_console._ACTIVE.pop()
    assert buffer.getvalue().splitlines()[1:] == [
        "[distill] features: 24 × 64 embeddings",
        "[distill] warning: damaged artifact x.json: truncated",
    ]
    assert "features" not in path.read_text()
    assert "damaged artifact x.json" in caplog.text  # records still propagate (tests, a user's own handlers)
    handlers = [h for h in logging.getLogger("distill").handlers if isinstance(h, run_console.ConsoleHandler)]
    assert len(handlers) == 1
