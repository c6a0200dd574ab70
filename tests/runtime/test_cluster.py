"""The cluster side: cluster.yaml against Ray's own schema, a real `ray job submit` of the pipeline to a
head node on 127.0.0.1, and GPU scheduling on a simulated multi-node cluster with fake GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from distill.config.load import make_config
from distill.runtime.session import embed_plan
from distill.runtime.tune import make_tuner
from distill.store.storage import open_storage
from tests.clusters import HANG_S, VENV_BIN, cluster, free_port, our_ray_processes

REPO = Path(__file__).resolve().parents[2]
UPLOAD_EXCLUDES = [
    ".git",
    ".venv",
    "results",
    "**/__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "*.egg-info",
    ".cache",
    "wandb",
    "tests/fixtures",
    "data/scitldr",
]


# ------------------------------------------------------------------------------------------ cluster.yaml


def test_cluster_yaml_passes_rays_schema_and_launcher_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(raw)  # jsonschema against ray/autoscaler/ray-schema.json + the launcher's own checks
    prepared = prepare_config(raw)  # merged with Ray's AWS defaults, as `ray up` does
    validate_config(prepared)

    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert {t["node_config"]["InstanceType"] for t in gpu_types.values()} == {"g5.xlarge", "g5.12xlarge"}
    for t in gpu_types.values():
        assert 0 <= t["min_workers"] <= t["max_workers"]
        assert t["node_config"]["IamInstanceProfile"]  # the trials write to S3 with the node's role
    text = (REPO / "cluster.yaml").read_text()
    assert "--storage s3://" in text  # the nodes share no disk: runs name their storage
    assert "secret" not in text.lower() and "access_key" not in text.lower()  # never credentials in the file
    assert sum(t["max_workers"] for t in gpu_types.values()) <= prepared["max_workers"]
    setup = " ".join(prepared["setup_commands"])
    assert "scripts/setup.sh" in setup and "gpu" in setup
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in start and ".venv/bin" in start


# ------------------------------------------------------------------------------------- ray job submit


def _submit_when_ready(
    address: str, runtime_env: dict, command: list[str], env: dict, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """`ray job submit --address ADDRESS --runtime-env-json RUNTIME_ENV -- COMMAND`, retried for up to a minute:
    `ray start` returns before the head's job agent accepts jobs."""
    submit = [str(VENV_BIN / "ray"), "job", "submit", "--address", address]
    submit += ["--runtime-env-json", json.dumps(runtime_env), "--", *command]
    start = time.perf_counter()
    while True:
        job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=HANG_S, cwd=cwd)
        if "No available agent" not in job.stdout + job.stderr or time.perf_counter() - start > 60:
            return job
        time.sleep(2)


@pytest.fixture(scope="module")
def head():
    """A 2-CPU head node on 127.0.0.1 from `ray start`, shared by this module's `ray job submit` tests (as
    one cluster serves many jobs). Yields (environment, GCS port, job API address)."""
    dashboard_port = free_port()
    with cluster(
        ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--num-cpus", "2"],
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    ) as head_node:
        yield head_node.env, head_node.gcs_port, f"http://127.0.0.1:{dashboard_port}"


@pytest.mark.slow
def test_ray_job_submit_runs_the_quick_pipeline_on_a_head_node(head, tiny_job, tmp_path):
    """The README's way: the repository as the job's working_dir."""
    env, gcs_port, address = head
    job_path = tmp_path / "tiny.yaml"
    out = Path(tiny_job["output_dir"])
    job_path.write_text(yaml.safe_dump(tiny_job))
    runtime_env = {
        "working_dir": str(REPO),
        "excludes": UPLOAD_EXCLUDES,
        "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    }
    start = time.perf_counter()
    command = [
        "bash",
        "-c",
        f"python -c 'import sys; print(\"job python:\", sys.executable)' && python -m distill.quick --job {job_path}",
    ]
    job = _submit_when_ready(address, runtime_env, command, env)
    log = job.stdout + job.stderr
    assert job.returncode == 0, log[-4000:]
    assert "succeeded" in log
    # the job runs with the interpreter `ray start` was launched with: the project venv
    assert f"job python: {VENV_BIN / 'python'}" in log
    # the pipeline says where to watch and where its results are
    assert f"dashboard {address}" in log or "dashboard" in log.lower()
    assert f"results in {out / 'comparison'}" in log
    assert "Ray cluster: 2 CPU, 0 GPU" in log
    results = json.loads((out / "comparison" / "results.json").read_text())["rows"]
    assert {r["method"] for r in results} == {"random", "balanced_lengths"}
    print(f"job submitted and finished in {time.perf_counter() - start:.1f}s")

    # validate joins the same cluster by address and reads its resources
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill",
            "validate",
            "--job",
            str(job_path),
            "--set",
            f"resources.address=127.0.0.1:{gcs_port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"cluster 127.0.0.1:{gcs_port}: 1 node(s), 2 CPU, 0 GPU" in check.stdout


@pytest.mark.slow
@pytest.mark.extended
def test_ray_job_submit_runs_a_plugin_selector_from_the_jobs_working_dir(head, tiny_job, tmp_path):
    """A user's project folder (job YAML + selector file, relative paths) as the job's working_dir; distill itself
    travels as a py_module. The plugin selector runs as a Ray task and its trial lands in the report."""
    from tests.select.test_plugins import write_plugin

    env, _, address = head
    project = tmp_path / "project"
    project.mkdir()
    write_plugin(project)
    job = {
        **tiny_job,
        "select": {**tiny_job["select"], "methods": ["random", "shortest_first"], "plugins": ["my_selectors.py"]},
    }
    (project / "tiny.yaml").write_text(yaml.safe_dump(job))
    out = Path(tiny_job["output_dir"])
    runtime_env = {
        "working_dir": str(project),
        "py_modules": [str(REPO / "distill")],
        "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    }
    start = time.perf_counter()
    job_run = _submit_when_ready(
        address, runtime_env, ["python", "-m", "distill.quick", "--job", "tiny.yaml"], env, tmp_path
    )
    log = job_run.stdout + job_run.stderr
    assert job_run.returncode == 0, log[-4000:]
    assert "shortest_first (seed 0): 6 examples" in log
    results = json.loads((out / "comparison" / "results.json").read_text())["rows"]
    assert {r["method"] for r in results} == {"random", "shortest_first"}
    selected = [json.loads(line) for line in (out / "selected" / "shortest_first.jsonl").read_text().splitlines()]
    pool_words = json.loads((out / "pool_stats.json").read_text())["n_words"]
    assert sorted(r["index"] for r in selected) == sorted(np.argsort(pool_words, kind="stable")[:6].tolist())
    print(f"job with a plugin selector submitted and finished in {time.perf_counter() - start:.1f}s")


# ------------------------------------------------------------------- simulated multi-GPU scheduling


def _listen_addresses(procs: list[psutil.Process]) -> set[str]:
    addresses = set()
    for proc in procs:
        try:
            addresses |= {c.laddr.ip for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return addresses


@pytest.mark.slow
def test_trials_run_concurrently_one_fake_gpu_each_across_nodes(tmp_path, monkeypatch):
    import ray
    from ray import tune

    # defined inside the test: cloudpickle ships it by value (the workers cannot import this test module)
    def _record_gpu_trial(config: dict, *, out: str, trials: int) -> None:
        import ray
        from ray import tune

        start = time.time()
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        node = ray.get_runtime_context().get_node_id()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        # a barrier, not a sleep: under load Ray may start one trial seconds before the others, so each trial
        # holds its GPU until every trial has started (or a minute passes): all three can only meet if they run at once
        Path(out, f"{config['trial']}.started").touch()
        deadline = time.monotonic() + 60
        while len(list(Path(out).glob("*.started"))) < trials and time.monotonic() < deadline:
            time.sleep(0.2)
        met = len(list(Path(out).glob("*.started"))) == trials
        record = {
            "trial": config["trial"],
            "start": start,
            "end": time.time(),
            "gpu_ids": gpu_ids,
            "node": node,
            "cuda_visible_devices": visible,
            "met_the_others": met,
        }
        Path(out, f"{config['trial']}.json").write_text(json.dumps(record))
        tune.report({"done": 1})

    nodes = 3
    # three nodes on 127.0.0.1 of this machine, each advertising one (fake) GPU: a head and two workers from
    # `ray start`, every port explicit, the workers in the head's temp dir and session
    node_args = ("--num-cpus", "1", "--num-gpus", "1", "--object-store-memory", str(100 * 1024 * 1024))
    with cluster(["--include-dashboard", "false", *node_args], workers=nodes - 1, worker_args=node_args) as gpu_sim:
        # the driver joins the same way: Ray's switch is read at import, so it is flipped on the module as well
        for name in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
            monkeypatch.setenv(name, gpu_sim.env[name])
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        try:
            ray.init(address=gpu_sim.address, log_to_driver=False)
            deadline = time.monotonic() + 30
            while ray.cluster_resources().get("GPU", 0) < nodes and time.monotonic() < deadline:
                time.sleep(0.5)
            assert ray.cluster_resources()["GPU"] == nodes
            # every node, and every socket this cluster listens on, is on the loopback address
            assert [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] == ["127.0.0.1"] * nodes
            assert ray.get_runtime_context().gcs_address == gpu_sim.address
            assert embed_plan(ray.cluster_resources()) == (nodes, 0, 1)  # one embedding actor per GPU

            cfg = make_config(
                {
                    "name": "gpu-sim",
                    "output_dir": str(tmp_path),
                    "select": {"methods": ["random"]},
                    "resources": {"gpus_per_trial": 1, "cpus_per_trial": 1},
                }
            )
            records_dir = tmp_path / "records"
            records_dir.mkdir()
            names = [f"t{i}" for i in range(nodes)]
            trainable = tune.with_parameters(_record_gpu_trial, out=str(records_dir), trials=nodes)
            grid = make_tuner(
                trainable, {n: 1.0 for n in names}, cfg.name, cfg.resources, 1.0, open_storage(tmp_path), callbacks=[]
            ).fit()
            assert not [r.error for r in grid if r.error]
            listening = _listen_addresses([*our_ray_processes(gpu_sim.marker), psutil.Process()])  # the driver too
            assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        finally:
            ray.shutdown()

    records = [json.loads((records_dir / f"{n}.json").read_text()) for n in names]
    for rec in records:
        assert len(rec["gpu_ids"]) == 1  # each trial holds exactly one GPU...
        assert rec["cuda_visible_devices"] == rec["gpu_ids"][0]  # ...and CUDA sees only that one
    # every trial saw all three started while it held its GPU, and every pair overlaps in time: they ran
    # concurrently, not one after another
    assert all(r["met_the_others"] for r in records), records
    for a in records:
        for b in records:
            if a is not b:
                assert a["start"] < b["end"] and b["start"] < a["end"], (a, b)
    # concurrent trials never share a GPU: a distinct (node, GPU id) per trial
    assert len({(r["node"], r["gpu_ids"][0]) for r in records}) == nodes


@pytest.mark.parametrize(
    "resources, num_actors, expected",
    [
        ({"CPU": 2.0}, 0, (1, 2, 0)),  # CPU box: one actor with every CPU
        ({"CPU": 16.0, "GPU": 1.0}, 0, (1, 0, 1)),
        ({"CPU": 48.0, "GPU": 4.0}, 0, (4, 0, 1)),  # g5.12xlarge: an actor per GPU
        ({"CPU": 56.0, "GPU": 8.0}, 0, (8, 0, 1)),  # head + 4×A10G + 4×1 A10G
        ({"CPU": 8.0}, 2, (2, 4, 0)),  # embed.num_actors overrides: the CPUs are shared
        ({"CPU": 8.0, "GPU": 4.0}, 2, (2, 0, 1)),
    ],
)
def test_embedding_actors_scale_with_the_gpus(resources, num_actors, expected):
    assert embed_plan(resources, num_actors) == expected
