"""What an operator sees of a run on a real Ray cluster (a `ray start` head on 127.0.0.1): distill's names for its
Ray work in `ray list tasks` / `ray list actors`, the run's name and config hash in the Ray job's metadata, the
dashboard page of the job in the run's console line, and distill's own metrics in the node's Prometheus export,
scraped from its metrics export port while the runs go (no mock)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from distill.config.load import config_hash, make_config
from tests.clusters import VENV_BIN, cluster, free_port

REPO = Path(__file__).resolve().parents[2]
MISBEHAVING = REPO / "tests" / "fixtures" / "misbehaving_selectors.py"
# Ray's reporter flushes every 10 s by default; each second here, so even a short-lived driver's last values arrive
FAST_METRICS = {"RAY_metrics_report_interval_ms": "1000"}
SCRAPE_SECONDS = 1.0
# labels Ray adds to every sample (which process, which session): one series per distill label set is enough here
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId"}


class Scraper:
    """Reads the node's Prometheus export every SCRAPE_SECONDS in the background and keeps the newest value of
    each distill series (a series of a process that has exited leaves the export, so the last value seen counts)."""

    def __init__(self, port: int):
        self.url, self.seen, self.stop = f"http://127.0.0.1:{port}/metrics", {}, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(SCRAPE_SECONDS):
            try:
                text = urllib.request.urlopen(self.url, timeout=5).read().decode()
            except OSError:
                continue  # the agent starts a moment after the head
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name.startswith("ray_distill_"):
                        labels = {k: v for k, v in sample.labels.items() if k not in RAY_LABELS and "otel" not in k}
                        self.seen[(sample.name, tuple(sorted(labels.items())))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.seen.get((f"ray_distill_{name}", tuple(sorted(labels.items()))))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _ray_list(what: str, dashboard: str, env: dict) -> list[dict]:
    listing = subprocess.run(
        [
            str(VENV_BIN / "ray"),
            "list",
            what,
            "--address",
            dashboard,
            "--detail",
            "--format",
            "json",
            "--limit",
            "10000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr[-3000:]
    return json.loads(listing.stdout)


def _run(job: Path, gcs_port: int, env: dict, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill", "quick", "--job", str(job)]
    command += ["--set", f"resources.address=127.0.0.1:{gcs_port}", *extra]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
@pytest.mark.extended
def test_a_run_on_a_ray_cluster_names_its_work_and_exports_its_metrics(tiny_job, tmp_path):
    dashboard_port, metrics_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    job = tmp_path / "tiny.yaml"
    job.write_text(yaml.safe_dump(tiny_job))
    out = Path(tiny_job["output_dir"])
    head_args = ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--num-cpus", "2"]
    head_args += ["--metrics-export-port", str(metrics_port)]  # after clusters.py's own: the last one counts
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **FAST_METRICS}
    with cluster(head_args, env=env) as head, Scraper(metrics_port) as scraped:
        run = _run(job, head.gcs_port, head.env)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        # a second run in the same folder reuses the features and random's selection; a selector that raises fails it
        failing = _run(job, head.gcs_port, head.env, "--methods", "random,misbehaves", "--plugin", str(MISBEHAVING))
        assert failing.returncode == 2, (failing.stdout + failing.stderr)[-4000:]
        tasks = _ray_list("tasks", dashboard, head.env)
        actors = _ray_list("actors", dashboard, head.env)
        jobs = _ray_list("jobs", dashboard, head.env)

    # the console line points to the job's own dashboard page
    assert f"dashboard {dashboard}, this job: {dashboard}/#/jobs/" in run.stdout, run.stdout[-3000:]
    # every piece of work carries distill's name
    task_names = {t["name"] for t in tasks}
    assert {"select random seed 0", "select balanced_lengths seed 0", "select misbehaves seed 0"} <= task_names
    assert not any("_remote_select" in name for name in task_names)
    reprs = {a.get("repr_name") for a in actors}
    assert {"trial random-s0", "trial balanced_lengths-s0"} <= reprs, reprs
    assert any("EmbedActor" in a["class_name"] for a in actors), {a["class_name"] for a in actors}
    # the Ray job carries the run's name and config hash
    cfg = make_config(str(job), {"mode": "quick", "resources.address": f"127.0.0.1:{head.gcs_port}"})
    tagged = [j["metadata"] for j in jobs if (j.get("metadata") or {}).get("distill_run") == "test"]
    assert {"distill_run": "test", "distill_config_hash": config_hash(cfg)} in [
        {k: m[k] for k in ("distill_run", "distill_config_hash")} for m in tagged
    ], jobs

    # distill's metrics, each with a plausible value
    info = json.loads((out / "run.json").read_text())
    run_tag = {"run": "test"}
    assert scraped.value("rows_embedded_total", **run_tag) == info["pool_size"], scraped.seen
    assert 0 < scraped.value("embed_rows_per_second", **run_tag) < 10_000
    for method in ("random", "balanced_lengths"):
        assert scraped.value("selections_total", **run_tag, method=method, outcome="done") == 1
        assert scraped.value("select_seconds_count", **run_tag, method=method) == 1
    assert scraped.value("selections_total", **run_tag, method="misbehaves", outcome="failed") == 1
    assert {
        state: scraped.value("trials", **run_tag, state=state) for state in ("pending", "running", "done", "failed")
    } == {
        "pending": 0,
        "running": 0,
        "done": 2,
        "failed": 0,
    }
    for trial in ("random-s0", "balanced_lengths-s0"):
        assert scraped.value("trial_step", **run_tag, trial=trial) == tiny_job["train"]["max_steps"]
        assert 0 < scraped.value("trial_loss", **run_tag, trial=trial) < 20  # a random model's loss: ~ln(vocab)
        assert scraped.value("heldout_scored_total", **run_tag, trial=trial) == tiny_job["data"]["test_size"]


def test_the_grafana_dashboard_charts_every_metric_distill_defines_and_no_other():
    import re

    from distill.runtime.metrics import metrics

    defined = {m.info["name"] for m in vars(metrics()).values()}
    dashboard = json.loads((REPO / "docs" / "grafana" / "distill.json").read_text())
    queried = {
        re.sub(r"_(total|bucket|count|sum)$", "", name.removeprefix("ray_"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ray_distill_\w+", target["expr"])
    }
    assert queried == defined
