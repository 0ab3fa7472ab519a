"""The daemon's log: for a terminal, and for the journal when systemd runs it.

When ``$JOURNAL_STREAM`` names the device and inode of stderr, the journal reads
it: then each line starts with its syslog priority (``<6>``, which journald turns
into the entry's priority) and carries no timestamp, since the journal stamps
every entry itself. Lines are one per event, ``event=name key=value ...``, so that
``journalctl -u meshnode | grep event=connected`` finds what a person looks for.

No line ever carries a network key: every ``mesh1...`` invite in a line (its
message, a traceback, anything) is masked as it is written, whatever the code
that logged it meant to do.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping

# syslog(3) priorities: what journald files each line under.
SYSLOG_PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
# A bech32m string under the "mesh" prefix long enough to hold a key (protocol/peer.md).
_INVITE = re.compile(r"mesh1[02-9ac-hj-np-z]{20,}", re.IGNORECASE)
MASK = "mesh1…(network key withheld)"


class SecretMask(logging.Formatter):
    """Another formatter's lines, with every network key in them masked."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return _INVITE.sub(MASK, self._inner.format(record))


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; the journal adds time, host and unit."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITIES.get(record.levelno, 6)
        lines = super().format(record).splitlines() or [""]
        # A traceback's lines would each become an entry of their own, without a priority.
        return "\n".join(f"<{priority}>{line}" for line in lines)


def to_journal(env: Mapping[str, str], stderr_fd: int) -> bool:
    """Whether stderr is the journal stream systemd named in ``$JOURNAL_STREAM``."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stderr_fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def setup_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """Log at ``level`` and above to stderr, in the journal's form when it reads stderr."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = (
        JournalFormatter()
        if to_journal(os.environ if env is None else env, sys.stderr.fileno())
        else logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
    )
    handler.setFormatter(SecretMask(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
