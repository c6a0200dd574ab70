"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, real BillSum rows.

A random model proves plumbing, never quality: its scores are never presented as results.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill import process

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray clusters stay on 127.0.0.1
# One auth mode for every test cluster, in-process or `ray start`: Ray caches the mode of the first in-process
# ray.init in its C++ config, and a driver left in token mode rejects the workers of an auth-disabled cluster
# ("Missing authorization header"). Loopback-only clusters; the product itself leaves Ray's default alone.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# local clusters without Ray's dashboard start ~8 s sooner (the suite starts dozens); the loopback test turns it on
os.environ.setdefault("DISTILL_RAY_DASHBOARD", "0")

# the test process is an entry point, as the CLI is: the console is the `distill` logger's handler here too
process.setup()

FIXTURES = Path(__file__).parent / "fixtures"


def build_tiny_llama(folder: Path, hidden: int = 32, layers: int = 2) -> Path:
    """Save a random ~1.7M-parameter LlamaForCausalLM + the real SmolLM2 tokenizer to `folder`, marked in its
    config.json as a test model (model.load.TEST_MODEL_FLAG: run.json records it, reports carry a note)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(FIXTURES / "smollm2-tokenizer")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        distill_test_model=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pytest_addoption(parser):
    parser.addoption(
        "--extended",
        action="store_true",
        help="also run the extended tier (@pytest.mark.extended: deployment-scale system tests; CONTRIBUTING.md)",
    )


def pytest_collection_modifyitems(config, items):
    """Modules with the most slow (Ray cluster, whole-script) tests first, each module's tests kept together and in order.

    scripts/test.sh runs the suite on two workers with `--dist loadfile --no-loadscope-reorder`, which hands
    out whole files in this order: the long files start first and the short ones fill in behind them,
    instead of one long file starting last while the other worker idles. The fast tier (`-m "not slow"`)
    deselects after this hook: the tests it keeps stay in this order."""
    slow: dict[str, set[str]] = {item.module.__name__: set() for item in items}
    for item in items:
        if item.get_closest_marker("slow"):
            slow[item.module.__name__].add(item.originalname)  # a parametrised test counts once: one fixture, one cost
    items.sort(key=lambda item: -len(slow[item.module.__name__]))  # stable: file order and test order are kept
    skip_gpu_tests_without_cuda(items)
    if not config.getoption("extended"):
        skip_extended(items)


def skip_extended(items):
    """The extended tier (a Slurm cluster, a dashboard scrape, nodes that share no disk, package installs, the
    benchmark scripts) keeps the suite CI runs under its 15 minutes: skipped, with the reason, unless --extended."""
    skip = pytest.mark.skip(reason="extended tier: scripts/test.sh --extended -m extended runs it")
    for item in items:
        if item.get_closest_marker("extended"):
            item.add_marker(skip)


def skip_gpu_tests_without_cuda(items):
    """`@pytest.mark.gpu` tests need CUDA: skipped, with the reason, where torch sees no GPU (this CPU box, CI)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return  # torch is imported only when a gpu test was collected
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); scripts/gpu_check.sh runs the GPU paths"
    )
    for item in gpu:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_environment():
    """Every test starts from the same os.environ, whichever tests this worker ran before: an in-process
    `ray.init` writes into it (RAY_AUTH_MODE, PYTHONBREAKPOINT), and every later subprocess would inherit that."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of the tiny random model folder (marked as a test model in its config.json)."""
    return str(build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-random-llama"))


@pytest.fixture(scope="session")
def billsum_path() -> Path:
    from distill.data.sources import embedded_billsum_path

    return embedded_billsum_path()


@pytest.fixture
def tiny_job(tiny_model, tmp_path) -> dict:
    """A job spec that runs the whole pipeline in well under a minute on 2 cores."""
    return {
        "name": "test",
        "mode": "quick",
        "output_dir": str(tmp_path / "results"),
        "data": {"source": "embedded:billsum", "test_size": 4, "max_train": 24},
        "model": {"name": tiny_model, "max_source_tokens": 64, "max_target_tokens": 16},
        "select": {"methods": ["random", "balanced_lengths"], "fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 2, "max_steps": 2},
        "eval": {"max_new_tokens": 8, "batch_size": 4, "bertscore_model": "offline"},
        "resources": {"num_cpus": 2},
    }
