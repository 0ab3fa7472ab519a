"""Daemons in network namespaces, for the benchmarks that need real multicast.

The namespaces are the tests' own (``tests/netns.py``): nothing is made in the
machine's namespace, and everything is torn down with the ``Lan``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import child_env  # noqa: E402 - after the path that finds it

from meshnode.client import Client, ClientError  # noqa: E402
from tests.netns import Lan, skip_reason  # noqa: E402

FORM_TIMEOUT_S = 30.0

__all__ = [
    "Lan",
    "daemon_import_s",
    "peer_count",
    "require_namespaces",
    "start_daemons",
    "trio_floor_s",
    "trio_import_s",
    "wait_formed",
    "warm_up",
]


def require_namespaces() -> None:
    reason = skip_reason()
    if reason is not None:
        raise SystemExit(f"cannot run: {reason}")


def start_daemons(lan: Lan, tmp: str) -> list[Path]:
    """``meshnode run`` on every host of ``lan`` at once, mDNS on, no --peer; their sockets.

    They load meshnode's bytecode from a cache compiled once per benchmark, as an
    installed package would: with ``PYTHONDONTWRITEBYTECODE=1`` (this machine sets it)
    every daemon would compile every module again, and starting them would measure that.
    """
    env = _daemon_env()
    sockets = [Path(tmp) / f"{host.name}.sock" for host in lan.hosts]
    for host, sock in zip(lan.hosts, sockets, strict=True):
        argv = [sys.executable, "-m", "meshnode", "run", "--data-dir", f"{tmp}/{host.name}"]
        host.popen([*argv, "--socket", str(sock), "--log-level", "warning"], env=env)
    return sockets


def warm_up() -> None:
    """Fill the daemons' bytecode cache now, before anything is timed, as pip would have.

    Importing what a daemon imports is not enough: some modules are imported only once it
    runs (cryptography's backend at the first key) or meets a peer. Two daemons form a mesh
    once, so that every daemon timed later loads all of them from the cache.
    """
    with tempfile.TemporaryDirectory() as tmp, Lan.create(hosts=2) as lan:
        wait_formed(start_daemons(lan, tmp))


def daemon_import_s(runs: int = 5) -> float:
    """Median wall time of a Python that imports what a daemon imports, then exits."""
    return _python_s(_DAEMON_IMPORTS, runs)


def trio_import_s(runs: int = 5) -> float:
    """Median wall time of a Python that imports trio alone: how fast the machine is today,
    with none of meshnode's own code in it."""
    return _python_s("import trio", runs)


def trio_floor_s(processes: int) -> float:
    """Wall time of ``processes`` Pythons started at once that import trio and exit.

    A daemon is a trio program, so this is the floor under a figure that starts that many
    daemons at once on this machine today: none of meshnode's work is in it.
    """
    env = _daemon_env()
    started = time.monotonic()
    children = [
        subprocess.Popen([sys.executable, "-c", "import trio"], env=env) for _ in range(processes)
    ]
    try:
        for child in children:
            child.wait(timeout=60)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return time.monotonic() - started


def _python_s(code: str, runs: int) -> float:
    env = _daemon_env()
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        times.append(time.monotonic() - started)
    return statistics.median(times)


_DAEMON_IMPORTS = "import meshnode.runtime.daemon, meshnode.client.cli"


@functools.cache
def _daemon_env() -> dict[str, str]:
    cache = Path(tempfile.mkdtemp(prefix="mn-bench-pyc-"))
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    env = child_env(cache)
    # With a cache prefix, every module's bytecode (the standard library's, trio's) is
    # looked for there: importing what a daemon imports fills it with all of them.
    subprocess.run(
        [sys.executable, "-c", _DAEMON_IMPORTS], env=env, check=True, timeout=120, cwd=ROOT
    )
    return env


def wait_formed(sockets: list[Path], timeout: float = FORM_TIMEOUT_S) -> None:
    """Until every daemon has a peer; SystemExit past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if all(peer_count(sock) for sock in sockets):
                return
        except ClientError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the mesh did not form within {timeout:g} s")


def peer_count(sock: Path) -> int:
    with Client(sock, timeout=5) as client:
        return len(client.call("peers"))
