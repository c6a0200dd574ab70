"""scripts/distill.sbatch on a real Slurm: a one-node slurmctld + slurmd on 127.0.0.1 (tests/runtime/slurm/start_local_slurm.sh,
which installs slurm-wlm and munge where they are missing and it is root), `sbatch` of the script running a
reduced quick job, and its results in the job's output folder. Skipped, with the reason, where Slurm cannot start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.clusters import VENV_BIN, free_port, our_ray_processes, ray_env, stop_ray

REPO = Path(__file__).resolve().parents[2]
START = REPO / "tests" / "runtime" / "slurm" / "start_local_slurm.sh"
SBATCH = REPO / "scripts" / "distill.sbatch"
JOB_SECONDS = 300  # the reduced quick job takes about a minute alone; the suite's other worker shares the 2 cores
RAY_PORT_FLAGS = (  # every per-node port of Ray explicit and free: the suite's other clusters run beside this one
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of the loopback Slurm; its daemons are stopped (by pid file) after the module."""
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(START), str(state)], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.skip(f"no local Slurm here: {started.stderr.strip()[-500:]}")
    yield str(state / "slurm.conf")
    for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
        path = state / pid_file
        if path.exists():
            try:
                os.kill(int(path.read_text().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def _wait_for_job(job_id: str, env: dict) -> str:
    """The job's final state, from `sacct`-free Slurm: scontrol until it leaves the queue."""
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True)
        state = next((w.split("=", 1)[1] for w in shown.stdout.split() if w.startswith("JobState=")), "")
        if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", ""):
            return state
        time.sleep(2)
    subprocess.run(["scancel", job_id], env=env)
    return "TIMEOUT (the test's)"


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.extended
def test_sbatch_of_distills_script_runs_a_quick_job_to_its_results(slurm, tiny_job, tmp_path):
    job = tmp_path / "tiny.yaml"
    job.write_text(yaml.safe_dump({**tiny_job, "select": {**tiny_job["select"], "methods": ["random"]}}))
    out = tmp_path / "slurm-out"
    storage = tmp_path / "storage"  # the storage setting wired through: a folder apart from the output folder
    env = ray_env(tmp_path.name)
    ports = " ".join(f"{flag} {free_port()}" for flag in RAY_PORT_FLAGS)
    dashboard = free_port()
    env |= {
        "SLURM_CONF": slurm,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISTILL_VENV": str(VENV_BIN.parent),
        "DISTILL_HEAD_IP": "127.0.0.1",
        "DISTILL_RAY_PORT": str(free_port()),
        "DISTILL_DASHBOARD_PORT": str(dashboard),
        "DISTILL_METRICS_PORT": str(free_port()),
        "DISTILL_RAY_START_ARGS": ports,
    }
    log = tmp_path / "slurm-%j.log"
    command = ["sbatch", "--parsable", "--cpus-per-task", "2", "--output", str(log), str(SBATCH)]
    command += ["quick", "--job", str(job), "--storage", str(storage), "--output-dir", str(out)]
    start = time.perf_counter()
    try:
        submitted = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().split(";")[0]
        state = _wait_for_job(job_id, env)
        output = Path(str(log).replace("%j", job_id)).read_text()
        assert state == "COMPLETED", output[-4000:]
    finally:
        leftovers = our_ray_processes(tmp_path.name)
        stop_ray(tmp_path.name)
    print(f"sbatch job finished in {time.perf_counter() - start:.1f}s")
    assert f"Ray on 1 node(s), head 127.0.0.1:{env['DISTILL_RAY_PORT']}" in output
    assert f"dashboard http://127.0.0.1:{dashboard}" in output
    assert f"results in {out / 'comparison'} and {storage}/comparison" in output
    rows = json.loads((out / "comparison" / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"random"}
    assert (storage / "trials" / "random-s0" / "metrics.json").exists()  # the trial wrote to the storage
    assert not leftovers, f"Ray processes outlived the Slurm job: {[p.pid for p in leftovers]}"
