"""Durations as people write them: ``90`` (seconds), ``45s``, ``1.5h``, ``1h30m``, ``500ms``.

One grammar for the command line (``publish --ttl``, ``watch --exec-timeout``) and the
configuration file (``tombstone_retention``, a hook's ``timeout``), so that what works in
one works in the other. A number may have a fraction; a bare number is seconds. Errors
complete a sentence whose subject is the caller's name for the value ("--ttl must be a
positive duration", "hook 1: timeout is a duration: ...").
"""

from __future__ import annotations

import math
import re

MAX_MS = 100 * 365 * 86_400_000
"""Far past any use, and well inside SQLite's integers."""

MAX_TTL_MS = 10 * 365 * 86_400_000
"""The longest life ``publish`` gives a record (``engine.node`` enforces it)."""

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

_NUMBER = r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+"  # ASCII: \d takes any script's digits
_SECONDS = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)")  # "ms" before "m", or "5ms" reads as 5m + s


WRITTEN_AS = 'is a duration: seconds, or a string such as "30d", "1h30m", "1.5h"'
"""What a value that is not a duration is told, before what it was."""


class DurationError(ValueError):
    """Not a duration, or out of range; the message says which, without a subject."""


MAX_TEXT = 64
"""Characters at most: far past "1w6d23h59m59s999ms", and a bound on the regex's work."""


def parse_ms(text: str) -> int:
    """The milliseconds ``text`` spells, rounded to the nearest; DurationError if none."""
    if len(text) > MAX_TEXT:
        raise DurationError(f"{WRITTEN_AS}; got {len(text):,} characters")
    spelled = text.strip().lower()
    negative = spelled.startswith("-")  # parsed, to be refused as such rather than as words
    if negative:
        spelled = spelled[1:]
    if _SECONDS.fullmatch(spelled):
        spelled += "s"
    if not spelled or _PART.sub("", spelled):  # anything left over is not number and unit
        raise DurationError(f"{WRITTEN_AS}; got {text!r}")
    ms = sum(float(n) * UNIT_MS[unit] for n, unit in _PART.findall(spelled))  # 64 digits: finite
    return checked_ms(-ms if negative else ms, text)


def seconds_ms(seconds: float, given: object) -> int:
    """A number of seconds (TOML's int or float) in milliseconds, checked as ``checked_ms``;
    the range is checked first, so that 1e308 s is too long rather than infinite."""
    if isinstance(seconds, float) and not math.isfinite(seconds):  # TOML has inf and nan
        raise DurationError(f"must be a finite duration, got {given!r}")
    if seconds > MAX_MS / 1000:
        raise DurationError(f"must be at most 100 years, got {given!r}")
    return checked_ms(seconds * 1000, given)


def checked_ms(ms: float, given: object) -> int:
    """``ms`` rounded, if it is a duration meshnode can keep; ``given`` is what was written."""
    if isinstance(ms, float) and not math.isfinite(ms):  # an int is finite, however long
        raise DurationError(f"must be a finite duration, got {given!r}")
    if ms <= 0:
        raise DurationError(f"must be a positive duration, got {given!r}")
    if ms > MAX_MS:
        raise DurationError(f"must be at most 100 years, got {given!r}")
    if round(ms) == 0:
        raise DurationError(f"must be at least 1 ms, got {given!r}")
    return round(ms)
