"""The Tune callbacks of a run's trials: one persists each finished trial, one feeds the console's trial table.

Module-level classes, their state passed in; this module imports Ray Tune on import, so distill.runtime.tune
imports it only when trials run.
"""

from __future__ import annotations

from ray import tune

from distill.console import run as console
from distill.model import checkpoint as ckpt
from distill.runtime import metrics  # (`checkpoint` is a parameter name in Tune's callbacks)
from distill.store import counters
from distill.store.storage import Storage
from distill.trial.run import trial_path

# Tune result keys of a trial's last report (numbers only: the record itself is in storage, where the trial wrote it)
FINISHED = "distill_finished"  # trials/<name>/ holds the complete record
TRAINED = "distill_trained"  # vLLM engine: trials/<name>/ holds the trained metrics and adapter, awaiting generation


class PersistTrials(tune.Callback):
    """Copies each finished trial's folder from storage into the output folder, whatever node wrote it (or, with
    the vLLM engine, lists the trained trial in `trained` for the shared generation stage), and points the folder
    of an unfinished trial at its newest checkpoint in storage (for a later `resume`); `keys`: trial → content key."""

    def __init__(self, store: Storage, keys: dict[str, str], trained: list[str]):
        self.store, self.keys, self.trained = store, keys, trained

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["trial"]
        if FINISHED in result or TRAINED in result:
            counters.bump(self.store.local, train_steps=int(result["train_steps"] - result["resumed_from_step"]))
        if TRAINED in result:
            self.trained.append(name)
        elif FINISHED in result:
            self.store.pull(trial_path(name))
            counters.bump(self.store.local, trials=1)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        name = trial.config["trial"]
        ckpt.write_pointer(self.store, trial_path(name), self.keys[name], self.store.relative(checkpoint.path))


class TrialProgress(tune.Callback):
    """Feeds the console's trial table (`board`) and the dashboard's trial metrics (runtime/metrics.py: `states`,
    each trial's step and loss, the `n_test` held-out examples each finished trial scored) from Tune's own trial
    events."""

    def __init__(self, board: console.TrialBoard, states: metrics.TrialStates, run: str, n_test: int):
        self.board, self.states, self.run, self.n_test = board, states, run, n_test

    def on_trial_start(self, iteration, trials, trial, **info):
        self.board.started(trial.config["trial"])
        self.states.move(trial.config["trial"], "running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["trial"]
        if "step" in result:
            self.board.result(name, result["step"], result["steps"], result["loss"])
            metrics.trial_progress(self.run, name, result["step"], result["loss"])
        if FINISHED in result:
            metrics.scored(self.run, name, self.n_test)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.board.finished(trial.config["trial"])
        self.states.move(trial.config["trial"], "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.board.finished(trial.config["trial"], failed=True)
        self.states.move(trial.config["trial"], "failed")
