"""The docs against the code: nothing they name is missing (tests/docs_drift.py), the check itself catches a
planted mistake, every CLI flag is documented, and the stage diagram, the output-folder tree and the method table
each exist once and agree with the package layout, the code's file names and the selector registry."""

from __future__ import annotations

import ast
import re

import pytest

from tests.docs_drift import DOCS, REPO, Code, problems
from tests.project.test_layout import LAYERS

README = REPO / "README.md"


@pytest.fixture(scope="module")
def code() -> Code:
    return Code()


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_a_doc_names_only_files_flags_keys_jobs_and_tests_that_exist(doc, code):
    assert problems(doc, doc.read_text(), code) == []


PLANTED = {
    "distill quick --fractoin 0.2": "`distill quick --fractoin`, which is not a flag of distill quick",
    "distill report results --metric rougeL": "`distill report --metric`, which is not a flag of distill report",
    "python -m distill.all --job scitldr-al": "job scitldr-al, which is not a packaged job",
    "--set train.lora_rank=8": "config key train.lora_rank, which does not exist",
    "see distill/runtime/pipline.py": "path distill/runtime/pipline.py, which does not exist",
    "tests/cli/test_cli.py::test_nothing_of_the_sort": "test tests/cli/test_cli.py::test_nothing_of_the_sort",
    "scripts/bench_train.py --stepz 2": "`scripts/bench_train.py --stepz`, which is not a flag",
}


@pytest.mark.parametrize("line", PLANTED)
def test_the_check_finds_a_planted_mistake(line, code):
    """Each kind of mistake, planted in a copy of the README (in a fenced block, and inline), is reported."""
    text = README.read_text()
    for planted in (f"{text}\n```bash\n{line}   # planted\n```\n", f"{text}\nAs in `{line}`.\n"):
        found = problems(README, planted, code)
        assert len(found) == 1 and PLANTED[line] in found[0], found


def test_every_flag_of_every_command_is_documented(code):
    text = "".join(doc.read_text() for doc in DOCS)
    missing = sorted(
        f"distill {name} {flag}"
        for name, flags in code.flags.items()
        for flag in flags
        if flag.startswith("--") and flag != "--help" and flag not in text
    )
    assert not missing, f"undocumented flags: {missing}"


def test_the_readme_lists_every_subcommand(code):
    listed = set(re.findall(r"^distill ([a-z0-9]+)\b", _block_after(README.read_text(), "## Modes and jobs"), re.M))
    assert listed == set(code.flags), f"README's command list vs distill's subcommands: {listed ^ set(code.flags)}"


def _block_after(text: str, heading: str) -> str:
    """The first fenced block after `heading`."""
    return text.split(heading, 1)[1].split("```", 2)[1]


def _holding(marker: str) -> list[str]:
    return [str(doc.relative_to(REPO)) for doc in DOCS if marker in doc.read_text()]


def test_the_stage_diagram_exists_once_and_follows_the_package_flow():
    """One copy (the README's); the packages its stages name come in the order the layout test enforces."""
    marker = "ExperimentConfig (distill/config/jobs/*.yaml"
    assert _holding(marker) == ["README.md"]
    diagram = _block_after(README.read_text(), "## How a run works")
    stages = "\n".join(line for line in diagram.splitlines() if line.startswith(("ExperimentConfig", "  → ")))
    packages = [p for p in re.findall(r"distill/(\w+)/", stages) if p in LAYERS]
    order = [LAYERS.index(p) for p in dict.fromkeys(packages)]
    assert order == sorted(order) and {"config", "data", "model", "features", "select", "trial", "report"} <= set(
        packages
    )


def _literals() -> str:
    """Every string constant in distill's source (f-strings' constant parts too), joined: what the code writes."""
    parts = []
    for path in (REPO / "distill").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts.append(node.value)
    return "\n".join(parts)


def test_the_output_tree_exists_once_and_names_what_the_code_writes():
    """docs/architecture.md's tree of a run's folder: every file and folder it names (its placeholders aside,
    e.g. `forest_` of `forest_<metric>.png`) is spelt in the code that writes it."""
    marker = "\nresults/\n  run.json "
    assert _holding(marker) == ["docs/architecture.md"]
    tree = _block_after((REPO / "docs" / "architecture.md").read_text(), "## Outputs")
    names = set()
    for line in tree.splitlines()[1:]:
        path, _, what = line.strip().partition(" ")
        names.update(path.strip("/").split("/") if path else [])
        names.update(re.findall(r"[\w<>.-]+\.(?:json|jsonl|csv|md|png|npy|npz)\b|\w+/(?=\s|$)", what))
    literals = _literals()
    fragments = {f.strip("/") for name in names for f in re.split(r"<\w+>", name) if len(f.strip("/-")) >= 3}
    missing = sorted(f for f in fragments if f not in literals)
    assert len(fragments) > 20 and not missing, f"the tree names what no code writes: {missing}"


def test_the_method_table_exists_once_and_matches_the_registry():
    """docs/selectors.md's table: every registered method, each with the registry's cost and needs (a
    parenthesised extra, e.g. `embeddings (+ loss)`, is an optional input the registry does not require)."""
    from distill.select import registry

    assert _holding("| method | prefers | cost") == ["docs/selectors.md"]
    rows = {}
    for line in (REPO / "docs" / "selectors.md").read_text().split("| method | prefers | cost")[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, _, cost, needs, _ = (cell.strip().strip("`") for cell in line.strip("|").split(" | "))
        rows[name] = (cost.replace("`", ""), re.sub(r"\s*\(\+.*\)", "", needs))
    assert list(rows) == sorted(rows, key=list(rows).index) and set(rows) == set(registry.names())
    for name, (cost, needs) in rows.items():
        method = registry.get(name)
        assert cost == method.cost, name
        assert needs == ", ".join(method.needs) if method.needs else needs in ("—", "text stats"), name


def test_distill_methods_prints_each_methods_needs_and_cost(capsys):
    from distill.cli import main
    from distill.select import registry

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, line in zip(registry.names(), lines, strict=True):
        method = registry.get(name)
        assert line.startswith(name) and line.endswith(
            f"[needs: {', '.join(method.needs) or 'text stats'}; cost: {method.cost}]"
        )
