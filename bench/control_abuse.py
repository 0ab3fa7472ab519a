"""Control-socket abuse: does ``meshnode status`` still answer, and does a bulk publish finish?

Issue 7, findings 7 and 3. Finding 7: 64 idle control connections (the number
of regular slots) made every ``meshnode status`` fail with "too many clients",
and a watcher that overflowed and never read kept its slot for good. Finding
3: ``Client.publish_many`` of 100 values of 16,000 bytes stalled the client
and the daemon until the client's timeout, with 16 of 100 stored.
Goals: every ``status`` answers in every phase (``status_failures == 0``),
within a second even under abuse (``status_abused_max_ms < 1000``); the
overflowed watcher's slot is freed (``watcher_freed_s`` not null, about the
daemon's 10 s send timeout); the bulk publish stores all 100 in under 2 s
(``publish_large_s < 2``, ``publish_large_stored == 100``).

Set-up: one empty daemon. ``meshnode status --json`` (the CLI, a subprocess,
as a user runs it) is timed ``STATUS_RUNS`` times after ``WARMUP`` untimed
runs in each of three phases:

1. ``quiet``: no other client;
2. ``idle``: 64 connections that each answered a ``ping`` and then idle, and
   one more idling in the reserved slot;
3. ``idle_overflowed``: as 2, but one of the 64 is a watcher (4 KiB receive
   buffer) that never reads, overflowed by 6,000 publishes of 200 bytes.

Then, the idle clients gone, the watcher of phase 3 is waited for: the time
from the end of its flood until ``status`` shows it gone (polled every 0.5 s,
at most ``FREE_WAIT_S``). Last, ``publish_many`` of 100 values of 16,000 bytes
on a new ``Client`` (timeout ``PUBLISH_TIMEOUT_S``), timed, and the stored
values counted with ``query``. Every wait is bounded, so a daemon that stalls
gives failures, not a hang.

Prints the figures as one JSON line, last on stdout.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import child_env, emit, log, meshnode_executable, running_daemon, temp_dir

from meshnode.client import Client, ClientError
from meshnode.core.rpc import encode_request

IDLE_CLIENTS = 64  # the daemon's regular slots
STATUS_RUNS = 20
WARMUP = 2
STATUS_TIMEOUT_S = 20.0
FLOOD = 6_000
FREE_WAIT_S = 30.0
LARGE_VALUES = 100
LARGE_VALUE_BYTES = 16_000
PUBLISH_TIMEOUT_S = 15.0
GOAL_STATUS_MS = 1000.0
GOAL_PUBLISH_S = 2.0


def idle_client(socket_path: Path) -> socket.socket:
    """A connection the daemon has admitted (it answered a ping), left idle."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(str(socket_path))
        sock.sendall(encode_request(1, "ping", []))
        sock.recv(4096)
    except OSError:
        sock.close()
        raise
    return sock


def overflowed_watcher(socket_path: Path) -> socket.socket:
    """A watcher with a small receive buffer that never reads, flooded until it overflows."""
    watcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    watcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher.connect(str(socket_path))
    watcher.sendall(encode_request(1, "watch", [{"prefix": "flood/"}]))
    time.sleep(0.2)  # the watch is registered before the flood
    with Client(socket_path) as client:
        client.publish_many((f"flood/{n % 10}", "x" * 200, None) for n in range(FLOOD))
    return watcher


def time_status(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[str]]:
    """Run ``meshnode status --json`` ``runs`` times; return the times and the failures."""
    times: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        started = time.perf_counter()
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=STATUS_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            failures.append(f"no answer in {STATUS_TIMEOUT_S:.0f} s")
            continue
        if done.returncode == 0:
            times.append(time.perf_counter() - started)
        else:
            failures.append(done.stderr.strip())
    return times, failures


def phase(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    time_status(argv, env, WARMUP)
    times, failures = time_status(argv, env, STATUS_RUNS)
    figures: dict[str, Any] = {"failures": len(failures)}
    if times:
        figures["median_ms"] = round(statistics.median(times) * 1000, 1)
        figures["max_ms"] = round(max(times) * 1000, 1)
    shown = f"; first failure: {failures[0]}" if failures else ""
    log(f"{name}: {len(times)}/{STATUS_RUNS} answered, {figures}{shown}")
    return figures


def clients_now(socket_path: Path) -> int | None:
    try:
        with Client(socket_path, timeout=5) as client:
            return int(client.status()["clients"])
    except ClientError:
        return None


def wait_until_freed(socket_path: Path, flooded_at: float) -> float | None:
    """Seconds from ``flooded_at`` until only the asking connection is left, or None."""
    while time.monotonic() - flooded_at < FREE_WAIT_S:
        if clients_now(socket_path) == 1:
            return round(time.monotonic() - flooded_at, 1)
        time.sleep(0.5)
    return None


def publish_large(socket_path: Path) -> dict[str, Any]:
    items = [(f"large/{n:03d}", bytes([n]) * LARGE_VALUE_BYTES, None) for n in range(LARGE_VALUES)]
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    try:
        with Client(socket_path, timeout=PUBLISH_TIMEOUT_S) as client:
            client.publish_many(items)
        figures["publish_large_s"] = round(time.perf_counter() - started, 3)
    except ClientError as exc:
        figures["publish_large_s"] = None
        figures["publish_large_error"] = str(exc)
        log(f"publish_many failed after {time.perf_counter() - started:.1f} s: {exc}")
    with Client(socket_path) as client:
        stored = client.query(prefix="large/", limit=LARGE_VALUES)["records"]
    figures["publish_large_stored"] = len(stored)
    return figures


def main() -> None:
    results: dict[str, Any] = {}
    with temp_dir() as tmp:
        home, socket_path = tmp / "node", tmp / "s.sock"
        env = child_env(tmp)
        status = [meshnode_executable(), "status", "--json", "--socket", str(socket_path)]
        status += ["--data-dir", str(home)]
        with running_daemon(home, socket_path, env):
            results["quiet"] = phase("quiet", status, env)
            idle: list[socket.socket] = []
            try:
                idle += [idle_client(socket_path) for _ in range(IDLE_CLIENTS + 1)]
                results["idle"] = phase("idle", status, env)
                idle.pop(0).close()  # room for the watcher
                log(f"flooding a watcher that never reads with {FLOOD:,} publishes ...")
                watcher = overflowed_watcher(socket_path)
                flooded_at = time.monotonic()
                try:
                    results["idle_overflowed"] = phase("idle_overflowed", status, env)
                    for sock in idle:
                        sock.close()
                    results["watcher_freed_s"] = wait_until_freed(socket_path, flooded_at)
                    log(f"the overflowed watcher's slot freed after {results['watcher_freed_s']} s")
                finally:
                    watcher.close()
            except (OSError, ClientError) as exc:
                log(f"the daemon refused a connection: {exc}")
                results["setup_error"] = str(exc)
            finally:
                for sock in idle:
                    sock.close()
            results.update(publish_large(socket_path))
    abused = [results[p] for p in ("idle", "idle_overflowed") if p in results]
    results["status_failures"] = sum(
        results[p]["failures"] for p in ("quiet", "idle", "idle_overflowed") if p in results
    )
    maxima = [p["max_ms"] for p in abused if "max_ms" in p]
    results["status_abused_max_ms"] = max(maxima) if maxima else None
    met = (
        results["status_failures"] == 0
        and results["status_abused_max_ms"] is not None
        and results["status_abused_max_ms"] < GOAL_STATUS_MS
        and results.get("publish_large_s") is not None
        and results["publish_large_s"] < GOAL_PUBLISH_S
    )
    log(f"goals {'met' if met else 'MISSED'}: {json.dumps(results, sort_keys=True)}")
    emit(results)


if __name__ == "__main__":
    main()
