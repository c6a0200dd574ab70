"""Whole tiny runs, as real processes: damaged artifacts are recomputed, concurrent runs do not clash,
secrets never reach a file, every port listens on 127.0.0.1 only.

Two pipelines (A, B) run at once as `python -m distill quick` subprocesses into two folders, with fake
secrets in their environment, while a third (C) tries A's folder; the process trees of A and B are
polled for listening sockets the whole time. The four guarantees are four tests over that one pair of
runs. A separate test damages every kind of artifact of a finished run and reruns it in-process.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from distill.config.load import make_config
from distill.runtime import pipeline
from distill.store import artifacts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
SECRETS = {
    "HF_TOKEN": "hf_FAKE0secret0token0do0not0leak",
    "WANDB_API_KEY": "wandbFAKE0key0do0not0leak0123456",
    "DISTILL_TEST_SERVICE_TOKEN": "svcFAKE0token0do0not0leak",
    "SOME_CLOUD_API_KEY": "cloudFAKE0key0do0not0leak",
}
SESSION = re.compile(r"Ray session folder \(its logs\): (\S+)")


def _start(job: dict, folder: Path, name: str) -> subprocess.Popen:
    spec = folder / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(job))
    # the dashboard as users get it: its ports are among those that must stay on 127.0.0.1
    env = {
        **os.environ,
        **SECRETS,
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(REPO),
        "DISTILL_RAY_DASHBOARD": "1",
    }
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [PYTHON, "-m", "distill", "quick", "--job", str(spec)],
        cwd=folder,
        env=env,
        stdout=open(folder / f"{name}.out", "w"),
        stderr=open(folder / f"{name}.err", "w"),
    )


def _listening(roots: list[psutil.Process]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening socket in the process trees of `roots`, now. One read
    of the system's socket table per poll: asking each of the ~25 processes for its own sockets cost ~0.13 s of
    CPU per tree, a third of a core at this poll rate, taken from the two runs it watches."""
    names = {}
    for root in roots:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                names[proc.pid] = proc.name()
            except psutil.NoSuchProcess:
                continue
    return {
        (names[conn.pid], conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in names
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model) -> dict:
    folder = tmp_path_factory.mktemp("two-runs")
    base = {
        "name": "test",
        "mode": "quick",
        "data": {"source": "embedded:billsum", "test_size": 4, "max_train": 24},
        "model": {"name": tiny_model, "max_source_tokens": 64, "max_target_tokens": 16},
        "select": {"methods": ["random", "balanced_lengths"], "fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 2, "max_steps": 2},
        "eval": {"max_new_tokens": 8, "batch_size": 4, "bertscore_model": "offline"},
        "resources": {"num_cpus": 1},
    }
    outs = {name: folder / f"out-{name}" for name in "ab"}
    procs = {name: _start({**base, "output_dir": str(outs[name])}, folder, name) for name in "ab"}
    lock = outs["a"] / ".distill.lock"
    deadline = time.time() + 300
    while not lock.exists() and procs["a"].poll() is None and time.time() < deadline:
        time.sleep(0.2)
    refused = subprocess.run(
        [PYTHON, "-m", "distill", "quick", "--job", str(folder / "a.yaml")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
    )
    sockets: set = set()
    roots = {name: psutil.Process(p.pid) for name, p in procs.items()}
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline + 600:
        sockets |= _listening(list(roots.values()))
        time.sleep(0.5)
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait()
    logs = {name: ((folder / f"{name}.out").read_text(), (folder / f"{name}.err").read_text()) for name in "ab"}
    sessions = {name: Path(m.group(1)) for name in "ab" if (m := SESSION.search(logs[name][0]))}
    return {
        "procs": procs,
        "outs": outs,
        "refused": refused,
        "sockets": sockets,
        "logs": logs,
        "sessions": sessions,
        "folder": folder,
    }


def test_two_runs_into_two_folders_both_finish(two_runs):
    for name in "ab":
        out, err = two_runs["logs"][name]
        assert two_runs["procs"][name].returncode == 0, err[-3000:]
        rows = json.loads((two_runs["outs"][name] / "comparison" / "results.json").read_text())["rows"]
        assert {r["method"] for r in rows} == {"random", "balanced_lengths"}
        assert not (two_runs["outs"][name] / ".distill.lock").exists()
    assert len(set(two_runs["sessions"].values())) == 2  # each run has its own Ray session (temp dir)


def test_a_second_run_into_the_same_folder_is_refused(two_runs):
    refused = two_runs["refused"]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert "is in use by another distill run" in lines[0] and f"pid {two_runs['procs']['a'].pid} " in lines[0]


def test_every_listening_port_is_on_loopback(two_runs):
    sockets = two_runs["sockets"]
    assert len({port for _, _, port in sockets}) >= 4, sockets  # GCS, raylet, dashboard, workers … were seen
    exposed = sorted(s for s in sockets if not is_loopback(s[1]))
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback such as ::ffff:127.0.0.1 (how Ray's gRPC servers bind)."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _files(root: Path):
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def test_loopback_test_itself():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "::ffff:10.0.0.5"]))


def test_secrets_never_reach_console_logs_or_files(two_runs):
    places = [*two_runs["outs"].values(), *two_runs["sessions"].values()]
    assert len(places) == 4 and all(p.is_dir() for p in places)
    texts = [text for pair in two_runs["logs"].values() for text in pair] + [two_runs["refused"].stderr]
    scanned = 0
    for place in places:
        for path in _files(place):
            texts.append(path.read_bytes().decode("latin-1"))
            scanned += 1
    assert scanned > 50  # results, trials, Tune's folders and Ray's session logs were all read
    for name, value in SECRETS.items():
        assert not any(value in text for text in texts), f"{name} leaked"


DAMAGE = {  # artifact → how it is damaged
    "cache/features-*/embedding.npy": "truncate",
    "selected/random.jsonl": "flip",
    "trials/random-s0/predictions.jsonl": "truncate",
    "trials/balanced_lengths-s0/metrics.json": "flip",
    "pool_stats.json": "unseal",
    "run.json": "truncate",
    "comparison/results.json": "truncate",
}
SCORES = ("method", "samples", "rouge1", "rouge2", "rougeL", "bertscore_f1", "heldout_loss", "rougeL_ci95", "vs_random")


def test_damaged_artifacts_are_named_recomputed_and_give_identical_results(tiny_job, caplog, capsys):
    cfg = make_config(tiny_job)
    first = [{k: r[k] for k in SCORES} for r in pipeline.run(cfg)]
    out = Path(cfg.output_dir)
    damaged = []
    for pattern, how in DAMAGE.items():
        path = next(out.glob(pattern))
        damaged.append(path)
        if how == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif how == "flip":
            data = bytearray(path.read_bytes())
            data[len(data) // 3] ^= 0x20
            path.write_bytes(bytes(data))
        else:
            artifacts.sidecar(path).unlink()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="distill"):  # INFO: the lines that say what was reused
        again = [{k: r[k] for k in SCORES} for r in pipeline.run(make_config(tiny_job))]
    log = capsys.readouterr().out
    for path in damaged:
        assert f"damaged artifact {path}" in caplog.text, path
    # both trials and the features are redone
    assert "reusing cached features" not in log, log
    assert "0 trial(s) reused" in log, log
    assert again == first
    for path in damaged:
        assert artifacts.verify(path) is None  # every one rewritten whole, with its checksum
