#!/usr/bin/env python
"""The default quick job end to end: stage breakdown, orchestration overhead, core utilisation.

    .venv/bin/python scripts/bench_quick.py
    .venv/bin/python scripts/bench_quick.py --checkout /tmp/main-copy --label before

Runs `python -m distill.quick` (from `--checkout`, default this one) into a fresh output folder, so
nothing is reused, and reads the wall time of each stage from its `[distill] <stage> done in Ns`
lines. remainder = wall − the stages: interpreter start, Ray start/stop, Tune's own bookkeeping
(goal ≤ 10% of wall). While it runs, the CPU seconds of the whole process tree (driver, raylet,
Ray workers, Tune trials; psutil, every 0.5 s) are sampled: utilisation of a span = CPU seconds /
(wall × cores). train and eval are the per-trial sums from each trial's metrics.json (trials run
concurrently, so they add up to more than the trial stage's wall).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib
import psutil

STAGES = {
    "data": r"data",
    "model": r"model",
    "embed": r"embed",
    "select": r"select .*",
    "trials": r"train \+ evaluate .*",
    "report": r"report",
}
DONE = re.compile(r"\[distill\] (?P<stage>.+) done in (?P<seconds>[\d.]+)s")


class TreeCpu:
    """CPU seconds used so far by `root` and every descendant it has had, dead ones included.

    Each process's last sampled CPU time is kept after it exits (Ray's workers are not reaped into
    a parent we could read `children_*` times from), so the total never goes down; a process that
    exits loses at most one sampling interval of CPU time.
    """

    def __init__(self, root: psutil.Process):
        self.root = root
        self.seen: dict[tuple[int, float], float] = {}  # (pid, start time) → CPU seconds

    def total(self) -> float:
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return sum(self.seen.values())


def run_job(
    checkout: Path, out: Path, extra: list[str]
) -> tuple[float, list[tuple[float, str]], list[tuple[float, float]]]:
    """Run the quick job; returns (wall, timestamped log lines, timestamped tree CPU seconds)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.quick", "--output-dir", str(out), *extra],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tree, samples, lines = TreeCpu(psutil.Process(proc.pid)), [], []

    def sample():
        while proc.poll() is None:
            samples.append((time.perf_counter() - start, tree.total()))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip()))
        if line.startswith("[distill]"):
            print(line.rstrip(), flush=True)
    proc.wait()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        print("\n".join(text for _, text in lines[-40:]), file=sys.stderr)
        raise SystemExit(f"the quick job failed with exit code {proc.returncode}")
    return wall, lines, samples


def stage_times(lines: list[tuple[float, str]]) -> dict[str, dict]:
    """{stage: {seconds, end}} from the `done in` lines (end: seconds since the job started)."""
    found = {}
    for at, text in lines:
        match = DONE.search(text)
        for name, pattern in STAGES.items():
            if match and re.fullmatch(pattern, match["stage"]):
                found[name] = {"seconds": float(match["seconds"]), "end": at}
    return found


def utilisation(samples: list[tuple[float, float]], start: float, end: float, cores: int) -> float:
    """Share of `cores` the job's processes kept busy between `start` and `end` (seconds since launch)."""
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2:
        return float("nan")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / ((t1 - t0) * cores)


def trial_sums(out: Path) -> dict:
    metrics = [json.loads(p.read_text()) for p in sorted(out.glob("trials/*/metrics.json"))]
    return {
        "trials": len(metrics),
        "train_seconds_sum": round(sum(m["train_seconds"] for m in metrics), 1),
        "eval_seconds_sum": round(sum(m["eval_seconds"] for m in metrics), 1),
        "trial_peak_memory_mb_max": round(max(m["peak_memory_mb"] for m in metrics), 1),
        "rougeL": {m["trial"]: round(m["rougeL"], 6) for m in metrics},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--checkout", type=Path, default=benchlib.ROOT, help="the distill checkout to run")
    ap.add_argument("--label", default="after")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, default=None, help="default: docs/bench/quick-<label>.json")
    args, extra = ap.parse_known_args(argv)  # anything else goes to distill.quick
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
        wall, lines, samples = run_job(args.checkout.resolve(), Path(tmp) / "results", extra)
        sums = trial_sums(Path(tmp) / "results")
    stages = stage_times(lines)
    missing = set(STAGES) - set(stages)
    if missing:
        raise SystemExit(f"no 'done in' line for stage(s) {sorted(missing)}")
    rows = [
        {"stage": name, "seconds": s["seconds"], "share_of_wall": round(s["seconds"] / wall, 3)}
        for name, s in stages.items()
    ]
    remainder = wall - sum(s["seconds"] for s in stages.values())
    rows.append(
        {
            "stage": "remainder (orchestration)",
            "seconds": round(remainder, 1),
            "share_of_wall": round(remainder / wall, 3),
        }
    )
    rows.append({"stage": "wall", "seconds": round(wall, 1), "share_of_wall": 1.0})
    trials = stages["trials"]
    trial_util = utilisation(samples, trials["end"] - trials["seconds"], trials["end"], args.cores)
    job_util = utilisation(samples, 0, wall, args.cores)
    benchlib.print_table(rows, ["stage", "seconds", "share_of_wall"])
    print(
        f"trial stage: {trial_util:.0%} of {args.cores} cores busy; whole job {job_util:.0%}; "
        f"train {sums['train_seconds_sum']}s + eval {sums['eval_seconds_sum']}s summed over {sums['trials']} trials; "
        f"largest trial peak RSS {sums['trial_peak_memory_mb_max']} MB"
    )
    benchlib.write_json(
        args.json or benchlib.ROOT / "docs" / "bench" / f"quick-{args.label}.json",
        {
            "benchmark": "quick",
            "label": args.label,
            "checkout": str(args.checkout),
            "extra_args": extra,
            "machine": benchlib.machine(),
            "load_average_at_start": load_before,
            "wall_s": round(wall, 1),
            "stages": rows,
            "trial_stage_core_utilisation": round(trial_util, 3),
            "job_core_utilisation": round(job_util, 3),
            **sums,
            "cpu_timeline": [(round(t, 1), round(c, 1)) for t, c in samples[::10]],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
