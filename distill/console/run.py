"""distill's console: its own view of a run, with Ray's and Tune's raw logs sent to a file.

Why: left alone, a run's console is Ray's INFO blocks, Tune's status tables, Ray Data's bars and
worker warnings, with distill's own lines lost in between. Here the console shows one line per
stage with its time, a progress bar while embedding and a live trial table while Tune runs;
whatever Ray, Tune and the libraries print goes to `<out>/logs/run.log` (named in one line), and
`--verbose` leaves it on the console instead.

On a terminal, rich draws the bar and the table in place. Anywhere else (CI, `ray job submit`
logs, a pipe) the same events become plain lines, a progress line at most every PLAIN_EVERY_S.
No Ray here: distill/runtime/ feeds this module from Ray's own events (features.py: result batches; callbacks.py: Tune).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

PLAIN_EVERY_S = 10.0  # without a terminal: at most one progress line per display this often (CI logs stay short)
REFRESH_PER_S = 4  # redraws of the live view per second on a terminal
# Loggers whose console handlers a run moves to the run log unless --verbose ("": the root, where the others propagate)
LIBRARY_LOGGERS = ("", "ray", "ray.data", "ray.tune", "ray.train", "transformers")
LOG_NAME = "run.log"


class RunConsole:
    """The run's console: stage lines, one progress display at a time, log lines above it."""

    def __init__(self, file: TextIO | None = None, verbose: bool = False):
        self.console = Console(file=file or sys.stdout, soft_wrap=True, highlight=False)
        # explicit, not left to chance: bars and a live table only on a real terminal without raw logs
        self.interactive = self.console.is_terminal and not verbose
        self.verbose = verbose
        self.log_path: Path | None = None  # the run log, where failures' tracebacks go (None: --verbose, the console)
        self._stage: tuple[str, Spinner, float] | None = None  # name, its spinner, start
        self._widget = None  # the Progress or TrialBoard drawn under the stage spinner

    def log(self, message: str) -> None:
        self.console.print(f"[distill] {message}", markup=False)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """One line per stage with its wall time (a spinner while it runs, on a terminal)."""
        start = time.perf_counter()
        if self.interactive and self._stage is None:
            self._stage = (name, Spinner("dots"), start)
            try:
                with self._live():
                    yield
            finally:
                self._stage = None
        else:
            self.log(f"{name} …")
            yield
        self.log(f"{name} done in {time.perf_counter() - start:.1f}s")

    def _live(self):
        from rich.live import Live

        return Live(
            self,
            console=self.console,
            transient=True,
            refresh_per_second=REFRESH_PER_S,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __rich__(self):
        """What the live view draws: the running stage and the current progress display."""
        name, spinner, start = self._stage or ("", Spinner("dots"), time.perf_counter())
        spinner.update(text=f"{name} … {time.perf_counter() - start:.0f}s")
        parts = [spinner]
        if self._widget is not None:
            parts.append(self._widget)
        return Group(*parts)

    @contextlib.contextmanager
    def progress(self, what: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
        """A progress bar (done / total, rate, ETA); yields `advance(n)`. Plain lines without a terminal."""
        if self.interactive:
            bar = Progress(
                TextColumn(what),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                RateColumn(unit),
                TimeRemainingColumn(),
                console=self.console,
                auto_refresh=False,
            )
            task = bar.add_task(what, total=total)
            self._widget = bar
            try:
                yield lambda n: bar.advance(task, n)
            finally:
                self._widget = None
            self.console.print(bar)  # the final count and rate stay on screen
        else:
            counter = PlainCounter(what, total, unit, self.log)
            yield counter.advance
            counter.finish()

    @contextlib.contextmanager
    def trial_board(self, names: list[str]) -> Iterator[TrialBoard]:
        """A live table of Tune trials (one line per event without a terminal)."""
        board = TrialBoard({n: TrialRow(n) for n in names}, say=None if self.interactive else self.log)
        self._widget = board if self.interactive else None
        try:
            yield board
        finally:
            self._widget = None
        if self.interactive:
            self.console.print(board)


class RateColumn(ProgressColumn):
    """Units per second (rich's own speed column speaks bytes)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.1f} {self.unit}/s")


@dataclass
class PlainCounter:
    """Progress as plain lines: done / total, rate and ETA, at most every PLAIN_EVERY_S."""

    what: str
    total: int
    unit: str
    say: Callable[[str], None]
    done: int = 0
    start: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)

    def advance(self, n: int) -> None:
        self.done += n
        if time.perf_counter() - self.last >= PLAIN_EVERY_S:
            self.last = time.perf_counter()
            self.say(self.line())

    def finish(self) -> None:
        self.say(self.line())

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {(self.total - self.done) / rate:.0f}s" if rate and self.done < self.total else ""
        return f"{self.what}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s{eta}"


@dataclass
class TrialRow:
    name: str
    status: str = "pending"
    step: int = 0
    steps: int | None = None
    loss: float | None = None
    start: float | None = None
    end: float | None = None
    last_line: float = 0.0

    def elapsed(self) -> float | None:
        return None if self.start is None else (self.end or time.perf_counter()) - self.start

    def cells(self) -> list[str]:
        steps = "—" if self.steps is None else f"{self.step}/{self.steps}"
        loss = "—" if self.loss is None else f"{self.loss:.4f}"
        elapsed = self.elapsed()
        return [self.name, self.status, steps, loss, "—" if elapsed is None else f"{elapsed:.0f}s"]


TRIAL_COLUMNS = ("trial", "status", "step", "loss", "elapsed")


@dataclass
class TrialBoard:
    """Trial state fed by Tune's callback events; a rich table, or one plain line per event."""

    rows: dict[str, TrialRow]
    say: Callable[[str], None] | None = None  # set: plain lines instead of a live table

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the experiment state: the rows go along, the console stays."""
        return {**self.__dict__, "say": None}

    def started(self, name: str) -> None:
        row = self._row(name)
        row.status, row.start = "training", time.perf_counter()
        self._line(row)

    def result(self, name: str, step: int, steps: int, loss: float) -> None:
        """An intermediate {step, steps, loss} report: training, or evaluating after the last step."""
        row = self._row(name)
        row.step, row.steps, row.loss = step, steps, loss
        row.status = "evaluating" if step >= steps else "training"
        if time.perf_counter() - row.last_line >= PLAIN_EVERY_S or step >= steps:
            self._line(row)

    def finished(self, name: str, failed: bool = False) -> None:
        row = self._row(name)
        row.status, row.end = ("error" if failed else "done"), time.perf_counter()
        self._line(row)

    def _row(self, name: str) -> TrialRow:
        return self.rows.setdefault(name, TrialRow(name))

    def _line(self, row: TrialRow) -> None:
        row.last_line = time.perf_counter()
        if self.say:
            name, *rest = row.cells()
            self.say(f"trial {name}: " + ", ".join(f"{c} {v}" for c, v in zip(TRIAL_COLUMNS[1:], rest)))

    def __rich__(self) -> Table:
        done = sum(r.status in ("done", "error") for r in self.rows.values())
        table = Table(title=f"Tune trials: {done}/{len(self.rows)} finished", box=box.SIMPLE_HEAD, title_justify="left")
        for i, column in enumerate(TRIAL_COLUMNS):
            table.add_column(column, justify="left" if i < 2 else "right", no_wrap=True)
        for row in self.rows.values():
            table.add_row(*row.cells(), style={"done": "green", "error": "red", "pending": "dim"}.get(row.status))
        return table


@contextlib.contextmanager
def quiet_libraries(log_dir: Path, console: RunConsole) -> Iterator[Path]:
    """Send what Ray, Tune and the libraries print to `<log_dir>/run.log` (unless --verbose).

    Covered: sys.stdout/stderr (the worker logs Ray streams to the driver, Tune's reporter), the
    libraries' console log handlers, Python warnings, and file descriptor 2 (Ray's C++ core worker
    logs to it directly, e.g. its warning about actor constructor arguments in the object store,
    which Ray Data triggers for every actor pool). The console keeps the original stdout.
    """
    if console.verbose:
        yield log_dir / LOG_NAME
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_NAME
    with open(path, "a", buffering=1) as sink, _redirected_loggers(sink), warnings.catch_warnings():
        console.log(f"Ray, Tune and library logs: {path} (--verbose shows them here)")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sink.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )  # catch_warnings restores it
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _redirected_fd(2, sink):
            yield path


@contextlib.contextmanager
def _redirected_fd(fd: int, sink: TextIO) -> Iterator[None]:
    """Point a file descriptor at `sink` (for output that bypasses Python), restoring it after."""
    sys.__stderr__.flush()
    saved = os.dup(fd)
    os.dup2(sink.fileno(), fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@contextlib.contextmanager
def _redirected_loggers(sink: TextIO) -> Iterator[None]:
    """Point the libraries' console handlers at `sink`; after the run, back at the console."""
    before = {handler: handler.stream for handler in _console_handlers()}
    for handler in before:
        handler.setStream(sink)
    try:
        yield
    finally:
        for handler in _console_handlers(sink):  # also those the libraries created during the run
            handler.setStream(before.get(handler, sys.stderr))


def _console_handlers(*streams: TextIO) -> list[logging.StreamHandler]:
    """The libraries' handlers writing to `streams` (default: this process's stdout/stderr)."""
    streams = streams or (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return [
        h
        for name in LIBRARY_LOGGERS
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.StreamHandler) and h.stream in streams
    ]


_ACTIVE: list[RunConsole] = []  # the console of the run in progress (a stack: runs do not nest in practice)


def current() -> RunConsole:
    """The running experiment's console; outside a run, a plain one on today's stdout."""
    return _ACTIVE[-1] if _ACTIVE else RunConsole()


def stage(name: str):
    """One line per stage with its wall time, drawn by the running experiment's console."""
    return current().stage(name)


class ConsoleHandler(logging.Handler):
    """distill's loggers on the run's console: one `[distill] …` line per record, drawn above a live bar or table.

    Why a handler and not print: every module logs to its named logger (`logging.getLogger(__name__)`), and
    this one handler decides where that goes — the run's console in the driver, the process's stdout in a
    Ray worker (which Ray streams to the driver's run log), a test's caplog through propagation."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            current().log(level + self.format(record))
        except Exception:  # logging must never take the run down (logging.Handler's own contract)
            self.handleError(record)


def attach(name: str = "distill") -> None:
    """Make the console the handler of logger `name` at INFO (once per process: distill/__init__.py calls it)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@contextlib.contextmanager
def session(log_dir: Path, verbose: bool = False) -> Iterator[RunConsole]:
    """A run's console for its whole duration, with library output in `<log_dir>/run.log`."""
    run_console = RunConsole(verbose=verbose)
    _ACTIVE.append(run_console)
    try:
        with quiet_libraries(log_dir, run_console) as path:
            run_console.log_path = None if verbose else path
            yield run_console
    finally:
        _ACTIVE.pop()
