"""The package's shape: folders that read the data flow, no import cycles, short modules, Ray behind runtime/;
and the tests' shape: a folder per package.

Static checks over the source (`ast`, nothing is imported), so they cost milliseconds and name the module to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "distill"
MAX_LINES = 350
# Who may import distill.runtime (the Ray orchestration): itself and the command line that starts a run.
RUNTIME_IMPORTERS = ("distill.runtime", "distill.cli")
# Who may import ray: the runtime, and the `distill validate` check that asks a cluster what it offers.
RAY_IMPORTERS = ("distill.runtime", "distill.console.machine")
# The sub-packages in data-flow order, lowest first: each imports only those before it (and the top-level
# modules errors and faults). version and the entry points (cli, quick, ...) sit above them all.
LAYERS = ("store", "config", "data", "model", "features", "select", "trial", "report", "console", "runtime")
# config/checks.py checks a whole job before any work (methods exist, the data has the splits a setting names),
# so it reads the selector registry, the Features record and the data source: the one import up the flow.
UPWARD = {"distill.config.checks": {"data", "features", "select", "trial"}}  # the registries it checks
TESTS = PACKAGE.parent / "tests"
# tests/ mirrors distill/: tests/<package>/ tests distill/<package>/, and two folders more: cli/ for the top-level
# modules (the command line and the commands it runs: validate, k8s, the modes) and project/ for the repository
# as a whole (docs, layout, install, scripts, static checks over the source).
EXTRA_TEST_FOLDERS = {"cli", "project"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> set[str]:
    """Every module `path` names in an import statement: at the top, inside functions, under TYPE_CHECKING.
    `from a import b` names a and, when it is a module, a.b."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """distill's modules → the distill modules each one imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: (imported(path, name) & paths.keys()) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    module = tmp_path / "b.py"
    module.write_text("def late():\n    from distill.a import x\n")
    graph = {"distill.a": {"distill.b"}, "distill.b": imported(module, "distill.b") & {"distill.a"}}
    assert find_cycle(graph) == ["distill.a", "distill.b", "distill.a"]


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_module_is_longer_than_the_limit():
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines (split by responsibility): {long}"


def test_only_the_cli_imports_the_runtime_and_only_the_runtime_imports_ray():
    graph = import_graph()
    assert "distill.runtime.pipeline" in graph, "the Ray orchestration lives in distill/runtime/"
    runtime_users = sorted(
        m
        for m, deps in graph.items()
        if not inside(m, RUNTIME_IMPORTERS) and any(inside(d, ("distill.runtime",)) for d in deps)
    )
    assert not runtime_users, f"only the CLI may import distill.runtime: {runtime_users}"
    ray_users = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if not inside(module_name(path), RAY_IMPORTERS)
        and any(inside(d, ("ray",)) for d in imported(path, module_name(path)))
    )
    assert not ray_users, f"Ray belongs in distill/runtime/: {ray_users}"


def test_sub_packages_import_only_those_before_them_in_the_flow():
    wrong = []
    for module, deps in import_graph().items():
        own = module.split(".")[1] if module.count(".") else ""
        if own not in LAYERS:
            continue
        for dep in deps:
            other = dep.split(".")[1] if dep.count(".") else ""
            if other in LAYERS and LAYERS.index(other) > LAYERS.index(own) and other not in UPWARD.get(module, ()):
                wrong.append(f"{module} → {dep}")
    assert not wrong, f"imports against the flow {' → '.join(LAYERS)}: {sorted(wrong)}"


# The functions that compose a run hold the whole ExperimentConfig; every stage they call receives the sections it
# reads (distill/config/sections.py), so what a function may touch is visible in its signature.
WHOLE_CONFIG_PACKAGES = ("distill.runtime", "distill.trial", "distill.features")
COMPOSERS = {
    "distill.runtime.pipeline": {"run", "_run", "write_run_info"},  # write_run_info: run.json records it whole
    "distill.runtime.preflight": {"check"},
}


def whole_config_takers(path: Path) -> set[str]:
    """The functions (and methods) in `path` with a parameter annotated as the whole ExperimentConfig."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if any(a.annotation is not None and "ExperimentConfig" in ast.unparse(a.annotation) for a in args):
                found.add(node.name)
    return found


def test_no_stage_takes_the_whole_experiment_config():
    wrong = {
        f"{name}.{function}"
        for path in PACKAGE.rglob("*.py")
        if inside(name := module_name(path), WHOLE_CONFIG_PACKAGES)
        for function in whole_config_takers(path) - COMPOSERS.get(name, set())
    }
    assert not wrong, f"give these the sections they read (distill/config/sections.py): {sorted(wrong)}"


def test_the_whole_config_check_finds_a_planted_taker(tmp_path):
    module = tmp_path / "stage.py"
    module.write_text("def stage(x: int, cfg: 'ExperimentConfig') -> None:\n    pass\n")
    assert whole_config_takers(module) == {"stage"}


def test_tests_mirror_the_packages():
    """Every test file sits in tests/<package>/ (or an extra folder above), every package has its folder, and
    each folder is a Python package, so two folders may each hold a test_load.py."""
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    folders = packages | EXTRA_TEST_FOLDERS
    misplaced = sorted(
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("test_*.py")
        if path.parent.parent != TESTS or path.parent.name not in folders
    )
    assert not misplaced, f"test files outside tests/<package>/ (or {sorted(EXTRA_TEST_FOLDERS)}): {misplaced}"
    assert packages <= {path.name for path in TESTS.iterdir() if path.is_dir()}, "a package without tests/<package>/"
    assert all((TESTS / name / "__init__.py").exists() for name in folders), "a test folder without __init__.py"
