"""The Ray orchestration, the only package that talks to Ray (Data, tasks, Tune): pipeline.py is the stage order;
session.py joins or starts the cluster; features.py, selection.py, tune.py and generation.py run the features,
select, trial and vLLM stages as Ray work; preflight.py checks a run before any of it; scheduling.py sizes trials.
Nothing imports this package but the CLI."""
