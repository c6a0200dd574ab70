"""Hostile input: every bad data file, job key, setting out of its range, budget, method, output folder or
model that a user can hand the real CLI fails with one line on stderr naming the problem and the fix, exit
code 2, no traceback, before torch or Ray is imported, and leaves the output folder exactly as it was (every
file's bytes and mtime). Files as other tools write them (a byte-order mark, CRLF, a JSON array, gzip, a folder
of shards) load: their cases fail later, on a budget whose message counts the rows that were read.

What can only go wrong once the work has started (a user's selector that raises or answers wrongly, a trial
that fails) is the second group, RUN_CASES: each runs against a copy of a finished earlier run and must end in
the same one line, naming the selector or the trial and its own error, while every artifact of the earlier run
(features, selections, trials) stays byte- and mtime-identical and the selections that did finish are cached.

The CLI runs as a subprocess per case; the cases run a few at a time (they are import-bound) in one
module fixture, and each case is its own parametrised test. scripts/hostile_table.py prints every case's
full line into docs/bad-input.md.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distill.store import artifacts
from tests.cli_helpers import cli_env

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
ROW = {"text": "A bill to amend the Internal Revenue Code to extend a credit.", "summary": "Extends a tax credit."}
ROWS = [{"text": f"{ROW['text']} Section {i} applies.", "summary": f"{ROW['summary']} ({i})"} for i in range(30)]
INSTRUCTIONS = [{"instruction": f"Name river number {i}.", "input": "", "output": f"River {i}."} for i in range(30)]
CHATS = [
    {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"{2 * i}"}]}
    for i in range(30)
]
POOL = "of the 20-example pool rounds to 0"  # ROWS read in full: 30 rows, 10 held out; --fraction 0.01 of 20 is 0
# A selector plugin whose declared feature the pipeline never computes (what a third-party plugin could do).
PLUGIN = (
    "from distill.select import registry\n"
    "registry.register('needs_tfidf', description='x', needs=('tfidf',))(lambda features, k, seed: None)\n"
)
# Runs the CLI as `python -m distill` does, then records whether torch or Ray was imported (heavy.json).
RUNNER = (
    "import json, sys\nfrom distill.cli import main\ncode = main(sys.argv[1:])\n"
    "json.dump(sorted(m for m in ('torch', 'ray') if m in sys.modules), open('heavy.json', 'w'))\n"
    "raise SystemExit(code)\n"
)
MISBEHAVING = Path(__file__).resolve().parents[1] / "fixtures" / "misbehaving_selectors.py"
# The earlier run every RUN_CASE starts from (features, the random selection, one finished trial), and the
# settings each case shares with it, so the cached features and selection are found.
RUN_SETTINGS = [
    "--max-train",
    "24",
    "--test-size",
    "4",
    "--fraction",
    "0.25",
    "--set",
    "model.max_source_tokens=64",
    "--set",
    "model.max_target_tokens=16",
    "--set",
    "train.max_steps=1",
    "--set",
    "train.batch_size=2",
    "--set",
    "eval.max_new_tokens=4",
    "--set",
    "eval.bertscore_model=offline",
    "--set",
    "resources.num_cpus=2",
    "--set",
    "resources.max_failures=0",
]
EARLIER_RUN = ["--methods", "random", *RUN_SETTINGS]
# What a run rewrites each time it starts, excluded from the earlier-run comparison: its records, and the subsets
# it exports (selected/) from the cached selections, which are compared.
RUN_RECORDS = ("run.json", "counters.json", "pool_stats.json", "logs/", "selected/")


@dataclass
class Case:
    id: str
    args: list[str]  # CLI arguments after `python -m distill quick`; {d} is the case's folder
    needles: tuple[str, ...]  # what the error line must say (problem and fix)
    setup: Callable[[Path], None] = lambda d: None
    out: str = "previous"  # "previous": an earlier distill run's folder; "foreign"/"none"/"earlier-run": see _make_out
    plugin: bool = False
    grows: dict[str, int] = field(default_factory=dict)  # RUN_CASES: files (glob) the failed run adds, how many
    heavy: tuple[str, ...] = ()  # of torch and Ray, what the case may import before failing (normally neither)


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _rows_as(name: str, encode: Callable[[list[dict]], bytes]) -> Callable[[Path], None]:
    return _write(name, encode(ROWS))


def _csv(rows: list[dict]) -> str:
    return "text,summary\r\n" + "".join(f'"{r["text"]}","{r["summary"]}"\r\n' for r in rows)


def _shards(folder: str, names: dict[str, list[dict]]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / folder).mkdir(parents=True)
        for name, rows in names.items():
            (root / folder / name).write_text(_jsonl(rows))

    return setup


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
    Case(
        "data-malformed-jsonl",
        ["--data", "{d}/bad.jsonl"],
        ("cannot parse", "bad.jsonl", "one JSON object per line"),
        _write("bad.jsonl", '{"text": "a", "summary": \n{oops\n'),
    ),
    Case(
        "data-not-parquet", ["--data", "{d}/bad.parquet"], ("cannot parse", "parquet"), _write("bad.parquet", "hello")
    ),
    Case(
        "data-non-utf8",
        ["--data", "{d}/latin.csv"],
        ("not UTF-8", "iconv"),
        _write("latin.csv", b"text,summary\n" + ("caf\xe9 " * 10 + ",r\xe9sum\xe9 ok\n").encode("latin-1") * 30),
    ),
    Case(
        "data-nan-values",
        ["--data", "{d}/nan.jsonl"],
        ("row 1, 2, 3 and 27 more", "empty response ('summary')", "remove the row"),
        _write("nan.jsonl", '{"text": NaN, "summary": NaN}\n' * 30),
    ),
    # ---------------------------------------------------------------- instruction and chat data
    Case(
        "data-empty-response",
        ["--data", "{d}/empty.jsonl"],
        ("row 4 of", "empty response ('output')", "remove the row"),
        _write(
            "empty.jsonl", _jsonl([dict(r, output="" if i == 3 else r["output"]) for i, r in enumerate(INSTRUCTIONS)])
        ),
    ),
    Case(
        "chat-no-assistant",
        ["--data", "{d}/chat.jsonl"],
        ("row 2 of", "has no assistant turn", "end each conversation"),
        _write("chat.jsonl", _jsonl([CHATS[0], {"messages": [{"role": "user", "content": "hi"}]}, *CHATS[1:]])),
    ),
    Case(
        "chat-unknown-role",
        ["--data", "{d}/chat.jsonl"],
        ("row 1 of", "has the role 'bot'", "system, user, assistant"),
        _write("chat.jsonl", _jsonl([{"messages": [{"role": "bot", "content": "hi"}]}, *CHATS])),
    ),
    Case(
        "chat-not-a-list",
        ["--data", "{d}/chat.jsonl"],
        ("row 3 of", "not a list of messages", '[{"role": "user"'),
        _write("chat.jsonl", _jsonl([*CHATS[:2], {"messages": {"role": "user"}}, *CHATS[2:]])),
    ),
    Case(
        "data-mixed-formats",
        ["--data", "{d}/mixed.jsonl"],
        ("mixes formats (row 1 is chat, row 31 is instruction)", "one file per format"),
        _write("mixed.jsonl", _jsonl(CHATS + INSTRUCTIONS)),
    ),
    Case(
        "data-format-mismatch",
        ["--data", "{d}/inst.jsonl", "--set", "data.format=chat"],
        ("no 'messages' column for the chat format", "data.messages_column", "data.format=auto"),
        _write("inst.jsonl", _jsonl(INSTRUCTIONS)),
    ),
    Case(
        "data-no-layout",
        ["--data", "{d}/qa.jsonl"],
        ("columns are question, answer", "instruction: instruction + output"),
        _write("qa.jsonl", _jsonl([{"question": f"q{i}?", "answer": "a"} for i in range(30)])),
    ),
    Case(
        "prompt-template-without-placeholder",
        ["--set", "prompt.template=Answer the question below"],
        ("prompt.template", "0 {prompt} placeholders", "put {prompt} once"),
    ),
    Case(
        "data-duplicate-only",
        ["--data", "{d}/dups.jsonl"],
        ("cannot hold out", "data.test_size"),
        _write("dups.jsonl", _jsonl([ROW] * 40)),
    ),
    Case(
        "data-one-row",
        ["--data", "{d}/one.jsonl"],
        ("cannot hold out", "of 1 examples"),
        _write("one.jsonl", _jsonl([ROW])),
    ),
    Case(
        "data-missing-column",
        ["--data", "{d}/cols.jsonl"],
        ("no 'summary' column", "data.summary_column"),
        _write("cols.jsonl", _jsonl([{"text": ROW["text"] + str(i), "abstract": "x"} for i in range(30)])),
    ),
    Case(
        "data-unsupported-type",
        ["--data", "{d}/notes.txt"],
        ("unsupported file type '.txt'", ".jsonl"),
        _write("notes.txt", "hello"),
    ),
    Case(
        "data-hub-name-offline",
        ["--data", "some-org/some-dataset"],
        ("could not load Hub dataset", "--data embedded:billsum"),
    ),
    # ---------------------------------------------------------------- job keys
    Case(
        "job-wrong-type",
        ["--set", "train.batch_size=many"],
        ("train.batch_size", "valid integer", "--set train.batch_size="),
    ),
    Case("job-unknown-key", ["--set", "train.bogus=1"], ("unknown config key 'train.bogus'", "use one of")),
    Case(
        "job-not-a-mapping",
        ["--job", "{d}/list.yaml"],
        ("holds a list", "key: value"),
        _write("list.yaml", "- a\n- b\n"),
    ),
    Case(
        "job-invalid-yaml",
        ["--job", "{d}/bad.yaml"],
        ("not valid YAML", "fix the YAML"),
        _write("bad.yaml", "a: [1, 2\n"),
    ),
    Case("job-contradiction-test-split", ["--set", "data.test_split=test"], ("would be ignored", "data.split_column")),
    Case("job-contradiction-wandb", ["--set", "wandb.online=true"], ("wandb.enabled is false", "wandb.enabled: true")),
    Case("job-unsafe-name", ["--set", "name=../../escape"], ("job name '../../escape'", "letters, digits")),
    Case("job-zero-seeds", ["--seeds", "0"], ("'seeds' must be an integer >= 1, got 0", "--set seeds=1")),
    Case(
        "job-zero-test-size",
        ["--test-size", "0"],
        ("'data.test_size' must be an integer >= 1", "--set data.test_size="),
    ),
    # ---------------------------------------------------------------- budget and methods
    Case(
        "budget-out-of-range",
        ["--fraction", "1.5"],
        ("'select.fraction' must be a number in (0, 1], got 1.5", "--set select.fraction="),
    ),
    Case(
        "budget-nan",
        ["--fraction", "nan"],
        ("'select.fraction' must be a number in (0, 1], got 'nan'", "--set select.fraction="),
    ),
    Case("budget-rounds-to-zero", ["--fraction", "0.001"], ("rounds to 0 examples", "--fraction 0.0125 or more")),
    Case("budget-whole-pool", ["--fraction", "0.995"], ("selects all of it", "distill baseline")),
    Case("method-unknown", ["--methods", "random,telepathy"], ("unknown selection method 'telepathy'", "random")),
    Case(
        "method-unknown-param",
        ["--set", "select.params.random.bogus=1"],
        ("unexpected keyword argument 'bogus'", "no parameters"),
    ),
    Case(
        "method-needs-uncomputed-feature",
        ["--methods", "needs_tfidf"],
        ("needs feature 'tfidf'", "computed features"),
        plugin=True,
    ),
    # ---------------------------------------------------------------- output folder
    Case(
        "out-unwritable",
        ["--output-dir", "/sys/distill-out"],
        ("cannot be written", "folder you can write to"),
        out="none",
    ),
    Case("out-foreign", [], ("not written by distill", "new or empty folder"), out="foreign"),
    Case(
        "out-is-a-file",
        ["--output-dir", "{d}/file.txt"],
        ("is a file, not a folder", "--output-dir"),
        _write("file.txt", "mine"),
        out="none",
    ),
    # ---------------------------------------------------------------- model
    Case("model-folder-missing", ["--model", "{d}/no-model"], ("does not exist", "--model")),
    Case(
        "model-not-a-model",
        ["--model", "{d}/model"],
        ("has no config.json", "save_pretrained"),
        lambda d: (d / "model").mkdir(),
    ),
    Case(
        "model-a-data-file",
        ["--model", "{d}/rows.jsonl"],
        ("has no config.json", "--model"),
        _write("rows.jsonl", "{}"),
    ),
    Case(
        "model-pickle-weights",
        ["--model", "{d}/model"],
        ("pytorch_model.bin", "safetensors only", "save_pretrained"),
        _model_folder("pytorch_model.bin"),
    ),
    Case("model-no-weights", ["--model", "{d}/model"], ("has no weights", "--model"), _model_folder(None)),
    Case(
        "model-lora-target-missing",
        ["--set", "train.target_modules=nope"],
        ("llama has no module named nope (train.target_modules)", "e.g. down_proj"),
        heavy=("torch",),  # an empty meta-device model of the architecture says which modules it has
    ),
    # transformers' AutoConfig, which asks the Hub for the model's config, imports torch
    Case(
        "model-hub-name-offline",
        ["--model", "some-org/not-cached-model"],
        ("some-org/not-cached-model", "embedded default"),
        heavy=("torch",),
    ),
    # ---------------------------------------------------------------- settings outside their declared range
    Case(
        "range-lora-r-zero",
        ["--set", "train.lora_r=0"],
        ("'train.lora_r' must be an integer >= 1, got 0", "--set train.lora_r=8"),
    ),
    Case(
        "range-max-new-tokens-zero",
        ["--set", "eval.max_new_tokens=0"],
        ("'eval.max_new_tokens' must be an integer >= 1, got 0", "--set eval.max_new_tokens=96"),
    ),
    Case(
        "range-learning-rate-negative",
        ["--set", "train.learning_rate=-1e-4"],
        ("'train.learning_rate' must be a number > 0", "--set train.learning_rate="),
    ),
    Case(
        "range-epochs-infinite",
        ["--set", "train.epochs=inf"],
        ("'train.epochs' must be a number > 0, got 'inf'", "--set train.epochs="),
    ),
    Case(
        "range-lora-dropout-one",
        ["--set", "train.lora_dropout=1"],
        ("'train.lora_dropout' must be a number in [0, 1), got 1",),
    ),
    Case(
        "range-warmup-ratio", ["--set", "train.warmup_ratio=1.5"], ("'train.warmup_ratio' must be a number in [0, 1]",)
    ),
    Case(
        "range-probe-fraction-zero",
        ["--set", "probe.fraction=0"],
        ("'probe.fraction' must be a number in (0, 1], got 0",),
    ),
    Case("range-max-train-one", ["--max-train", "1"], ("'data.max_train' must be an integer >= 2 (or null), got 1",)),
    Case(
        "range-split-seed-negative",
        ["--set", "data.split_seed=-1"],
        ("'data.split_seed' must be an integer in [0, 4294967295]",),
    ),
    Case(
        "range-cpus-per-trial-zero",
        ["--set", "resources.cpus_per_trial=0"],
        ("'resources.cpus_per_trial' must be a number > 0",),
    ),
    Case(
        "range-max-failures-negative",
        ["--set", "resources.max_failures=-1"],
        ("'resources.max_failures' must be an integer >= 0",),
    ),
    Case(
        "range-vllm-memory-share",
        ["--set", "resources.vllm_gpu_memory_utilization=1.5"],
        ("'resources.vllm_gpu_memory_utilization' must be a number in (0, 1]", "(the default)"),
    ),
    Case(
        "choice-report-metric",
        ["--set", "report.metrics=rougeL,rougeX"],
        (
            "report.metrics names 'rougeX', which is neither distill's metric (rouge1, rouge2, rougeL",
            "'rougeX'",
            "--set report.metrics=rougeL,bertscore_f1,heldout_loss (the default)",
        ),
    ),
    Case(
        "retired-bootstrap-samples",
        ["--set", "report.bootstrap_samples=2000"],
        ("'report.bootstrap_samples' is no longer used", "delete it"),
    ),
    Case(
        "choice-dtype",
        ["--set", "model.dtype=int4"],
        ("'model.dtype' must be one of auto, float32, bfloat16, float16, bfloat16-autocast", "int4"),
    ),
    Case(
        "choice-engine", ["--set", "eval.engine=tensorrt"], ("'eval.engine' must be one of auto, hf, vllm", "tensorrt")
    ),
    Case(
        "choice-pooling",
        ["--set", "embed.pooling=max"],
        ("'embed.pooling' must be one of mean, last", "--set embed.pooling=mean"),
    ),
    Case("choice-mode", ["--set", "mode=fast"], ("'mode' must be one of validate, quick, baseline, all", "'fast'")),
    Case(
        "cross-grad-blocks",
        ["--set", "probe.grad_dim=10"],
        ("probe.grad_dim=10 must be a multiple of probe.grad_blocks=4",),
    ),
    # ---------------------------------------------------------------- files as other tools write them
    # These load: each then stops on a budget of 0 whose message counts all 20 pool rows, so every row was read.
    Case(
        "data-bom-crlf-blank-lines-loads",
        ["--data", "{d}/excel.jsonl", "--fraction", "0.01"],
        (POOL,),
        _rows_as(
            "excel.jsonl", lambda rows: b"\xef\xbb\xbf" + _jsonl(rows).replace("\n", "\r\n").encode() + b"\r\n\r\n"
        ),
    ),
    Case(
        "data-json-array-as-jsonl-loads",
        ["--data", "{d}/array.jsonl", "--fraction", "0.01"],
        (POOL,),
        _rows_as("array.jsonl", lambda rows: json.dumps(rows, indent=2).encode()),
    ),
    Case(
        "data-jsonl-gz-loads",
        ["--data", "{d}/rows.jsonl.gz", "--fraction", "0.01"],
        (POOL,),
        _rows_as("rows.jsonl.gz", lambda rows: gzip.compress(_jsonl(rows).encode())),
    ),
    Case(
        "data-csv-gz-bom-loads",
        ["--data", "{d}/sheet.csv.gz", "--fraction", "0.01"],
        (POOL,),
        _rows_as("sheet.csv.gz", lambda rows: gzip.compress(("\ufeff" + _csv(rows)).encode())),
    ),
    Case(
        "data-folder-of-shards-loads",
        ["--data", "{d}/shards", "--fraction", "0.01"],
        (POOL,),
        _shards("shards", {"part-00000.jsonl": ROWS[:15], "part-00001.jsonl": ROWS[15:]}),
    ),
    Case(
        "data-utf16",
        ["--data", "{d}/utf16.csv"],
        ("is UTF-16 text, not UTF-8", "iconv -f utf-16"),
        _rows_as("utf16.csv", lambda rows: _csv(rows).encode("utf-16")),
    ),
    Case(
        "data-gz-not-gzip",
        ["--data", "{d}/plain.jsonl.gz"],
        ("cannot decompress", "Not a gzipped file", "gzip -t"),
        _rows_as("plain.jsonl.gz", lambda rows: _jsonl(rows).encode()),
    ),
    Case(
        "data-spreadsheet",
        ["--data", "{d}/sheet.xlsx"],
        ("unsupported file type '.xlsx'", "CSV UTF-8"),
        _write("sheet.xlsx", b"PK\x03\x04"),
    ),
    Case(
        "data-empty-folder",
        ["--data", "{d}/shards"],
        ("cannot read the folder", "doesn't contain any data files", "shards"),
        lambda d: (d / "shards").mkdir(),
    ),
    Case(
        "data-folder-named-like-a-file",
        ["--data", "{d}/rows.jsonl"],
        ("cannot read the folder", "rows.jsonl"),
        lambda d: (d / "rows.jsonl").mkdir(),
    ),
    Case(
        "data-folder-missing-split",
        ["--data", "{d}/hub", "--set", "data.test_split=validation"],
        ("has no split 'validation'", "train, test", "data.test_split"),
        _shards("hub/data", {"train-00000-of-00001.jsonl": ROWS, "test-00000-of-00001.jsonl": ROWS[:5]}),
    ),
]

# Each starts Ray, so there are few: the other wrong answers (duplicates, wrong count, not integers, wrong shape) take
# the same path from registry.select to this line, and tests/select/test_plugins.py checks every one of them in process.
RUN_CASES = [
    # ---------------------------------------------------------------- a user's selector, at run time
    Case(
        "run-selector-raises",
        ["--plugin", str(MISBEHAVING), "--methods", "random,balanced_lengths,misbehaves"],
        (
            f"selector 'misbehaves' ({MISBEHAVING}) raised ValueError: invalid literal for int()",
            "the traceback is in",
            "logs/run.log",
        ),
        out="earlier-run",
        grows={"cache/selection-*.json": 2},
    ),  # random's key holds the plugin's source
    Case(
        "run-selector-index-out-of-range",
        [
            "--plugin",
            str(MISBEHAVING),
            "--methods",
            "balanced_lengths,misbehaves",
            "--set",
            "select.params.misbehaves.answer=out_of_range",
        ],
        (f"selector 'misbehaves' ({MISBEHAVING}) returned index 10000 for a pool of 24", "6 distinct integer indices"),
        out="earlier-run",
        grows={"cache/selection-*.json": 1},
    ),
    # ---------------------------------------------------------------- a trial that fails
    Case(
        "run-trial-fails",
        # a module the model has (so preflight lets it through: model/fit.py) that LoRA cannot adapt
        ["--methods", "random", "--set", "train.target_modules=input_layernorm"],
        (
            "1 of 1 trial(s) failed; the first, trial random-s0 failed: ValueError: Target module LlamaRMSNorm(",
            "is not supported",
            "the traceback is in",
            "logs/run.log",
            "distill resume",
        ),
        out="earlier-run",
    ),
]


def _make_out(case: Case, folder: Path, earlier: Path | None) -> Path:
    """The output folder the case runs against: an earlier distill run's files, a copy of a real finished run
    (`earlier`, mtimes kept), a user's files, or none."""
    out = folder / "out"
    if case.out == "earlier-run":
        shutil.copytree(earlier, out)  # copy2: bytes and mtimes
    elif case.out == "previous":
        for name, text in {
            "run.json": "{}",
            "trials/random-s0/metrics.json": "{}",
            "selected/random.jsonl": "{}\n",
        }.items():
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


def _run(case: Case, folder: Path, tiny_model: str, earlier: Path | None = None) -> dict:
    folder.mkdir(parents=True)
    case.setup(folder)
    out = _make_out(case, folder, earlier)
    args = [a.format(d=folder) for a in case.args] + (RUN_SETTINGS if case.out == "earlier-run" else [])
    if "--output-dir" not in args:
        args += ["--output-dir", str(out)]
    if "--model" not in args:
        args += ["--model", tiny_model]  # a check that fails to fire must not start the real model
    watched = Path(args[args.index("--output-dir") + 1])
    before = snapshot(watched)
    env = {**cli_env(folder), "HF_DATASETS_CACHE": str(folder / "datasets-cache")}
    command = [PYTHON, "-c", (PLUGIN if case.plugin else "") + RUNNER, "quick"]
    start = time.perf_counter()
    result = subprocess.run(command + args, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    heavy = json.loads((folder / "heavy.json").read_text()) if (folder / "heavy.json").exists() else None
    return {
        "result": result,
        "before": before,
        "after": snapshot(watched),
        "watched": watched,
        "heavy": heavy,
        "seconds": time.perf_counter() - start,
    }


def earlier_run(folder: Path, tiny_model: str) -> Path:
    """A real finished run of the random method (features, its selection, one trial) for RUN_CASES to copy."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(REPO),
        "DISTILL_CACHE_DIR": str(folder / "cache"),
    }
    env.pop("RAY_ADDRESS", None)
    out = folder / "earlier-run"
    result = subprocess.run(
        [PYTHON, "-m", "distill", "quick", "--model", tiny_model, "--output-dir", str(out), *EARLIER_RUN],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "trials" / "random-s0" / "metrics.json").exists()
    return out


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tiny_model) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("hostile")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(_run, c, root / c.id, tiny_model) for c in CASES}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def run_outcomes(tmp_path_factory, tiny_model) -> dict[str, dict]:
    """RUN_CASES one after another (each starts Ray), all from copies of one earlier run."""
    root = tmp_path_factory.mktemp("hostile-run")
    earlier = earlier_run(root, tiny_model)
    return {c.id: _run(c, root / c.id, tiny_model, earlier) for c in RUN_CASES}


def test_at_least_fifty_distinct_cases():
    ids = [c.id for c in CASES + RUN_CASES]
    assert len(set(ids)) == len(ids) >= 50


def assert_one_line(case: Case, result: subprocess.CompletedProcess) -> None:
    """Exit 2, no traceback, one stderr line (problem — fix) holding every needle, in plain text."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("distill: error: ") and " — fix: " in lines[0], result.stderr
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    assert (
        "\x1b" not in lines[0] and "ray::" not in lines[0] and "pid=" not in lines[0]
    )  # no terminal codes, no Ray wrappers


@pytest.mark.slow  # a subprocess per case: the real CLI, once for each of CASES
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(case, outcomes):
    outcome = outcomes[case.id]
    assert_one_line(case, outcome["result"])
    assert outcome["after"] == outcome["before"], f"{outcome['watched']} changed"
    assert "Ray cluster" not in outcome["result"].stdout  # failed before any heavy work
    assert outcome["heavy"] == list(case.heavy), f"imported {outcome['heavy']} before failing"


@pytest.mark.slow
@pytest.mark.parametrize("case", RUN_CASES, ids=[c.id for c in RUN_CASES])
def test_a_failure_at_run_time_is_one_line_and_loses_nothing_computed(case, run_outcomes):
    """A selector or a trial that fails ends the run in one line naming it and its own error; every artifact of
    the earlier run is kept as it was, and what finished before the failure (other methods' selections) is cached."""
    outcome = run_outcomes[case.id]
    assert_one_line(case, outcome["result"])
    before, after = outcome["before"], outcome["after"]
    changed = [
        name
        for name, state in before.items()
        if state[0] != "dir" and not name.startswith(RUN_RECORDS) and after.get(name) != state
    ]
    assert not changed, f"the earlier run's {changed} changed"
    for pattern, n in case.grows.items():
        grown = sum(fnmatch.fnmatch(name, pattern) for name in after) - sum(
            fnmatch.fnmatch(name, pattern) for name in before
        )
        assert grown == n, (pattern, sorted(after))
    assert "Traceback" in (outcome["watched"] / "logs" / "run.log").read_text()  # the whole story is in the run log
