"""Trial checkpoints: everything a LoRA fine-tune needs to continue exactly where it stopped.

A checkpoint holds the adapter weights, the optimizer and scheduler state, the step (which fixes the
position in the seeded data stream) and every RNG state (LoRA dropout draws from torch's), so a trial
resumed from step s makes the same remaining updates as one that never stopped. Plain torch + peft:
distill/runtime/tune.py hands these folders to Ray Tune, which keeps them in the run's storage, and points each trial's
folder there at its newest one so that a new driver (`distill resume`, on any machine that reaches the
storage) can continue trials that an earlier driver left unfinished.
"""

from __future__ import annotations

import json
import posixpath
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from distill.store.storage import Storage

STATE_FILE = "state.pt"
META_FILE = "meta.json"  # {"trial", "key", "step"}: readable without torch
POINTER_FILE = "checkpoint.json"  # in a trial folder: the newest checkpoint of that trial


@dataclass
class TrainState:
    """A fine-tune after `step` optimizer steps (tensors as the live objects hold them)."""

    step: int
    tokens: int
    loss: float
    micro: int
    seconds: float  # training time spent up to `step`, over every attempt
    adapter: dict
    optimizer: dict
    scheduler: dict
    rng: dict


def capture(
    model, optimizer, scheduler, *, step: int, tokens: int, loss: float, micro: int, seconds: float
) -> TrainState:
    from peft import get_peft_model_state_dict

    return TrainState(
        step,
        tokens,
        loss,
        micro,
        seconds,
        get_peft_model_state_dict(model),
        optimizer.state_dict(),
        scheduler.state_dict(),
        rng_states(),
    )


def restore(state: TrainState, model, optimizer, scheduler) -> None:
    """Put the adapter, optimizer, scheduler and RNGs back as they were at `state.step`."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state.adapter)
    optimizer.load_state_dict(state.optimizer)  # moves the moments to the parameters' device
    scheduler.load_state_dict(state.scheduler)
    set_rng_states(state.rng)


def rng_states() -> dict:
    """Every RNG a step draws from, as plain types and tensors (so the file loads with weights_only=True)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    numpy_state = {**states["numpy"], "state": dict(states["numpy"]["state"])}
    numpy_state["state"]["key"] = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(folder: Path, state: TrainState, trial: str, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(asdict(state), folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps({"trial": trial, "key": key, "step": state.step}))


def load(folder: Path) -> TrainState:
    # weights_only=True: tensors and plain types only, so a tampered checkpoint cannot run code when resumed
    return TrainState(**torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True))


def step_of(folder: Path) -> int:
    return json.loads((folder / META_FILE).read_text())["step"]


class Cadence:
    """When to checkpoint: every `every` steps, or (every == 0) once `minutes` have passed since the last
    checkpoint; always after the last step, so a failure during evaluation retrains nothing."""

    def __init__(self, every: int, minutes: float):
        self.every, self.seconds, self.last = every, minutes * 60, time.monotonic()

    def due(self, step: int, total: int) -> bool:
        if step == total:
            return True
        if self.every:
            return step % self.every == 0
        return time.monotonic() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = time.monotonic()


def write_pointer(store: Storage, trial: str, key: str, path: str) -> None:
    """Record in the run's storage where the newest checkpoint of the trial whose folder (inside storage) is
    `trial` lives: `path`, a folder inside storage, so any driver that reaches storage can continue it."""
    store.write_json(posixpath.join(trial, POINTER_FILE), {"key": key, "path": path})


def read_pointer(store: Storage, trial: str, key: str) -> str | None:
    """The newest checkpoint (a folder inside storage) of the trial with this content key, if an earlier
    driver left one."""
    pointer = store.read_json(posixpath.join(trial, POINTER_FILE))
    if pointer is None or pointer.get("key") != key:  # none, or settings changed since: another trial's
        return None
    if not store.exists(posixpath.join(pointer["path"], STATE_FILE)):  # Tune deleted it, or it never finished
        return None
    return pointer["path"]
