"""Bring your own selector: plugin files, modules, entry points, broken plugins, and shipping to Ray workers
(`ray job submit` of a plugin selector from a user's project folder: tests/runtime/test_cluster.py)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from distill.config.load import make_config
from distill.errors import DistillError
from distill.features.columns import text_features
from distill.runtime.selection import _remote_select, select_subsets
from distill.select import plugins, registry
from tests.cli_helpers import PYTHON, REPO, assert_one_line_error, run_cli

SHORTEST = """
import numpy as np
from distill.select import register


@register("{name}", description="The k shortest documents.", cost="O(n log n)")
def shortest(features, k, seed):
    return np.argsort(features.n_words, kind="stable")[:k]
"""


@pytest.fixture(autouse=True)
def clean_registry():
    """Plugins register into the process-wide registry: put it back as it was after each test."""
    registry.names()  # built-ins loaded first (once per process), so the snapshot holds them
    before = dict(registry._REGISTRY)
    modules = set(sys.modules)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith(plugins.MODULE_PREFIX) or name.startswith("my_"):
            del sys.modules[name]


def write_plugin(folder: Path, name: str = "shortest_first", filename: str = "my_selectors.py") -> Path:
    path = folder / filename
    path.write_text(SHORTEST.format(name=name))
    return path


def pool_frame(n: int) -> pd.DataFrame:
    """A training pool of `n` one-turn examples, as the data layer hands it to selection."""
    turns = '[{"role": "user", "content": "t"}]'
    return pd.DataFrame(
        {"id": [f"d{i}" for i in range(n)], "title": "", "prompt": "t", "response": "s", "turns": turns}
    )


def local_ray() -> None:
    """A local Ray cluster whose workers import this repo (these tests select through real tasks)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )


def pool(n: int = 12):
    return text_features([" ".join(["word"] * (i % 7 + 1)) + f" doc{i}." for i in range(n)])


def test_plugin_file_registers_and_runs_through_the_registry_checks(tmp_path):
    path = write_plugin(tmp_path)
    loaded = plugins.load([str(path)])
    assert "shortest_first" in registry.names()
    assert registry.source_file(registry.get("shortest_first").fn) == str(path)
    features = pool()
    picked = registry.select("shortest_first", features, 3, seed=0)
    assert sorted(features.n_words[picked]) == sorted(features.n_words)[:3]
    with pytest.raises(DistillError, match="k=13"):  # the same budget check as the built-ins
        registry.select("shortest_first", features, 13, seed=0)
    assert plugins.load([str(path)]) == loaded  # loading again is harmless (a reused Ray worker does it)


MISBEHAVING = Path(__file__).resolve().parents[1] / "fixtures" / "misbehaving_selectors.py"
# what each answer of the misbehaving selector (k=3 of a pool of 12) must be called
WRONG = {
    "raises": "raised ValueError: invalid literal for int() with base 10: 'not a number'",
    "out_of_range": "returned index 10000 for a pool of 12",
    "negative": "returned index -1 for a pool of 12",
    "duplicates": "returned index 3 twice",
    "too_many": "returned 6 indices, expected k=3",
    "too_few": "returned no indices, expected k=3",
    "floats": "returned ndarray of float64, not integer indices",
    "none": "returned None, not integer indices",
    "shape": "returned an array of shape (3, 1), not a flat list of indices",
    "ragged": "returned a ragged list, not a flat list of indices",
}


@pytest.mark.parametrize("answer", WRONG)
def test_a_misbehaving_selector_is_one_error_naming_it_its_file_and_the_mistake(answer):
    plugins.load([str(MISBEHAVING)])
    with pytest.raises(DistillError) as err:
        registry.select("misbehaves", pool(), 3, seed=0, answer=answer)
    assert err.value.problem == f"selector 'misbehaves' ({MISBEHAVING}) {WRONG[answer]}"
    assert "\n" not in str(err.value)
    if answer == "raises":  # its own traceback travels with the error, for the run log
        assert isinstance(err.value.__cause__, ValueError)


def test_plugin_module_on_the_path(tmp_path, monkeypatch):
    package = tmp_path / "my_team"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_plugin(package, name="team_shortest", filename="selectors.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load(["my_team.selectors"])
    assert "team_shortest" in registry.names()


def test_plugin_from_the_job_key_and_the_flag_adds_to_it(tmp_path):
    job_plugin = write_plugin(tmp_path, name="job_shortest", filename="job_selectors.py")
    flag_plugin = write_plugin(tmp_path, name="flag_shortest", filename="flag_selectors.py")
    job = {"select": {"methods": ["random", "job_shortest"], "plugins": [str(job_plugin)]}}
    cfg = make_config(job)
    assert cfg.select.plugins == [str(job_plugin)] and "job_shortest" in cfg.select.methods
    cfg = make_config(job, {"select.methods": "job_shortest,flag_shortest"}, plugins=[str(flag_plugin)])
    assert cfg.select.plugins == [str(job_plugin), str(flag_plugin)]
    assert job["select"]["plugins"] == [str(job_plugin)]  # the caller's job is not edited


def test_unloaded_plugin_method_is_unknown(tmp_path):
    with pytest.raises(DistillError, match="unknown selection method 'never_loaded'"):
        make_config({"select": {"methods": ["never_loaded"]}})


def test_cli_methods_lists_a_plugin_and_a_run_accepts_its_method(tmp_path):
    path = write_plugin(tmp_path)
    listed = run_cli("methods", "--plugin", path.name, cwd=tmp_path)  # relative to the current directory
    assert listed.returncode == 0, listed.stderr
    assert "shortest_first" in listed.stdout.split() and "random" in listed.stdout.split()
    # a run mode takes the plugin's method: the job gets past method validation and fails later, on the data
    run = run_cli(
        "quick",
        "--plugin",
        path.name,
        "--methods",
        "random,shortest_first",
        "--data",
        "/nonexistent.jsonl",
        "--output-dir",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert_one_line_error(run, "/nonexistent.jsonl")


def _dist_info(site: Path, package: str, entry: str, body: str) -> None:
    """A minimal installed distribution: a package plus a .dist-info declaring a distill.selectors entry point."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(body)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{entry}\n")


def test_entry_point_plugin_is_registered_in_process_and_by_the_cli(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _dist_info(site, "my_ep_selectors", "shortest = my_ep_selectors", SHORTEST.format(name="ep_shortest"))
    monkeypatch.syspath_prepend(str(site))
    registry.load_entry_points()
    assert "ep_shortest" in registry.names()
    env_path = f"{site}{os.pathsep}{REPO}"
    listed = subprocess.run(
        [PYTHON, "-m", "distill", "methods"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": env_path},
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "ep_shortest" in listed.stdout.split()


def test_broken_entry_point_names_the_package(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _dist_info(site, "my_broken_ep", "broken = my_broken_ep", "import not_a_real_module_xyz\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(DistillError, match="my-broken-ep.*not_a_real_module_xyz"):
        registry.load_entry_points()


BROKEN = {
    "missing file": (None, "not found"),
    "syntax error": ("def broken(:\n    pass\n", "syntax error at line 1"),
    "import error": ("import not_a_real_module_xyz\n", "ModuleNotFoundError: No module named 'not_a_real_module_xyz'"),
    "runtime error": ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
    "wrong signature": (
        "from distill.select import register\n@register('two_args', description='x')\n"
        "def two_args(features, k):\n    return []\n",
        "wrong signature two_args(features, k)",
    ),
    "extra required parameter": (
        "from distill.select import register\n@register('needy', description='x')\n"
        "def needy(features, k, seed, alpha):\n    return []\n",
        "wrong signature",
    ),
    "name clash with a built-in": (SHORTEST.format(name="random"), "clashes with the built-in selector 'random'"),
    "no selector": ("import numpy as np\n\ndef shortest(features, k, seed):\n    return []\n", "registers no selector"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_plugin_is_one_error_naming_the_file(tmp_path, case):
    source, problem = BROKEN[case]
    path = tmp_path / "my_broken.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(DistillError) as err:
        plugins.load([str(path)])
    assert str(path.name) in err.value.problem and problem in err.value.problem, err.value.problem
    assert "\n" not in str(err.value)
    assert "random" in registry.names() and registry.get("random").fn.__module__ == "distill.select.heuristic"


def test_broken_plugin_on_the_command_line_is_one_line_exit_2(tmp_path):
    path = tmp_path / "my_broken.py"
    path.write_text("def broken(:\n")
    result = run_cli("quick", "--plugin", str(path), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, str(path), "syntax error")
    assert not (tmp_path / "out").exists()


def test_not_a_file_nor_a_module_name(tmp_path):
    with pytest.raises(DistillError, match="neither a .py file nor a module name"):
        plugins.load(["my selectors"])
    with pytest.raises(DistillError, match="plugin module 'my_absent_pkg.selectors' not found"):
        plugins.load(["my_absent_pkg.selectors"])


@pytest.mark.slow  # a fresh process importing the pipeline (Ray, torch), as a worker does
def test_a_ray_task_body_runs_a_shipped_plugin_whose_file_is_gone(tmp_path):
    """The worker side of select_subsets: a fresh process that never saw the file selects with it."""
    path = write_plugin(tmp_path)
    shipped = plugins.load([str(path)])
    path.unlink()  # the worker's node has no copy of the file
    features = pool()
    payload = tmp_path / "task.pkl"
    payload.write_bytes(pickle.dumps(("shortest_first", features, 3, 0, {}, shipped)))
    code = (
        "import pickle, sys; from distill.runtime.selection import _remote_select; "
        "idx, _ = _remote_select(*pickle.load(open(sys.argv[1], 'rb'))); print(idx.tolist())"
    )
    result = subprocess.run(
        [PYTHON, "-c", code, str(payload)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = registry.select("shortest_first", features, 3, seed=0)
    assert result.stdout.strip() == str([int(i) for i in expected])


@pytest.mark.slow
def test_select_subsets_runs_a_plugin_as_ray_tasks_even_where_its_file_is_gone(tmp_path):
    """select_subsets on a local Ray cluster with a plugin method; then the same task body as a Ray task
    after the file was deleted: the worker can only have the selector from the source that travelled with it."""
    import ray

    path = write_plugin(tmp_path)
    cfg = make_config(
        {
            "output_dir": str(tmp_path / "out"),
            "select": {"methods": ["random", "shortest_first"], "fraction": 0.25, "plugins": [str(path)]},
        }
    )
    features = pool(24)
    frame = pool_frame(24)
    expected = sorted(features.n_words)[:6]
    local_ray()
    try:
        specs = {
            s.method: s
            for s in select_subsets(
                cfg.name, cfg.select, cfg.seeds, cfg.include_baseline, features, frame, Path(cfg.output_dir), "test"
            )
        }
        assert sorted(features.n_words[list(specs["shortest_first"].indices)]) == expected
        shipped = plugins.load(cfg.select.plugins)
        path.unlink()
        task = ray.remote(num_cpus=1)(_remote_select)
        indices, _ = ray.get(task.remote("shortest_first", features, 6, 0, {}, shipped))
    finally:
        ray.shutdown()
    assert sorted(features.n_words[indices]) == expected


CRASHING = """
import os
import time

import numpy as np
from distill.select import register


@register("my_crash", description="Its worker dies, as on a segfault or an OOM kill.")
def crash(features, k, seed):
    os._exit(17)


@register("my_late_shortest", description="The k shortest documents, after the crash.")
def late_shortest(features, k, seed):
    time.sleep(3)
    return np.argsort(features.n_words, kind="stable")[:k]
"""


@pytest.mark.slow
def test_a_selection_worker_that_dies_loses_no_finished_selection(tmp_path):
    """The first method's worker dies (no Python exception: the process is gone); the second finishes after it.
    The run fails naming the dead one, and the finished selection is cached, so a rerun reuses it."""
    import ray

    path = tmp_path / "my_crashing.py"
    path.write_text(CRASHING)
    cfg = make_config(
        {
            "output_dir": str(tmp_path / "out"),
            "select": {"methods": ["my_crash", "my_late_shortest"], "fraction": 0.25, "plugins": [str(path)]},
        }
    )
    features = pool(24)
    frame = pool_frame(24)
    out = Path(cfg.output_dir)
    local_ray()
    try:
        with pytest.raises(DistillError) as err:
            select_subsets(cfg.name, cfg.select, cfg.seeds, cfg.include_baseline, features, frame, out, "test")
    finally:
        ray.shutdown()
    assert "selection my_crash (seed 0) failed" in err.value.problem, err.value.problem
    assert "my_late_shortest" not in err.value.problem and "1 finished selection(s) are kept" in err.value.fix
    cached = [json.loads(p.read_text()) for p in (out / "cache").glob("selection-*.json")]
    assert len(cached) == 1 and sorted(features.n_words[cached[0]["indices"]]) == sorted(features.n_words)[:6]


def test_a_module_in_the_current_folder_is_found_as_python_m_finds_it_and_checked_when_it_loads(tmp_path, monkeypatch):
    """`--plugin my_mod` names a module in the current folder: the `distill` command finds it there (its own
    sys.path does not hold that folder) and ships its source to the workers, which could not import it; a clash
    in it is the one-line error at load, before any work, not `module not found` (or a failure on a worker)."""
    write_plugin(tmp_path, filename="my_cwd_selectors.py")
    monkeypatch.chdir(tmp_path)
    (plugin,) = plugins.load(["my_cwd_selectors"])
    assert plugin.spec == "my_cwd_selectors" and plugin.source == (tmp_path / "my_cwd_selectors.py").read_text()
    assert "shortest_first" in registry.names()
    write_plugin(tmp_path, name="random", filename="my_clash.py")
    distill = Path(sys.executable).parent / "distill"  # the console script: sys.path[0] is its own folder
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(distill), "quick", "--plugin", "my_clash", "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result, "my_clash.py", "clashes with the built-in selector 'random'")
    assert not (tmp_path / "out").exists()
