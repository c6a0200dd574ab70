"""Job specs that start from another (`base: quick`): the packaged jobs resolve exactly as they did when each
spelt every block out, a base's own base applies first, and a bad base (unknown, a cycle, not a name) is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distill.config.load import job_names, load_job, make_config
from distill.errors import DistillError
from tests.cli_helpers import assert_one_line_error, run_cli

# Every packaged job as it was written before the jobs composed (each block spelt out, no `base:`), parsed from
# its YAML. A job changed on purpose changes here too: the entry is what the job file alone would say.
FLAT_JOBS = json.loads((Path(__file__).parents[1] / "fixtures" / "jobs_flat.json").read_text())


def test_the_snapshot_covers_every_packaged_job():
    assert sorted(FLAT_JOBS) == sorted(job_names())


@pytest.mark.parametrize("name", sorted(FLAT_JOBS))
def test_a_packaged_job_resolves_exactly_as_its_spelt_out_form(name):
    assert make_config(name) == make_config(FLAT_JOBS[name])


def test_some_packaged_jobs_do_start_from_another():
    """The composition is used, not only allowed: the blocks the jobs shared are written once."""
    from distill.config.load import JOBS_DIR

    based = {p.stem for p in JOBS_DIR.glob("*.yaml") if "base" in yaml.safe_load(p.read_text())}
    assert {"baseline", "all", "quick-gpu", "all-gpu", "scitldr", "scitldr-all", "scitldr-loss"} <= based


def write(folder: Path, name: str, values: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_job_overrides_its_base_key_by_key_and_replaces_lists(tmp_path):
    write(
        tmp_path, "mine", {"base": "quick", "name": "mine", "train": {"epochs": 3}, "select": {"methods": ["random"]}}
    )
    child = write(tmp_path, "child", {"base": "mine.yaml", "name": "child", "data": {"title_column": None}})
    cfg, quick = make_config(child), make_config("quick")
    assert cfg.name == "child" and cfg.train.epochs == 3 and cfg.select.methods == ["random"]
    assert cfg.train.learning_rate == quick.train.learning_rate and cfg.train.batch_size == quick.train.batch_size
    assert cfg.data.title_column is None and cfg.data.source == quick.data.source
    assert "base" not in load_job(child)


def test_a_job_given_as_a_mapping_starts_from_a_packaged_one():
    assert make_config({"base": "scitldr", "seeds": 2}).data.test_size == make_config("scitldr").data.test_size


def test_an_unknown_base_is_one_line_listing_the_jobs(tmp_path):
    job = write(tmp_path, "mine", {"base": "quik"})
    with pytest.raises(DistillError, match=r"job spec 'quik' not found.*quick-gpu"):
        make_config(job)


def test_a_base_that_is_not_a_name_is_one_line(tmp_path):
    with pytest.raises(DistillError, match=r"job key 'base' must name a job, got \['quick'\]"):
        make_config(write(tmp_path, "mine", {"base": ["quick"]}))


def test_a_cycle_of_bases_is_one_line_naming_it(tmp_path):
    write(tmp_path, "a", {"base": "b.yaml"})
    write(tmp_path, "b", {"base": "a.yaml"})
    with pytest.raises(DistillError, match="in a cycle: a → b → a"):
        make_config(tmp_path / "a.yaml")


def test_a_local_job_named_like_a_packaged_one_may_start_from_it(tmp_path):
    """Not a cycle: ./quick.yaml with `base: quick` is a different file from the packaged quick.yaml."""
    assert make_config(write(tmp_path, "quick", {"base": "quick", "seeds": 2})).seeds == 2


def test_jobs_show_prints_the_resolved_job_and_refuses_a_bad_one(tmp_path):
    result = run_cli("jobs", "--show", "scitldr-loss", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown == load_job("scitldr-loss") and "base" not in shown
    assert shown["data"]["split_column"] == "split"  # from scitldr, two bases up
    write(tmp_path, "a", {"base": "a.yaml"})
    assert_one_line_error(run_cli("jobs", "--show", str(tmp_path / "a.yaml"), cwd=tmp_path), "cycle")
