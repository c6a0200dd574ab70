#!/usr/bin/env python
"""The cost of S3 storage: the quick job with its storage in S3 against the default (the output folder), side by side.

    .venv/bin/python scripts/bench_storage.py                   # the quick job, one run per arm
    .venv/bin/python scripts/bench_storage.py --repeats 2       # local, s3, s3, local: medians per arm
    .venv/bin/python scripts/bench_storage.py --max-train 40    # anything else goes to distill.quick

In the S3 arm everything a worker writes goes to moto's S3 server on 127.0.0.1, through pyarrow's S3 client
(trial records, Tune's checkpoints, the features cache, selections, the report), and the driver copies what it
reads back into its output folder; in the local arm storage is the output folder and nothing is copied. Both
arms run the same job into fresh folders (and a fresh S3 prefix), so nothing is reused. The overhead is the S3
arm's extra wall time as a share of the local arm's: the script exits 1 when it is above --bar (5%), or when
any run's ROUGE-L per method differs from another's (where files go must not change what is computed). The box is
shared, so the arms alternate and each arm's median run is compared; the stage rows show where time went.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import benchlib
from bench_quick import STAGES, run_job, stage_times

from tests.clusters import s3_server  # noqa: E402  the S3-compatible server the test suite uses

BUCKET = "bench"


def arm_order(repeats: int) -> list[str]:
    """local, s3 / s3, local / ...: neither arm always runs first on a box whose load drifts."""
    pairs = [("local", "s3") if i % 2 == 0 else ("s3", "local") for i in range(repeats)]
    return [arm for pair in pairs for arm in pair]


def run_arm(arm: str, index: int, s3, extra: list[str]) -> dict:
    storage = (
        []
        if arm == "local"
        else ["--storage", f"s3://{BUCKET}/run-{index}", "--set", f"storage.endpoint={s3.endpoint}"]
    )
    with tempfile.TemporaryDirectory(prefix=f"bench-storage-{arm}-") as tmp:
        wall, lines, _ = run_job(benchlib.ROOT, Path(tmp) / "results", [*storage, *extra])
        results = Path(tmp) / "results" / "comparison" / "results.json"
        rouge = {r["method"]: r["rougeL"] for r in json.loads(results.read_text())["rows"]} if results.exists() else {}
    stages = {name: s["seconds"] for name, s in stage_times(lines).items()}
    run = {"arm": arm, "wall_s": round(wall, 1), **{f"{name}_s": stages.get(name) for name in STAGES}, "rougeL": rouge}
    if arm == "s3":
        stored = s3.files(f"{BUCKET}/run-{index}")
        run.update(objects=len(stored), stored_mb=round(sum(map(len, stored.values())) / 2**20, 1))
    print(f"{arm}: {run}", flush=True)
    return run


def median_run(runs: list[dict], arm: str) -> dict:
    """The arm's run with the median wall time (a real run, so its stages add up)."""
    mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["wall_s"])
    return mine[(len(mine) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--repeats", type=int, default=1, help="runs per arm")
    ap.add_argument("--bar", type=float, default=0.05, help="the most S3 may add, as a share of the local wall")
    ap.add_argument("--json", type=Path, default=benchlib.ROOT / "docs" / "bench" / "storage.json")
    args, extra = ap.parse_known_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-moto-") as tmp, s3_server(Path(tmp) / "moto.log") as s3:
        os.environ.update(s3.env)  # the keys reach the driver and its Ray workers as a user's would: the environment
        s3.bucket(BUCKET)
        runs = [run_arm(arm, i, s3, extra) for i, arm in enumerate(arm_order(args.repeats))]
    local, remote = median_run(runs, "local"), median_run(runs, "s3")
    overhead = (remote["wall_s"] - local["wall_s"]) / local["wall_s"]
    # where the files go must not change what is computed: every run's ROUGE-L per method, identical
    same = bool(local["rougeL"]) and all(r["rougeL"] == local["rougeL"] for r in runs)
    columns = ["arm", "wall_s", *(f"{name}_s" for name in STAGES), "objects", "stored_mb"]
    benchlib.print_table([local, remote], columns)
    print(
        f"S3 storage overhead: {remote['wall_s'] - local['wall_s']:+.1f} s = {overhead:+.1%} of the local run "
        f"(bar {args.bar:.0%}; medians of {args.repeats} run(s) per arm; every run's wall: "
        f"local {[r['wall_s'] for r in runs if r['arm'] == 'local']}, s3 {[r['wall_s'] for r in runs if r['arm'] == 's3']})"
    )
    print(f"ROUGE-L per method {'identical in every run' if same else 'DIFFERS between runs'}: {local['rougeL']}")
    benchlib.write_json(
        args.json,
        {
            "benchmark": "storage",
            "command": " ".join(["scripts/bench_storage.py", *(argv or sys.argv[1:])]),
            "machine": benchlib.machine(),
            "load_average_at_start": load_before,
            "repeats": args.repeats,
            "overhead_share": round(overhead, 4),
            "overhead_s": round(remote["wall_s"] - local["wall_s"], 1),
            "bar_share": args.bar,
            "met": overhead <= args.bar and same,
            "same_results": same,
            "median": {"local": local, "s3": remote},
            "runs": runs,
            "spread_s": {
                arm: round(statistics.pstdev([r["wall_s"] for r in runs if r["arm"] == arm]), 1)
                for arm in ("local", "s3")
            },
        },
    )
    return 0 if overhead <= args.bar and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
