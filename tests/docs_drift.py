"""What the docs name, checked against the code: repo paths and links, `distill` subcommands and their flags,
dotted config keys, job names and test names (tests/project/test_docs.py runs it over README.md, CONTRIBUTING.md and
docs/*.md). It checks only what a doc names, never its wording, so the docs may grow freely.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
# Top-level folders and files a doc may name by a repo-relative path.
ROOTS = ("distill", "tests", "scripts", "docs", "requirements", "data", ".ci")
ROOT_FILES = ("pyproject.toml", "cluster.yaml", "README.md", "CONTRIBUTING.md", "LICENSE")
# A path with one of these is a pattern (`trials/<method>-s<seed>/`, `docs/bench/*.json`), not a file to look for.
PATTERN_MARKS = ("<", "*", "{", "…", "...", "NAME", "$")

FENCE = re.compile(r"^```.*?$(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# `distill quick …`, `python -m distill report …`, `python -m distill.quick …`, `.venv/bin/distill …`
COMMAND = re.compile(r"(?:^|[\s/(])(?:python -m )?distill(?:\.(quick|baseline|all))?(?: +([a-z][\w-]*))?(.*)")
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
DOTTED = re.compile(r"(?<![\w./-])([a-z]+)\.([a-z][a-z0-9_]*)(?![\w(/*-])")
# file names that look like `section.key`: report.md, storage.py, model.safetensors
EXTENSIONS = {"md", "py", "json", "jsonl", "csv", "png", "txt", "yaml", "npz", "npy", "safetensors", "lock", "log"}
TEST_REF = re.compile(r"(tests/(?:\w+/)*test_\w+\.py)(?:::(\w+))?")
# a bare test name: `test_` and at least two more words (`test_model` is a run.json field, not a test)
TEST_NAME = re.compile(r"(?<![\w/.])(test_[a-z0-9]+_[a-z0-9]+_\w+)(?![\w.(])")
SCRIPT = re.compile(r"(scripts/\w+\.py)(.*)")
# Wrong on purpose: a doc showing what distill says to a wrong key (docs/reliability.md's bad-input table).
DELIBERATE = {"train.bogus"}
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, ROOTS)) + r")/[\w./<>*{}…$-]*)")


def code_of(text: str) -> Iterator[str]:
    """Every line of a fenced block and every inline code span: where a doc names commands, keys and paths."""
    for block in FENCE.findall(text):
        yield from block.splitlines()
    yield from INLINE.findall(FENCE.sub("", text))


def subcommand_flags(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """distill's subcommands → their option strings (plus the top level's, which every one accepts)."""
    top = {opt for action in parser._actions for opt in action.option_strings}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: top | {opt for action in cmd._actions for opt in action.option_strings}
        for name, cmd in sub.choices.items()
    }


def test_functions() -> dict[str, set[str]]:
    """tests/<folder>/<file> → the test functions it defines."""
    return {
        str(path.relative_to(REPO)): {
            node.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
        for path in (REPO / "tests").rglob("test_*.py")
    }


class Code:
    """What the docs are checked against: the CLI's parser, the config's keys, the jobs, the tests, the files."""

    def __init__(self) -> None:
        from distill.cli import parser
        from distill.config.load import job_names, settings

        self.flags = subcommand_flags(parser())
        self.keys = set(settings())
        self.sections = {key.split(".")[0] for key in self.keys if "." in key}
        self.jobs = set(job_names())
        self.tests = test_functions()
        # keys the docs name as gone (moved or retired: the loader names the new place or says why)
        from distill.config.migrate import MOVED_KEYS, RETIRED_KEYS

        self.gone = set(MOVED_KEYS) | set(RETIRED_KEYS)


def problems(doc: Path, text: str, code: Code) -> list[str]:
    """What `text` (the doc `doc`) names that does not exist, one line each."""
    found: list[str] = []
    where = doc.relative_to(REPO)
    for line in code_of(text):
        found += [f"{where}: {p}" for p in _line_problems(line, code)]
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:|#", target) and not (doc.parent / target.split("#")[0]).exists():
            found.append(f"{where}: link to {target}, which does not exist")
    return found


def _line_problems(line: str, code: Code) -> Iterator[str]:
    for match in COMMAND.finditer(line):
        yield from _command_problems(match, code)
    for path in PATH.findall(line):
        path = path.rstrip(".,:;)")
        if not any(mark in path for mark in PATTERN_MARKS) and not (REPO / path.split("::")[0]).exists():
            yield f"path {path}, which does not exist"
    for file, name in TEST_REF.findall(line):
        if file not in code.tests:
            yield f"test file {file}, which does not exist"
        elif name and name not in code.tests[file]:
            yield f"test {file}::{name}, which does not exist"
    defined = set().union(*code.tests.values())
    files = {Path(file).stem for file in code.tests}
    for name in TEST_NAME.findall(TEST_REF.sub("", line)):
        if name not in defined and name not in files:
            yield f"test {name}, which does not exist"
    for section, key in DOTTED.findall(line):
        dotted = f"{section}.{key}"
        module = REPO / "distill" / section / f"{key}.py"  # report.build: a module, not a key
        if section in code.sections and key not in EXTENSIONS and not module.exists():
            if dotted not in code.keys and dotted not in code.gone and dotted not in DELIBERATE:
                yield f"config key {dotted}, which does not exist"
    for script, rest in SCRIPT.findall(line):
        # a script's own flags, and the shared ones it takes from scripts/benchlib.py
        source = (REPO / script).read_text() if (REPO / script).exists() else ""
        source += (REPO / "scripts" / "benchlib.py").read_text() if "benchlib" in source else ""
        for flag in FLAG.findall(_command_only(rest)):
            if flag.startswith("--") and f'"{flag}"' not in source:
                yield f"`{script} {flag}`, which is not a flag of {script}"


def _command_problems(match: re.Match, code: Code) -> Iterator[str]:
    module, word, rest = match.groups()
    name = module or word
    if name is None or (not module and word not in code.flags and not word.startswith("-")):
        if word and not module and re.fullmatch(r"[a-z]+", word) and _looks_like_a_command(rest):
            yield f"`distill {word}`, which is not a subcommand"
        return
    rest = _command_only(rest)
    for flag in FLAG.findall(rest):
        if flag not in code.flags.get(name, set()):
            yield f"`distill {name} {flag}`, which is not a flag of distill {name}"
    for job in re.findall(r"--job[ =]([\w.-]+)", rest):
        if "/" not in job and not job.endswith(".yaml") and job.upper() != job and job not in code.jobs:
            yield f"job {job}, which is not a packaged job"


def _command_only(rest: str) -> str:
    """The command of a line: not its comment, a pipe, the next command or the prose after two spaces."""
    return re.split(r"\s(?:#|\||&&|;|→)\s?|\s{2,}|`", rest)[0]


def _looks_like_a_command(rest: str) -> bool:
    """`distill foo --bar` or `distill foo results/x`: the doc means a subcommand, not the word distill in prose."""
    return bool(re.match(r"\s+(--?\w|[\w./-]+/)", rest))
