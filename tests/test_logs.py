"""The daemon's log lines: the journal's form under systemd, and never a network key."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from meshnode.core.netkey import encode_network_key
from meshnode.runtime.logs import JournalFormatter, SecretMask, to_journal


def record(message: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("meshnode.runtime.peers", level, __file__, 1, message, args, None)


def test_the_journal_is_recognised_by_the_device_and_inode_of_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        assert to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream.fileno())
        assert not to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream.fileno())
        assert not to_journal({"JOURNAL_STREAM": "nonsense"}, stream.fileno())
        assert not to_journal({}, stream.fileno())


def test_journal_lines_carry_a_priority_and_no_timestamp() -> None:
    formatter = JournalFormatter()
    assert formatter.format(record("event=connected peer=%s", "mn1x")) == (
        "<6>meshnode.runtime.peers: event=connected peer=mn1x"
    )
    assert formatter.format(record("lost", level=logging.WARNING)).startswith("<4>")
    assert formatter.format(record("failed", level=logging.ERROR)).startswith("<3>")
    assert formatter.format(record("detail", level=logging.DEBUG)).startswith("<7>")


def test_every_line_of_a_traceback_keeps_its_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = record("a connection failed", level=logging.ERROR)
        failure.exc_info = sys.exc_info()
    lines = JournalFormatter().format(failure).splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)


def test_a_network_key_never_reaches_the_log() -> None:
    invite = encode_network_key(bytes(range(32)))
    masked = SecretMask(JournalFormatter())
    try:
        raise ValueError(f"invalid key {invite}")
    except ValueError:
        failure = record("a reload failed", level=logging.ERROR)
        failure.exc_info = sys.exc_info()
    for line in (record("joined %s", invite), record(f"bad key {invite.upper()} given"), failure):
        shown = masked.format(line)
        assert invite not in shown.lower()
        assert "network key withheld" in shown


def test_other_messages_pass_untouched() -> None:
    line = record("event=ready node=%s", "mn1qqqq")
    assert SecretMask(JournalFormatter()).format(line).endswith("event=ready node=mn1qqqq")
