"""What an event hook is: which records it is for, the command it runs, what it is given.

Shared by the ``[[hooks]]`` of the configuration file (run inside the daemon,
``meshnode.runtime.hooks``) and ``meshnode watch --exec`` (run by the CLI,
``meshnode.client.hooks``), so that both run a hook the same way: the same
environment, the same stdin, the same limits and the same report of a run.

A record reaches a hook as data only, never as part of a command line: the
command is an argument vector run without a shell, and the record is in
environment variables (``hook_input``) and in one JSON line on stdin, the line
``meshnode watch --json`` prints. A user who wants a shell writes one
(``sh -c '...'``) and quotes the variables there ("$MESHNODE_KEY").

Nothing here starts a process; the runners do (and share ``signal_group``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import Struct

from meshnode.core.jsonview import dumps

DEFAULT_HOOK_TIMEOUT_S = 10.0
DEFAULT_HOOK_CONCURRENCY = 4
MAX_HOOK_CONCURRENCY = 64  # runs at once, from the CLI or the configuration
KILL_GRACE_S = 1.0  # from SIGTERM to SIGKILL for a hook past its timeout
# Records waiting for a free slot, at most. A record view is at most ~24 KB in
# memory, so a full backlog stays under ~25 MB; past it, records are dropped and
# counted, never left to pile up in the daemon's watch buffer.
HOOK_QUEUE = 1024
# A value's variable is at most this many bytes; a larger one goes to stdin only.
# Linux refuses to start a program with any one environment string over 128 KiB
# (MAX_ARG_STRLEN), and all of them share ARG_MAX with the caller's own. A record
# is at most 17,408 bytes, so a string value always fits; the JSON of a
# structured one can grow ~6 times (a control character is ``\\u0001``).
MAX_ENV_VALUE_BYTES = 64 * 1024
# What only a shell makes sense of: expansions, command lists, pipes, redirections, globs.
_SHELL_SYNTAX = re.compile(r"[$`;|&<>(){}*?~\n]")

# The variables a hook is given; the caller's own of these names are never passed on.
RECORD_VARIABLES = (
    "MESHNODE_EVENT",
    "MESHNODE_KEY",
    "MESHNODE_AUTHOR",
    "MESHNODE_SEQ",
    "MESHNODE_ID",
    "MESHNODE_CREATED_MS",
    "MESHNODE_EXPIRES_MS",
    "MESHNODE_DELETED",
    "MESHNODE_VALUE",
    "MESHNODE_VALUE_JSON",
    "MESHNODE_VALUE_OMITTED",
)
# What a hook must never inherit: a secret of the node, or what belongs to the
# daemon's own process (a hook that wrote to $NOTIFY_SOCKET would speak for it).
NOT_INHERITED = (
    "MESHNODE_NETWORK_KEY",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)


class HookSpecError(ValueError):
    """A hook's command that cannot be used (empty, or quotes left open)."""


class HookConfig(Struct, frozen=True):
    """One hook: records whose key starts with ``prefix`` (and by ``author``) run ``command``.

    ``command`` is an argument vector, run without a shell; a user who wants one
    writes it (``["sh", "-c", "..."]``). A record's contents never become part of it.
    """

    command: tuple[str, ...]
    prefix: str = ""
    author: str | None = None  # a node id (``meshnode id``); None: any author
    timeout_s: float = DEFAULT_HOOK_TIMEOUT_S

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a record (its view: ``key``, ``author``) is for this hook."""
        return str(record["key"]).startswith(self.prefix) and (
            self.author is None or record["author"] == self.author
        )


def parse_command(command: str | Sequence[str]) -> tuple[str, ...]:
    """A hook's argument vector: a list as it is; a string split into words, or given to ``sh``.

    A string of plain words (quotes allowed) is split as ``sh`` would (``shlex``)
    and run without a shell. A string that uses the shell's own syntax (``$VAR``,
    ``;``, ``|``, redirections, globs...) asks for a shell, as
    ``notify-send "$MESHNODE_KEY" "$MESHNODE_VALUE"`` does: it runs as
    ``/bin/sh -c STRING``. Either way the command is the user's text, fixed when
    the hook is made; a record reaches it only through the environment and
    stdin, and a shell never parses an expanded ``"$MESHNODE_VALUE"`` as code.
    """
    if isinstance(command, str):
        if not command.strip():
            raise HookSpecError("a hook needs a command to run")
        if _SHELL_SYNTAX.search(command):
            _refuse_unquoted_record_variables(command)
            argv: tuple[str, ...] = ("/bin/sh", "-c", command)
        else:
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:  # "No closing quotation", "No escaped character"
                raise HookSpecError(f"cannot split the command {command!r}: {exc}") from None
    else:
        argv = tuple(command)
        if not all(isinstance(word, str) for word in argv):
            raise HookSpecError("a command is a list of strings")
    if not argv or not argv[0]:
        raise HookSpecError("a hook needs a command to run")
    if any("\0" in word for word in argv):
        raise HookSpecError("a command cannot contain a NUL character")
    return argv


def _refuse_unquoted_record_variables(command: str) -> None:
    """A ``$MESHNODE_...`` outside double quotes would be split and globbed by the shell.

    ``curl $MESHNODE_VALUE`` would let whoever wrote the record choose curl's
    options (``-o ~/.bashrc``): data would become arguments. Inside double quotes
    a variable is one word, whatever it holds, so that is what a hook must write.
    """
    quote: str | None = None
    escaped = False
    for index, char in enumerate(command):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        elif char == "$" and quote is None:
            name = command[index + 1 :].lstrip("{")
            if name.startswith("MESHNODE_"):
                raise HookSpecError(
                    f"put ${name.split()[0].rstrip('}')} in double quotes in {command!r}: a"
                    " record's value must reach the command as one word, never split by the shell"
                )


class HookInput(Struct, frozen=True):
    """What one run of a hook is given: variables to add, and the bytes of its stdin."""

    variables: dict[str, str]
    stdin: bytes


def hook_input(event: str, record: Mapping[str, Any]) -> HookInput:
    """The variables and stdin for a watch event (``put`` or ``delete``) and its record view.

    The view is ``meshnode.runtime.api.record_view``'s, as the ``watch``
    notification carries it. ``MESHNODE_VALUE`` holds a string value,
    ``MESHNODE_VALUE_JSON`` any other (JSON, bin as ``{"$bin": base64}``, a
    deletion's ``null``); the other of the two is unset. A value that cannot be
    a variable (over ``MAX_ENV_VALUE_BYTES``, or a string with a NUL) is in
    neither, and ``MESHNODE_VALUE_OMITTED`` says why (``too-large``, ``nul``);
    it is empty otherwise. Stdin always has it.
    """
    expires = record["expires_ms"]
    variables = {
        "MESHNODE_EVENT": event,
        "MESHNODE_KEY": str(record["key"]),
        "MESHNODE_AUTHOR": str(record["author"]),
        "MESHNODE_SEQ": str(record["seq"]),
        "MESHNODE_ID": str(record["id"]),
        "MESHNODE_CREATED_MS": str(record["created_ms"]),
        "MESHNODE_EXPIRES_MS": "" if expires is None else str(expires),
        "MESHNODE_DELETED": "1" if record["deleted"] else "0",
        "MESHNODE_VALUE_OMITTED": "",
    }
    value = record["value"]
    if isinstance(value, str):
        name, text = "MESHNODE_VALUE", value
    else:
        name, text = "MESHNODE_VALUE_JSON", dumps(value)
    if "\0" in text:
        variables["MESHNODE_VALUE_OMITTED"] = "nul"
    elif len(text.encode()) > MAX_ENV_VALUE_BYTES:
        variables["MESHNODE_VALUE_OMITTED"] = "too-large"
    else:
        variables[name] = text
    line = dumps({"event": event, "record": dict(record)}) + "\n"
    return HookInput(variables, line.encode())


def hook_environment(
    inherited: Mapping[str, str], variables: Mapping[str, str], socket: str | None = None
) -> dict[str, str]:
    """A hook's whole environment: the caller's, less what it must not see, plus ``variables``.

    ``socket``: the control socket, as ``MESHNODE_SOCKET``, so that a ``meshnode``
    command in the hook talks to the node the record came from.
    """
    dropped = {*RECORD_VARIABLES, *NOT_INHERITED}
    env = {name: value for name, value in inherited.items() if name not in dropped}
    if socket is not None:
        env["MESHNODE_SOCKET"] = socket
    env.update(variables)
    return env


class Captured(Struct, frozen=True):
    """The first bytes of one output stream of a run, and how many more were discarded."""

    data: bytes = b""
    discarded: int = 0


class Capture:
    """Collects a stream up to ``cap`` bytes and counts the rest, so memory stays bounded."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._data = bytearray()
        self._discarded = 0

    def add(self, chunk: bytes | bytearray) -> None:
        room = self._cap - len(self._data)
        self._data += chunk[:room]
        self._discarded += max(0, len(chunk) - room)

    def result(self) -> Captured:
        return Captured(bytes(self._data), self._discarded)


class HookOutcome(Struct, frozen=True):
    """How one run of a hook ended: exit status, or signal, timeout, or why it did not start."""

    command: tuple[str, ...]
    event: str
    key: str
    duration_s: float
    exit_code: int | None = None  # None: killed by a signal, or never started
    signal: int | None = None
    timed_out: bool = False
    stopped: bool = False  # killed because the watch or the daemon was ending
    start_error: str | None = None
    stdout: Captured = Captured()
    stderr: Captured = Captured()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def start_error(exc: OSError) -> str:
    """Why a command did not start, in words a user acts on."""
    if isinstance(exc, FileNotFoundError):
        return "command not found"
    if isinstance(exc, PermissionError):
        return "permission denied (not executable?)"
    return exc.strerror or str(exc)


def describe(outcome: HookOutcome, with_output: bool = True) -> str:
    """One log line of ``key=value`` fields, in the daemon's style (``event=`` first), e.g.
    ``event=hook_failed exit=1 op=put key=offer/x command=notify-send ms=12 stderr="..."``.

    ``op`` is the record's event (``put``, ``delete``). Every field a record or a
    hook controls is quoted and escaped, so neither can forge a line or a field.
    """
    fields: list[tuple[str, object]] = [("event", _event_name(outcome))]
    if outcome.start_error is not None:
        fields.append(("error", outcome.start_error))
    if outcome.exit_code is not None:
        fields.append(("exit", outcome.exit_code))
    if outcome.signal is not None:
        fields.append(("signal", _signal_name(outcome.signal)))
    fields += [
        ("op", outcome.event),
        ("key", outcome.key),
        ("command", outcome.command[0]),
        ("ms", round(outcome.duration_s * 1000)),
    ]
    for name, captured in (("stdout", outcome.stdout), ("stderr", outcome.stderr)):
        if with_output and captured.data:
            fields.append((name, captured.data.decode(errors="backslashreplace").rstrip("\n")))
        if captured.discarded:
            fields.append((f"{name}_discarded", captured.discarded))
    return " ".join(f"{name}={field_text(value)}" for name, value in fields)


def _event_name(outcome: HookOutcome) -> str:
    if outcome.start_error is not None:
        return "hook_not_started"
    if outcome.timed_out:
        return "hook_timeout"
    if outcome.stopped:
        return "hook_stopped"
    return "hook_ran" if outcome.ok else "hook_failed"


def field_text(value: object) -> str:
    """A field's value for a ``key=value`` line: bare if plain, else quoted with escapes."""
    text = str(value)
    if text and all(c.isalnum() or c in "._-/:@+" for c in text) and text.isascii():
        return text
    quoted = dumps(text)
    # JSON leaves U+2028, U+0085 and the like alone; a log reader may not.
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)


def signal_group(pid: int, signum: int) -> None:
    """Signal a run's whole process group (it leads a session of its own); gone is fine.

    Only while some process of the group lives can its id not be handed to
    another; a runner signals a group from its leader's start to just after it
    was reaped (SIGKILL for what is left), a window far too short for ids to wrap.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class DropTally:
    """Counts records dropped because the hooks fell behind, for a line now and then.

    The first drop after a quiet spell is told at once; later ones at most once
    per ``interval_s`` (``due``: when, if no further drop comes to tell them), and
    what is left untold once the backlog has drained.
    Each call that returns a number hands over the drops untold so far (``total``
    counts all). Time is passed in.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._last_line: float | None = None
        self._untold = 0
        self.total = 0

    def dropped(self, now: float) -> int | None:
        """Count one dropped record; the drops to tell now, if it is time."""
        self.total += 1
        self._untold += 1
        return self._tell(now) if self._last_line is None else self.tell_due(now)

    def drained(self, now: float) -> int | None:
        """The backlog is empty again: the drops not yet told, if any."""
        return self._tell(now) if self._untold else None

    def due(self) -> float | None:
        """When the drops not yet told are to be told, if there are any: a burst of drops
        and then none (an import into hung hooks) is told an interval later, not only
        once the backlog drains, which may take many minutes."""
        if not self._untold or self._last_line is None:
            return None
        return self._last_line + self._interval_s

    def tell_due(self, now: float) -> int | None:
        """The drops not yet told, if their time (``due``) has come."""
        due = self.due()
        return self._tell(now) if due is not None and now >= due else None

    def _tell(self, now: float) -> int:
        untold, self._untold, self._last_line = self._untold, 0, now
        return untold
