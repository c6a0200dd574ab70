"""Command line: `distill {validate,quick,baseline,all,resume,report,plan,methods,jobs,k8s}` (also `python -m distill …`).

Each run mode reads its job spec (distill/config/jobs/<mode>.yaml unless --job says otherwise) and applies
the flags as overrides. A DistillError becomes one line on stderr and exit code 2: no traceback.
A subcommand is one function decorated with @command (its arguments, if any, in `arguments=`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.cli_args import jobs_arguments, plan_arguments, report_arguments, resume_arguments
from distill.config.load import make_config
from distill.errors import DistillError

# validate checks a job as it is; with no --job it checks the quick job
DEFAULT_JOB = {"validate": "quick", "k8s": "quick"}

# flag → dotted config key; anything else goes through --set section.key=value
FLAGS = {
    "model": ("model.name", "target model: embedded:smollm2-135m, a Hub name or a local folder"),
    "data": (
        "data.source",
        "embedded:billsum, a Hub dataset name, a local .jsonl/.json/.csv/.tsv/.parquet "
        "(text formats also .gz), or a folder of such shards; rows are summarization (text, summary), "
        "instruction (instruction, input, output) or chat (messages), detected from the columns",
    ),
    "fraction": ("select.fraction", "selection budget as a share of the training pool, in (0, 1]"),
    "methods": ("select.methods", "comma-separated selection methods (see `distill methods`)"),
    "max_train": ("data.max_train", "cap on the training pool size"),
    "test_size": ("data.test_size", "number of held-out examples"),
    "seeds": ("seeds", "repeat every method with this many selection+training seeds"),
    "output_dir": ("output_dir", "where results, caches and trials go (default: results)"),
    "storage": (
        "storage.uri",
        "where every node writes trials and checkpoints: a shared path, s3://bucket/prefix or "
        "gs://bucket/prefix (default: the output directory)",
    ),
}


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda _: None):
    """Register `fn(args) -> exit code` as the subcommand `name`."""

    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = Command(help, fn, arguments)
        return fn

    return register


def add_plugin_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py|MODULE",
        help="load your own selectors from a .py file or module (repeatable; adds to select.plugins)",
    )


def job_arguments(mode: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--job",
            help=f"job spec: a YAML path or a name from `distill jobs` (default: {DEFAULT_JOB.get(mode, mode)})",
        )
        for flag, (_, help_text) in FLAGS.items():
            cmd.add_argument("--" + flag.replace("_", "-"), dest=flag, help=help_text)
        cmd.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override any config key, e.g. --set train.learning_rate=1e-4 (repeatable)",
        )
        add_plugin_flag(cmd)
        cmd.add_argument(
            "--until-decided",
            nargs="?",
            const="",
            metavar="MAX_TRIALS",
            help="after the first round, add seeds only to the methods still undecided against random, look after "
            "look (adaptive.looks, adaptive.seeds_per_look), until all are decided or MAX_TRIALS trials are spent",
        )
        if mode not in DEFAULT_JOB:  # a run mode
            cmd.add_argument(
                "-v",
                "--verbose",
                action="store_true",
                help="show Ray's, Tune's and the libraries' own logs on the console "
                "(by default they go to <output-dir>/logs/run.log)",
            )

    return add


def overrides(args: argparse.Namespace) -> dict[str, str]:
    values = {key: getattr(args, flag) for flag, (key, _) in FLAGS.items() if getattr(args, flag) is not None}
    if args.until_decided is not None:  # the budget is checked by the schema like any adaptive.max_trials
        values["adaptive.enabled"] = "true"
        values.update({"adaptive.max_trials": args.until_decided} if args.until_decided else {})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise DistillError(f"--set '{item}' is not KEY=VALUE", "write e.g. --set train.learning_rate=1e-4")
        values[key.strip()] = value
    return values


def config_of(args: argparse.Namespace):
    values = overrides(args)
    if args.command not in DEFAULT_JOB:  # a run mode runs in its own mode, whatever the job says
        values.setdefault("mode", args.command)
    return make_config(args.job or DEFAULT_JOB.get(args.command, args.command), values, plugins=args.plugin)


@command(
    "validate",
    "check a job before running it: versions, GPU, Ray, HF_TOKEN, data, model, disk, W&B",
    job_arguments("validate"),
)
def validate(args: argparse.Namespace) -> int:
    from distill.console.checklist import checklist

    return checklist(config_of(args))


@command("all", "every registered method + the full-pool baseline (distill/config/jobs/all.yaml)", job_arguments("all"))
@command(
    "baseline",
    "fine-tune on the full training pool only (distill/config/jobs/baseline.yaml)",
    job_arguments("baseline"),
)
@command("quick", "the main job: 5 methods at a 10%% budget (distill/config/jobs/quick.yaml)", job_arguments("quick"))
def run_mode(args: argparse.Namespace) -> int:
    return run(config_of(args), args.verbose)


def run(cfg, verbose: bool) -> int:
    """The run's inputs are checked first and pipeline (torch, Ray) is imported only once they pass:
    bad input fails in about a second."""
    from distill.runtime import preflight

    checked = preflight.check(cfg)
    from distill.runtime import pipeline

    pipeline.run(cfg, verbose=verbose, checked=checked)
    return 0


@command(
    "resume",
    "continue a run whose driver died: reuse what is done, continue trials from their checkpoints",
    resume_arguments,
)
def resume(args: argparse.Namespace) -> int:
    from distill.config.load import config_from_run, config_from_storage

    if "://" in args.run or args.output_dir or args.endpoint or args.region or args.anonymous:
        stored = config_from_storage(args.run, args.output_dir, args.endpoint, args.region, args.anonymous)
        return run(stored, args.verbose)
    return run(config_from_run(args.run), args.verbose)


@command("report", "rebuild the comparison report from stored trial results", report_arguments)
def report(args: argparse.Namespace) -> int:
    from distill.config.load import report_settings
    from distill.report.build import build_report
    from distill.report.load import check_destination, export, fetch_run

    if "://" in args.run:  # read through the storage layer, as --storage is, into a local folder
        dest = Path(args.output_dir or Path("results") / f"report-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        check_destination(dest, dest, args.overwrite)
        out = fetch_run(args.run, dest, args.endpoint, args.region, args.anonymous)
    else:
        out = Path(args.run).resolve()
        dest = Path(args.output_dir).resolve() if args.output_dir else out
    settings = report_settings(out, args.metrics)  # a bad --metrics is refused before anything is written
    if args.export:
        export(out, Path(args.export).resolve())
        out = dest = Path(args.export).resolve()
    else:
        check_destination(dest, out, args.overwrite)
    build_report(out, settings, asked=bool(args.metrics), dest=dest)
    return 0


def k8s_arguments(cmd: argparse.ArgumentParser) -> None:
    from distill.kuberay import Workers, default_image

    job_arguments("k8s")(cmd)
    cmd.add_argument(
        "--image", default=default_image(), help="the pods' image, with distill installed (default: %(default)s)"
    )
    cmd.add_argument("--workers", type=int, default=Workers.replicas, help="GPU worker pods (default: %(default)s)")
    cmd.add_argument(
        "--gpus-per-worker", type=int, default=Workers.gpus, help="GPUs of each worker pod (default: %(default)s)"
    )


@command("k8s", "print a KubeRay RayJob manifest that runs the job (kubectl apply -f -)", k8s_arguments)
def k8s(args: argparse.Namespace) -> int:
    import yaml

    from distill.kuberay import Workers, rayjob

    job = args.job or DEFAULT_JOB["k8s"]
    if args.workers < 1 or args.gpus_per_worker < 1:
        raise DistillError("--workers and --gpus-per-worker must be at least 1", "give each a whole number ≥ 1")
    manifest = rayjob(config_of(args), job, args.image, Workers(args.workers, args.gpus_per_worker))
    print(yaml.safe_dump(manifest, sort_keys=False), end="")
    return 0


@command("plan", "the cheapest seeds × held-out examples that detect a difference, from a pilot run", plan_arguments)
def plan(args: argparse.Namespace) -> int:
    from distill.report.plan import run_plan

    print(run_plan(Path(args.run).resolve(), args.mde, args.metric, args.max_examples, args.parallel))
    return 0


@command("methods", "list the registered selection methods, with what each needs and costs", add_plugin_flag)
def methods(args: argparse.Namespace) -> int:
    from distill.select import plugins, registry

    plugins.load(args.plugin)
    for name in registry.names():
        method = registry.get(name)
        needs = ", ".join(method.needs) or "text stats"  # no needs: the text statistics every pool has
        print(f"{name:20s} {method.description} [needs: {needs}; cost: {method.cost}]")
    return 0


@command("jobs", "list the job specs shipped with distill (use one with --job NAME)", jobs_arguments)
def jobs(args: argparse.Namespace) -> int:
    import yaml

    from distill.config.load import job_descriptions, load_job, make_config

    if args.show:
        make_config(args.show)  # a job that would not run is refused here too, in one line
        print(yaml.safe_dump(load_job(args.show), sort_keys=False, allow_unicode=True, width=100), end="")
        return 0
    for name, description in job_descriptions().items():
        print(f"{name:15s} {description}")
    return 0


class VersionAction(argparse.Action):
    """--version: the package version and git commit (looked up only when asked for)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the package and git versions and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from distill.version import describe

        print(describe())
        parser.exit()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="distill", description="Which 10% of my training data should I fine-tune on?")
    top.add_argument("--version", action=VersionAction)
    sub = top.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.arguments(sub.add_parser(name, help=cmd.help))
    return top


def main(argv: list[str] | None = None) -> int:
    from distill import process

    process.setup()  # the environment and the console's log handler: here, never on import
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except DistillError as exc:
        # raised inside a Ray task, it arrives as Ray's subclass of it with the task's traceback: print the original
        print(f"distill: error: {getattr(exc, 'cause', exc)}", file=sys.stderr)
        return DistillError.exit_code
    except KeyboardInterrupt:
        print("distill: interrupted; finished trials are kept under the output directory", file=sys.stderr)
        return 130
