"""A KubeRay `RayJob` for a distill job, rendered from the job's config (`distill k8s --job NAME --storage URI`):
the RayCluster it starts (a CPU head and GPU workers), the entrypoint, the storage, the image. One function makes
it, so the manifest cannot drift from the config: docs/k8s/rayjob-quick-gpu.yaml is its output, and
tests/cli/test_kuberay.py checks both that and every field against KubeRay's own CRD schema (pinned in tests/fixtures).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib.metadata import version

from distill.config.load import config_hash
from distill.config.schema import ExperimentConfig
from distill.errors import DistillError

API_VERSION = "ray.io/v1"  # KubeRay ≥ 1.0
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's resource name
# A GPU worker's memory: the model, its LoRA optimizer state and batches in host memory while a trial loads, plus
# Ray's object store (30% of the pod by default) where the features travel to the selectors
MEMORY_PER_GPU_GIB = 32
HEAD_CPUS = 2  # the head runs the driver (report, selectors' copy of the features) and Ray's own services
HEAD_MEMORY_GIB = 8
FINISHED_TTL_SECONDS = 3600  # the finished RayCluster stays an hour for its logs, then KubeRay deletes it
STORAGE_SECRET = "distill-storage"  # optional Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, HF_TOKEN, ...
K8S_NAME = re.compile(r"[^a-z0-9-]+")  # RFC 1123 label: lower-case letters, digits and '-'
K8S_NAME_MAX = 40  # KubeRay appends suffixes to the RayJob's name for its RayCluster and pods (63 in all)


@dataclass(frozen=True)
class Workers:
    """The GPU worker group: `replicas` pods of `gpus` GPUs each."""

    replicas: int = 1
    gpus: int = 1


def default_image() -> str:
    """Ray's GPU image of the Ray version distill is locked to (a Python 3.11 build); users bake distill into it
    (docs/cluster.md: FROM it, pip install from a wheelhouse)."""
    return f"rayproject/ray:{version('ray')}-py311-gpu"


def rayjob(cfg: ExperimentConfig, job: str, image: str, workers: Workers = Workers()) -> dict:
    """The RayJob manifest that runs `job` (with `cfg`'s storage and mode) on KubeRay."""
    uri = cfg.storage.uri
    if not uri or "://" not in uri:
        raise DistillError(
            f"a KubeRay job needs storage every pod reaches, and storage.uri is {uri or 'unset'} (pods share no disk)",
            "add --storage s3://bucket/prefix or gs://bucket/prefix",
        )
    per_trial = cfg.resources.gpus_per_trial or 1.0  # unset: one GPU per trial; 0 (CPU trials): pods as if 1
    if per_trial > workers.gpus:
        raise DistillError(
            f"a trial takes {per_trial:g} GPU(s) (resources.gpus_per_trial) but a worker pod has {workers.gpus}",
            f"add --gpus-per-worker {math.ceil(per_trial)}",
        )
    trials_per_worker = int(workers.gpus // per_trial)
    cpus = math.ceil(cfg.resources.cpus_per_trial * trials_per_worker)
    name = K8S_NAME.sub("-", f"distill-{cfg.name}".lower()).strip("-")[:K8S_NAME_MAX].rstrip("-")
    labels = {"app.kubernetes.io/name": "distill", "distill/run": name}
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "labels": dict(labels),
            "annotations": {"distill/job": job, "distill/config-hash": config_hash(cfg)},
        },
        "spec": {
            "entrypoint": " ".join(entrypoint(cfg, job)),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
            "rayClusterSpec": {
                "rayVersion": version("ray"),
                "headGroupSpec": {
                    # the head takes no Ray work: trials and embedding actors go to the GPU workers
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod(image, labels, HEAD_CPUS, HEAD_MEMORY_GIB, 0),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": workers.replicas,
                        "minReplicas": workers.replicas,
                        "maxReplicas": workers.replicas,
                        "rayStartParams": {},
                        "template": _pod(image, labels, cpus, MEMORY_PER_GPU_GIB * workers.gpus, workers.gpus),
                    }
                ],
            },
        },
    }


def entrypoint(cfg: ExperimentConfig, job: str) -> list[str]:
    """The driver's command: the job by name, its storage (and the store's endpoint and region) on the command
    line, so `distill resume <storage>` can continue it from any machine."""
    command = ["python", "-m", "distill", cfg.mode, "--job", job, "--storage", cfg.storage.uri or ""]
    for key in ("endpoint", "region"):
        if (value := getattr(cfg.storage, key)) is not None:
            command += ["--set", f"storage.{key}={value}"]
    return command


def _pod(image: str, labels: dict, cpus: int, memory_gib: int, gpus: int) -> dict:
    """A Ray pod's template: requests = limits (a Guaranteed pod is not evicted mid-trial); keys from the optional
    Secret (a node's IAM role, through the pod's service account, needs none)."""
    resources = {"cpu": str(cpus), "memory": f"{memory_gib}Gi", **({GPU_RESOURCE: str(gpus)} if gpus else {})}
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "containers": [
                {
                    "name": "ray-worker" if gpus else "ray-head",
                    "image": image,
                    "env": [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
                    "envFrom": [{"secretRef": {"name": STORAGE_SECRET, "optional": True}}],
                    "resources": {"requests": resources, "limits": dict(resources)},
                }
            ]
        },
    }
