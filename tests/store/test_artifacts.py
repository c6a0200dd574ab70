"""Atomic artifact writes and their checksums: a crash leaves the old file or the new one, and a damaged
file is detected, named in a warning, never trusted."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.store import artifacts

REPO = Path(__file__).resolve().parents[2]


def test_roundtrip_and_sidecar(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    artifacts.write_jsonl(path, [{"a": 1}, {"b": 2}])
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert artifacts.verify(path) is None and artifacts.intact(path)
    assert artifacts.sidecar(path).name == "rows.jsonl.sha256"
    artifacts.write_npz(tmp_path / "f.npz", embedding=np.eye(3, dtype=np.float32))
    assert np.array_equal(np.load(tmp_path / "f.npz", allow_pickle=False)["embedding"], np.eye(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl", "rows.jsonl.sha256"]  # no temp files


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "bit-flip":  # same size: only the hash can tell
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "unsealed":
        artifacts.sidecar(path).unlink()
    elif how == "sidecar-garbage":
        artifacts.sidecar(path).write_text("{not json")


@pytest.mark.parametrize(
    "how, reason",
    [("truncated", "size"), ("bit-flip", "SHA-256"), ("unsealed", "no checksum file"), ("sidecar-garbage", "damaged")],
)
def test_damage_is_detected_and_named(tmp_path, caplog, how, reason):
    path = tmp_path / "metrics.json"
    artifacts.write_json(path, {"rougeL": 0.25, "pad": "x" * 100})
    _damage(path, how)
    assert reason in artifacts.verify(path)
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert not artifacts.intact(path)
    assert str(path) in caplog.text and "recomputing" in caplog.text


def test_missing_file_is_not_damage(tmp_path, caplog):
    assert artifacts.verify(tmp_path / "never.json") == "missing"
    assert not artifacts.intact(tmp_path / "never.json") and not caplog.text


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    artifacts.write_text(path, "old")

    def half_then_crash(fh):
        fh.write(b"new but only ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        artifacts.write(path, half_then_crash)
    assert path.read_text() == "old" and artifacts.verify(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "report.md.sha256"]


WRITER = """
import sys, time
from pathlib import Path
from distill.store import artifacts

def slow(fh):
    for _ in range(1000):
        fh.write(b"n" * 4096)
        fh.flush()
        print("writing", flush=True)
        time.sleep(0.01)

artifacts.write(Path(sys.argv[1]), slow)
"""


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
    """SIGKILL a real process while it writes: the artifact still holds (and verifies as) the old bytes."""
    path = tmp_path / "features.npz"
    artifacts.write_bytes(path, b"old complete content")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env)
    for _ in range(20):  # let it write ~80 KB of the new file
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert path.read_bytes() == b"old complete content" and artifacts.verify(path) is None
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("features.npz", "features.npz.sha256")]
    assert leftovers and all(n.startswith(".features.npz.") and n.endswith(".tmp") for n in leftovers), leftovers


def test_killed_between_write_and_seal_is_detected(tmp_path):
    """The new file landed but its checksum did not: the pair disagrees, so it is recomputed, not used."""
    path = tmp_path / "results.json"
    artifacts.write_text(path, "[1, 2, 3]")
    artifacts.atomic_write(path, lambda fh: fh.write(b"[4, 5, 6, 7]"))  # the step before seal()
    assert "size" in artifacts.verify(path)


def test_replacing_a_damaged_file_is_named(tmp_path, caplog):
    path = tmp_path / "results.json"
    artifacts.write_text(path, "[1, 2, 3]")
    path.write_text("[1, 2")
    with caplog.at_level(logging.WARNING, logger="distill"):
        artifacts.write_text(path, "[1, 2, 3]")
        artifacts.write_text(path, "[1, 2, 3]")  # replacing an intact file says nothing
    assert caplog.text.count(f"damaged artifact {path}") == 1 and artifacts.verify(path) is None
