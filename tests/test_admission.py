"""Admission of handshaking connections and the flood log throttle (peer.md §5.8), sans IO."""

from __future__ import annotations

import random

import pytest

from meshnode.engine.admission import (
    Admission,
    Admitted,
    Limits,
    LogThrottle,
    Refusal,
    Refused,
    source_of,
)

LIMITS = Limits(connections=8, half_open=4, half_open_per_source=2, sessions_per_source=3)


def admitted(table: Admission, source: str, now: float = 0.0) -> Admitted:
    decision = table.arrive(source, now)
    assert isinstance(decision, Admitted), decision
    return decision


def established(table: Admission, source: str, now: float = 0.0) -> int:
    ticket = admitted(table, source, now).ticket
    assert table.establish(ticket)
    return ticket


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::9", "2001:db8:1:2::/64"),  # the same /64: one source
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 peer on a dual-stack listener
        ("node.local", "node.local"),
    ],
)
def test_a_source_is_an_ipv4_address_or_an_ipv6_slash_64(host: str, source: str) -> None:
    assert source_of(host) == source


def test_within_the_quotas_nobody_is_evicted() -> None:
    table = Admission(LIMITS)
    decisions = [table.arrive(source, 0) for source in ("a", "a", "b", "c")]
    assert all(isinstance(d, Admitted) and d.evicted is None for d in decisions)
    assert (table.half_open, table.connections, table.half_open_from("a")) == (4, 4, 2)


def test_a_full_source_evicts_its_own_oldest_half_open_connection() -> None:
    table = Admission(LIMITS)
    first = admitted(table, "flood", 1).ticket
    admitted(table, "flood", 2)
    other = admitted(table, "honest", 0).ticket  # older than all of the flood's
    assert admitted(table, "flood", 3).evicted == first
    assert table.half_open_from("flood") == 2 and table.establish(other)


def test_a_full_half_open_quota_evicts_the_oldest_of_all() -> None:
    table = Admission(LIMITS)
    tickets = [admitted(table, source, now).ticket for now, source in enumerate("abcd")]
    assert admitted(table, "e", 9).evicted == tickets[0]
    assert table.half_open == 4 and table.half_open_from("a") == 0


def test_a_connection_whose_message_1_verified_goes_after_those_that_did_not() -> None:
    table = Admission(LIMITS)
    keyed = admitted(table, "a", 0).ticket
    table.keyed(keyed)
    unkeyed = [admitted(table, source, now).ticket for now, source in enumerate("bcd", 1)]
    assert admitted(table, "e", 9).evicted == unkeyed[0]
    assert admitted(table, "f", 10).evicted == unkeyed[1]  # still not the keyed one
    table2 = Admission(LIMITS)
    both = [admitted(table2, "a", now).ticket for now in (0, 1)]
    for ticket in both:
        table2.keyed(ticket)
    assert admitted(table2, "a", 2).evicted == both[0]  # all keyed: the oldest


def test_sessions_are_never_evicted_and_a_full_node_refuses() -> None:
    table = Admission(LIMITS)
    for source in "aabbccdd":
        established(table, source)
    assert table.connections == 8 and table.half_open == 0
    assert table.arrive("e", 5) == Refused(Refusal.FULL)
    assert table.connections == 8


def test_with_every_slot_taken_a_newcomer_replaces_a_half_open_one() -> None:
    table = Admission(LIMITS)
    for source in "aabbccd":
        established(table, source)
    waiting = admitted(table, "e", 1).ticket
    assert admitted(table, "f", 2).evicted == waiting
    assert table.connections == 8


def test_a_source_with_as_many_sessions_as_it_may_is_refused() -> None:
    table = Admission(LIMITS)
    late = [admitted(table, "a", now).ticket for now in (0, 1)]
    assert table.establish(late[0])
    established(table, "a")
    established(table, "a")
    assert table.arrive("a", 5) == Refused(Refusal.SOURCE_FULL)
    assert not table.establish(late[1])  # finished meanwhile: still too many, and let go
    assert table.sessions_from("a") == 3 and table.connections == 3
    assert table.half_open_from("a") == 0


def test_leaving_frees_the_slot_and_unknown_or_evicted_tickets_are_ignored() -> None:
    table = Admission(LIMITS)
    evicted = admitted(table, "a", 0).ticket
    admitted(table, "a", 1)
    admitted(table, "a", 2)
    assert not table.establish(evicted)  # evicted meanwhile: it must close
    table.leave(evicted)
    table.leave(12345)
    session = established(table, "b")
    table.leave(session)
    assert (table.connections, table.half_open, table.sessions_from("b")) == (2, 2, 0)


def test_dialled_connections_count_but_are_neither_evicted_nor_refused() -> None:
    table = Admission(LIMITS)
    dialled = [table.dial(0) for _ in range(8)]
    assert table.connections == 8 and table.half_open == 0
    assert table.arrive("a", 1) == Refused(Refusal.FULL)
    assert table.establish(dialled[0])
    table.leave(dialled[1])
    assert admitted(table, "a", 2).evicted is None


def test_random_traffic_never_breaks_a_quota() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        table = Admission(LIMITS)
        open_tickets: list[int] = []
        for step in range(500):
            action = rng.random()
            if action < 0.5:
                decision = table.arrive(rng.choice("abcde"), step)
                if isinstance(decision, Admitted):
                    open_tickets.append(decision.ticket)
            elif open_tickets and action < 0.7:
                table.establish(rng.choice(open_tickets))
            elif open_tickets and action < 0.8:
                table.keyed(rng.choice(open_tickets))
            elif open_tickets:
                ticket = open_tickets.pop(rng.randrange(len(open_tickets)))
                table.leave(ticket)
            assert table.connections <= LIMITS.connections
            assert table.half_open <= LIMITS.half_open
            for source in "abcde":
                assert table.half_open_from(source) <= LIMITS.half_open_per_source
                assert table.sessions_from(source) <= LIMITS.sessions_per_source


# -- the log throttle ------------------------------------------------------------


def test_the_first_event_is_told_in_full_and_the_rest_summed_up_once_due() -> None:
    throttle = LogThrottle("peer connections refused", interval=10)
    assert throttle.note("10.0.0.1", "evicted", now=100)
    assert throttle.due == 110
    for n in range(30):
        assert not throttle.note("127.0.0.2" if n % 3 else "10.0.0.1", "evicted", now=101)
    assert not throttle.note("10.0.0.3", "refused", now=102)
    assert throttle.summary(109.9) is None
    assert throttle.summary(110) == (
        "31 peer connections refused in the last 10 s"
        " (top sources: 127.0.0.2 \N{MULTIPLICATION SIGN}20, 10.0.0.1 \N{MULTIPLICATION SIGN}10,"
        " 10.0.0.3 \N{MULTIPLICATION SIGN}1;"
        " evicted \N{MULTIPLICATION SIGN}30, refused \N{MULTIPLICATION SIGN}1)"
    )


def test_a_quiet_interval_lets_the_next_event_be_told_in_full_again() -> None:
    throttle = LogThrottle("failures", interval=10)
    assert throttle.note("a", "x", now=0)
    assert throttle.summary(10) is None and throttle.due == float("inf")
    assert throttle.note("a", "x", now=25)
    assert throttle.note("a", "x", now=40)  # due passed with nothing counted: quiet again


def test_a_flood_gets_at_most_one_line_per_interval() -> None:
    throttle = LogThrottle("failures", interval=10)
    lines = 0
    for step in range(60_000):  # 60 s at 1,000 events a second
        now = step / 1000
        lines += throttle.note(f"10.0.{step % 300}.1", "timeout", now)
        lines += throttle.summary(now) is not None
    assert lines == 6  # at 0, 10, 20, 30, 40 and 50 s


def test_a_swarm_of_sources_is_counted_as_others_past_the_bound() -> None:
    throttle = LogThrottle("failures", interval=10, top=1, most_sources=2)
    throttle.note("first", "x", now=0)
    for source in ("a", "b", "c", "d", "e"):
        throttle.note(source, "x", now=1)
    line = throttle.summary(10)
    assert line is not None and "top sources: others \N{MULTIPLICATION SIGN}3;" in line
