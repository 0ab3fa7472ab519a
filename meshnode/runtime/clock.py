"""The daemon's wall clock, read in one place and handed to whatever needs it.

Monotonic time is trio's (``trio.current_time``), which tests replace with a
virtual clock; wall time (milliseconds since the epoch, what records carry and
expiry is judged by) is this callable, passed to the API, the publisher and
the peer service, so that a test can give them all the same fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WallClock = Callable[[], int]  # milliseconds since the Unix epoch


def system_wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
