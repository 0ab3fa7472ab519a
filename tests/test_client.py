"""The Python client: pipelined publishes, and what it does when the daemon closes on it.

The real-daemon tests check order and large values; a scripted fake daemon (a
thread on a Unix socket) plays the failures a real one shows only by chance:
an idle connection closed between calls, a refusal that arrives while the
client is still sending, a connection lost in the middle of ``publish_many``.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from meshnode.client import Client, PublishIncomplete, RemoteError
from meshnode.core.rpc import encode_response, error_map
from tests.fake_daemon import (
    FakeDaemon,
    answer,
    answer_pings,
    each_request,
    notice,
    read_requests,
    refuse_as_busy,
)
from tests.helpers import Daemon


@pytest.mark.slow
def test_publish_many_pipelines_and_keeps_request_order(daemon: Daemon) -> None:
    items = [(f"bulk/{n % 10}", n, None) for n in range(1000)] + [("bad//key", 1, None)]
    with daemon.client() as client:
        results = client.publish_many(iter(items), window=64)
        assert len(results) == len(items)
        assert isinstance(results[-1], RemoteError) and results[-1].code == "invalid-params"
        seqs = [r["seq"] for r in results[:-1] if isinstance(r, dict)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 1000
        latest = {r["key"]: r["value"] for r in client.query(prefix="bulk/")["records"]}
    assert latest == {f"bulk/{k}": 990 + k for k in range(10)}  # the last of each key won


@pytest.mark.slow
def test_publish_many_with_a_ttl_and_an_empty_list(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.publish_many([]) == []
        [record] = client.publish_many([("offer/x", "y", 60_000)])
        assert isinstance(record, dict)
        assert record["expires_ms"] - record["created_ms"] == 60_000


@pytest.mark.slow
def test_publish_many_of_large_values_neither_stalls_nor_loses_any(daemon: Daemon) -> None:
    items = [(f"big/{n}", bytes([n]) * 16_000, None) for n in range(100)]
    started = time.monotonic()
    with daemon.client() as client:  # a 10 s timeout: a stall fails the test
        results = client.publish_many(items)
        assert time.monotonic() - started < 5
        assert [r["key"] for r in results if isinstance(r, dict)] == [k for k, _, _ in items]
        assert client.get("big/99")["value"] == bytes([99]) * 16_000


def test_a_client_reconnects_when_the_daemon_closed_its_idle_connection() -> None:
    closed = threading.Event()

    def ping_then_idle_out(conn: socket.socket) -> None:
        answer_pings(1)(conn)
        conn.sendall(notice("idle-timeout", "closed after 60 s with no request and no watch"))
        closed.set()

    fake = FakeDaemon([ping_then_idle_out, answer_pings(1)])
    with fake, Client(fake.socket, timeout=5) as client:
        assert client.call("ping") == "pong"
        assert closed.wait(5)
        assert client.call("ping") == "pong"


def test_a_client_reconnects_when_the_daemon_went_away_between_calls() -> None:
    closed = threading.Event()

    def ping_then_close(conn: socket.socket) -> None:
        answer_pings(1)(conn)
        closed.set()

    fake = FakeDaemon([ping_then_close, answer_pings(1)])
    with fake, Client(fake.socket, timeout=5) as client:
        assert client.call("ping") == "pong"
        assert closed.wait(5)
        time.sleep(0.05)  # the handler's close follows the event
        assert client.call("ping") == "pong"


def test_a_request_the_daemon_closed_on_as_idle_is_sent_again() -> None:
    def idle_out_on_the_second_request(conn: socket.socket) -> None:
        answer_pings(1)(conn)
        conn.recv(65536)  # the second request arrives as the daemon decides to close
        conn.sendall(notice("idle-timeout", "closed after 60 s with no request and no watch"))

    fake = FakeDaemon([idle_out_on_the_second_request, answer_pings(1)])
    with fake, Client(fake.socket, timeout=5) as client:
        assert client.call("ping") == "pong"
        assert client.call("ping") == "pong"


def test_a_refusal_that_breaks_the_send_is_reported_not_the_broken_pipe() -> None:
    fake = FakeDaemon([refuse_as_busy])
    refusal = pytest.raises(RemoteError, match="too many control clients")
    with fake, Client(fake.socket, timeout=5) as client, refusal as refused:
        # Too large for the socket buffers: the send is still going when the daemon closes.
        client.publish("big", "x" * 1_000_000)
    assert refused.value.code == "busy"


def record_of(key: str, value: Any, created_ms: int | None = None) -> dict[str, Any]:
    now_ms = time.time_ns() // 1_000_000 if created_ms is None else created_ms
    return {"key": key, "value": value, "seq": now_ms, "created_ms": now_ms, "expires_ms": None}


def test_a_lost_connection_in_publish_many_says_which_items_were_stored() -> None:
    items = [(f"k/{n}", n, None) for n in range(7)] + [("k/dup", 7, None), ("k/dup", 8, None)]
    # What a read-back finds: k/3 stored; k/4 not; k/5 another value; k/6 an old record
    # with this value; k/dup the last value (so item 7 cannot be told).
    stored: dict[str, tuple[Any, int | None]] = {
        "k/3": (3, None),
        "k/5": ("other", None),
        "k/6": (6, 1),
        "k/dup": (8, None),
    }

    def answer_three_then_drop(conn: socket.socket) -> None:
        requests = read_requests(conn, 9)
        answer(conn, requests[0], record_of("k/0", 0))
        answer(conn, requests[1], record_of("k/1", 1))
        conn.sendall(encode_response(requests[2].msgid, error_map("quota-exceeded", "full"), None))

    def read_back(conn: socket.socket) -> None:
        for request in each_request(conn):
            key = request.params[0]["key"]
            if key in stored:
                answer(conn, request, record_of(key, *stored[key]))
            else:
                error = error_map("not-found", f"{key}: not found")
                conn.sendall(encode_response(request.msgid, error, None))

    fake = FakeDaemon([answer_three_then_drop, read_back])
    with fake, Client(fake.socket, timeout=5) as client, pytest.raises(PublishIncomplete) as stop:
        client.publish_many(items)
    report = stop.value
    assert len(report.results) == 9
    assert report.stored == [0, 1, 3, 8]
    assert report.refused == [2] and report.results[2].code == "quota-exceeded"  # type: ignore[union-attr]
    assert report.unknown == [4, 5, 6, 7] and report.not_sent == []
    assert "4 stored, 1 refused, 4 unknown" in str(report)
    assert "closed the connection" in str(report.cause)


def test_an_answered_item_is_no_proof_that_a_later_one_with_its_key_and_value_was_stored() -> None:
    first = record_of("a", 1)

    def answer_one_then_drop(conn: socket.socket) -> None:
        answer(conn, read_requests(conn, 2)[0], first)

    def read_back(conn: socket.socket) -> None:
        for request in each_request(conn):
            answer(conn, request, first)  # the live record is still the first item's

    fake = FakeDaemon([answer_one_then_drop, read_back])
    with fake, Client(fake.socket, timeout=5) as client, pytest.raises(PublishIncomplete) as stop:
        client.publish_many([("a", 1, None), ("a", 1, None)])
    assert stop.value.stored == [0] and stop.value.unknown == [1]


def test_publish_many_stops_cleanly_at_an_item_it_cannot_encode() -> None:
    def answer_two(conn: socket.socket) -> None:
        for request in read_requests(conn, 2):
            answer(conn, request, record_of(request.params[0]["key"], 1))

    items: list[tuple[str, Any, None]] = [("a", 1, None), ("b", 1, None), ("c", object(), None)]
    fake = FakeDaemon([answer_two])
    with fake, Client(fake.socket, timeout=5) as client, pytest.raises(PublishIncomplete) as stop:
        client.publish_many(items)
    assert stop.value.stored == [0, 1] and len(stop.value.results) == 2
    assert isinstance(stop.value.cause, TypeError)
