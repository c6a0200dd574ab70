"""The arguments of distill's tool subcommands (resume, report, plan, jobs): argparse builders only, so cli.py
reads as the list of commands and what each does."""

from __future__ import annotations

import argparse


def resume_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "run",
        metavar="OUTPUT_DIR|STORAGE",
        help="the run's output directory (it holds run.json), or its storage (s3://bucket/prefix, "
        "gs://bucket/prefix, a shared path) from any machine that reaches it",
    )
    cmd.add_argument(
        "--output-dir",
        help="resuming from storage: this driver's local folder for the run and its report "
        "(default: a new folder under results/)",
    )
    add_store_flags(cmd, "resuming")
    cmd.add_argument("-v", "--verbose", action="store_true", help="show Ray's, Tune's and the libraries' own logs")


def add_store_flags(cmd: argparse.ArgumentParser, doing: str) -> None:
    """How to reach a run kept in an object store (what storage.endpoint/region/anonymous say for a run)."""
    cmd.add_argument("--endpoint", help=f"{doing} from an S3-compatible store: its endpoint URL (storage.endpoint)")
    cmd.add_argument("--region", help=f"{doing} from S3: the bucket's region (storage.region)")
    cmd.add_argument(
        "--anonymous",
        action="store_true",
        help=f"{doing} from a store that takes no credentials, e.g. a GCS emulator (storage.anonymous)",
    )


def report_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "run",
        nargs="?",
        default="results",
        metavar="RUN",
        help="the run's output directory, or its storage (s3://bucket/prefix, gs://bucket/prefix) (default: results)",
    )
    cmd.add_argument(
        "--output-dir",
        help="write the report (comparison/) into this folder, not into RUN; for a run in an object store, the "
        "folder its files are copied into (default: a new folder under results/)",
    )
    cmd.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report of a folder that holds a run's trials (without it, such a folder is refused)",
    )
    add_store_flags(cmd, "reporting")
    cmd.add_argument(
        "--export",
        metavar="DIR",
        help="copy what the report reads into the new folder DIR (the trials' "
        "scores without their texts: small enough to publish) and build "
        "the report there, from that folder alone",
    )
    cmd.add_argument(
        "--metrics",
        help="the metrics tested against random, in order, e.g. rougeL,heldout_loss "
        "(report.metrics; default: what the run was started with)",
    )


def plan_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("run", metavar="OUTPUT_DIR", help="a pilot run with ≥ 2 seeds (its trials and their timings)")
    cmd.add_argument(
        "--mde",
        required=True,
        help="the difference the run must detect with 80%% power: in the metric's units (0.01) or a share of "
        "random's mean (2%%)",
    )
    cmd.add_argument("--metric", help="the metric to plan for (default: the pilot's first of report.metrics)")
    cmd.add_argument("--max-examples", type=int, help="held-out examples available (default: unlimited)")
    cmd.add_argument("--parallel", type=int, default=2, help="trials running at once, for the wall time (default 2)")


def jobs_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--show",
        metavar="NAME|PATH",
        help="print one job as it resolves: its `base:` chain applied, as YAML (defaults left out)",
    )
