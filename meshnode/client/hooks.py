"""``meshnode watch --exec CMD``: a command run for each watched record, from the CLI.

The watch connection is read by the main thread without ever waiting for a
hook: each event goes into a bounded backlog (``HOOK_QUEUE``), past which it is
dropped and counted, so that a slow hook can never make the daemon cut the
watch off for falling behind. ``concurrency`` worker threads take events from
the backlog and each runs one hook at a time (``run_hook``), so at most that
many run at once.

A run is one process in a session of its own (so its whole process group can
be killed, and a ^C in the terminal reaches the CLI, not the hooks), given the
record by environment and stdin (``meshnode.system.hookspec``). Its stdout and
stderr are kept up to ``OUTPUT_CAP`` bytes each and shown, prefixed with the
record's key, on the CLI's own; a failure is reported on stderr and the watch
goes on. Past its timeout a run gets SIGTERM, then SIGKILL after
``KILL_GRACE_S``. A run lasts until the command has exited and closed its
output: a background child that keeps the pipes open keeps it running, up to
the timeout.

Ending the watch (^C, SIGTERM) gives running hooks ``STOP_WAIT_S`` to finish,
then stops them the same way; records still waiting are not run.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from msgspec import structs

from meshnode.system.hookspec import (
    DEFAULT_HOOK_TIMEOUT_S,
    HOOK_QUEUE,
    KILL_GRACE_S,
    Capture,
    DropTally,
    HookConfig,
    HookOutcome,
    HookSpecError,
    describe,
    hook_environment,
    hook_input,
    parse_command,
    signal_group,
    start_error,
)

OUTPUT_CAP = 64 * 1024  # bytes kept of each of a run's stdout and stderr
STOP_WAIT_S = 1.0  # what running hooks get to finish when the watch ends
READ_CHUNK = 65536


def hook_from_args(
    command: str, timeout_s: float | None, env: Mapping[str, str] | None = None
) -> HookConfig:
    """The hook ``--exec`` and ``--exec-timeout`` ask for; ``HookSpecError`` if it cannot run.

    A command that is not there is said once, now, rather than for every record.
    """
    argv = parse_command(command)
    env = os.environ if env is None else env
    if shutil.which(argv[0], path=env.get("PATH", os.defpath)) is None:
        raise HookSpecError(f"cannot run {argv[0]!r}: command not found or not executable")
    timeout_s = DEFAULT_HOOK_TIMEOUT_S if timeout_s is None else timeout_s
    if not timeout_s > 0:
        raise HookSpecError("--exec-timeout must be a positive duration")
    if timeout_s > 86_400:
        raise HookSpecError("--exec-timeout must be at most a day")
    return HookConfig(argv, timeout_s=timeout_s)


def watch_and_run(
    events: Iterable[dict[str, Any]], hook: HookConfig, concurrency: int, socket: str
) -> None:
    """Run ``hook`` for each of ``events`` until they end or the user interrupts.

    ^C (and SIGTERM, which is made to act like it) ends the watch; running
    hooks are then given a moment and stopped, and a further ^C cannot leave
    them behind.
    """
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    runner = HookRunner(hook, concurrency, socket=socket)
    try:
        for event in events:
            runner.submit(event)
    except KeyboardInterrupt:
        pass
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            runner.close()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class HookRunner:
    """Runs one hook for each submitted watch event: bounded backlog, ``concurrency`` at once."""

    def __init__(
        self,
        hook: HookConfig,
        concurrency: int,
        *,
        socket: str | None = None,
        env: Mapping[str, str] | None = None,
        queue_size: int = HOOK_QUEUE,
        output_cap: int = OUTPUT_CAP,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self._hook = hook
        self._env = hook_environment(os.environ if env is None else env, {}, socket)
        self._output_cap = output_cap
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.Lock()  # the backlog, the tallies and the output
        self._ready = threading.Condition(self._lock)
        self._backlog: deque[dict[str, Any]] = deque()
        self._queue_size = queue_size
        self._drops = DropTally()
        self._closing = False
        self._busy = 0
        self._start_errors: dict[str, int] = {}  # why a run did not start -> times since told
        self._stop_at: float | None = None  # when running hooks are stopped: the watch ended
        self._wake_r, self._wake_w = os.pipe()  # readable once the watch has ended
        self._workers = [
            threading.Thread(target=self._work, name=f"hook-{n}", daemon=True)
            for n in range(concurrency)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue one event for the hook; never waits (a full backlog drops it, counted)."""
        if not isinstance(event.get("record"), dict):
            return  # not a record's notification: nothing to run for
        with self._lock:
            if len(self._backlog) >= self._queue_size:
                self._tell_drops(self._drops.dropped(time.monotonic()))
                return
            self._backlog.append(dict(event))
            self._ready.notify()

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """End: records waiting are not run; running hooks get ``wait_s``, then are stopped."""
        with self._lock:
            self._closing = True
            left = len(self._backlog)
            self._backlog.clear()
            self._stop_at = time.monotonic() + wait_s
            self._ready.notify_all()
        os.write(self._wake_w, b"x")
        # Stopping a run takes at most the grace after SIGTERM, then as long after SIGKILL.
        deadline = time.monotonic() + wait_s + 2 * KILL_GRACE_S + 1.0
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if left:
                self._say(self._err, f"meshnode: {left} record(s) not run: the watch ended\n")
            for why, count in self._start_errors.items():
                if count:
                    self._say(self._err, f"meshnode: {count} more run(s) did not start: {why}\n")
            self._tell_drops(self._drops.drained(time.monotonic()))
        if not any(worker.is_alive() for worker in self._workers):
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._backlog and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return
                event = self._backlog.popleft()
                self._busy += 1
            outcome = run_hook(
                self._hook,
                event,
                self._env,
                self._output_cap,
                stop_time=self._stop_time,
                wake_fd=self._wake_r,
            )
            with self._lock:
                self._busy -= 1
                self._report(outcome)
                if not self._backlog and not self._busy:
                    self._tell_drops(self._drops.drained(time.monotonic()))

    def _stop_time(self) -> float | None:
        return self._stop_at

    def _report(self, outcome: HookOutcome) -> None:
        """Show a run's output, prefixed with its key, and say what went wrong, if anything."""
        if outcome.start_error is not None:
            if outcome.start_error in self._start_errors:  # told once: counted from now on
                self._start_errors[outcome.start_error] += 1
                return
            self._start_errors[outcome.start_error] = 0
        prefix = f"[{outcome.key}] "
        for stream, captured in ((self._out, outcome.stdout), (self._err, outcome.stderr)):
            if captured.data:
                lines = captured.data.decode(errors="replace").rstrip("\n").split("\n")
                self._say(stream, "".join(prefix + line + "\n" for line in lines))
        if not outcome.ok or outcome.stdout.discarded or outcome.stderr.discarded:
            self._say(self._err, f"meshnode: {describe(outcome, with_output=False)}\n")

    def _tell_drops(self, count: int | None) -> None:
        if count is not None:
            self._say(
                self._err,
                f"meshnode: hooks fell behind: {count} record(s) dropped, the backlog of"
                f" {self._queue_size} being full ({self._drops.total} dropped in all)\n",
            )

    def _say(self, stream: IO[str], text: str) -> None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away (| head) or the stream is closed: nothing to show


def run_hook(
    hook: HookConfig,
    event: Mapping[str, Any],
    env: Mapping[str, str],
    output_cap: int,
    *,
    stop_time: Callable[[], float | None] = lambda: None,
    wake_fd: int | None = None,
) -> HookOutcome:
    """Run ``hook`` once for a watch event, to the end, within its timeout.

    ``env`` is the hook's environment but for the record's variables
    (``hook_environment``), which are added here.

    ``stop_time`` gives a time (``time.monotonic``) at which to stop the run
    early, once ``wake_fd`` becomes readable: the watch is ending.
    """
    given = hook_input(str(event["event"]), event["record"])
    key = str(event["record"]["key"])
    started = time.monotonic()
    outcome = HookOutcome(hook.command, str(event["event"]), key, 0.0)
    try:
        process = subprocess.Popen(
            hook.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, **given.variables},
            start_new_session=True,
        )
    except OSError as exc:
        return structs.replace(outcome, start_error=start_error(exc))
    pipes = _Pipes(process, given.stdin, output_cap, wake_fd)
    deadline = started + hook.timeout_s
    ended = pipes.exchange(lambda: _earliest(deadline, stop_time()))
    if ended:  # its output is closed, but it may go on (exec >/dev/null; sleep 60)
        ended = _exits_by(process, lambda: _earliest(deadline, stop_time()))
    timed_out = stopped = False
    if not ended:
        stop_at = stop_time()
        stopped = stop_at is not None and stop_at < deadline
        timed_out = not stopped
        signal_group(process.pid, signal.SIGTERM)
        grace_end = time.monotonic() + KILL_GRACE_S
        pipes.exchange(lambda: grace_end)
        signal_group(process.pid, signal.SIGKILL)
        kill_end = time.monotonic() + KILL_GRACE_S  # pipes a process outside the group holds
        pipes.exchange(lambda: kill_end)
    pipes.close()
    code = process.wait()
    return structs.replace(
        outcome,
        duration_s=time.monotonic() - started,
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        timed_out=timed_out,
        stopped=stopped,
        stdout=pipes.stdout.result(),
        stderr=pipes.stderr.result(),
    )


def _exits_by(process: subprocess.Popen[bytes], until: Callable[[], float]) -> bool:
    """Whether ``process`` exits before ``until()``, asked again as it waits (a stop moves it)."""
    while True:
        left = until() - time.monotonic()
        if left <= 0:
            return process.poll() is not None
        try:
            process.wait(timeout=min(left, 0.1))
        except subprocess.TimeoutExpired:
            continue
        return True


def _earliest(deadline: float, stop_at: float | None) -> float:
    return deadline if stop_at is None else min(deadline, stop_at)


class _Pipes:
    """A run's stdin, stdout and stderr, driven together without blocking on any one."""

    def __init__(
        self, process: subprocess.Popen[bytes], data: bytes, cap: int, wake_fd: int | None
    ) -> None:
        assert process.stdin and process.stdout and process.stderr
        self._process = process
        self._data = memoryview(data)
        self.stdout = Capture(cap)
        self.stderr = Capture(cap)
        self._selector = selectors.DefaultSelector()
        self._wake_fd = wake_fd
        if wake_fd is not None:
            self._selector.register(wake_fd, selectors.EVENT_READ)
        for pipe in (process.stdin, process.stdout, process.stderr):
            os.set_blocking(pipe.fileno(), False)
        self._selector.register(process.stdin, selectors.EVENT_WRITE)
        self._selector.register(process.stdout, selectors.EVENT_READ, self.stdout)
        self._selector.register(process.stderr, selectors.EVENT_READ, self.stderr)

    def exchange(self, deadline: Callable[[], float]) -> bool:
        """Feed stdin and read output until both outputs end (True) or ``deadline`` (False)."""
        while self._reading():
            timeout = deadline() - time.monotonic()
            if timeout <= 0:
                return False
            for key, _ in self._selector.select(timeout):
                if key.fd == self._wake_fd:
                    self._selector.unregister(key.fd)  # the stop time is set: deadline() has it
                elif key.data is None:
                    self._write(key.fileobj)  # type: ignore[arg-type]
                else:
                    self._read(key.fileobj, key.data)  # type: ignore[arg-type]
        return True

    def _reading(self) -> bool:
        outputs = {self._process.stdout, self._process.stderr}
        return any(key.fileobj in outputs for key in self._selector.get_map().values())

    def _write(self, pipe: IO[bytes]) -> None:
        try:
            sent = os.write(pipe.fileno(), self._data[:READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # the hook closed its stdin or ended: it wants no more
            sent = len(self._data)
        self._data = self._data[sent:]
        if not self._data:
            self._selector.unregister(pipe)
            pipe.close()

    def _read(self, pipe: IO[bytes], capture: Capture) -> None:
        try:
            chunk = os.read(pipe.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        if chunk:
            capture.add(chunk)
        else:
            self._selector.unregister(pipe)
            pipe.close()

    def close(self) -> None:
        for key in list(self._selector.get_map().values()):
            if key.fd != self._wake_fd:
                key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        if self._process.stdin is not None:
            self._process.stdin.close()
