"""Progress while catching up (issue 10, part 8): what is left to fetch, how fast, and waiting.

A node that finds, in a reconciliation round, records it lacks wants them
from the peer; each session counts what it wanted and has not received
(``to_fetch``), what came (``fetched``), the rate over the last seconds and
the time left, and whether a round of this node's finished with nothing left
(``synced``). What a peer announces cannot grow that state without bound, and
a lie lasts only until the next round. ``status`` and ``peers`` show it, and
``meshnode sync --wait`` asks every session to reconcile now and waits until
nothing is left: exit 0, 1 on timeout, 0 at once with no peer connected.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from meshnode.client import RemoteError
from meshnode.client.progress import Progress, duration, figures
from meshnode.client.sync_commands import sync_line
from meshnode.core import messages as m
from meshnode.core.negentropy import Responder, SortedItems
from meshnode.core.session import (
    MAX_TRACKED,
    MAX_UNTRACKED,
    RESYNC_INTERVAL,
    STRATEGY,
    FetchProgress,
    FetchView,
)
from meshnode.engine.events import Publish, Received, SyncNow
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Publication
from meshnode.sim.network import LinkModel, Network
from tests.helpers import Daemon
from tests.meshnet import at, encode, engine, hello, open_session, sent

RECORDS = 3000

# -- the engine: what a session still has to fetch -------------------------------------


def two_nodes(records: int = RECORDS) -> Network:
    """Node 0 holds ``records`` records; node 1 is empty; slow enough links to watch it."""
    net = Network(random.Random(1), link=LinkModel(latency=0.01, jitter=0.0, bandwidth=200_000))
    net.add_node()
    net.add_node()
    publications = [Publication(f"offer/{i}", "x" * 40) for i in range(records)]
    net.handle(0, Publish(publications))
    return net


def mesh_of(net: Network, index: int) -> Mesh:
    mesh = net.nodes[index].mesh
    assert mesh is not None
    return mesh


def progress_of(net: Network, index: int) -> FetchView:
    [view] = mesh_of(net, index).peers(net.now)
    return view.progress


def bogus_ids(n: int, seed: int = 0) -> list[bytes]:
    """``n`` ids of records nobody has."""
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def watch_progress(net: Network, index: int) -> list[FetchView]:
    """Node ``index``'s view of its one session after every event, from now on."""
    seen: list[FetchView] = []

    def observe(node: int, actions: object, now: float) -> None:
        views = mesh_of(net, index).peers(now)
        if node == index and views:
            seen.append(views[0].progress)

    net.observers.append(observe)
    return seen


def test_to_fetch_rises_then_falls_to_zero_and_the_session_is_synced() -> None:
    net = two_nodes()
    seen = watch_progress(net, 1)
    net.connect(1, 0)  # the empty node dials, so its round finds what it lacks
    net.settle()

    assert max(v.to_fetch for v in seen) > 0
    assert not any(v.synced for v in seen if v.to_fetch)
    # While the round runs more may be found, so the time left is not known; once it
    # is over, what is left is all there is.
    assert all(v.eta_s is None for v in seen if v.to_fetch and v.reconciling)
    assert any(v.to_fetch and v.rate > 0 and v.eta_s is not None for v in seen)
    final = progress_of(net, 1)
    assert (final.to_fetch, final.fetched, final.synced) == (0, RECORDS, True)
    assert final.eta_s == 0.0
    assert len(net.nodes[1].store.items(net.instant().wall_ms)) == RECORDS


def test_a_node_that_was_dialled_has_run_no_round_until_asked_to_sync() -> None:
    net = two_nodes(10)
    net.connect(1, 0)
    net.settle()
    assert progress_of(net, 0).rounds_finished == 0
    assert not progress_of(net, 0).synced

    net.handle(0, SyncNow())  # the peer's round just ran: what it found we lack is on its way
    net.settle()
    assert progress_of(net, 0).rounds_finished == 0
    net.run_until(net.now + RESYNC_INTERVAL)
    net.handle(0, SyncNow())
    net.settle()
    assert progress_of(net, 0).synced


def test_sync_now_reconciles_a_session_at_most_once_every_few_seconds() -> None:
    net = two_nodes(10)
    net.connect(1, 0)
    net.settle()

    def rounds() -> int:
        [view] = mesh_of(net, 0).peers()
        return view.stats.reconcile_rounds

    net.run_until(net.now + RESYNC_INTERVAL)
    net.handle(0, SyncNow())
    net.settle()
    for _ in range(20):  # a client asking in a loop
        net.handle(0, SyncNow())
        net.settle()
    assert rounds() == 1
    net.run_until(net.now + RESYNC_INTERVAL)
    net.handle(0, SyncNow())
    net.settle()
    assert rounds() == 2


def test_a_catch_up_of_more_ids_than_are_kept_is_still_counted_to_zero() -> None:
    progress = FetchProgress(0.0)
    ids = bogus_ids(MAX_TRACKED + 2000)
    progress.asked(ids, 0.0)
    assert progress.to_fetch == MAX_TRACKED + 2000
    for start in range(0, len(ids), 1000):
        progress.received(ids[start : start + 1000], 1.0)
    assert (progress.to_fetch, progress.fetched) == (0, MAX_TRACKED + 2000)


# -- the engine: what a peer says cannot grow the state without bound ------------------


def test_a_peer_announcing_endless_ids_grows_a_number_never_the_set_of_ids() -> None:
    mesh = engine()
    open_session(mesh, now=0.0)
    mesh.handle(Received(1, hello()), at(0.0))
    messages = 8  # 131,072 ids the node lacks, each announced once
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(messages):
        ids = bogus_ids(m.MAX_IDS_PER_MESSAGE, seed=i)
        mesh.handle(Received(1, encode(m.Have(tuple(ids)))), at(1.0 + i))
        del ids
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    [view] = mesh.peers(30.0)
    announced = messages * m.MAX_IDS_PER_MESSAGE
    assert view.progress.to_fetch == announced  # counted...
    # ...but only MAX_TRACKED ids kept, about 2 MB: keeping them all would take 16 MB.
    assert held < 4 * 1024 * 1024


def test_the_count_past_the_kept_ids_is_bounded_too() -> None:
    progress = FetchProgress(0.0)
    progress.asked(bogus_ids(MAX_TRACKED), 0.0)
    more = bogus_ids(m.MAX_IDS_PER_MESSAGE, seed=1)
    for _ in range(MAX_UNTRACKED // len(more) + 2):
        progress.asked(more, 1.0)
    assert progress.to_fetch == MAX_TRACKED + MAX_UNTRACKED


def test_a_lie_lasts_only_until_the_next_round_of_this_nodes() -> None:
    mesh = engine()
    open_session(mesh, now=0.0)  # the peer dialled: no round of ours yet
    mesh.handle(Received(1, hello()), at(0.0))
    mesh.handle(Received(1, encode(m.Have(tuple(bogus_ids(500))))), at(1.0))
    assert mesh.peers(1.0)[0].progress.to_fetch == 500

    actions = mesh.handle(SyncNow(), at(2.0))
    [question] = [x for x in sent(actions) if isinstance(x, m.Reconcile)]
    empty = Responder(SortedItems([]), strategy=STRATEGY, frame_size_limit=60_000)
    answer = m.Reconcile(m.Role.REPLY, empty.reconcile(question.payload))
    mesh.handle(Received(1, encode(answer)), at(2.1))

    view = mesh.peers(3.0)[0].progress
    assert (view.to_fetch, view.rounds_finished, view.synced) == (0, 1, True)


def test_the_rate_is_taken_over_the_last_seconds_and_the_eta_from_it() -> None:
    progress = FetchProgress(0.0)
    ids = [b"%032d" % i for i in range(1000)]
    progress.asked(ids, 0.0)
    for second in range(4):  # 100 records a second
        progress.received(ids[second * 100 : (second + 1) * 100], second + 0.5)
    view = progress.view(4.0)
    assert view.to_fetch == 600 and view.fetched == 400
    assert view.rate == pytest.approx(100.0)
    assert view.eta_s == pytest.approx(6.0)
    assert progress.view(20.0).rate == 0.0  # nothing for a while: no rate, no eta
    assert progress.view(20.0).eta_s is None


def test_records_that_came_from_another_peer_are_no_longer_to_fetch() -> None:
    progress = FetchProgress(0.0)
    progress.asked([b"a" * 32, b"b" * 32], 0.0)
    progress.arrived_elsewhere([b"a" * 32])
    assert (progress.to_fetch, progress.fetched) == (1, 0)


# -- the words and the bar ---------------------------------------------------------------


def summary(**fields: Any) -> dict[str, Any]:
    base = {"to_fetch": 0, "fetched": 0, "rate": 0.0, "eta_s": 0.0, "peers_reconciling": 0}
    return {**base, "peers_fetching": 0, "peers_synced": 0, "peers": 0, **fields}


def test_the_sync_line_of_status() -> None:
    catching_up = summary(to_fetch=12_345, rate=3400.0, eta_s=3.6, peers_fetching=2, peers=2)
    assert sync_line(catching_up) == (
        "catching up: 12,345 records to fetch from 2 peers, 3,400/s, about 4 s left"
    )
    still_finding = summary(to_fetch=1800, rate=900.0, eta_s=None, peers_fetching=1, peers=1)
    assert sync_line({**still_finding, "peers_reconciling": 1}) == (
        "catching up: 1,800 records to fetch from 1 peer so far (still reconciling:"
        " more may be found), 900/s"
    )
    assert sync_line(summary(peers=3, peers_synced=3)) == "in sync with 3 peers"
    assert sync_line(summary(peers=1, peers_synced=1, refused=2013)) == (
        "in sync with 1 peer (the store's quotas refused records 2,013 times: store_max_*)"
    )
    assert sync_line(summary()) == "no peers connected"
    assert "in sync with 1 of 2 peers" in sync_line(summary(peers=2, peers_synced=1))


def test_durations_read_as_a_person_says_them() -> None:
    assert [duration(s) for s in (4.4, 59, 150, 3600, 3900)] == [
        "4 s",
        "59 s",
        "2 min",
        "1 h",
        "1 h 5 min",
    ]
    assert figures(5, 10, "records", 2.0, 2.5) == "5/10 records, 2/s, about 2 s left"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_progress_is_plain_lines_at_most_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, tty=False, every=5.0, clock=clock)
    for tick in range(50):  # 10 s of updates, five a second
        clock.now = tick * 0.2
        progress.bar(tick * 10, 1000)
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2  # at 0 s and at 5 s
    assert lines[1].startswith(" 25%: 250/1,000 records, 50/s, about 15 s left")


def test_on_a_terminal_progress_is_one_line_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, tty=True, clock=clock)
    for tick in range(10):
        clock.now = tick * 0.2
        progress.bar(tick * 100, 1000, rate=500.0, eta_s=2.0)
    progress.close("done")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    bar = "[" + "#" * 22 + "-" * 2 + "]"  # 90% of 24
    assert f"\r{bar}  90%  900/1,000 records, 500/s, about 2 s left" in text
    assert text.rstrip().endswith("done")


# -- a real daemon pair --------------------------------------------------------------------

MakeDaemon = Callable[..., Daemon]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def connected(daemon: Daemon) -> int:
    with daemon.client() as client:
        return int(client.status()["sync"]["peers"])


@pytest.mark.slow
def test_sync_wait_returns_once_a_new_node_holds_what_its_peer_offered(
    daemon_factory: MakeDaemon,
) -> None:
    first = daemon_factory("first").start()
    with first.client() as client:
        client.publish_many((f"offer/{i}", "x" * 40, None) for i in range(RECORDS))
    second = daemon_factory("second").start("--peer", first.peer_address)

    done = second.cli("sync", "--wait", "--timeout", "30", timeout=40)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "in sync with 1 peer\n"
    assert "\r" not in done.stderr  # not a terminal: plain lines only
    with second.client() as client:
        status = client.status()
        [peer] = client.call("peers")
    assert status["records"] == RECORDS
    sync = status["sync"]
    assert (sync["to_fetch"], sync["fetched"], sync["eta_s"]) == (0, RECORDS, 0.0)
    assert (sync["peers_fetching"], sync["peers_synced"], sync["peers"]) == (0, 1, 1)
    assert (peer["to_fetch"], peer["fetched"], peer["synced"]) == (0, RECORDS, True)
    assert peer["reconcile_rounds_finished"] >= 1
    shown = second.cli("status")
    assert "sync:        in sync with 1 peer" in shown.stdout


@pytest.mark.slow
def test_sync_wait_times_out_with_exit_1_and_says_what_was_missing(
    daemon_factory: MakeDaemon,
) -> None:
    first = daemon_factory("first").start()
    second = daemon_factory("second").start("--peer", first.peer_address)
    wait_for(lambda: connected(second) == 1)

    waited = second.cli("sync", "--wait", "--peers", "2", "--timeout", "1")
    assert waited.returncode == 1
    assert "not caught up after 1 s: 1 of 2 peers connected" in waited.stderr
    assert "Traceback" not in waited.stderr


@pytest.mark.slow
def test_with_no_peer_connected_sync_wait_has_nothing_to_wait_for(daemon: Daemon) -> None:
    waited = daemon.cli("sync", "--wait", "--timeout", "10")
    nothing = "no peers connected: nothing to catch up with\n"
    assert (waited.returncode, waited.stdout) == (0, nothing)
    once = daemon.cli("sync")
    assert (once.returncode, once.stdout) == (0, "no peers connected\n")


@pytest.mark.slow
def test_sync_wait_just_after_the_daemon_was_started_waits_for_it(
    daemon_factory: MakeDaemon,
) -> None:
    node = daemon_factory("starting")
    command = [
        sys.executable,
        "-m",
        "meshnode",
        "sync",
        *node.cli_args,
        "--wait",
        "--timeout",
        "20",
    ]
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # sync has found no daemon by now, and waits
        node.start()
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert (waiting.returncode, out) == (0, "no peers connected: nothing to catch up with\n"), err


def test_sync_wait_with_no_daemon_says_it_waits_then_gives_up_at_the_timeout(
    daemon_factory: MakeDaemon,
) -> None:
    node = daemon_factory("never-started")
    started = time.monotonic()
    waited = node.cli("sync", "--wait", "--timeout", "1")
    assert waited.returncode == 3 and 1 <= time.monotonic() - started < 10
    assert waited.stderr.startswith(f"meshnode: waiting for a daemon to answer at {node.socket}\n")
    assert "no meshnode daemon is running" in waited.stderr


@pytest.mark.slow
def test_bad_sync_arguments_are_refused_and_the_daemon_goes_on(daemon: Daemon) -> None:
    assert daemon.cli("sync", "--timeout", "-1").returncode == 2
    assert daemon.cli("sync", "--peers", "many").returncode == 2
    with daemon.client() as client:
        for bad in ({"start": "yes"}, {"start": True, "now": 1}):
            with pytest.raises(RemoteError, match="argument") as caught:
                client.call("sync", **bad)
            assert caught.value.code == "invalid-params"
        assert client.call("sync", start=True)["peers"] == 0
    assert os.path.exists(daemon.socket)
