"""Command line: `python -m distill {validate,quick,baseline,all,report,methods}`.

Each run mode reads its job spec (jobs/<mode>.yaml unless --job says otherwise) and applies the
flags as overrides. A DistillError becomes one line on stderr and exit code 2: no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.config import MODES, make_config
from distill.errors import DistillError

# validate checks a job as it is; with no --job it checks the quick job
DEFAULT_JOB = {"validate": "quick"}

# flag → dotted config key; anything else goes through --set section.key=value
FLAGS = {
    "model": ("model.name", "target model: embedded:smollm2-135m, a Hub name or a local folder"),
    "data": ("data.source", "embedded:billsum, a Hub dataset name, or a local .jsonl/.json/.csv/.parquet"),
    "fraction": ("select.fraction", "selection budget as a share of the training pool, in (0, 1]"),
    "methods": ("select.methods", "comma-separated selection methods (see `python -m distill methods`)"),
    "max_train": ("data.max_train", "cap on the training pool size"),
    "test_size": ("data.test_size", "number of held-out examples"),
    "seeds": ("seeds", "repeat every method with this many selection+training seeds"),
    "output_dir": ("output_dir", "where results, caches and trials go (default: results)"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m distill", description="Which 10%% of my training data should I fine-tune on?")
    sub = top.add_subparsers(dest="command", required=True)
    for mode in MODES:
        cmd = sub.add_parser(mode, help=f"run the {mode} job")
        cmd.add_argument("--job", help=f"job spec: a YAML path or a name in jobs/ (default: {DEFAULT_JOB.get(mode, mode)})")
        for flag, (_, help_text) in FLAGS.items():
            cmd.add_argument("--" + flag.replace("_", "-"), dest=flag, help=help_text)
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override any config key, e.g. --set train.learning_rate=1e-4 (repeatable)")
        add_plugin_flag(cmd)
    rep = sub.add_parser("report", help="rebuild the comparison report from stored trial results")
    rep.add_argument("output_dir", nargs="?", default="results")
    rep.add_argument("--bootstrap-samples", type=int, default=2000, help="bootstrap resamples for CIs and tests")
    add_plugin_flag(sub.add_parser("methods", help="list the registered selection methods"))
    return top


def add_plugin_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                     help="load your own selectors from a .py file or module (repeatable; adds to select.plugins)")


def overrides(args: argparse.Namespace) -> dict[str, str]:
    values = {key: getattr(args, flag) for flag, (key, _) in FLAGS.items() if getattr(args, flag) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise DistillError(f"--set '{item}' is not KEY=VALUE", "write e.g. --set train.learning_rate=1e-4")
        values[key.strip()] = value
    return values


def run_command(args: argparse.Namespace) -> int:
    if args.command == "methods":
        from distill import plugins
        from distill.select import registry

        plugins.load(args.plugin)
        for name in registry.names():
            selector = registry.get(name)
            print(f"{name:20s} {selector.description}")
        return 0
    if args.command == "report":
        from distill import report

        report.build_report(Path(args.output_dir).resolve(), bootstrap_samples=args.bootstrap_samples)
        return 0
    values = overrides(args)
    if args.command not in DEFAULT_JOB:  # a run mode runs in its own mode, whatever the job says
        values.setdefault("mode", args.command)
    cfg = make_config(args.job or DEFAULT_JOB.get(args.command, args.command), values, plugins=args.plugin)
    if args.command == "validate":
        from distill.validate import checklist

        return checklist(cfg)
    from distill import pipeline

    pipeline.run(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_command(args)
    except DistillError as exc:
        print(f"distill: error: {exc}", file=sys.stderr)
        return DistillError.exit_code
    except KeyboardInterrupt:
        print("distill: interrupted; finished trials are kept under the output directory", file=sys.stderr)
        return 130
