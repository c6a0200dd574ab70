"""The KubeRay RayJob that `distill k8s` renders: every field checked against KubeRay's own CRD schema (pinned in
tests/fixtures/kuberay, with its provenance), unknown fields refused as the API server's strict field validation
refuses them, and the checked-in example equal to what the job config renders today."""

from __future__ import annotations

import copy
import functools
import gzip
from pathlib import Path

import jsonschema
import pytest
import yaml

from distill import cli
from distill.config.load import config_hash, make_config
from distill.errors import DistillError
from distill.kuberay import Workers, rayjob

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "tests" / "fixtures" / "kuberay" / "ray.io_rayjobs-v1.7.0.yaml.gz"
EXAMPLE = REPO / "docs" / "k8s" / "rayjob-quick-gpu.yaml"
EXAMPLE_ARGS = ["k8s", "--job", "quick-gpu", "--storage", "s3://YOUR-BUCKET/distill/quick-gpu"]
IMAGE = "registry.example.com/distill:gpu"
ONE_GPU = Workers()


def strict(schema):
    """A CRD's OpenAPI v3 structural schema as a JSON Schema that refuses unknown fields, as the API server does
    under strict field validation (kubectl's default): every object that lists its `properties` admits no others,
    unless it is marked x-kubernetes-preserve-unknown-fields (free-form, as KubeRay's runtimeEnv maps are) or says
    what its other keys hold (`additionalProperties`, e.g. resource quantities)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        schema.get("type") == "object"
        and isinstance(schema.get("properties"), dict)
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def validator() -> jsonschema.Validator:
    crd = yaml.load(gzip.decompress(CRD.read_bytes()), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(served["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)  # OpenAPI v3.0's schema object is JSON Schema draft 4's
    return jsonschema.Draft4Validator(schema)


def errors(manifest: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(manifest)]


def rendered(*args: str, workers: Workers = ONE_GPU) -> dict:
    cfg = make_config("quick-gpu", {"storage.uri": "s3://bucket/distill/run", **dict(a.split("=", 1) for a in args)})
    return rayjob(cfg, "quick-gpu", IMAGE, workers)


def test_the_checked_in_example_is_what_the_job_renders_today(capsys):
    assert cli.main(EXAMPLE_ARGS) == 0
    assert capsys.readouterr().out == EXAMPLE.read_text(), (
        f"docs/k8s/rayjob-quick-gpu.yaml is stale: python -m distill {' '.join(EXAMPLE_ARGS)} > {EXAMPLE.relative_to(REPO)}"
    )


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(lambda: yaml.safe_load(EXAMPLE.read_text()), id="checked-in example"),
        pytest.param(lambda: rendered(workers=Workers(replicas=3, gpus=4)), id="3 workers x 4 GPUs"),
        pytest.param(
            lambda: rendered("storage.endpoint=http://minio:9000", "storage.region=eu-west-1"), id="S3-compatible store"
        ),
    ],
)
def test_rendered_rayjobs_pass_kuberays_crd_schema(manifest):
    job = manifest()
    assert errors(job) == []
    cluster = job["spec"]["rayClusterSpec"]
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1 and gpu["minReplicas"] == gpu["replicas"] == gpu["maxReplicas"]
    assert "nvidia.com/gpu" not in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def _set(path: str, value):
    def change(job: dict) -> None:
        *parents, last = path.split(".")
        node = job
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value

    return change


DELETE = object()
WORKER = "spec.rayClusterSpec.workerGroupSpecs.0"


@pytest.mark.parametrize(
    "change, expected",
    [
        (_set("spec.rayClusterSpec.headGroupSpec.rayStartParam", {}), "Additional properties are not allowed"),
        (_set(f"{WORKER}.template.spec.containers.0.gpus", 1), "Additional properties are not allowed"),
        (_set("spec.shutdownAfterJobFinish", True), "Additional properties are not allowed"),
        (_set(f"{WORKER}.replicas", "two"), "is not of type 'integer'"),
        (_set(f"{WORKER}.rayStartParams", {"num-gpus": 1}), "is not of type 'string'"),
        (_set(f"{WORKER}.groupName", DELETE), "'groupName' is a required property"),
        (_set(f"{WORKER}.template.spec.containers.0.image", DELETE), None),  # image is optional in a PodSpec
        (_set("spec.rayClusterSpec.headGroupSpec.template.spec.containers", DELETE), "'containers' is a required"),
    ],
)
def test_a_manifest_with_a_wrong_field_fails_the_schema(change, expected):
    job = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    change(job)
    found = errors(job)
    if expected is None:
        assert found == []
    else:
        assert any(expected in e for e in found), found


def test_free_form_maps_stay_free_form():
    """runtimeEnvYAML is a string and metadata is the API server's own business: neither is cut by `strict`."""
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"]["finalizers"] = ["x"]
    job["spec"]["runtimeEnvYAML"] = "env_vars: {HF_HUB_OFFLINE: '1'}"
    assert errors(job) == []


def test_the_pods_run_the_job_the_manifest_names_with_its_config():
    """The entrypoint is distill's own command line: parsed back, it makes the config whose hash the manifest
    carries (and that the Ray job's metadata carries when it runs)."""
    job = yaml.safe_load(EXAMPLE.read_text())
    command = job["spec"]["entrypoint"].split()
    assert command[:3] == ["python", "-m", "distill"]
    args = cli.parser().parse_args(command[3:])
    assert config_hash(cli.config_of(args)) == job["metadata"]["annotations"]["distill/config-hash"]


@pytest.mark.parametrize("storage", [None, "/mnt/results"])
def test_storage_the_pods_cannot_share_is_refused(storage):
    cfg = make_config("quick-gpu", {"storage.uri": storage} if storage else {})
    with pytest.raises(DistillError, match="needs storage every pod reaches"):
        rayjob(cfg, "quick-gpu", IMAGE)


def test_a_worker_smaller_than_a_trial_is_refused(capsys):
    code = cli.main([*EXAMPLE_ARGS, "--set", "resources.gpus_per_trial=2"])
    err = capsys.readouterr().err
    assert code == 2 and "--gpus-per-worker 2" in err and err.count("\n") == 1
