"""Static guarantees over the package source: no remote code, no pickle loading."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "distill"
# assembled, so this file itself never matches
# checkpoint.load reads training state with torch.load(weights_only=True): tensors and plain types only.
ALLOWED = {"checkpoint.py": {"torch." + "load("}}
FORBIDDEN = [
    "trust_remote" + "_code",
    "torch." + "load(",
    "pickle." + "load",
    "allow_pickle" + "=True",
    "weights_only" + "=False",
]


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_package_source_never_uses(needle):
    hits = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if needle in line and needle not in ALLOWED.get(path.name, ())
    ]
    assert not hits, hits
