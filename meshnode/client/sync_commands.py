"""``meshnode sync``: how far this node is from holding what its peers offer, and waiting for it.

``meshnode sync`` prints the state once. ``meshnode sync --wait`` asks the
daemon to reconcile with every peer now (``sync {start: true}``; the daemon
keeps each session to one round per few seconds however often it is asked)
and polls it until the node is caught up: every connected peer finished a
reconciliation round of this node's since the wait began (or since its session
opened, if later), and nothing is left to fetch from any. It exits 0 then, 1
when ``--timeout`` comes first (saying what was missing), and 0 at once when
no peer is connected, since there is nothing to catch up with: ``--peers N``
first waits for N connected peers (within the same timeout). A daemon that is
still starting is waited for, up to the timeout (10 s without one).
"""

from __future__ import annotations

import argparse
import sys
import time

from meshnode.client.exits import EXIT_FAILED, EXIT_OK
from meshnode.client.words import counted
from meshnode.core.jsonview import dumps

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TextIO

    from meshnode.client import Client
    from meshnode.client.progress import Progress

POLL_INTERVAL = 0.2  # seconds between two looks at the daemon
RESTART_EVERY = 1.0  # seconds between two asks to reconcile, while not caught up
DAEMON_START_S = 10.0  # a daemon not yet answering is waited for this long, or to --timeout


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
    formatter_class: type[argparse.HelpFormatter],
) -> None:
    p = sub.add_parser(
        "sync",
        parents=list(parents),
        help="show what is left to fetch from peers; --wait until caught up",
        formatter_class=formatter_class,
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="reconcile with every peer now and wait until nothing is left to fetch",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="give up after S seconds, exit 1 (implies --wait; default: as long as it takes)",
    )
    p.add_argument(
        "--peers",
        type=_count,
        default=0,
        metavar="N",
        help="first wait for N connected peers (implies --wait; default 0: none, exit 0)",
    )
    p.set_defaults(handler=cmd_sync)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("a timeout must be a positive number of seconds")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of peers: {text!r}")
    return int(text)


def cmd_sync(client: Client, args: argparse.Namespace) -> int:
    if not (args.wait or args.timeout is not None or args.peers):
        state = client.call("sync")
        if args.json:
            _out(dumps(state))
            return EXIT_OK
        _out(sync_line(state))
        for session in state["sessions"]:
            _out("  " + _session_line(session))
        return EXIT_OK
    return _wait(client, args)


def sync_line(summary: dict[str, Any]) -> str:
    """What ``status`` and ``sync`` say of a node's catch-up, in one line."""
    from meshnode.client.progress import duration

    peers = summary["peers"]
    if not peers:
        return "no peers connected"
    to_fetch, reconciling = summary["to_fetch"], summary["peers_reconciling"]
    if to_fetch:
        fetching = summary["peers_fetching"]
        line = f"catching up: {to_fetch:,} records to fetch from {counted(fetching, 'peer')}"
        if reconciling:
            line += " so far (still reconciling: more may be found)"
        if summary["rate"]:
            line += f", {summary['rate']:,.0f}/s"
        if summary["eta_s"] is not None:
            line += f", about {duration(summary['eta_s'])} left"
        return line
    synced = summary["peers_synced"]
    if synced == peers:
        return f"in sync with {counted(peers, 'peer')}{_held_back(summary)}"
    if reconciling:
        line = f"reconciling with {counted(reconciling, 'peer')}"
        return f"{line}; in sync with {synced} of {peers}" if synced else line
    waiting = counted(peers - synced, "peer")
    if not synced:
        return f"nothing to fetch so far; not yet reconciled with {waiting} (meshnode sync --wait)"
    return (
        f"nothing to fetch; in sync with {synced} of {counted(peers, 'peer')}, not yet"
        f" reconciled with {'the other' if peers - synced == 1 else f'the other {waiting}'}"
        " (meshnode sync --wait)"
    )


def _held_back(summary: dict[str, Any]) -> str:
    """What the store's quotas kept out, if anything: said, or "in sync" would hide it.

    A count of refusals, not of records: a record a peer sends again is refused again."""
    refused = summary.get("refused", 0)
    if not refused:
        return ""
    return f" (the store's quotas refused records {counted(refused, 'time')}: store_max_*)"


def _session_line(session: dict[str, Any]) -> str:
    from meshnode.client.progress import duration

    if session["to_fetch"]:
        eta = session["eta_s"]
        left = "" if eta is None else f", about {duration(eta)} left"
        state = f"{session['to_fetch']:,} to fetch, {session['rate']:,.0f}/s{left}"
        if session["reconciling"]:
            state += " (still reconciling)"
    elif session["reconciling"]:
        state = "reconciling"
    elif session["synced"]:
        state = "in sync"
    else:
        state = "not reconciled with yet"
    return f"{session['node_id']}  {session['address']:<24} {state}"


def _wait(client: Client, args: argparse.Namespace) -> int:
    from meshnode.client.progress import Progress

    began = time.monotonic()
    deadline = began + args.timeout if args.timeout is not None else float("inf")
    progress = Progress(sys.stderr)
    until = deadline if args.timeout is not None else began + DAEMON_START_S
    state = _first_answer(client, until)
    asked = time.monotonic()
    baseline = {_key(s): s["reconcile_rounds_finished"] for s in state["sessions"]}
    try:
        while True:
            sessions = state["sessions"]
            behind = [s for s in sessions if not _caught_up(s, baseline)]
            enough = len(sessions) >= args.peers
            if enough and not sessions:
                progress.close()
                return _done(args, state, "no peers connected: nothing to catch up with")
            if enough and not behind:
                progress.close()
                in_sync = f"in sync with {counted(len(sessions), 'peer')}{_held_back(state)}"
                return _done(args, state, in_sync)
            now = time.monotonic()
            if now >= deadline:
                progress.close()
                return _timed_out(args, state, behind, now - began)
            if not args.json:
                _show(progress, state, behind, enough, args.peers)
            time.sleep(min(POLL_INTERVAL, max(deadline - now, 0.0)))
            start = time.monotonic() - asked >= RESTART_EVERY
            state = client.call("sync", start=start)
            if start:
                asked = time.monotonic()
    finally:
        progress.close()


def _first_answer(client: Client, until: float) -> dict[str, Any]:
    """The daemon's first sync state, waiting ``until`` for a daemon that is starting: a
    script may run ``meshnode run &`` and ``meshnode sync --wait`` one after the other."""
    from meshnode.client import DaemonNotRunning

    said = False
    while True:
        try:
            return client.call("sync", start=True)  # type: ignore[no-any-return]
        except DaemonNotRunning:
            if time.monotonic() >= until:
                raise
            if not said:
                waiting = f"meshnode: waiting for a daemon to answer at {client.socket_path}"
                _out(waiting, sys.stderr)
                said = True
            time.sleep(POLL_INTERVAL / 4)


def _key(session: dict[str, Any]) -> tuple[str, int]:
    """One session: a peer that reconnects gets a new one, with its rounds counted afresh."""
    return session["node_id"], session["since_ms"]


def _caught_up(session: dict[str, Any], baseline: dict[tuple[str, int], int]) -> bool:
    rounds = session["reconcile_rounds_finished"]
    return not session["to_fetch"] and rounds > baseline.get(_key(session), 0)


def _show(
    progress: Progress,
    state: dict[str, Any],
    behind: list[dict[str, Any]],
    enough: bool,
    wanted: int,
) -> None:
    if not enough:
        have = len(state["sessions"])
        progress.say(f"waiting for {counted(wanted, 'peer')} to connect ({have} so far)")
    elif state["to_fetch"] and state["peers_reconciling"]:  # the total is not known yet
        note = f"{state['to_fetch']:,} found to fetch so far, still reconciling"
        progress.bar(state["fetched"], None, rate=state["rate"], note=note)
    elif state["to_fetch"]:
        done = state["fetched"]
        progress.bar(done, done + state["to_fetch"], rate=state["rate"], eta_s=state["eta_s"])
    else:
        progress.say(f"reconciling with {counted(len(behind), 'peer')}")


def _done(args: argparse.Namespace, state: dict[str, Any], line: str) -> int:
    _out(dumps({**state, "caught_up": True}) if args.json else line)
    return EXIT_OK


def _timed_out(
    args: argparse.Namespace, state: dict[str, Any], behind: list[dict[str, Any]], waited: float
) -> int:
    if args.json:
        _out(dumps({**state, "caught_up": False}))
    missing = []
    if len(state["sessions"]) < args.peers:
        missing.append(f"{len(state['sessions'])} of {counted(args.peers, 'peer')} connected")
    fetching = [s for s in behind if s["to_fetch"]]
    if fetching:
        to_fetch = sum(s["to_fetch"] for s in fetching)
        missing.append(f"{to_fetch:,} records still to fetch from {counted(len(fetching), 'peer')}")
    unreconciled = [s for s in behind if not s["to_fetch"]]
    if unreconciled:
        names = ", ".join(s["address"] for s in unreconciled)
        missing.append(f"no round finished with {counted(len(unreconciled), 'peer')} ({names})")
    _out(f"meshnode: not caught up after {waited:.0f} s: {'; '.join(missing)}", sys.stderr)
    return EXIT_FAILED


def _out(line: str, stream: TextIO | None = None) -> None:
    """One line of the command's output (stdout unless told), as ``print`` would write it."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()
