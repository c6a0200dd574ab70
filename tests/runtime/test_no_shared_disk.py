"""A cluster without a shared disk, as in the cloud: runs whose storage is S3 complete, survive a lost node and a
killed driver, and a run whose storage is a local path stops before any work.

One loopback cluster for the module: a head with no CPUs (it holds the drivers, as on a real cluster) and two
1-CPU worker nodes, each started in its own mount namespace with an empty tmpfs over `root`, the folder every
driver here writes its output folder into. Whatever a worker wrote there instead of to storage is lost to the
driver, and the test fails. Storage is moto's S3 server on 127.0.0.1, reached through pyarrow's real S3 client:
the endpoint from the job's `storage` section, the keys from environment variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from distill.model import checkpoint
from distill.store import counters
from tests.clusters import FAST_NODE_DEATH, S3_KEYS, Cluster, S3Server, cluster, s3_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.extended]
REPO = Path(__file__).resolve().parents[2]
FAULT = "train_step"  # the fault point the tests arm: a trial stalls after its step-2 checkpoint
TEST_SETTINGS = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Split:
    """The module's cluster, S3 server and the folder its worker nodes cannot see."""

    nodes: Cluster
    s3: S3Server
    root: Path  # drivers write here; worker nodes see an empty tmpfs instead
    faults: Path  # DISTILL_FAULT_DIR, visible everywhere: the tests' instrument, not the product's

    def arm(self, armed: bool) -> None:
        """Stall the next trial to reach step 2 (for HANG_SECONDS), or never: the fault fires when its marker is absent."""
        marker = self.faults / f"{FAULT}.json"
        if armed:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text("{}")

    def job(self, tiny_job: dict, name: str, storage: dict | None) -> tuple[Path, Path]:
        """The tiny job for this cluster, writing into root/<name>; returns (job file, output folder)."""
        out = self.root / name / "results"
        job = {
            **tiny_job,
            "output_dir": str(out),
            "embed": {"num_actors": 2},  # one 1-CPU actor per worker node
            "train": {**tiny_job["train"], "max_steps": 6, "epochs": 3},
            "resources": {"address": self.nodes.address, "checkpoint_every": 2, "max_failures": 1},
        }
        if storage:
            job["storage"] = storage
        path = self.faults.parent / f"{name}.yaml"
        path.write_text(yaml.safe_dump(job))
        return path, out

    def s3_storage(self, prefix: str) -> dict:
        return {"uri": f"s3://runs/{prefix}", "endpoint": self.s3.endpoint}

    def start_stalling(self, job: Path, log: Path) -> tuple[subprocess.Popen, dict]:
        """Start `distill quick` with the fault armed and wait until a trial stalls after its step-2 checkpoint;
        returns the driver and what the stalled trial recorded (its pid, its tag)."""
        self.arm(True)
        stalled = self.faults / f"{FAULT}.json"
        driver = self.distill("quick", "--job", str(job), log=log)
        try:
            wait_for(lambda: stalled.exists() and stalled.read_text() != "{}", 360, "a trial to stall at step 2")
        except BaseException:
            driver.kill()
            raise
        return driver, json.loads(stalled.read_text())

    def run(self, *args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        """`python -m distill ARGS` on this cluster, to its end."""
        return subprocess.run(
            [sys.executable, "-m", "distill", *args],
            env=self.nodes.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def distill(self, *args: str, log: Path) -> subprocess.Popen:
        with open(log, "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "distill", *args],
                env=self.nodes.env,
                cwd=self.faults.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root, faults = tmp_path_factory.mktemp("driver-disk"), tmp_path_factory.mktemp("faults")
    with s3_server(faults.parent / "moto.log") as s3:
        s3.bucket("runs")
        env = {
            **TEST_SETTINGS,
            **s3.env,
            **FAST_NODE_DEATH,
            "DISTILL_FAULT": f"{FAULT}:2:hang",
            "DISTILL_FAULT_DIR": str(faults),
        }
        with cluster(
            ["--include-dashboard", "false", "--num-cpus", "0"],
            workers=2,
            hidden=root,
            env=env,
            worker_args=("--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024)),
        ) as nodes:
            yield Split(nodes, s3, root, faults)


@pytest.fixture
def cluster_ready(split):
    """Two live worker nodes (a test before may have killed one) and no fault armed."""
    split.nodes.ensure_workers(2)
    split.arm(False)
    return split


def _finish(driver: subprocess.Popen, log: Path, timeout: float) -> str:
    code = driver.wait(timeout=timeout)
    text = log.read_text()
    assert code == 0, text[-4000:]
    return text


def _run_log(out: Path) -> str:
    """The driver's log: Ray's and the trials' own lines (the console keeps stdout quiet)."""
    path = out / "logs" / "run.log"
    return path.read_text() if path.exists() else ""


def test_local_storage_on_a_cluster_without_a_shared_disk_stops_before_any_work(cluster_ready, tiny_job, tmp_path):
    job, out = cluster_ready.job(tiny_job, "local", storage=None)  # the default: the output folder
    start = time.perf_counter()
    refused = cluster_ready.run("quick", "--job", str(job), cwd=tmp_path, timeout=300)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    line = refused.stderr.strip()
    assert "\n" not in line and "2 of 3 nodes of the cluster cannot see" in line and str(out) in line
    assert "s3://bucket/prefix" in line and "NFS" in line  # the fix
    assert "embed" not in refused.stdout.split("Ray cluster:")[-1]  # nothing ran after joining the cluster
    assert not (out / "cache").exists() and not (out / "tune").exists() and counters.read(out) == {}
    print(f"refused in {time.perf_counter() - start:.1f}s")


def test_the_node_check_passes_storage_that_every_node_reaches(cluster_ready, tmp_path):
    """The same check, run by a driver on this cluster: a path outside the hidden folder (as an NFS mount every node
    has) and S3 (each node with its own keys) pass; the driver's own disk does not."""
    nodes, s3 = cluster_ready.nodes, cluster_ready.s3
    check = f"""if True:
        import ray
        from distill.errors import DistillError
        from distill.runtime.session import check_nodes_see
        from distill.store.storage import check_reachable, open_storage
        ray.init(address="{nodes.address}", log_to_driver=False)
        for store in (open_storage("{tmp_path}", "{tmp_path / "nfs"}"),
                      open_storage("{tmp_path}", "s3://runs/check", endpoint="{s3.endpoint}")):
            check_reachable(store)
            check_nodes_see(store)
            print("seen by every node:", store.uri)
        try:
            check_nodes_see(open_storage("{cluster_ready.root}"))
        except DistillError as refused:
            print("refused:", refused.problem)
        """
    ran = subprocess.run([sys.executable, "-c", check], env=nodes.env, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert (
        f"seen by every node: {tmp_path / 'nfs'}" in ran.stdout and "seen by every node: s3://runs/check" in ran.stdout
    )
    assert "refused: storage" in ran.stdout and "2 of 3 nodes" in ran.stdout


def _assert_completed_in_s3(s3, prefix: str, out: Path, text: str, checkpoints: int) -> None:
    """A run whose trials ran on the worker nodes: its results in S3 and in the local report, Tune's files
    (`checkpoints` trial checkpoints among them) in S3 only and holding numbers only, and the S3 keys (from the
    environment) written nowhere."""
    assert "Ray cluster: 2 CPU" in text  # the head has none: every trial and actor ran on a worker node
    stored = s3.files(prefix)
    report = json.loads((out / "comparison" / "results.json").read_text())
    assert {r["method"] for r in report["rows"]} == {"random", "balanced_lengths"}
    assert json.loads(stored[f"{prefix}/comparison/results.json"]) == report  # the report, locally and in storage
    for name in ("random-s0", "balanced_lengths-s0"):  # written by the workers, copied down by the driver
        for file in ("metrics.json", "predictions.jsonl"):
            assert stored[f"{prefix}/trials/{name}/{file}"] == (out / "trials" / name / file).read_bytes()
    assert {f"{prefix}/run.json", f"{prefix}/counters.json", f"{prefix}/selected/random.jsonl"} <= set(stored)
    assert [k for k in stored if k.startswith(f"{prefix}/cache/features-") and k.endswith("embedding.npy")]
    stored_checkpoints = [k for k in stored if k.startswith(f"{prefix}/tune/") and k.endswith(checkpoint.STATE_FILE)]
    assert len(stored_checkpoints) == checkpoints, stored_checkpoints
    assert not (out / "tune").exists()  # nothing of Tune's on the driver's disk: it all went to storage

    # Tune's own files hold numbers only: no prediction, no reference summary, no record
    examples = [
        json.loads(line) for line in (out / "trials" / "random-s0" / "predictions.jsonl").read_text().splitlines()
    ]
    texts = [t for e in examples for t in (e["prediction"], e["reference"]) if len(t) > 12]
    tune_files = {
        k: v.decode(errors="replace")
        for k, v in stored.items()
        if k.startswith(f"{prefix}/tune/") and not k.endswith(checkpoint.STATE_FILE)
    }
    assert any(k.endswith("result.json") for k in tune_files) and texts
    assert not [k for k, v in tune_files.items() for t in texts if json.dumps(t)[1:-1] in v or t in v]
    assert not [k for k, v in tune_files.items() if "distill_record" in v]
    # the S3 keys came from the environment and went nowhere: not in storage, the output folder or the logs
    written = [*stored.values(), *(p.read_bytes() for p in out.rglob("*") if p.is_file())]
    assert not [v for v in S3_KEYS.values() for blob in written + [text.encode()] if v.encode() in blob]


def test_a_trial_on_a_lost_node_continues_from_its_checkpoint_in_s3(cluster_ready, tiny_job, tmp_path):
    tiny_job["select"]["methods"] = ["random"]
    job, out = cluster_ready.job(tiny_job, "b", cluster_ready.s3_storage("b"))
    driver, stalled = cluster_ready.start_stalling(job, log=tmp_path / "driver.log")
    try:
        trial = psutil.Process(stalled["pid"])
        raylet = next(p for p in trial.parents() if p.name() == "raylet")
        raylet.kill()  # SIGKILL: the node is gone, with the trial's process and its view of the disk
        text = _finish(driver, tmp_path / "driver.log", 300) + _run_log(out)
    finally:
        driver.kill()
    metrics = json.loads((out / "trials" / "random-s0" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2 and metrics["train_steps"] == 6
    assert "random-s0: resuming from the checkpoint at step 2" in text
    assert "runs/b/comparison/results.json" in cluster_ready.s3.files("runs/b/comparison")


def test_a_run_in_s3_survives_its_driver_and_resumes_from_s3_alone(cluster_ready, tiny_job, tmp_path):
    """The driver SIGKILLed mid-trials; a driver on "another machine" (an empty folder) resumes from S3 alone,
    recomputes nothing finished, and the run ends complete in S3 and in its report, as an uninterrupted one."""
    s3 = cluster_ready.s3
    job, out = cluster_ready.job(tiny_job, "c", cluster_ready.s3_storage("c"))
    # the first trial to checkpoint step 2 stalls there; the other one finishes
    driver, stalled = cluster_ready.start_stalling(job, log=tmp_path / "driver.log")
    try:
        hung = stalled["tag"]
        wait_for(
            lambda: (
                f"runs/c/trials/{hung}/{checkpoint.POINTER_FILE}" in s3.files(f"runs/c/trials/{hung}")
                and len([k for k in s3.files("runs/c/trials") if k.endswith("/metrics.json")]) == 1
            ),
            180,
            "the other trial to finish",
        )
        driver.send_signal(signal.SIGKILL)
        assert driver.wait(timeout=30) == -signal.SIGKILL
    finally:
        driver.kill()
    # a machine that never saw the run: a fresh output folder, the storage URI, the endpoint, keys from the environment
    fresh = cluster_ready.root / "c-elsewhere"
    resumed = cluster_ready.run(
        "resume", "s3://runs/c", "--endpoint", s3.endpoint, "--output-dir", str(fresh), cwd=tmp_path, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # 0 embeddings (the features cache came from storage), 0 selections, 0 finished trials again; the stalled
    # trial's last 4 of 6 steps
    assert counters.read(fresh) == {"trials": 1, "train_steps": 4}
    assert "1 trial(s) reused" in resumed.stdout and "2 selection(s) reused" in resumed.stdout
    assert json.loads((fresh / "trials" / hung / "metrics.json").read_text())["resumed_from_step"] == 2
    report = json.loads((fresh / "comparison" / "results.json").read_text())
    assert len(report["rows"]) == 2
    assert not os.path.exists(out / "comparison")  # the first driver never got there
    # Tune keeps each trial's 2 newest checkpoints per driver's experiment: the first driver's holds the finished
    # trial's steps 4 and 6 and the stalled one's step 2; the resuming driver's, the stalled trial's steps 4 and 6
    _assert_completed_in_s3(s3, "runs/c", fresh, resumed.stdout + _run_log(fresh), checkpoints=5)
