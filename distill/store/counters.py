"""<out>/counters.json: how much each stage computed (rather than reused), summed over every driver run.

It is how a resumed run shows what it redid: the features, selections and trials it found finished add
nothing. Written only by the driver, through distill.store.artifacts (atomic and sealed: a killed driver leaves the
previous version).
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.store import artifacts

FILE = "counters.json"


def read(out: Path) -> dict[str, int]:
    path = Path(out) / FILE
    return json.loads(path.read_text()) if artifacts.intact(path) else {}


def bump(out: Path, **counts: int) -> None:
    """Add `counts` (e.g. embeddings=24) to the stored totals."""
    totals = read(out)
    for name, n in counts.items():
        totals[name] = totals.get(name, 0) + n
    artifacts.write_json(Path(out) / FILE, totals, indent=2, sort_keys=True)
