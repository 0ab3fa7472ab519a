"""One line of progress for a long command: a bar on a terminal, plain lines elsewhere.

On a terminal the line is redrawn in place with ``\\r`` (bar, percentage,
counts, rate, time left), at most ``REDRAWS_PER_S`` times a second; into a
pipe or a log, where ``\\r`` would pile up, a plain line comes at most every
``every`` seconds. Hand-written, since tqdm would cost every ``meshnode``
command start-up time; it imports only ``time`` and ``os``. ``meshnode sync
--wait`` uses it, and anything else that counts towards a total can.
"""

from __future__ import annotations

import os
import time
from collections import deque

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

BAR_WIDTH = 24
REDRAWS_PER_S = 10
PLAIN_EVERY = 5.0  # seconds between plain lines
RATE_WINDOW = 5.0  # seconds of updates a rate is taken over, when the caller gives none


def duration(seconds: float) -> str:
    """``4 s``, ``3 min``, ``1 h 5 min``: a time left, as a person reads it."""
    whole = max(round(seconds), 1)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{round(whole / 60)} min"
    hours, minutes = divmod(round(whole / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def figures(
    done: int, total: int | None, unit: str, rate: float | None, eta_s: float | None
) -> str:
    """``12,345/27,000 records, 3,400/s, about 4 s left``: the words of a progress line."""
    count = f"{done:,}/{total:,} {unit}" if total is not None else f"{done:,} {unit}"
    parts = [count]
    if rate:
        parts.append(f"{rate:,.0f}/s")
    if eta_s is not None and total is not None and done < total:
        parts.append(f"about {duration(eta_s)} left")
    return ", ".join(parts)


class Progress:
    """The progress line of one command, drawn on ``stream``.

    ``tty`` (default: whether ``stream`` is a terminal) picks the bar or plain
    lines; ``clock`` is for tests. Call ``close`` at the end so the prompt
    starts on a fresh line.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        every: float = PLAIN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._every = every
        self._clock = clock
        self._drawn = 0  # length of the line on screen (tty), 0: none
        self._last = float("-inf")  # when the last line was drawn or printed
        self._samples: deque[tuple[float, int]] = deque()

    def bar(
        self,
        done: int,
        total: int | None,
        *,
        unit: str = "records",
        rate: float | None = None,
        eta_s: float | None = None,
        note: str = "",
    ) -> None:
        """``done`` of ``total`` (None: not known); the rate and time left are worked out
        from successive calls unless given; ``note`` ends the line."""
        now = self._clock()
        if rate is None:
            rate = self._rate(now, done)
            if rate and total is not None:
                eta_s = max(total - done, 0) / rate
        words = figures(done, total, unit, rate, eta_s) + (f"; {note}" if note else "")
        if total:
            share = min(max(done / total, 0.0), 1.0)
            percent = f"{share * 100:3.0f}%"
            filled = round(share * BAR_WIDTH)
            drawn = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"
            self._line(f"{drawn} {percent}  {words}" if self.tty else f"{percent}: {words}", now)
        else:
            self._line(words, now)

    def say(self, text: str) -> None:
        """A line of words in place of the bar (on a terminal) or as a plain line."""
        self._line(text, self._clock())

    def close(self, final: str | None = None) -> None:
        """End the line on the terminal; ``final`` replaces it (or is printed) if given."""
        if final is not None:
            self._line(final, self._clock(), force=True)
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _line(self, text: str, now: float, *, force: bool = False) -> None:
        if self.tty:
            if not force and now - self._last < 1 / REDRAWS_PER_S:
                return
            text = text[: max(_columns(self.stream) - 1, 20)]
            self.stream.write("\r" + text + " " * max(self._drawn - len(text), 0))
            self._drawn = len(text)
        else:
            if not force and now - self._last < self._every:
                return
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last = now

    def _rate(self, now: float, done: int) -> float | None:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        then, before = samples[0]
        return (done - before) / (now - then) if now - then >= 0.5 else None


def _columns(stream: TextIO) -> int:
    """The terminal's width; 80 if it says none (a pseudo-terminal nobody sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError):
        return 80
