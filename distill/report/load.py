"""Reading a run's stored files for the report (every file checked against its checksum), and exporting exactly
those files, small enough to publish.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.store import artifacts
from distill.store.outdir import method_of
from distill.store.records import RunInfo, TrialMetrics, TrialRecord

log = logging.getLogger(__name__)

TRIALS = "trials"  # the folder of trial folders (distill.trial.run.TRIALS: the report reads it, never imports it)


# ----------------------------------------------------------------------------------------- reading


def _trusted(path: Path) -> Path:
    """A stored file the report may read: intact per its checksum, else an error naming it."""
    problem = artifacts.verify(path)
    if problem:
        raise DistillError(
            f"{path} is damaged: {problem}",
            f"rerun the experiment into {path.parent.parent} with the same job: "
            "it recomputes damaged files and reuses intact ones",
        )
    return path


def _read_json(path: Path) -> Any:
    _trusted(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DistillError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
            "delete the damaged file and re-run that trial",
        ) from exc


def _read_jsonl(path: Path) -> list[dict]:
    _trusted(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DistillError(
                f"{path} line {lineno} is not valid JSON ({exc.msg})", "delete the damaged file and re-run that trial"
            ) from exc
    return rows


def run_trial_paths(output_dir: Path, warn: bool = True) -> list[Path]:
    """The metrics.json of every trial of the run in `output_dir`: those its run.json lists, each with the key it
    lists (a trial folder an earlier run into the same folder left, with other methods, seeds or settings, is not
    this run's and is named in a warning as left out; a listed trial with no results yet, of an interrupted run, is
    named too; `warn` false: a second look, unnamed). A run.json from before version 4 lists none: every trial."""
    trials_dir = output_dir / TRIALS
    paths = sorted(trials_dir.glob("*/metrics.json")) if trials_dir.is_dir() else []
    run_path = output_dir / "run.json"
    own = RunInfo.from_dict(_read_json(run_path), run_path).trials if run_path.is_file() else None
    if own is None:
        return paths
    kept = [p for p in paths if p.parent.name in own and _read_json(p).get("key") == own[p.parent.name]]
    left_out = sorted(p.parent.name for p in paths if p not in kept)
    if left_out and warn:
        log.warning(
            "left out %d trial folder(s) that are not this run's (another run's, into the same folder): %s",
            len(left_out),
            ", ".join(left_out),
        )
    missing = sorted(set(own) - {p.parent.name for p in kept})
    if missing and warn:  # an interrupted run: its report covers what finished, and says what did not
        log.warning(
            "%d of this run's %d trials have no results yet, so the report leaves them out: %s "
            "(`distill resume %s` runs them)",
            len(missing),
            len(own),
            ", ".join(missing),
            output_dir,
        )
    return kept


def load_trials(output_dir: Path) -> list[TrialRecord]:
    """The run's trials (run_trial_paths): metrics (plus predictions, when stored), sorted by (method, seed, trial)."""
    paths = run_trial_paths(output_dir)
    if not paths:
        raise DistillError(
            f"no trial results of this run under {output_dir / TRIALS}",
            f"run `python -m distill quick --output-dir {output_dir}` first",
        )
    trials = []
    for path in paths:
        metrics = TrialMetrics.from_dict(_read_json(path), path, trial=path.parent.name)
        pred_path = path.parent / "predictions.jsonl"
        trials.append(TrialRecord(metrics, _read_jsonl(pred_path) if pred_path.is_file() else None))
    trials.sort(key=lambda t: (str(t.metrics.method), int(t.metrics.seed), str(t.metrics.trial)))
    return trials


def load_selected_lengths(output_dir: Path) -> dict[str, list[int]]:
    """n_words of every selected example, per method (all seeds pooled), from `selected/*.jsonl`."""
    lengths: dict[str, list[int]] = defaultdict(list)
    sel_dir = output_dir / "selected"
    if not sel_dir.is_dir():
        return {}
    for path in sorted(sel_dir.glob("*.jsonl")):
        method = method_of(path.stem)
        for row in _read_jsonl(path):
            if "n_words" in row:
                lengths[method].append(int(row["n_words"]))
            elif "prompt" in row or "text" in row:  # "text": runs from before the prompt/response names
                lengths[method].append(len(str(row.get("prompt", row.get("text"))).split()))
    return dict(lengths)


# ------------------------------------------------------------------------------------ where to, from where

REPORT_DIR = "comparison"  # the report's folder inside the folder it is written to
REPORT_READS = ("metrics.json", "predictions.jsonl")  # what the report reads of each trial (not its adapter)


def check_destination(dest: Path, run: Path, overwrite: bool) -> None:
    """A rebuild replaces a report only when asked: into a folder that holds a run's trials (a published run in
    the repository, another run), only a run's own first report goes without --overwrite."""
    holds_trials, has_report = (dest / TRIALS).is_dir(), (dest / REPORT_DIR).exists()
    if overwrite or not holds_trials or (dest == run and not has_report):
        return
    raise DistillError(
        f"{dest} holds a run's trials" + (f" and its report ({REPORT_DIR}/)" if has_report else ""),
        f"write the report to a new folder with --output-dir DIR, or pass --overwrite to replace {dest / REPORT_DIR}",
    )


def fetch_run(uri: str, dest: Path, endpoint: str | None, region: str | None, anonymous: bool) -> Path:
    """Copy what the report reads of the run kept in storage `uri` (s3://, gs://: the layer `--storage` writes
    through) into the local folder `dest`, and return it."""
    from distill.store.storage import open_storage

    store = open_storage(dest, uri, endpoint, region, anonymous)
    try:
        if not store.pull("run.json"):
            raise DistillError(
                f"{uri} holds no run.json: no run there",
                "pass the storage of a run (with --endpoint for an S3-compatible store, --region for S3)",
            )
        for name in store.names(TRIALS):
            for file in REPORT_READS:
                store.pull(f"{TRIALS}/{name}/{file}")
        for rel in ("pool_stats.json", "selected"):
            store.pull(rel)
    except OSError as exc:
        raise DistillError(
            f"storage {uri} cannot be read: {str(exc).splitlines()[0][:300]}",
            "check the bucket, --endpoint / --region, and that this machine has credentials "
            "(environment variables or an IAM role)",
        ) from None
    return dest


# --------------------------------------------------------------------------------------- exporting

TEXT_FIELDS = ("prediction", "reference")  # what an exported prediction leaves out: the texts, not the scores


def export(output_dir: Path, dest: Path) -> None:
    """Copy exactly what the report reads from a run into `dest`, small enough to publish: run.json,
    pool_stats.json, every trial's metrics.json and per-example scores (predictions.jsonl without the
    generated and reference texts), and each selected subset's ids and lengths. `distill report <dest>`
    then rebuilds the same results.json, and any later correction of the statistics re-tests it.
    """
    output_dir, dest = Path(output_dir), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DistillError(f"{dest} already has files", "export into a new folder (or delete that one first)")
    load_trials(output_dir)  # one line for a run without trials, or with a damaged trial file
    for name in ("run.json", "pool_stats.json"):
        if (output_dir / name).is_file():
            artifacts.write_bytes(dest / name, _trusted(output_dir / name).read_bytes())
    for path in run_trial_paths(output_dir, warn=False):  # load_trials named what it leaves out
        folder = dest / TRIALS / path.parent.name
        artifacts.write_bytes(folder / "metrics.json", path.read_bytes())
        predictions = path.parent / "predictions.jsonl"
        if predictions.is_file():
            artifacts.write_jsonl(
                folder / "predictions.jsonl",
                ({k: v for k, v in p.items() if k not in TEXT_FIELDS} for p in _read_jsonl(predictions)),
            )
    for path in sorted((output_dir / "selected").glob("*.jsonl")):
        artifacts.write_jsonl(
            dest / "selected" / path.name,
            (
                {
                    "index": row.get("index"),
                    "id": row.get("id"),
                    "n_words": row["n_words"]
                    if "n_words" in row
                    else len(str(row.get("prompt", row.get("text", ""))).split()),
                }
                for row in _read_jsonl(path)
            ),
        )
