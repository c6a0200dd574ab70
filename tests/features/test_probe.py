"""The probe stage: per-checkpoint losses, gradient features, projection, and its content-hashed cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.config.load import make_config
from distill.config.sections import FeatureSettings
from distill.data.load import load_splits
from distill.errors import DistillError
from distill.features import probe
from distill.features.columns import charged_seconds, text_features
from distill.features.embed import EmbedActor
from distill.runtime.features import dynamics_needed
from tests.clusters import HANG_S


@pytest.fixture
def cfg(tiny_job):
    job = {
        **tiny_job,
        "probe": {"fraction": 0.25, "epochs": 2, "checkpoints": 3, "grad_dim": 64, "grad_blocks": 4},
        "train": {"batch_size": 2, "learning_rate": 0.01},
        "select": {"methods": ["el2n_loss"], "fraction": 0.25},
    }
    return make_config(job)


@pytest.fixture
def pool(cfg):
    train = load_splits(cfg.data).train
    return train["turns"].tolist(), train["response"].tolist()


def test_dynamics_needed_reads_the_registry():
    assert dynamics_needed(["random", "loss_based"]) == []
    assert dynamics_needed(["el2n_loss", "cartography"]) == ["probe_loss"]
    assert dynamics_needed(["gradient_match", "learnability"]) == ["probe_loss", "grad_features"]


@pytest.mark.slow  # a whole probe stage: ~20 s of CPU
def test_a_probe_whose_updates_vanish_in_the_model_precision_is_refused(tiny_model, cfg, pool):
    """A learning rate so small the LoRA update rounds away (as bf16 does to a short probe's real ones):
    every loss column would be equal and every dynamics score a tie, so the probe says so, with the fix."""
    from dataclasses import replace

    texts, summaries = pool
    frozen = replace(cfg, train=replace(cfg.train, learning_rate=1e-12))
    with pytest.raises(DistillError, match="do not change the model's loss at all.*float32.*probe.epochs=2"):
        probe.compute_dynamics(
            tiny_model, FeatureSettings.of(frozen), "summarization", texts, summaries, ["probe_loss"]
        )


@pytest.mark.slow
def test_the_cli_states_an_error_raised_inside_the_probe_task_in_one_line(tiny_job, tmp_path):
    """The probe runs as a Ray task: its DistillError reaches the user as the one-line problem and fix,
    not as Ray's wrapper with the worker's traceback."""
    import subprocess
    import sys

    import yaml

    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                **tiny_job,
                "select": {"methods": ["el2n_loss"], "fraction": 0.25},
                "train": {**tiny_job["train"], "learning_rate": 1e-12},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "distill", "quick", "--job", str(job)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("distill: error: the probe's") and "fix: give the probe more steps" in last
    assert "Traceback" not in proc.stderr and "ray::" not in proc.stderr


def test_checkpoint_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert probe.checkpoint_steps(12, 3).tolist() == [0, 4, 8, 12]
    assert probe.checkpoint_steps(5, 2).tolist() == [0, 3, 5]
    assert probe.checkpoint_steps(1, 2).tolist() == [0, 1, 1]  # fewer steps than checkpoints: they share one


@pytest.mark.slow  # a whole probe stage: ~14 s of CPU
def test_probe_records_every_example_at_every_checkpoint_including_step_0(tiny_model, cfg, pool):
    texts, summaries = pool
    out = probe.compute_dynamics(tiny_model, FeatureSettings.of(cfg), "summarization", texts, summaries, ["probe_loss"])
    losses = out["probe_loss"]
    assert losses.shape == (len(texts), cfg.probe.checkpoints + 1) and np.isfinite(losses).all()
    # 6 probe rows, 2 epochs, batch 2 -> 6 steps; 3 checkpoints at steps 2, 4, 6
    assert out["trained"].tolist() == probe.probe_slice(len(texts), cfg.probe).tolist() and len(out["trained"]) == 6
    assert out["checkpoint_steps"].tolist() == [0, 2, 4, 6]
    # step 0 is the base model (LoRA B = 0): the same loss the embedding pass records
    actor = EmbedActor(tiny_model, cfg.model, cfg.prompt, "summarization")
    base = actor({"row": np.arange(len(texts)), "turns": np.array(texts), "response": np.array(summaries)})["loss"]
    np.testing.assert_allclose(losses[:, 0], base, atol=1e-4)
    assert not np.allclose(losses[:, -1], losses[:, 0], atol=1e-3)  # the probe trained
    trained = out["trained"]
    assert losses[trained, -1].mean() < losses[trained, 0].mean()  # and learned its slice
    assert out["adapter"] and all("lora_" in name for name in out["adapter"])


@pytest.mark.slow  # two probes and gradient passes: ~20 s of CPU
def test_gradient_features_deterministic_for_a_seed_and_sized_by_grad_dim(tiny_model, cfg, pool):
    texts, summaries = pool[0][:5], pool[1][:5]
    first = probe.compute_dynamics(
        tiny_model, FeatureSettings.of(cfg), "summarization", texts, summaries, ["probe_loss", "grad_features"]
    )
    assert first["grad_features"].shape == (5, 64) and np.isfinite(first["grad_features"]).all()

    def grads_again() -> dict:  # the gradient pass alone, from the first probe's LoRA weights, as cfg is now
        features = FeatureSettings.of(cfg)
        return probe.compute_dynamics(
            tiny_model, features, "summarization", texts, summaries, ["grad_features"], adapter=first["adapter"]
        )

    again = grads_again()
    assert set(again) == {"grad_features", probe.SECONDS + "grad_features"}  # the probe was not rerun
    np.testing.assert_array_equal(again["grad_features"], first["grad_features"])
    cfg.probe.grad_dim = 32
    smaller = grads_again()
    assert smaller["grad_features"].shape == (5, 32)
    cfg.probe.seed = 1  # another projection (and probe slice)
    other = grads_again()
    assert not np.allclose(other["grad_features"], smaller["grad_features"])


def test_sparse_projection_preserves_norms_and_inner_products():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 20_000)).astype(np.float32)
    x[20:] = x[:20] + 0.5 * x[20:]  # correlated pairs: non-trivial inner products
    import torch

    projected = probe.SparseProjection(20_000, 2048, 4, seed=0)(torch.from_numpy(x)).numpy()
    assert projected.shape == (40, 2048)
    norms = np.linalg.norm(projected, axis=1) / np.linalg.norm(x, axis=1)
    assert np.abs(norms - 1).max() < 0.15
    cos = lambda a: (a[:20] * a[20:]).sum(1) / np.linalg.norm(a[:20], axis=1) / np.linalg.norm(a[20:], axis=1)  # noqa: E731
    assert np.abs(cos(projected) - cos(x)).max() < 0.1


def test_probe_config_is_validated(tiny_job):
    with pytest.raises(DistillError, match="grad_blocks"):
        make_config({**tiny_job, "probe": {"grad_dim": 100, "grad_blocks": 3}})
    with pytest.raises(DistillError, match="probe.fraction"):
        make_config({**tiny_job, "probe": {"fraction": 0}})
    with pytest.raises(DistillError, match="checkpoints"):
        make_config({**tiny_job, "probe": {"checkpoints": 0}})


@pytest.mark.slow
def test_probe_stage_runs_on_ray_only_when_needed_and_is_cached(tiny_model, cfg, tmp_path, monkeypatch):
    from distill.runtime.features import probe_pool
    from distill.runtime.session import ray_session

    splits = load_splits(cfg.data)
    marker = np.linspace(1, 2, len(splits.train), dtype=np.float32)  # stands in for the embedding pass's loss
    features = text_features(splits.train["prompt"].tolist(), loss=marker)
    cfg.select.methods = ["random"]
    assert probe_pool(FeatureSettings.of(cfg), features, splits, tiny_model, tmp_path) == (
        features,
        {},
    )  # nothing needed
    cfg.select.methods = ["el2n_loss"]
    with ray_session(cfg.resources):
        first, cost = probe_pool(FeatureSettings.of(cfg), features, splits, tiny_model, tmp_path)
    paths = probe.cache_paths(tmp_path / "cache", tiny_model, splits.fingerprint, FeatureSettings.of(cfg))
    assert first.probe_loss.shape == (len(features), 4) and first.grad_features is None
    np.testing.assert_array_equal(first.probe_loss[:, 0], marker)  # step 0 is taken from the embedding pass
    assert paths.probe.exists() and not paths.grads.exists()
    stamp = paths.probe.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached probe")

    monkeypatch.setattr(probe, "compute_dynamics", fail)
    again, cost_again = probe_pool(
        FeatureSettings.of(cfg), features, splits, tiny_model, tmp_path
    )  # no Ray session: all from cache
    np.testing.assert_array_equal(again.probe_loss, first.probe_loss)
    assert cost_again == cost and cost[probe.PROBE_LOSS] > 0  # the cost it had
    monkeypatch.undo()
    cfg.select.methods = ["gradient_match", "el2n_loss"]  # gradients: the cached probe's weights are reused
    with ray_session(cfg.resources):
        both, cost = probe_pool(FeatureSettings.of(cfg), features, splits, tiny_model, tmp_path)
    assert both.grad_features.shape == (len(features), 64) and paths.grads.exists()
    assert paths.probe.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(both.probe_loss, first.probe_loss)
    probe_s, grads_s = cost[probe.PROBE_LOSS], cost[probe.GRAD_FEATURES]
    assert charged_seconds({"probe_loss"}, cost) == probe_s  # el2n_loss pays for the probe
    assert charged_seconds({"grad_features"}, cost) == probe_s + grads_s > probe_s  # gradient_match for both
    assert charged_seconds({"embeddings", "loss"}, cost) == 0  # the shared embedding pass is nobody's extra


def test_a_cache_file_without_its_cost_is_recomputed(tmp_path):
    """Probe caches written before costs were stored hold no `seconds`: they are not used (a KeyError
    before; a dynamics method's time without its probe otherwise)."""
    from distill.store import artifacts

    paths = probe.CachePaths(tmp_path / "probe-old.npz", tmp_path / "grads-old.npz")
    artifacts.write_npz(paths.probe, **{probe.PROBE_LOSS: np.ones((3, 3), dtype=np.float32)})
    artifacts.write_npz(paths.grads, **{probe.GRAD_FEATURES: np.ones((3, 4), dtype=np.float32)})
    assert probe.load_cached(paths) == {}
    artifacts.write_npz(paths.grads, **{probe.GRAD_FEATURES: np.ones((3, 4), dtype=np.float32), "seconds": 2.5})
    assert probe.load_cached(paths)[probe.SECONDS + probe.GRAD_FEATURES] == 2.5


def test_cache_keys_follow_what_the_probe_depends_on(tiny_job):
    def paths(**overrides):
        return probe.cache_paths(Path("c"), "model", "data", FeatureSettings.of(make_config(tiny_job, overrides)))

    base = paths()
    assert paths(**{"train.epochs": 3}) == base  # the trials' length: the probe has its own
    assert paths(**{"probe.epochs": 3}).probe != base.probe
    assert paths(**{"train.learning_rate": 0.1}).probe != base.probe
    changed = paths(**{"probe.grad_dim": 1024})
    assert changed.probe == base.probe and changed.grads != base.grads  # a new projection reuses the probe


def test_selection_cache_key_follows_the_probe_only_for_dynamics_methods(tiny_job):
    from distill.runtime.features import features_key
    from distill.runtime.selection import selection_inputs_key

    splits = load_splits(make_config(tiny_job).data)

    def key(methods, **overrides):
        cfg = make_config(tiny_job, {"select.methods": methods, **overrides})
        return selection_inputs_key(FeatureSettings.of(cfg), splits, "m")

    assert (
        key("random", **{"probe.epochs": 3})
        == key("random")
        == features_key(FeatureSettings.of(make_config(tiny_job)), splits, "m")
    )
    assert key("el2n_loss", **{"probe.epochs": 3}) != key("el2n_loss") != key("random")
    assert key("el2n_loss", **{"probe.grad_dim": 64}) == key("el2n_loss")  # el2n_loss does not read gradients
    assert key("gradient_match", **{"probe.grad_dim": 64}) != key("gradient_match")


def test_selection_cache_key_follows_the_query_set_only_for_query_methods(tiny_job, tmp_path):
    """A new query file must not reuse rds_plus's old subsets, and must not touch any other method's."""
    from distill.runtime.selection import selection_inputs_key

    query = tmp_path / "q.jsonl"
    query.write_text(
        '{"text": "A bill to fund rural broadband grants for ten years.", "summary": "Funds broadband."}\n'
    )
    cfg = make_config(tiny_job, {"data.query_size": 2, "select.methods": "random,rds_plus"})
    splits, with_file = load_splits(cfg.data), load_splits(cfg.data, [str(query)])
    assert selection_inputs_key(FeatureSettings.of(cfg), splits, "m") != selection_inputs_key(
        FeatureSettings.of(cfg), with_file, "m"
    )
    plain = make_config(tiny_job, {"data.query_size": 2})
    assert selection_inputs_key(FeatureSettings.of(plain), splits, "m") == selection_inputs_key(
        FeatureSettings.of(plain), with_file, "m"
    )
