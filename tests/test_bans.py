"""Bans (protocol/peer.md §5.7): only invalid records earn one, it ends, it is bounded."""

from __future__ import annotations

from meshnode.core.messages import GoodbyeCode
from meshnode.engine.bans import BAN_SECONDS, BanList

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_only_an_invalid_record_earns_a_ban_of_ten_minutes() -> None:
    bans = BanList()
    assert BAN_SECONDS == {GoodbyeCode.INVALID_RECORD: 600.0}
    for code in (GoodbyeCode.PROTOCOL, GoodbyeCode.OVERLOADED, GoodbyeCode.IDLE):
        assert bans.ban(A, code, "x", now=0, now_ms=0) is None
    ban = bans.ban(A, GoodbyeCode.INVALID_RECORD, "invalid record: bad-key", now=10, now_ms=5)
    assert ban is not None and (ban.until, ban.until_ms) == (610, 600_005)
    assert bans.get(A, 11) == ban and ban.seconds_left(10.5) == 600  # rounded up
    assert bans.get(A, 610) is None and bans.active(610) == []


def test_a_ban_can_be_lifted_once() -> None:
    bans = BanList()
    bans.ban(A, GoodbyeCode.INVALID_RECORD, "x", now=0, now_ms=0)
    assert bans.lift(A) and not bans.lift(A)
    assert bans.get(A, 1) is None


def test_the_list_is_bounded_and_drops_the_ban_that_ends_soonest() -> None:
    bans = BanList(most=2)
    bans.ban(A, GoodbyeCode.INVALID_RECORD, "x", now=0, now_ms=0)
    bans.ban(B, GoodbyeCode.INVALID_RECORD, "x", now=1, now_ms=0)
    bans.ban(C, GoodbyeCode.INVALID_RECORD, "x", now=2, now_ms=0)
    assert [ban.node for ban in bans.active(3)] == [B, C]
