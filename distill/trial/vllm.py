"""The evaluation engine switch (`eval.engine: auto | hf | vllm`) and vLLM multi-LoRA generation.

With vLLM, trials only train and hand back their LoRA adapter; one engine per GPU (or one CPU engine)
then generates for ALL adapters of the base model in one continuous batch, each request carrying its
own `LoRARequest`. That replaces one HF `generate` loop per trial, each reloading the base model.

Predictions stay comparable with the HF path: the prompts are the very same token ids
(`PromptFormat.encode`), decoding is greedy, generation stops at the tokenizer's EOS only (the model's
own generation config is not applied, as in the HF path), and the new tokens are decoded by the same
HF tokenizer call. Small numeric differences (different kernels) can still flip a near-tie token;
`scripts/bench_generate_vllm.py` measures how often.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from distill.config.schema import EvalConfig, ModelConfig, ResourcesConfig
from distill.config.sections import TrialSettings
from distill.errors import DistillError
from distill.model.load import device_name, load_tokenizer, pick_dtype
from distill.trial.evaluate import _until_eos

INSTALL_FIX = (
    "install the extra: DISTILL_EXTRAS=dev,vllm scripts/setup.sh (CPU) or dev,gpu (GPU), or set eval.engine: hf"
)


def choose_engine(evaluation: EvalConfig, model: ModelConfig, model_path: str) -> tuple[str, str]:
    """Resolve eval.engine to 'hf' or 'vllm'; returns it with the reason the driver logs.

    `auto` takes vLLM when it is installed and supports this model with LoRA, HF otherwise; an
    explicit `vllm` that cannot work is an error rather than a silent fallback.
    """
    if evaluation.engine == "hf":
        return "hf", "eval.engine: hf"
    problem = vllm_problem(model, model_path)
    if problem and evaluation.engine == "vllm":
        raise DistillError(f"eval.engine is vllm but {problem}", INSTALL_FIX)
    if problem:
        return "hf", f"{problem}, so the HF path generates"
    return "vllm", f"vLLM {_vllm_version()} is installed and supports {_architecture(model_path)} with LoRA"


def vllm_problem(model: ModelConfig, model_path: str) -> str | None:
    """Why vLLM cannot evaluate this run (None when it can)."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    if model.load_in_8bit:
        return "the model is loaded in 8-bit (bitsandbytes), which the vLLM path does not reproduce"
    try:
        from vllm import ModelRegistry
        from vllm.model_executor.models import supports_lora
    except Exception as exc:  # a broken install (e.g. a torchvision built for another torch) must not end the run
        return f"vLLM is installed but cannot be imported ({str(exc).splitlines()[0][:160]})"
    arch = _architecture(model_path)
    if arch not in ModelRegistry.get_supported_archs():
        return f"vLLM {_vllm_version()} does not support the architecture {arch}"
    if not supports_lora(ModelRegistry._try_load_model_cls(arch)):  # no public lookup by name in vLLM 0.32
        return f"vLLM {_vllm_version()} has no LoRA support for {arch}"
    return None


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


def _architecture(model_path: str) -> str:
    from transformers import AutoConfig

    return (AutoConfig.from_pretrained(model_path).architectures or ["unknown"])[0]


def read_adapter(folder: Path) -> dict[str, bytes]:
    """A saved adapter folder as {file name: content}: how a trained trial holds it (the trial's node then
    writes it to the run's storage, where the engine's node reads it)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


class VllmGenerator:
    """One vLLM engine over the base model with LoRA enabled (runs inside a Ray actor: distill/runtime/generation.py)."""

    def __init__(self, settings: TrialSettings, resources: ResourcesConfig, model_path: str, prompt_tokens: int):
        """`prompt_tokens`: the longest prompt it will see (template and content), so the context fits it; `resources`:
        the engine's memory and batching (vllm_*)."""
        from vllm import LLM

        device = device_name()
        if device == "cpu":  # vLLM's CPU backend sizes its KV cache from this variable (GiB)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(resources.vllm_cpu_kvcache_gib))
        self.max_new_tokens = settings.eval.max_new_tokens
        self.tokenizer = load_tokenizer(model_path)
        self.llm = LLM(
            model=model_path,
            dtype=str(pick_dtype(settings.model, device)).removeprefix("torch."),
            enable_lora=True,
            max_lora_rank=_lora_rank_slot(settings.train.lora_r),
            max_loras=resources.vllm_max_loras,
            max_num_seqs=resources.vllm_max_num_seqs,
            max_model_len=prompt_tokens + settings.eval.max_new_tokens,
            gpu_memory_utilization=resources.vllm_gpu_memory_utilization,
            generation_config="vllm",
            seed=0,
            enforce_eager=device == "cpu",
        )

    def generate(self, prompts: list[list[int]], adapters: dict[str, Path]) -> dict[str, tuple[list[str], float]]:
        """Greedy responses to every prompt under every adapter (its saved folder), in one batch: {trial: (texts, seconds)}.

        The seconds are the engine's wall time split evenly across its adapters (they share every step).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        names = list(adapters)
        requests = [LoRARequest(name, i + 1, str(adapters[name])) for i, name in enumerate(names)]
        params = SamplingParams(
            temperature=0.0,
            max_tokens=self.max_new_tokens,
            stop_token_ids=[self.tokenizer.eos_token_id],
            detokenize=False,
        )
        start = time.perf_counter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for _ in names for p in prompts],
            params,
            lora_request=[r for r in requests for _ in prompts],
            use_tqdm=False,
        )
        seconds = (time.perf_counter() - start) / max(1, len(names))
        texts = [self._decode(list(o.outputs[0].token_ids)) for o in outputs]
        return {name: (texts[i * len(prompts) : (i + 1) * len(prompts)], seconds) for i, name in enumerate(names)}

    def _decode(self, tokens: list[int]) -> str:
        """Exactly the HF path's decoding of new tokens."""
        return self.tokenizer.decode(_until_eos(tokens, self.tokenizer.eos_token_id), skip_special_tokens=True).strip()


def _lora_rank_slot(rank: int) -> int:
    """vLLM only accepts a few max_lora_rank values; the smallest one that holds `rank`."""
    for slot in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= slot:
            return slot
    raise DistillError(
        f"train.lora_r {rank} is above vLLM's largest LoRA rank (512)", "use a smaller train.lora_r or eval.engine: hf"
    )
