"""Real daemons talking over loopback: encrypted sessions, relay, catch-up, outsiders."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest

from meshnode.core import messages as m
from meshnode.core.channel import SecureChannel
from meshnode.core.handshake import Established, PeerHandshake
from meshnode.core.negentropy import INFINITY, Bound, IdListRange, encode_message
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.x25519 import KEY_SIZE, KeyPair
from meshnode.runtime.peers import MAX_CONNECTIONS, _unreachable
from tests.helpers import Daemon, identity, record

pytestmark = pytest.mark.slow

MakeDaemon = Callable[..., Daemon]
EVERYTHING_PLEASE = encode_message([IdListRange(Bound(INFINITY), ())])


_PORTS = itertools.count(random.Random(os.getpid()).randrange(20000, 30000, 100))


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A port free now, and below the ephemeral range (32768 up on Linux).

    A port the kernel handed out for ``bind(0)`` may be taken by an outbound
    connection (a daemon dialling its peer) before the daemon meant to listen
    on it starts; one below the ephemeral range never is, and counting up
    never gives one port twice.
    """
    for port in _PORTS:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("unreachable: the port counter is endless")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def keys(daemon: Daemon) -> set[tuple[str, str]]:
    with daemon.client() as client:
        return {(r["author"], r["key"]) for r in client.query(limit=10_000)["records"]}


def peer_count(daemon: Daemon) -> int:
    with daemon.client() as client:
        return len(client.call("peers"))


def test_a_line_of_daemons_converges_and_catches_up_after_a_kill(
    daemon_factory: MakeDaemon,
) -> None:
    ports = [free_port() for _ in range(4)]
    nodes = [daemon_factory(f"n{i}") for i in range(4)]

    def start(i: int) -> None:
        dial = ("--peer", f"127.0.0.1:{ports[i - 1]}") if i else ()
        nodes[i].start("--listen", f"127.0.0.1:{ports[i]}", *dial)

    for i in range(4):
        start(i)
    wait_for(
        lambda: all(peer_count(n) == (1 if i in (0, 3) else 2) for i, n in enumerate(nodes)),
        what="the line",
    )
    with nodes[0].client() as client:
        client.publish("offer/tea", "hot")
    with nodes[3].client() as client:
        client.publish("offer/cake", "lemon")
    wait_for(lambda: all(len(keys(n)) == 2 for n in nodes), what="first convergence")

    nodes[2].stop(signal.SIGKILL)
    with nodes[0].client() as client:
        client.publish("while/c/was/down", 1)
    with nodes[3].client() as client:
        client.publish("island", "d alone")
    wait_for(lambda: len(keys(nodes[1])) == 3, what="b to hear from a")
    start(2)
    wait_for(
        lambda: len({frozenset(keys(n)) for n in nodes} | set()) == 1 and len(keys(nodes[0])) == 4,
        timeout=30,
        what="convergence after the restart",
    )
    for node in nodes:
        assert "Traceback" not in node.log()


def test_nodes_with_different_network_keys_never_connect(daemon_factory: MakeDaemon) -> None:
    key = subprocess.run(
        [sys.executable, "-m", "meshnode", "network", "new"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert key.startswith("mesh1")
    inside = daemon_factory("inside").start("--network-key", key)
    outsider = daemon_factory("outsider").start("--peer", inside.peer_address)
    time.sleep(1.5)
    assert peer_count(inside) == peer_count(outsider) == 0
    assert "network-key" in inside.log()
    # The outsider is told nothing, yet its operator is: its log, the dial and doctor say it.
    assert "another network key" in outsider.log()
    [known] = outsider.call("addresses")
    assert known["failures"] and "another network key" in known["last_failure"]
    doctor = outsider.cli("doctor").stdout
    assert f"{inside.peer_address}: closed during the handshake" in doctor
    assert "meshnode network join INVITE" in doctor
    # ... and the dialled node's doctor names the outsider
    assert "handshakes from 127.0.0.1 failed" in inside.cli("doctor").stdout
    friend = daemon_factory("friend").start("--network-key", key, "--peer", inside.peer_address)
    wait_for(lambda: peer_count(inside) == 1 and peer_count(friend) == 1, what="the friend")


def test_a_static_peer_that_refuses_says_why_in_peers_and_doctor(
    daemon_factory: MakeDaemon,
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    node = daemon_factory().start("--peer", address)
    wait_for(lambda: node.call("addresses")[0]["failures"] > 0, what="a failed dial")
    assert node.call("addresses")[0]["last_failure"] == "connection refused"
    peers = node.cli("peers", "--all").stdout
    assert f"{address}" in peers and "failed: connection refused" in peers
    assert f"dials fail ({address}: connection refused)" in node.cli("doctor").stdout
    assert f"event=dial_failed address={address} why='connection refused'" in node.log()


def test_an_address_heard_in_a_hello_is_kept_but_never_due(daemon_factory: MakeDaemon) -> None:
    a = daemon_factory("a").start()
    b = daemon_factory("b").start("--peer", a.peer_address)
    wait_for(lambda: peer_count(a) == 1, what="b dialling in")
    wait_for(lambda: any(k["source"] == "hello" for k in a.call("addresses")), what="b's hello")
    [heard] = [k for k in a.call("addresses") if k["source"] == "hello"]
    assert heard["address"] == b.peer_address and heard["next_dial_s"] is None
    assert "dial" not in a.cli("peers", "--all").stdout.split("known addresses:")[1]


def test_an_unresolvable_host_is_said_in_the_resolver_s_words() -> None:
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert _unreachable(error) == "cannot resolve the host: Name or service not known"


def test_get_of_a_key_only_another_node_wrote_says_how_to_get_it(
    daemon_factory: MakeDaemon,
) -> None:
    a = daemon_factory("a").start()
    b = daemon_factory("b").start("--peer", a.peer_address)
    a.call("publish", key="profile/name", value="Alice")
    wait_for(lambda: bool(b.call("query", prefix="profile/")["records"]), what="the record at b")
    text = b.cli("get", "profile/name")
    assert text.returncode == 1
    author = a.call("id")["node_id"]
    assert f"another node has it: meshnode get profile/name --author {author}" in text.stderr
    assert b.cli("get", "profile/name", "--author", author).stdout == "Alice\n"
    assert "another node" not in b.cli("get", "profile/nobody").stderr


def test_an_outsider_gets_no_reply_at_all(daemon: Daemon) -> None:
    host, port = daemon.peer_address.rsplit(":", 1)
    for junk in (b"\x00\x30" + bytes(48), b"GET / HTTP/1.0\r\n\r\n", b"\x00\x01x"):
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(junk)
            sock.settimeout(12)
            assert sock.recv(4096) == b""  # closed, having sent nothing
    assert peer_count(daemon) == 0


def test_a_node_told_to_dial_itself_stops_trying(daemon_factory: MakeDaemon) -> None:
    port = free_port()
    node = daemon_factory().start("--listen", f"127.0.0.1:{port}", "--peer", f"127.0.0.1:{port}")
    wait_for(lambda: "this node itself" in node.log(), what="the self-dial to be noticed")
    assert peer_count(node) == 0


def test_peers_lists_connections_with_traffic(daemon_factory: MakeDaemon) -> None:
    a = daemon_factory("a").start()
    b = daemon_factory("b").start("--peer", a.peer_address)
    wait_for(lambda: peer_count(a) == 1, what="the connection")
    b.cli("publish", "x", "1")
    wait_for(lambda: len(keys(a)) == 1, what="the record")
    [entry] = [json.loads(line) for line in a.cli("peers", "--json").stdout.splitlines()]
    with b.client() as client:
        assert entry["node_id"] == client.node_id()["node_id"]
    assert entry["direction"] == "in" and entry["records_in"] == 1
    assert entry["bytes_in"] > 0 and entry["bytes_out"] > 0 and entry["handshake_bytes"] == 406
    assert "node1" in b.cli("peers").stdout


def test_a_graceful_stop_says_goodbye_and_the_peer_redials_after_a_restart(
    daemon_factory: MakeDaemon,
) -> None:
    port = free_port()
    a = daemon_factory("a").start("--listen", f"127.0.0.1:{port}")
    b = daemon_factory("b").start("--peer", f"127.0.0.1:{port}")
    wait_for(lambda: peer_count(b) == 1, what="the connection")
    a.stop()
    wait_for(lambda: peer_count(b) == 0, timeout=5, what="b to notice")
    a.start("--listen", f"127.0.0.1:{port}")
    wait_for(lambda: peer_count(b) == 1, timeout=20, what="the redial")


def test_peers_connect_over_ipv6_loopback(daemon_factory: MakeDaemon) -> None:
    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    a = daemon_factory("a").start("--listen", f"[::1]:{port}")
    b = daemon_factory("b").start("--peer", f"[::1]:{port}")
    wait_for(lambda: peer_count(a) == 1 and peer_count(b) == 1, what="the IPv6 connection")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--network-key", "mesh1nope"), "invalid network key"),
        (("--peer", "1.2.3.4:99999"), "port"),
        (("--listen", "::1:7744"), "[addr]:port"),
    ],
)
def test_bad_run_options_are_refused_with_exit_2(
    daemon_factory: MakeDaemon, args: tuple[str, ...], message: str
) -> None:
    node = daemon_factory()
    node.start(*args, wait=False)
    assert node.process is not None
    assert node.process.wait(10) == 2
    assert message in node.log()


def test_static_peers_come_from_the_config_file(daemon_factory: MakeDaemon) -> None:
    a = daemon_factory("a").start()
    b = daemon_factory("b")
    b.data_dir.mkdir(mode=0o700, parents=True)
    (b.data_dir / "config.toml").write_text(f'peers = ["{a.peer_address}"]\n')
    b.start()
    wait_for(lambda: peer_count(a) == 1 and peer_count(b) == 1, what="the configured peer")


def _talk_as_a_peer(
    address: str, who: int, messages: list[m.Message], until_hello: bool = False
) -> list[m.Message]:
    """Connect as a hand-driven peer, send ``messages``; return what came back until the
    daemon closed the connection (or, with ``until_hello``, until it said hello)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        established = _shake(sock, who)
        channel = established.channel
        sock.sendall(b"".join(channel.seal(m.encode(message)) for message in messages))
        decoder = m.MessageDecoder()
        received: list[m.Message] = []
        data = established.leftover
        while True:
            received.extend(decoder.feed(channel.open(data)))
            if until_hello and any(isinstance(r, m.Hello) for r in received):
                return received
            data = sock.recv(65536)
            if not data:
                return received


def test_a_peer_sending_a_forged_record_is_cut_off_and_refused_for_a_while(
    daemon: Daemon,
) -> None:
    forged = bytearray(record(identity(5), "fake/news", "lies").raw)
    forged[-1] ^= 1
    hello = m.Hello(1, (), (), "evil/1")
    replies = _talk_as_a_peer(daemon.peer_address, 66, [hello, m.Records((bytes(forged),))])
    goodbyes = [r for r in replies if isinstance(r, m.Goodbye)]
    assert [g.code for g in goodbyes] == [m.GoodbyeCode.INVALID_RECORD]
    assert keys(daemon) == set()
    others = _talk_as_a_peer(daemon.peer_address, 67, [hello], until_hello=True)
    assert any(isinstance(r, m.Hello) for r in others)  # other nodes are still welcome


def test_a_banned_node_is_told_why_and_for_how_long_and_the_operator_can_lift_it(
    daemon: Daemon,
) -> None:
    forged = bytearray(record(identity(5), "fake/news", "lies").raw)
    forged[-1] ^= 1
    plain = m.Hello(1, (), (), "evil/1")
    _talk_as_a_peer(daemon.peer_address, 66, [plain, m.Records((bytes(forged),))])

    [hello, goodbye] = _talk_as_a_peer(daemon.peer_address, 66, [plain])
    assert isinstance(hello, m.Hello)
    assert goodbye == m.Goodbye(m.GoodbyeCode.BANNED, "banned")  # no feature: the 0.1.0 form
    aware = m.Hello(1, (m.RETRY_AFTER,), (), "evil/2")
    [_, goodbye] = _talk_as_a_peer(daemon.peer_address, 66, [aware])
    assert isinstance(goodbye, m.Goodbye) and goodbye.code == m.GoodbyeCode.BANNED
    assert goodbye.retry_after is not None and 590 <= goodbye.retry_after <= 600

    listed = daemon.cli("peers", "--bans").stdout
    assert identity(66).node_id in listed and "invalid record: bad-signature" in listed
    assert "event=banned peer=" in daemon.log()
    assert daemon.cli("unban", identity(66).node_id).returncode == 0
    assert daemon.cli("peers", "--bans").stdout.strip() == "no node is banned"
    assert daemon.cli("unban", identity(66).node_id).returncode == 1  # nothing left to lift
    welcome = _talk_as_a_peer(daemon.peer_address, 66, [plain], until_hello=True)
    assert not any(isinstance(r, m.Goodbye) for r in welcome)


def test_a_port_in_use_is_a_clear_start_up_error(daemon_factory: MakeDaemon) -> None:
    first = daemon_factory("first").start()
    second = daemon_factory("second")
    second.start("--listen", first.peer_address, wait=False)
    assert second.process is not None
    assert second.process.wait(10) == 1
    said = f"cannot listen for peers on {first.peer_address}: Address already in use"
    assert said in second.log()  # that address alone, not every one it was to listen on
    assert "Traceback" not in second.log()
    assert "event=stopped" not in second.log(), "it never started, so it does not say it stopped"


def _handshaken(address: str, who: int) -> tuple[socket.socket, SecureChannel]:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        return sock, _shake(sock, who).channel
    except BaseException:
        sock.close()
        raise


def _shake(sock: socket.socket, who: int) -> Established:
    """Run the handshake as node ``who`` over a connected socket."""
    handshake = PeerHandshake(
        initiator=True,
        identity=identity(who),
        static_key=KeyPair(os.urandom(KEY_SIZE)),
        network_key=PUBLIC_NETWORK_KEY,
        rng=lambda: os.urandom(32),
    )
    sock.sendall(handshake.start())
    while handshake.established is None:
        answer = handshake.receive_data(sock.recv(65536))
        if answer:
            sock.sendall(answer)
    return handshake.established


def test_a_peer_that_asks_without_reading_cannot_grow_the_daemon(daemon: Daemon) -> None:
    with daemon.client() as client:
        client.publish_many((f"bulk/{n}", "x" * 300, None) for n in range(3000))
    process = psutil.Process(daemon.process.pid)  # type: ignore[union-attr]
    before = process.memory_info().rss
    sock, channel = _handshaken(daemon.peer_address, 70)
    question = m.Reconcile(m.Role.OPEN, EVERYTHING_PLEASE)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with contextlib.suppress(OSError):  # the daemon stops reading us, or drops us
            sock.sendall(channel.seal(m.encode(m.Hello(1, (), (), "greedy"))))
            for _ in range(300):  # each asks for ~100 KB of ids; we never read a byte
                sock.sendall(channel.seal(m.encode(question)))
                time.sleep(0.005)
        grown = (process.memory_info().rss - before) / 1e6
        assert grown < 40, f"the daemon grew by {grown:.0f} MB"
        with daemon.client() as client:
            assert client.call("ping") == "pong"
        started = time.monotonic()
        assert daemon.stop() == 0  # it still stops cleanly and promptly with the peer attached
        assert time.monotonic() - started < 2.5
    assert "Traceback" not in daemon.log()


def test_a_flood_of_connections_is_capped_and_the_daemon_lives(daemon: Daemon) -> None:
    host, port = daemon.peer_address.rsplit(":", 1)
    flood = []
    try:
        for _ in range(MAX_CONNECTIONS + 20):
            flood.append(socket.create_connection((host, int(port)), timeout=10))
        refused = 0
        for sock in flood[-20:]:
            sock.settimeout(5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                refused += sock.recv(1) == b""
        assert refused >= 15  # the ones past the cap were closed at once
        with daemon.client() as client:
            assert client.call("ping") == "pong"
    finally:
        for sock in flood:
            sock.close()
    wait_for(
        lambda: any(
            isinstance(r, m.Hello)
            for r in _talk_as_a_peer(
                daemon.peer_address, 71, [m.Hello(1, (), (), "late")], until_hello=True
            )
        ),
        what="a real peer to be welcome again",
    )


def test_watch_sees_records_that_arrive_from_peers(daemon_factory: MakeDaemon) -> None:
    a = daemon_factory("a").start()
    b = daemon_factory("b").start("--peer", a.peer_address)
    wait_for(lambda: peer_count(b) == 1, what="the connection")
    with b.client() as watcher:
        events = watcher.watch(prefix="offer/")
        with a.client() as client:
            client.publish("offer/bread", "fresh")
        event = next(events)
    assert (event["event"], event["record"]["key"], event["record"]["value"]) == (
        "put",
        "offer/bread",
        "fresh",
    )
    assert "1 connected" in b.cli("status").stdout
