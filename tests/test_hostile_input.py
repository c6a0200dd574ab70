"""Hostile input: every bad data file, job key, budget, method, output folder or model that a user can
hand the real CLI fails with one line on stderr naming the problem and the fix, exit code 2, no
traceback, and leaves the output folder exactly as it was (every file's bytes and mtime).

The CLI runs as a subprocess per case; the cases run a few at a time (they are import-bound) in one
module fixture, and each case is its own parametrised test. The README's hostile-input table is this
list (README, "Bad input").
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from distill import artifacts

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
ROW = {"text": "A bill to amend the Internal Revenue Code to extend a credit.", "summary": "Extends a tax credit."}
# A selector plugin whose declared feature the pipeline never computes (what a third-party plugin could do).
PLUGIN = ("from distill.select import registry\n"
          "registry.register('needs_tfidf', description='x', needs=('tfidf',))(lambda features, k, seed: None)\n"
          "from distill.cli import main\nraise SystemExit(main(sys.argv[1:]))\n")


@dataclass
class Case:
    id: str
    args: list[str]  # CLI arguments after `python -m distill quick`; {d} is the case's folder
    needles: tuple[str, ...]  # what the error line must say (problem and fix)
    setup: Callable[[Path], None] = lambda d: None
    out: str = "previous"  # "previous": an earlier distill run's folder; "foreign"/"none": see _make_out
    plugin: bool = False
    extra: dict = field(default_factory=dict)


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _model_folder(weights: str | None) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        model = folder / "model"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
        if weights:
            (model / weights).write_bytes(b"\x80\x02pickle")  # never read: refused by its name
    return setup


CASES = [
    # ---------------------------------------------------------------- data files
    Case("data-missing-file", ["--data", "{d}/nope.jsonl"], ("nope.jsonl", "does not exist", "--data")),
    Case("data-empty-file", ["--data", "{d}/empty.jsonl"], ("empty.jsonl", "is empty"), _write("empty.jsonl", "")),
    Case("data-malformed-jsonl", ["--data", "{d}/bad.jsonl"], ("cannot parse", "bad.jsonl", "one JSON object per line"),
         _write("bad.jsonl", '{"text": "a", "summary": \n{oops\n')),
    Case("data-not-parquet", ["--data", "{d}/bad.parquet"], ("cannot parse", "parquet"), _write("bad.parquet", "hello")),
    Case("data-non-utf8", ["--data", "{d}/latin.csv"], ("not UTF-8", "iconv"),
         _write("latin.csv", b"text,summary\n" + ("caf\xe9 " * 10 + ",r\xe9sum\xe9 ok\n").encode("latin-1") * 30)),
    Case("data-nan-values", ["--data", "{d}/nan.jsonl"], ("no usable rows", "column mapping"),
         _write("nan.jsonl", '{"text": NaN, "summary": NaN}\n' * 30)),
    Case("data-duplicate-only", ["--data", "{d}/dups.jsonl"], ("cannot hold out", "data.test_size"),
         _write("dups.jsonl", _jsonl([ROW] * 40))),
    Case("data-one-row", ["--data", "{d}/one.jsonl"], ("cannot hold out", "of 1 examples"), _write("one.jsonl", _jsonl([ROW]))),
    Case("data-missing-column", ["--data", "{d}/cols.jsonl"], ("no 'summary' column", "data.summary_column"),
         _write("cols.jsonl", _jsonl([{"text": ROW["text"] + str(i), "abstract": "x"} for i in range(30)]))),
    Case("data-unsupported-type", ["--data", "{d}/notes.txt"], ("unsupported file type '.txt'", ".jsonl"),
         _write("notes.txt", "hello")),
    Case("data-hub-name-offline", ["--data", "some-org/some-dataset"], ("could not load Hub dataset", "--data embedded:billsum")),
    # ---------------------------------------------------------------- job keys
    Case("job-wrong-type", ["--set", "train.batch_size=many"], ("train.batch_size", "valid integer", "--set train.batch_size=")),
    Case("job-unknown-key", ["--set", "train.bogus=1"], ("unknown config key 'train.bogus'", "use one of")),
    Case("job-not-a-mapping", ["--job", "{d}/list.yaml"], ("holds a list", "key: value"), _write("list.yaml", "- a\n- b\n")),
    Case("job-invalid-yaml", ["--job", "{d}/bad.yaml"], ("not valid YAML", "fix the YAML"), _write("bad.yaml", "a: [1, 2\n")),
    Case("job-contradiction-test-split", ["--set", "data.test_split=test"], ("would be ignored", "data.split_column")),
    Case("job-contradiction-wandb", ["--set", "wandb.online=true"], ("wandb.enabled is false", "wandb.enabled: true")),
    Case("job-unsafe-name", ["--set", "name=../../escape"], ("job name '../../escape'", "letters, digits")),
    Case("job-zero-seeds", ["--seeds", "0"], ("seeds must be at least 1", "--seeds")),
    Case("job-zero-test-size", ["--test-size", "0"], ("data.test_size must be at least 1", "data.test_size")),
    # ---------------------------------------------------------------- budget and methods
    Case("budget-out-of-range", ["--fraction", "1.5"], ("outside (0, 1]", "--fraction")),
    Case("budget-nan", ["--fraction", "nan"], ("budget fraction nan", "--fraction")),
    Case("budget-rounds-to-zero", ["--fraction", "0.001"], ("rounds to 0 examples", "--fraction 0.0125 or more")),
    Case("budget-whole-pool", ["--fraction", "0.995"], ("selects all of it", "distill baseline")),
    Case("method-unknown", ["--methods", "random,telepathy"], ("unknown selection method 'telepathy'", "random")),
    Case("method-unknown-param", ["--set", "select.params.random.bogus=1"], ("unexpected keyword argument 'bogus'", "no parameters")),
    Case("method-needs-uncomputed-feature", ["--methods", "needs_tfidf"], ("needs feature 'tfidf'", "computed features"),
         plugin=True),
    # ---------------------------------------------------------------- output folder
    Case("out-unwritable", ["--output-dir", "/sys/distill-out"], ("cannot be written", "folder you can write to"), out="none"),
    Case("out-foreign", [], ("not written by distill", "new or empty folder"), out="foreign"),
    Case("out-is-a-file", ["--output-dir", "{d}/file.txt"], ("is a file, not a folder", "--output-dir"),
         _write("file.txt", "mine"), out="none"),
    # ---------------------------------------------------------------- model
    Case("model-folder-missing", ["--model", "{d}/no-model"], ("does not exist", "--model")),
    Case("model-not-a-model", ["--model", "{d}/model"], ("has no config.json", "save_pretrained"),
         lambda d: (d / "model").mkdir()),
    Case("model-a-data-file", ["--model", "{d}/rows.jsonl"], ("has no config.json", "--model"), _write("rows.jsonl", "{}")),
    Case("model-pickle-weights", ["--model", "{d}/model"], ("pytorch_model.bin", "safetensors only", "save_pretrained"),
         _model_folder("pytorch_model.bin")),
    Case("model-no-weights", ["--model", "{d}/model"], ("has no weights", "--model"), _model_folder(None)),
    Case("model-hub-name-offline", ["--model", "some-org/not-cached-model"], ("some-org/not-cached-model", "embedded default")),
]


def _make_out(case: Case, folder: Path) -> Path:
    """The output folder the case runs against: an earlier distill run's files, a user's files, or none."""
    out = folder / "out"
    if case.out == "previous":
        for name, text in {"run.json": "{}", "trials/random-s0/metrics.json": "{}", "selected/random.jsonl": "{}\n"}.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            artifacts.write_text(path, text)
    elif case.out == "foreign":
        (out / "thesis").mkdir(parents=True)
        (out / "thesis" / "chapter1.tex").write_text("my work")
    return out


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder`: kind, size, mtime and content hash."""
    if not folder.exists():
        return {}
    state = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (digest, stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return state


def _run(case: Case, folder: Path, tiny_model: str) -> dict:
    folder.mkdir(parents=True)
    case.setup(folder)
    out = _make_out(case, folder)
    args = [a.format(d=folder) for a in case.args]
    if "--output-dir" not in args:
        args += ["--output-dir", str(out)]
    if "--model" not in args:
        args += ["--model", tiny_model]  # a check that fails to fire must not start the real model
    watched = Path(args[args.index("--output-dir") + 1])
    before = snapshot(watched)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO), "DISTILL_CACHE_DIR": str(folder / "cache")}
    env.pop("RAY_ADDRESS", None)
    command = [PYTHON, "-c", "import sys\n" + PLUGIN, "quick"] if case.plugin else [PYTHON, "-m", "distill", "quick"]
    result = subprocess.run(command + args, cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    return {"result": result, "before": before, "after": snapshot(watched), "watched": watched}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tiny_model) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("hostile")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(_run, c, root / c.id, tiny_model) for c in CASES}
        return {name: future.result() for name, future in futures.items()}


def test_at_least_twenty_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 20


@pytest.mark.slow  # a subprocess per case: the real CLI, 36 times
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(case, outcomes):
    outcome = outcomes[case.id]
    result = outcome["result"]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("distill: error: ") and " — fix: " in lines[0], result.stderr
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    assert outcome["after"] == outcome["before"], f"{outcome['watched']} changed"
    assert "Ray cluster" not in result.stdout  # failed before any heavy work
