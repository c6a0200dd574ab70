"""Real services on 127.0.0.1 for the tests: Ray clusters from `ray start` (a head and worker nodes, optionally
worker nodes that cannot see a folder of the driver's disk), an S3-compatible server (moto, as Ray's own
persistence tests use) and a GCS emulator. Nothing is mocked: the product talks to them through its ordinary
clients."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent
S3_KEYS = {"AWS_ACCESS_KEY_ID": "distill-test-key", "AWS_SECRET_ACCESS_KEY": "distill-test-secret"}  # moto takes any
# the GCS declares a node dead after 2 failed 1-s health checks instead of 5 × 3 s: the same failure path, sooner
FAST_NODE_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "2",
}
_PORTS_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port between Ray's worker ports (10002-19999) and Linux's ephemeral range (32768+).

    A port from bind(0) is ephemeral: between picking it and `ray start` binding it, any outgoing connection on the
    machine (Ray's own, of the other tests' clusters) may be given it, and the head then fails to start.
    """
    while True:
        port = random.randrange(20000, 32768)
        if port in _PORTS_HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_HANDED_OUT.add(port)
        return port


# How long a step of a whole tiny run may take before a test calls it hung: a quiet 2-core box takes 115-150 s to
# `ray job submit` a quick run or reach a trial's step-2 checkpoint, and twice that with the rest of the suite beside it.
HANG_S = 400


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------------ Ray


def our_ray_processes(marker: str) -> list[psutil.Process]:
    """Processes started for this test's cluster: they inherit the marker variable from `ray start`, and their
    descendants.

    (Some Ray daemons rename themselves, e.g. `ray::DashboardAgent`, so command lines are not enough; renaming
    also blanks their /proc environ, so they are found as children of the marked raylets.)
    """
    ours: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get("DISTILL_TEST_RAY") == marker:
                ours[proc.pid] = proc
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    for proc in list(ours.values()):
        try:
            ours.update((child.pid, child) for child in proc.children(recursive=True) if child.pid != os.getpid())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return list(ours.values())


def stop_ray(marker: str) -> None:
    """Stop only this test's cluster, by process id. `ray stop` would kill every Ray of this user,
    including other tests' clusters."""
    ours = our_ray_processes(marker)
    for proc in ours:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(ours, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def ray_env(marker: str) -> dict[str, str]:
    """Environment for `ray start` of a test cluster on 127.0.0.1: every process it starts carries `marker`.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on the loopback address: with it on, Ray replaces every
    127.0.0.1 it is given (--node-ip-address, --address, ray.init's address) by the machine's outward address.
    """
    env = {
        **os.environ,
        "DISTILL_TEST_RAY": marker,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _node_ports() -> list[str]:
    """Every per-node port explicit and free: the defaults (agent 52365, ...) clash with other local clusters,
    and with the other nodes of a cluster on this one machine."""
    return [
        arg
        for flag in (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
            "--node-manager-port",
            "--object-manager-port",
        )
        for arg in (flag, str(free_port()))
    ]


# `ray start --address` of a worker node on 127.0.0.1. With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 the CLI refuses to
# add nodes to a cluster; with it on, the CLI turns --address/--node-ip-address 127.0.0.1 into the outward address,
# where this head does not listen. So the CLI runs with its multi-node check passing and 127.0.0.1 kept as given;
# the processes it starts inherit ray_env (cluster switch off) like the head's.
_RAY_START_WORKER_ON_LOOPBACK = (
    "import sys, ray._private.ray_constants as constants, ray._private.services as services; "
    "constants.ENABLE_RAY_CLUSTER = True; services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)

# A worker node that cannot see a folder of this machine, as on a cloud cluster without NFS: `ray start` runs in its
# own mount namespace with an empty tmpfs over that folder, and every process of the node inherits that view.
_HIDING = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs distill-hidden "$0" && exec "$@"',
]


def start_head(env: dict[str, str], temp_dir: str, gcs_port: int, *args: str) -> None:
    """`ray start --head`: the cluster's head on 127.0.0.1, its GCS on `gcs_port`, its sessions in `temp_dir`."""
    _ray_start(
        lambda: [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--port",
            str(gcs_port),
            "--node-ip-address",
            "127.0.0.1",
            "--ray-client-server-port",
            str(free_port()),
            "--disable-usage-stats",
            "--temp-dir",
            temp_dir,
            *_node_ports(),
            *args,
        ],
        env,
        "--head",
        head=True,
    )


def start_worker(env: dict[str, str], gcs_port: int, *args: str, hidden: Path | None = None) -> None:
    """Add a worker node to the head at `gcs_port` (it shares the head's temp dir and session); with `hidden`, the
    node sees an empty folder there instead of this machine's."""
    _ray_start(
        lambda: [
            *(_HIDING + [str(hidden)] if hidden else []),
            str(VENV_BIN / "python"),
            "-c",
            _RAY_START_WORKER_ON_LOOPBACK,
            "start",
            "--address",
            f"127.0.0.1:{gcs_port}",
            "--node-ip-address",
            "127.0.0.1",
            "--disable-usage-stats",
            *_node_ports(),
            *args,
        ],
        env,
        "of a worker node",
    )


def _ray_start(command, env: dict[str, str], what: str, head: bool = False) -> None:
    """Run `ray start` (`command()`: fresh per-node ports each time), tried twice, a failed head's processes
    stopped in between (a worker node's are its own): starting nodes is the tests' setup, not what they test, and on 2 busy cores a daemon
    can miss its start-up deadline."""
    for attempt in (1, 2):
        start = subprocess.run(
            command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90
        )
        if start.returncode == 0:
            return
        print(f"ray start {what}, attempt {attempt}, failed:\n{start.stdout[-4000:]}", file=sys.stderr)
        if head:
            stop_ray(env["DISTILL_TEST_RAY"])
    raise AssertionError(f"ray start {what} failed twice; the last output:\n{start.stdout[-4000:]}")


@dataclass
class Cluster:
    """A loopback cluster from `ray start`: its environment (every process carries `marker`), its GCS port."""

    env: dict[str, str]
    gcs_port: int
    temp_dir: str
    worker_args: tuple[str, ...] = ()
    hidden: Path | None = None  # the folder its worker nodes cannot see
    workers: int = 0

    @property
    def marker(self) -> str:
        return self.env["DISTILL_TEST_RAY"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def add_worker(self) -> None:
        start_worker(self.env, self.gcs_port, *self.worker_args, hidden=self.hidden)
        self.workers += 1

    def alive_workers(self) -> int:
        """Raylets of this cluster still running, the head's not counted."""
        raylets = [p for p in our_ray_processes(self.marker) if _name(p) == "raylet"]
        return len(raylets) - 1

    def ensure_workers(self, n: int) -> None:
        """Top the cluster up to `n` live worker nodes (a test may have killed one), one at a time: two raylets
        starting at once on 2 busy cores time out."""
        for _ in range(n - self.alive_workers()):
            self.add_worker()


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


@contextlib.contextmanager
def cluster(
    head_args: list[str],
    workers: int = 0,
    worker_args: tuple[str, ...] = (),
    hidden: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """A head with `head_args` and `workers` worker nodes on 127.0.0.1, stopped (by process id) on exit."""
    temp_dir = tempfile.mkdtemp(prefix="distill-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    running = Cluster({**ray_env(Path(temp_dir).name), **(env or {})}, free_port(), temp_dir, worker_args, hidden)
    try:
        start_head(running.env, temp_dir, running.gcs_port, *head_args)
        running.ensure_workers(workers)
        yield running
    finally:
        stop_ray(running.marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- S3


@dataclass
class ObjectStore:
    """An object store on 127.0.0.1 that the product reaches through pyarrow's real client for it."""

    endpoint: str

    def filesystem(self):
        """The test's own client, to create buckets and look inside them."""
        raise NotImplementedError

    def bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name

    def files(self, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix`, by key."""
        from pyarrow.fs import FileSelector, FileType

        fs = self.filesystem()
        infos = fs.get_file_info(FileSelector(prefix, recursive=True, allow_not_found=True))
        return {i.path: fs.open_input_stream(i.path).read() for i in infos if i.type == FileType.File}


@dataclass
class S3Server(ObjectStore):
    """moto's S3-compatible server: the product's keys come from `env`, as a user's would."""

    env: dict[str, str] = field(default_factory=lambda: {**S3_KEYS, "AWS_EC2_METADATA_DISABLED": "true"})

    def filesystem(self):
        from pyarrow.fs import S3FileSystem

        return S3FileSystem(
            access_key=S3_KEYS["AWS_ACCESS_KEY_ID"],
            secret_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.endpoint,
            region="us-east-1",
            allow_bucket_creation=True,
        )


@dataclass
class GcsServer(ObjectStore):
    """gcp-storage-emulator's GCS JSON API: the product reaches it with storage.anonymous (it checks no
    credentials, and GCS's credential chain fails where it finds none)."""

    def filesystem(self):
        from pyarrow.fs import GcsFileSystem

        host = self.endpoint.split("://", 1)[1]
        return GcsFileSystem(endpoint_override=host, scheme="http", anonymous=True, project_id="distill-test")


@contextlib.contextmanager
def s3_server(log: Path) -> Iterator[S3Server]:
    """`python -m moto.server` on a free loopback port, for as long as the context lasts."""
    port = free_port()
    with _serving([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, log):
        yield S3Server(f"http://127.0.0.1:{port}")


@contextlib.contextmanager
def gcs_server(log: Path) -> Iterator[GcsServer]:
    """gcp-storage-emulator (in memory) on a free loopback port, for as long as the context lasts."""
    port = free_port()
    emulator = [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port)]
    with _serving([*emulator, "--in-memory"], port, log):
        yield GcsServer(f"http://127.0.0.1:{port}")


@contextlib.contextmanager
def _serving(command: list[str], port: int, log: Path) -> Iterator[None]:
    """Run a server `command` until the context ends, once it listens on `port`; its output goes to `log`."""
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port) or server.poll() is not None, 60, f"{Path(command[0]).name} to listen")
        assert server.poll() is None, Path(log).read_text()[-3000:]
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
