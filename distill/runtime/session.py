"""The Ray cluster a run uses: join the one it is submitted to (or start a local one on 127.0.0.1), check that
every node sees the run's storage, what the cluster offers (GPUs, an embedding or engine plan), and where the
tracebacks of failed Ray work go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import traceback
from urllib.parse import urlsplit

from distill import process
from distill.config.schema import ResourcesConfig
from distill.console import run as console
from distill.errors import DistillError
from distill.store.storage import SHARED_FIX, Storage

log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler

WORKERS = {"worker_process_setup_hook": process.WORKER_SETUP}  # ray.init's runtime_env: merged with a submitted job's
CONNECT_TIMEOUT_S = 5  # for a cluster's head to accept a TCP connection: a live one answers in milliseconds
DEFAULT_GCS_PORT = 6379  # the head's GCS port when an address names none (`ray start --head`'s default)
NODE_CHECK_SECONDS = 120  # for every node of the cluster to answer whether it sees the run's storage
logger = logging.getLogger(__name__)


def cluster_address(res: ResourcesConfig) -> tuple[str | None, str]:
    """The cluster a run joins and where that came from: resources.address, else RAY_ADDRESS (set by `ray job
    submit`, or left over in a shell), else none (a local cluster)."""
    if res.address:
        return res.address, "resources.address"
    return os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS"


def check_cluster_answers(res: ResourcesConfig) -> None:
    """A cluster address that nobody answers (a cluster that is gone, a stale RAY_ADDRESS) fails here, in
    seconds and naming the address, where it came from and the fix: ray.init would wait 240 s
    in silence first. Only the TCP port is tried (no Ray import); "auto" and "local" are Ray's to resolve."""
    address, origin = cluster_address(res)
    if not address or address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_GCS_PORT
    except ValueError:
        host, port = None, None
    if not host:
        raise DistillError(f"Ray cluster address {address!r} (from {origin}) is not host:port", _address_fix(origin))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise DistillError(
            f"no Ray cluster answers at {host}:{port} (the address {address} came from {origin}): {exc.strerror or exc}",
            _address_fix(origin),
        ) from None


def _address_fix(origin: str) -> str:
    if origin == "RAY_ADDRESS":
        return (
            "start that cluster (`ray start --head`), or `unset RAY_ADDRESS` to run on a local cluster, or set "
            "RAY_ADDRESS to a cluster that runs (`ray status` on its head shows its address)"
        )
    return "set resources.address to a cluster that runs (`ray status` on its head), or drop it for a local cluster"


@contextlib.contextmanager
def ray_session(res: ResourcesConfig, metadata: dict[str, str] | None = None):
    """Join the cluster we run on (ray job submit / an address) or start a local one on 127.0.0.1; each of its
    workers sets itself up as the driver did (distill.process.setup: the environment, the console's handler). The
    Ray job carries `metadata` (the dashboard's Jobs page and `ray list jobs --detail` show it)."""
    process.set_environment()  # before Ray is imported: it reads its settings then
    import ray
    from ray.data import DataContext
    from ray.job_config import JobConfig

    address, _ = cluster_address(res)
    started = not ray.is_initialized()
    dashboard = None
    if started and address:
        dashboard = ray.init(
            address=address, log_to_driver=True, runtime_env=WORKERS, job_config=JobConfig(metadata=metadata)
        ).dashboard_url
    elif started:  # address="local": never attach to a stray `ray start` cluster by accident
        # DISTILL_RAY_DASHBOARD=0 starts a local cluster without the dashboard, about 8 s sooner on 2 cores:
        # the test suite, which starts dozens, sets it (tests/conftest.py)
        dashboard_on = os.environ.get("DISTILL_RAY_DASHBOARD", "1") != "0"
        local = ray.init(
            address="local",
            num_cpus=res.num_cpus,
            include_dashboard=dashboard_on,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            runtime_env=WORKERS,
            job_config=JobConfig(metadata=metadata),
        )
        dashboard = local.dashboard_url if dashboard_on else None
        log(f"Ray session folder (its logs): {local.address_info['session_dir']}")
    DataContext.get_current().enable_progress_bars = console.current().verbose  # distill's console draws its own
    context = ray.get_runtime_context()
    resources = ray.cluster_resources()
    job = context.get_job_id()
    log(
        f"Ray cluster: {resources.get('CPU', 0):.0f} CPU, {resources.get('GPU', 0):.0f} GPU"
        + (
            f", dashboard http://{dashboard}, this job: http://{dashboard}/#/jobs/{job}"
            if dashboard
            else f" (job {job})"
        )
    )
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_nodes_see(store: Storage) -> None:
    """Every node of a multi-node cluster must reach the run's storage, where its trials write: one that cannot
    (a local path on the driver's disk, a node without credentials) fails here, in seconds and with the fix,
    rather than trial by trial. One tiny task per alive node looks for a marker the driver wrote (Tune checks
    the same from each trial, later). A one-node cluster is the driver's own machine: nothing to check."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    marker = store.marker()
    try:
        look = ray.remote(num_cpus=0, max_retries=0)(Storage.sees)
        refs = [
            look.options(
                name=f"storage check node {n['NodeID'][:8]}",
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(store, marker)
            for n in nodes
        ]
        try:
            answers = ray.get(refs, timeout=NODE_CHECK_SECONDS)
        except ray.exceptions.GetTimeoutError:
            raise DistillError(
                f"not every node of the cluster answered within {NODE_CHECK_SECONDS} s whether it sees "
                f"storage {store.uri}",
                "check the cluster's nodes (`ray status`) and run again",
            ) from None
    finally:
        store.delete(marker)
    blind = [(n, why) for n, why in zip(nodes, answers) if why]
    if blind:
        node, why = blind[0]
        where = f"node {node['NodeID'][:8]} at {node['NodeManagerAddress']}: {why}"
        if store.remote:
            raise DistillError(
                f"{len(blind)} of {len(nodes)} nodes cannot reach storage {store.uri} ({where})",
                "give every node credentials (its IAM role, or AWS_*/GOOGLE_* variables in the job's "
                "runtime_env env_vars) and check storage.endpoint",
            )
        raise DistillError(
            f"storage {store.uri} is a local path that {len(blind)} of {len(nodes)} nodes of the cluster "
            f"cannot see ({where}), so their trials could not write checkpoints or results",
            SHARED_FIX,
        )


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def embed_plan(resources: dict, num_actors: int = 0) -> tuple[int, int, int]:
    """(actors, CPUs per actor, GPUs per actor): one actor per GPU, else one actor sharing the CPUs."""
    gpus = int(resources.get("GPU", 0))
    actors = num_actors or max(1, gpus)
    cpus = 0 if gpus else max(1, int(resources.get("CPU", 1)) // actors)
    return actors, cpus, 1 if gpus else 0


def first_failure(failed: dict[str, BaseException]) -> tuple[str, BaseException, str]:
    """Write every failure's whole traceback to the run log (a Ray task's error holds the task's own traceback and
    the exception it chained from); returns the first one's name, its own exception (Ray's RayTaskError carries it
    as `cause`), and where the user finds the tracebacks, for the one-line error."""
    where = console.current().log_path  # None with --verbose: the console shows everything
    for name, error in failed.items():
        text = f"{name} failed:\n" + "".join(traceback.format_exception(error)).rstrip()
        if where:
            with open(where, "a") as run_log:
                run_log.write(text + "\n")
        else:
            logger.error(text)
    name, cause = next(iter(failed.items()))
    while isinstance(getattr(cause, "cause", None), BaseException):
        cause = cause.cause
    return name, cause, f"the traceback is in {where}" if where else "the traceback is printed above"
