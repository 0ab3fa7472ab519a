"""A node of an earlier release and one of this tree share a mesh, both ways.

The protocol is a product (protocol/peer.md, changelog): a change to the wire
keeps the previous release interoperating. Here an earlier release's package is
taken from this repository's history and run beside this tree's: each dials the
other, records cross in both directions and through the old node as a relay, and
their sessions outlive the idle timeout this tree gives that release, since each
side's pings keep the other's timer from running out. The previous release, and
0.5.0, the last before 5 s pings, whose peers wait 20 s for it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers import Daemon
from tests.test_network import free_port, keys, wait_for

pytestmark = pytest.mark.slow


class Release(NamedTuple):
    version: str
    commit: str  # its last commit
    quiet: float  # seconds of no records: past either side's idle timeout


RELEASES = [
    Release("0.5.0", "5e05c91f0299c6c93cc6f634d2274f7877e8eaad", 22.0),  # 20 s: no 5 s pings
    Release("0.7.0", "c329f68f154083c5d46ed8be93aa607d1942a2be", 22.0),  # 10 s; its own 20 s
]
REPO = Path(__file__).resolve().parent.parent

MakeDaemon = Callable[..., Daemon]


@pytest.fixture(scope="module", params=RELEASES, ids=lambda release: release.version)
def release(request: pytest.FixtureRequest) -> Release:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory, release: Release) -> Path:
    """A directory holding ``release``'s ``meshnode`` package, from git history."""
    version, commit, _ = release
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and this repository's history to fetch the previous release")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "meshnode"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"meshnode {version} ({commit[:7]}) is not in this clone's history")
    where = tmp_path_factory.mktemp(f"meshnode-{version}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(where, filter="data")
    return where


def sessions(daemon: Daemon) -> dict[str, int]:
    """node id -> since_ms of each connected peer: a reconnect shows as a new since."""
    with daemon.client() as client:
        return {p["node_id"]: p["since_ms"] for p in client.call("peers")}


def test_an_earlier_release_and_this_one_relay_and_keep_their_sessions(
    daemon_factory: MakeDaemon, previous_release: Path, release: Release
) -> None:
    ports = [free_port() for _ in range(3)]
    new_a = daemon_factory("new-a").start("--listen", f"127.0.0.1:{ports[0]}")
    old = daemon_factory("old", package=previous_release).start(
        "--listen", f"127.0.0.1:{ports[1]}", "--peer", f"127.0.0.1:{ports[0]}"
    )
    new_b = daemon_factory("new-b").start(
        "--listen", f"127.0.0.1:{ports[2]}", "--peer", f"127.0.0.1:{ports[1]}"
    )
    with old.client() as client:
        assert client.status()["version"] == release.version
    wait_for(lambda: len(sessions(old)) == 2, what="the old node dialled and dialled in")

    with new_a.client() as client:
        client.publish("offer/tea", "from the new node the old one dialled")
    with new_b.client() as client:
        client.publish("offer/cake", "from the new node that dialled the old one")
    wait_for(lambda: all(len(keys(n)) == 2 for n in (new_a, old, new_b)), what="the records")

    before = {n.data_dir.name: sessions(n) for n in (new_a, old, new_b)}
    time.sleep(release.quiet)
    assert {n.data_dir.name: sessions(n) for n in (new_a, old, new_b)} == before
    for node in (new_a, old, new_b):
        assert "Traceback" not in node.log()
