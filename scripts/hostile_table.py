"""Print the README's hostile-input table (input → message → fix) by running every case of
tests/test_hostile_input.py through the real CLI, exactly as the test does.

    .venv/bin/python scripts/hostile_table.py > /tmp/table.md
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import build_tiny_llama  # noqa: E402
from test_hostile_input import CASES, _run  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="distill-hostile-"))
    model = str(build_tiny_llama(root / "tiny-random-llama"))
    print("| # | bad input (case id: command) | message (problem) | fix | exit |")
    print("|---|---|---|---|---|")
    for n, case in enumerate(CASES, 1):
        outcome = _run(case, root / case.id, model)
        line = outcome["result"].stderr.strip().splitlines()[-1].removeprefix("distill: error: ")
        problem, _, fix = line.partition(" — fix: ")
        args = " ".join(a.replace("{d}/", "") for a in case.args) or "(default job)"
        changed = "" if outcome["after"] == outcome["before"] else " **folder changed**"
        cell = lambda text: text.replace(str(root / case.id) + "/", "").replace("|", "\\|")  # noqa: E731
        print(f"| {n} | `{case.id}`: `{args}` | {cell(problem)} | {cell(fix)} | {outcome['result'].returncode}{changed} |")


if __name__ == "__main__":
    main()
