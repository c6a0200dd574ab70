"""Fault injection for the fault-tolerance tests: a real process death, or a stall, exactly once.

DISTILL_FAULT=<point>:<n>:<action> makes the process that reaches the n-th <point> (train_step, embed_batch)
either os._exit() (action `exit`: the process really dies, as on a segfault or an OOM kill) or stop for
HANG_SECONDS (action `hang`: a test kills its driver or node meanwhile). It happens once per point: the first
process there creates DISTILL_FAULT_DIR/<point>.json (saying who: `tag`, pid), so a retry — or another trial
— runs through. Unset (always, outside tests), it does nothing. Read from the environment because it must
reach Ray's worker processes, which inherit it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_CODE = 17  # distinctive in Ray's "worker died" messages
HANG_SECONDS = 120  # long enough for a test to kill the node; bounded so a forgotten variable cannot hang forever


def inject(point: str, n: int, tag: str) -> None:
    """Die or stall here if the test asked for it and nobody has yet (`tag` names who, e.g. the trial)."""
    plan = os.environ.get("DISTILL_FAULT")
    if not plan:
        return
    where, at, action = plan.split(":")
    if where != point or int(at) != n:
        return
    marker = Path(os.environ["DISTILL_FAULT_DIR"]) / f"{point}.json"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # it happened already: this is the retry
    os.write(fd, json.dumps({"pid": os.getpid(), "point": point, "n": n, "action": action, "tag": tag}).encode())
    os.close(fd)
    log.warning("fault injection: %s at %s %d (%s, pid %d)", action, point, n, tag, os.getpid())
    if action == "exit":
        os._exit(EXIT_CODE)
    time.sleep(HANG_SECONDS)
