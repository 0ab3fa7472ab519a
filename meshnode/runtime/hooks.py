"""The configuration's ``[[hooks]]``: a command run by the daemon for each matching record.

``HookRunner`` listens to the ``WatchHub`` (while there are hooks), which hands
it every stored record at once, however many one step stores, so it is never
cut off for falling behind: each (hook, record) that matches becomes a job in
one bounded queue
(``HOOK_QUEUE``), past which jobs are dropped and counted in a throttled log
line. A dispatcher starts a job whenever the ``CapacityLimiter`` has a slot, so
at most ``concurrency`` hooks run at once, and nothing the node does ever waits
for one: publishes, peers and watchers go on however slow a hook is.

A run (``run_hook``) is one child process in a session of its own, given the
record by environment and stdin (``meshnode.system.hookspec``); its stdout and
stderr are kept up to ``LOG_OUTPUT_CAP`` bytes each (so a line stays under
journald's 48 KiB ``LineMax``) and logged with the outcome as ``key=value``
fields: DEBUG for a quiet success, INFO for one with output, WARNING for a
failure, a signal, a timeout or a command that did not start (said once per hook
until the next reload). Past its timeout the process group gets SIGTERM, then
SIGKILL after ``KILL_GRACE_S``; the daemon stopping stops running hooks the same
way.

``replace`` takes a reloaded configuration: records from then on use the new
hooks, runs under way finish, and queued runs of a hook the reload removed are
skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio
from msgspec import Struct, structs

from meshnode.core.record import Record
from meshnode.runtime.api import record_view
from meshnode.runtime.watch import WatchHub
from meshnode.system.hookspec import (
    HOOK_QUEUE,
    KILL_GRACE_S,
    Capture,
    DropTally,
    HookConfig,
    HookOutcome,
    describe,
    field_text,
    hook_environment,
    hook_input,
    signal_group,
    start_error,
)

log = logging.getLogger(__name__)

LOG_OUTPUT_CAP = 4096  # bytes kept, and logged, of each of a run's stdout and stderr
DROP_LOG_INTERVAL_S = 10.0
READ_CHUNK = 65536


class _Job(Struct, frozen=True, eq=False):
    """One run waiting for a slot (compared by identity: it borrows the limiter's token)."""

    hook: HookConfig
    event: str
    record: dict[str, Any]  # the record's view (``record_view``)


class HookRunner:
    """Runs the configured hooks for the records the node stores, bounded in every way."""

    def __init__(
        self,
        hooks: Sequence[HookConfig],
        concurrency: int,
        hub: WatchHub,
        *,
        socket: str | None = None,
        env: Mapping[str, str] | None = None,
        queue_size: int = HOOK_QUEUE,
        output_cap: int = LOG_OUTPUT_CAP,
    ) -> None:
        """``socket``: the control socket, given to hooks as ``MESHNODE_SOCKET``."""
        self._hub = hub
        self._limiter = trio.CapacityLimiter(concurrency)
        self._send, self._receive = trio.open_memory_channel[_Job](queue_size)
        self._queue_size = queue_size
        self._env = hook_environment(os.environ if env is None else env, {}, socket)
        self._output_cap = output_cap
        self._drops = DropTally(DROP_LOG_INTERVAL_S)
        self._drops_untold = trio.Event()  # set when a drop was not told at once
        self._running = False  # listening to the hub, between run's start and end
        self._groups: set[int] = set()  # process groups of the runs under way
        self._start_errors: set[tuple[HookConfig, str]] = set()  # said once until a reload
        self._hooks: tuple[HookConfig, ...] = ()
        self.replace(hooks)

    @property
    def hooks(self) -> tuple[HookConfig, ...]:
        return self._hooks

    @property
    def dropped(self) -> int:
        """How many runs were dropped because the queue was full, since the start."""
        return self._drops.total

    def replace(self, hooks: Sequence[HookConfig], concurrency: int | None = None) -> None:
        """Use ``hooks`` (and ``concurrency``) for records from now on; runs under way finish."""
        self._hooks = tuple(hooks)
        if concurrency is not None:
            self._limiter.total_tokens = concurrency
        self._start_errors.clear()
        for hook in self._hooks:
            if shutil.which(hook.command[0], path=self._env.get("PATH", os.defpath)) is None:
                log.warning(
                    "event=hook_command_missing command=%s prefix=%s: not found on the PATH",
                    field_text(hook.command[0]),
                    field_text(hook.prefix),
                )
        if self._running:
            self._listen()

    def kill_all(self) -> None:
        """SIGKILL every run under way, at once: for a stop that cannot wait (a second signal)."""
        for group in list(self._groups):
            signal_group(group, signal.SIGKILL)

    def _listen(self) -> None:
        if self._hooks:
            self._hub.listen(self._queue)
        else:
            self._hub.unlisten(self._queue)  # no hooks: nothing to hear

    async def run(self) -> None:
        """Run hooks for stored records until cancelled; then stop the running ones."""
        self._running = True
        self._listen()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._tell_late_drops)
                await self._dispatch(nursery)
        finally:
            self._running = False
            self._hub.unlisten(self._queue)

    def _queue(self, record: Record) -> None:
        """Queue a run of each matching hook, at once; past the bound, drop and count."""
        view = record_view(record)
        event = "delete" if record.is_tombstone else "put"
        for hook in self._hooks:
            if not hook.matches(view):
                continue
            try:
                self._send.send_nowait(_Job(hook, event, view))
            except trio.WouldBlock:
                told = self._drops.dropped(trio.current_time())
                if told is None:
                    self._drops_untold.set()
                self._tell_drops(told)

    async def _tell_late_drops(self) -> None:
        """Drops left untold by a burst are told when their interval is up."""
        while True:
            await self._drops_untold.wait()
            self._drops_untold = trio.Event()
            due = self._drops.due()
            if due is not None:
                await trio.sleep_until(due)
                self._tell_drops(self._drops.tell_due(trio.current_time()))

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                job = self._receive.receive_nowait()
            except trio.WouldBlock:
                self._tell_drops(self._drops.drained(trio.current_time()))
                job = await self._receive.receive()
            if job.hook not in self._hooks:
                continue  # a reload removed its hook
            await self._limiter.acquire_on_behalf_of(job)
            nursery.start_soon(self._run, job)

    async def _run(self, job: _Job) -> None:
        try:
            await run_hook(
                job.hook,
                job.event,
                job.record,
                self._env,
                output_cap=self._output_cap,
                report=self._report,
                running=self._groups,
            )
        except Exception:  # a failing hook is logged, never fatal, whatever went wrong
            log.exception("event=hook_error command=%s", job.hook.command[0])
        finally:
            self._limiter.release_on_behalf_of(job)

    def _report(self, outcome: HookOutcome, hook: HookConfig) -> None:
        if outcome.start_error is not None:
            said = (hook, outcome.start_error)
            if said in self._start_errors:
                log.debug("%s", describe(outcome))
                return
            self._start_errors.add(said)
            log.warning("%s (said once until the configuration is reloaded)", describe(outcome))
        elif not outcome.ok:
            log.warning("%s", describe(outcome))
        elif outcome.stdout.data or outcome.stderr.data:
            log.info("%s", describe(outcome))
        else:
            log.debug("%s", describe(outcome))

    def _tell_drops(self, count: int | None) -> None:
        if count is not None:
            log.warning(
                "event=hooks_dropped dropped=%d total=%d queue=%d: the queue of runs was full",
                count,
                self._drops.total,
                self._queue_size,
            )


async def run_hook(
    hook: HookConfig,
    event: str,
    record: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    output_cap: int,
    report: Callable[[HookOutcome, HookConfig], None],
    running: set[int] | None = None,
) -> None:
    """Run ``hook`` once for a record, within its timeout, and ``report`` how it ended.

    ``env`` is the hook's environment but for the record's variables
    (``hook_environment``). Cancelled, it stops the process (SIGTERM, SIGKILL
    after the grace; shielded, so at most ``KILL_GRACE_S`` more), reports that
    and lets the cancellation go on.
    """
    given = hook_input(event, record)
    started = trio.current_time()
    outcome = HookOutcome(hook.command, event, str(record["key"]), 0.0)
    try:
        process = await trio.lowlevel.open_process(
            list(hook.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, **given.variables},
            start_new_session=True,
        )
    except OSError as exc:
        report(structs.replace(outcome, start_error=start_error(exc)), hook)
        return
    stdout, stderr = Capture(output_cap), Capture(output_cap)
    groups = set() if running is None else running  # so a stop cut short can kill it
    groups.add(process.pid)

    def ended(timed_out: bool = False, stopped: bool = False) -> HookOutcome:
        code = process.returncode  # None: it outlived even SIGKILL (D state), and was let go
        return structs.replace(
            outcome,
            duration_s=trio.current_time() - started,
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            stdout=stdout.result(),
            stderr=stderr.result(),
            timed_out=timed_out,
            stopped=stopped,
        )

    try:
        with trio.move_on_after(hook.timeout_s) as limit:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_feed, process.stdin, given.stdin)
                nursery.start_soon(_drain, process.stdout, stdout)
                nursery.start_soon(_drain, process.stderr, stderr)
                await process.wait()
        if limit.cancelled_caught:
            await _stop(process)
    except BaseException:  # cancelled (the daemon is stopping), as a group or not
        with trio.CancelScope(shield=True):
            await _stop(process)
            await _close_pipes(process)
        report(ended(stopped=True), hook)
        raise
    finally:
        groups.discard(process.pid)
    await _close_pipes(process)
    report(ended(timed_out=limit.cancelled_caught), hook)


async def _feed(stream: trio.abc.SendStream | None, data: bytes) -> None:
    """Write the record to the hook's stdin and close it; a hook that reads none is fine."""
    assert stream is not None
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


async def _drain(stream: trio.abc.ReceiveStream | None, capture: Capture) -> None:
    assert stream is not None
    while chunk := await stream.receive_some(READ_CHUNK):
        capture.add(chunk)


async def _close_pipes(process: trio.Process) -> None:
    """Our ends of the pipes (a process outside the group may still hold the others)."""
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()


async def _stop(process: trio.Process) -> None:
    """SIGTERM to the run's process group, then SIGKILL once the leader is gone or the
    grace is over (for what is left of the group); the leader is reaped."""
    signal_group(process.pid, signal.SIGTERM)
    with trio.move_on_after(KILL_GRACE_S):
        await process.wait()
    signal_group(process.pid, signal.SIGKILL)
    with trio.move_on_after(KILL_GRACE_S):  # a process the kernel cannot kill (D state) is let go
        await process.wait()
