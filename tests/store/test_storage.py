"""distill.store.storage against real backends: a local folder, moto's S3 server and a GCS emulator on 127.0.0.1,
reached through pyarrow's own S3 and GCS clients with the endpoint from the config and (for S3) the keys from
the environment."""

from __future__ import annotations

import io
import json
import logging
import pickle

import pytest
import yaml

from distill.cli import main
from distill.config.load import make_config
from distill.config.sections import TrialSettings
from distill.errors import DistillError
from distill.store import artifacts, counters
from distill.store.storage import check_reachable, open_storage
from tests.cli_helpers import run_cli
from tests.clusters import S3_KEYS, free_port, gcs_server, s3_server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.bucket("runs")
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    """Credentials as a user gives them: environment variables, read by pyarrow on every node."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with gcs_server(tmp_path_factory.mktemp("gcs") / "gcs.log") as server:
        server.bucket("runs")
        yield server


@pytest.fixture(params=["local", "s3", "gs"])
def store(request, tmp_path):
    """A storage that is not the output folder: a separate local (NFS-like) folder, or a prefix in an S3 or a GCS
    bucket."""
    if request.param == "local":
        return open_storage(tmp_path / "out", str(tmp_path / "shared"))
    if request.param == "gs":
        gcs = request.getfixturevalue("gcs")
        return open_storage(tmp_path / "out", f"gs://runs/{tmp_path.name}", endpoint=gcs.endpoint, anonymous=True)
    s3 = request.getfixturevalue("s3_env")
    return open_storage(tmp_path / "out", f"s3://runs/{tmp_path.name}", endpoint=s3.endpoint, region="us-east-1")


def test_files_round_trip_sealed(store):
    store.write_json("trials/a/metrics.json", {"rougeL": 0.25})
    store.write_jsonl("trials/a/predictions.jsonl", [{"id": 1}, {"id": 2}])
    assert store.read_json("trials/a/metrics.json") == {"rougeL": 0.25}
    assert store.read_bytes("trials/a/predictions.jsonl") == b'{"id": 1}\n{"id": 2}\n'
    assert store.exists("trials/a/metrics.json") and store.exists("trials/a") and not store.exists("trials/b")
    assert store.read_json("trials/b/metrics.json") is None  # absent: recomputed by the caller


def test_a_damaged_file_reads_as_absent_with_a_warning(store, caplog):
    store.write_json("x.json", {"v": 1})
    with store.fs.open_output_stream(store.path("x.json")) as out:  # overwritten behind distill's back
        out.write(b'{"v": 2}')
    with caplog.at_level(logging.WARNING):
        assert store.read_json("x.json") is None
    assert "x.json" in caplog.text


def test_pull_and_push_mirror_the_output_folder(store):
    """A worker's trial folder reaches the driver's output folder sealed; what the driver writes reaches storage."""
    store.write_json("trials/a/metrics.json", {"rougeL": 0.25})
    assert store.pull("trials/a") and artifacts.intact(store.local / "trials" / "a" / "metrics.json")
    assert not store.pull("trials/missing")
    artifacts.write_json(store.local / "comparison" / "results.json", {"rows": []})
    store.push("comparison")
    assert store.read_json("comparison/results.json") == {"rows": []}
    store.push("run.json")  # nothing there yet: nothing to push
    assert not store.exists("run.json")
    artifacts.write_json(store.local / "run.json", {"config": {}})  # a single file travels with its checksum
    store.push("run.json")
    assert store.read_json("run.json") == {"config": {}}
    (store.local / "run.json").unlink()
    assert store.fetched("run.json") and artifacts.intact(store.local / "run.json")


def test_the_default_is_the_output_folder_and_copies_nothing(tmp_path):
    store = open_storage(tmp_path)
    assert store.mirrored and not store.remote and store.root == str(tmp_path.resolve())
    store.write_json("trials/a/metrics.json", {"v": 1})
    assert artifacts.intact(tmp_path / "trials" / "a" / "metrics.json")  # the file the report reads, as before
    assert not store.pull("trials/a")


def test_the_s3_filesystem_pickles_without_credentials(s3_env, tmp_path):
    """It travels to every worker inside Tune's trainable: each node finds its own credentials."""
    store = open_storage(tmp_path, "s3://runs/pickled", endpoint=s3_env.endpoint)
    blob = pickle.dumps(store)
    assert all(value.encode() not in blob for value in S3_KEYS.values())
    pickle.loads(blob).write_json("k.json", [1])
    assert store.read_json("k.json") == [1]


@pytest.mark.parametrize(
    "uri, endpoint, problem",
    [
        ("s3://KEY:hunter2@runs/x", None, "holds credentials"),
        ("s3://runs/x", "http://KEY:hunter2@127.0.0.1:9000", "holds credentials"),
        ("s3://runs/x?access_key=hunter2", None, "holds credentials"),
        ("ftp://host/x", None, "not supported"),
        ("s3:///x", None, "names no bucket"),
        ("/shared/run", "http://127.0.0.1:9000", "local path"),
    ],
)
def test_a_bad_storage_setting_is_one_line_naming_the_fix(tmp_path, uri, endpoint, problem):
    with pytest.raises(DistillError) as caught:
        open_storage(tmp_path, uri, endpoint=endpoint)
    assert problem in caught.value.problem and caught.value.fix
    assert "hunter2" not in str(caught.value)


def test_unreachable_storage_fails_before_any_work(s3_env, tmp_path):
    with pytest.raises(DistillError, match="cannot be written.*bucket"):
        check_reachable(open_storage(tmp_path, "s3://no-such-bucket/x", endpoint=s3_env.endpoint))
    with pytest.raises(DistillError, match="cannot be written.*connect"):  # a wrong endpoint
        check_reachable(open_storage(tmp_path, "s3://runs/x", endpoint=f"http://127.0.0.1:{free_port()}"))
    check_reachable(open_storage(tmp_path, "s3://runs/reachable", endpoint=s3_env.endpoint))  # passes, leaves nothing
    assert s3_env.files("runs/reachable") == {}


def test_storage_is_a_config_section_and_a_flag_never_in_a_trial_key(capsys):
    from distill.cli import config_of, parser

    cfg = config_of(parser().parse_args(["quick", "--storage", "s3://runs/x", "--set", "storage.region=eu-west-1"]))
    assert (cfg.storage.uri, cfg.storage.region, cfg.storage.endpoint) == ("s3://runs/x", "eu-west-1", None)
    assert (
        TrialSettings.of(cfg).hashed() == TrialSettings.of(make_config("quick")).hashed()
    )  # where a run is kept reruns nothing
    assert make_config({"storage": {"uri": "/shared/run"}}).storage.uri == "/shared/run"
    assert main(["validate", "--set", "storage.bucket=x"]) == 2
    assert "unknown config key 'storage.bucket'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.extended
def test_a_run_kept_in_gcs_resumes_from_it_alone(gcs, tiny_job, tmp_path):
    """gs:// end to end: the trials write their records and Tune its checkpoints to the GCS emulator through
    pyarrow's GCS client; a driver with an empty folder then continues the run from the bucket alone."""
    job = {**tiny_job, "storage": {"uri": "gs://runs/e2e", "endpoint": gcs.endpoint, "anonymous": True}}
    job["train"] = {**job["train"], "max_steps": 4}
    job["resources"] = {**job["resources"], "checkpoint_every": 2}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    first = run_cli("quick", "--job", "job.yaml", cwd=tmp_path, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    stored = gcs.files("runs/e2e")
    report = json.loads(stored["runs/e2e/comparison/results.json"])
    assert {r["method"] for r in report["rows"]} == {"random", "balanced_lengths"}
    for name in ("random-s0", "balanced_lengths-s0"):
        assert f"runs/e2e/trials/{name}/metrics.json" in stored
    assert [k for k in stored if k.startswith("runs/e2e/tune/") and "checkpoint" in k]

    fresh = tmp_path / "elsewhere"
    resumed = run_cli(
        "resume",
        "gs://runs/e2e",
        "--endpoint",
        gcs.endpoint,
        "--anonymous",
        "--output-dir",
        str(fresh),
        cwd=tmp_path,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert counters.read(fresh) == {}  # nothing recomputed: features, selections and trials all came from GCS
    assert json.loads((fresh / "comparison" / "results.json").read_text())["rows"] == report["rows"]


def test_data_and_a_report_are_read_from_s3_through_the_storage_layer(s3_env, billsum_path, tmp_path, monkeypatch):
    """`--data s3://…` and `distill report s3://…` were taken for local paths (s3:/bucket/…). Both now go through
    the storage layer: the data reads as the same rows as the local file, and the report of a run kept in the
    bucket is the report of the same run on disk."""
    from rich.console import Console

    from distill.data.load import load_splits
    from distill.data.remote import readable
    from distill.report.build import build_report
    from tests.report.test_report import _write_run

    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    prefix = f"s3://runs/{tmp_path.name}"
    bucket = open_storage(tmp_path / "unused", prefix, endpoint=s3_env.endpoint, region="us-east-1")
    bucket.write_bytes("data/bills.jsonl", billsum_path.read_bytes())
    cfg = make_config(
        {
            "data": {"source": f"{prefix}/data/bills.jsonl", "test_size": 4},
            "storage": {"endpoint": s3_env.endpoint, "region": "us-east-1"},
        }
    )
    from_s3 = load_splits(readable(cfg.data, cfg.storage))
    local = load_splits(make_config({"data": {"source": str(billsum_path), "test_size": 4}}).data)
    assert from_s3.fingerprint == local.fingerprint and len(from_s3.train) == len(local.train)

    run = tmp_path / "run"
    _write_run(run)
    bucket.upload(run, "run")
    build_report(run, console=Console(file=io.StringIO()))
    fetched = tmp_path / "fetched"
    result = run_cli(
        "report", f"{prefix}/run", "--endpoint", s3_env.endpoint, "--region", "us-east-1", "--output-dir",
        str(fetched), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (fetched / "comparison" / "results.json").read_bytes() == (run / "comparison" / "results.json").read_bytes()
