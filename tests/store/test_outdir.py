"""The output folder: foreign/unwritable folders are refused untouched, one run at a time holds it, and
a lock left by a killed process is taken over with a warning. Real processes hold the locks."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.store import artifacts, outdir

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from distill.store import outdir

with outdir.claim(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def _holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_second_claim_is_refused_naming_the_running_process(tmp_path):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        with pytest.raises(DistillError) as err:
            with outdir.claim(out):
                pass
        assert f"pid {proc.pid}" in err.value.problem and "in use by another distill run" in err.value.problem
        assert "--output-dir" in err.value.fix
        with outdir.claim(tmp_path / "other"):  # another folder is free
            pass
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    proc = _holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / outdir.LOCK).exists()  # the dead process could not clean up
    with caplog.at_level(logging.WARNING, logger="distill"):
        with outdir.claim(out):
            assert (out / outdir.LOCK).read_text().startswith(f"pid {os.getpid()} ")
    assert f"stale lock {out / outdir.LOCK} of pid {proc.pid}" in caplog.text
    assert not (out / outdir.LOCK).exists()  # released and removed at the end of the run


def test_check_refuses_foreign_file_and_unwritable(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DistillError, match="not written by distill"):
        outdir.check(foreign)
    with pytest.raises(DistillError, match="is a file"):
        outdir.check(foreign / "notes.txt")
    if os.geteuid() == 0:  # root writes anywhere that is not a read-only/virtual file system
        target = Path("/sys/distill-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "out"
    with pytest.raises(DistillError, match="cannot be written"):
        outdir.check(target)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_check_accepts_new_empty_and_earlier_run_folders(tmp_path):
    outdir.check(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    outdir.check(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "trials").mkdir()
    outdir.check(tmp_path)


@pytest.mark.parametrize("name", ["../up", "a/b", "/abs", ".hidden", "", "x..y", "a b", "ok\n"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(DistillError, match="cannot be used as a file name"):
        outdir.safe_name("method name", name)


@pytest.mark.parametrize("name", ["quick", "all-gpu", "d2_pruning", "llama2.7b", "run+1"])
def test_safe_names_pass(name):
    assert outdir.safe_name("job name", name) == name


def test_a_seed_is_spelt_one_way_and_older_selected_files_read_the_same():
    """trials/random-s1/ and selected/random-s1.jsonl; a run written when selected files said random-seed1.jsonl
    still gives its lengths to the report."""
    assert outdir.seeded_name("random", 1) == "random-s1"
    assert [outdir.method_of(n) for n in ("random-s1", "random-seed12", "random", "d2_pruning-s0")] == [
        "random",
        "random",
        "random",
        "d2_pruning",
    ]


def test_the_report_pools_every_seeds_selected_rows_by_method(tmp_path):
    from distill.report.load import load_selected_lengths

    (tmp_path / "selected").mkdir()
    for name, words in (("random", 10), (outdir.seeded_name("random", 1), 20), ("random-seed2", 30)):
        path = tmp_path / "selected" / f"{name}.jsonl"
        path.write_text(json.dumps({"n_words": words}) + "\n")
        artifacts.seal(path)  # the checksum beside it, as a run writes it
    assert {m: sorted(n) for m, n in load_selected_lengths(tmp_path).items()} == {"random": [10, 20, 30]}
