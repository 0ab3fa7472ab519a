"""The ``meshnode`` command: ``run`` starts the daemon, the rest drive it.

Every command except ``run`` is a thin client of the control socket and must
start fast: this module imports neither trio, zeroconf nor a crypto backend
(``tests/test_layering.py`` checks), and modules only some commands need are
imported inside those commands. Exit codes: 0 success, 1 the operation
failed (not found, daemon error), 2 bad input (nothing was stored), 3 no
daemon is running.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence

from meshnode import __version__
from meshnode.client import (
    Client,
    ClientError,
    DaemonNotRunning,
    RemoteError,
    Unencodable,
    config_commands,
)
from meshnode.client.exits import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DAEMON,
    EXIT_OK,
)
from meshnode.client.words import counted, size
from meshnode.core import durations
from meshnode.core.jsonview import dumps
from meshnode.core.nodeid import NodeIdError, decode_node_id
from meshnode.system import paths

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn


_INPUT_ERRORS = {"invalid-params", "unknown-method", "bad-request"}
OTHERS_LOOKED_AT = 100  # records under a key's prefix looked at to say who else has the key


class BadInput(Exception):
    """A command-line argument that cannot be used; nothing was sent."""


def _option_ms(option: str, text: str) -> int:
    """A duration option's milliseconds; BadInput that names the option."""
    try:
        return durations.parse_ms(text)
    except durations.DurationError as exc:
        raise BadInput(f"{option} {exc}") from None


def _ttl_ms(text: str) -> int:
    ms = _option_ms("--ttl", text)
    if ms > durations.MAX_TTL_MS:
        raise BadInput(f"--ttl must be at most 10 years (a record's longest life), got {text!r}")
    return ms


MAX_STDIN_VALUE = 16 * 1024  # meshnode.core.record.MAX_VALUE_BYTES, which pulls in nacl


def _stdin_value() -> str | bytes:
    """What stdin holds, as it is: text if it is UTF-8, else bytes (msgpack bin). Read no
    further than a value may go: ``publish k - < /dev/zero`` is refused, not held."""
    if sys.stdin is None:
        raise BadInput("publish - reads the value from stdin, and stdin is closed")
    data = sys.stdin.buffer.read(MAX_STDIN_VALUE + 1)
    if len(data) > MAX_STDIN_VALUE:
        raise BadInput(f"the value on stdin is over {MAX_STDIN_VALUE // 1024} KiB, a value's limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def check_author(text: str | None) -> str | None:
    if text is not None:
        try:
            decode_node_id(text)
        except NodeIdError as exc:
            raise BadInput(str(exc)) from None
    return text


def show_value(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


def _cell(value: Any) -> str:
    """A value as one cell of a tab-separated line: a string with a tab, a line break or
    another control character in it is quoted as JSON, so that every record stays one line
    of three cells (``echo note | meshnode publish k -`` stores the newline too); so is one
    that begins with a quote, which would read as such a quoted string."""
    if isinstance(value, str) and not value.startswith('"') and not _CONTROL.search(value):
        return value
    quoted = dumps(value)  # escapes what is below U+0020; the C1 controls are escaped here
    return _C1.sub(lambda c: f"\\u{ord(c[0]):04x}", quoted)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_C1 = re.compile("[\x7f-\x9f]")


# -- commands -----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import gc

    # The daemon's imports make some 60,000 objects that live as long as it does. Left
    # on, the collector walks them again and again while they are made: a tenth of the
    # start-up. Frozen, they are out of every later collection too; so is the little
    # garbage made meanwhile (about 1 MB, the parser among it), once, never growing:
    # collecting it first would cost more start-up than it frees.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        from meshnode.runtime.daemon import DaemonConfig, StartupError, run
        from meshnode.system import config
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()

    inputs = config_commands.inputs_from_args(args)
    home = inputs.data_dir
    _fail_if_not_a_directory(home)
    try:
        effective = config.load(inputs)
    except config.ConfigError as exc:
        print(f"meshnode: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        socket_path = paths.socket_path(home, args.socket, os.environ)
        run(
            DaemonConfig(
                home,
                socket_path,
                effective.settings,
                log_level=effective.log_level,
                inputs=inputs,
                effective=effective,
            )
        )
    except (StartupError, paths.PathError) as exc:
        print(f"meshnode: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_peers(client: Client, args: argparse.Namespace) -> int:
    if args.bans:
        return _rows(client.call("bans"), args, _ban_line, "no node is banned")
    # "kind" tells the two apart in one stream of JSON lines (--all --json).
    sessions = [{**peer, "kind": "session"} for peer in client.call("peers")]
    _rows(sessions, args, _peer_line, "no peer is connected")
    if args.all:
        if not args.json:
            print("known addresses:")
        addresses = [{**known, "kind": "address"} for known in client.call("addresses")]
        _rows(addresses, args, _address_line, "  none known")
    return EXIT_OK


SHORT_NODE_ID = 14  # characters of a node id in peers --all: "node1" and 9 more


def _address_line(known: dict[str, Any]) -> str:
    wait = known["next_dial_s"]
    when = "" if wait is None else ("  dial now" if wait == 0 else f"  next dial in {wait:g} s")
    failures = f"  {known['failures']} failed" if known["failures"] else ""
    why = f": {known['last_failure']}" if failures and known.get("last_failure") else ""
    node = known.get("node_id")  # the start of it: enough to find its session above
    node = f"{node[:SHORT_NODE_ID]}…" if node else "-"
    line = (
        f"  {known['address']:<32} {known['source']:<8} {known['state']:<10}"
        f" {node:<{SHORT_NODE_ID + 1}}{failures}{why}"
    )
    return line + when


def _rows(
    rows: list[dict[str, Any]], args: argparse.Namespace, line: Callable[..., str], empty: str
) -> int:
    """One line per row (a JSON object with --json); words, not silence, when there are none."""
    for row in rows:
        print(dumps(row) if args.json else line(row))
    if not rows and not args.json:
        print(empty)
    return EXIT_OK


def _peer_line(peer: dict[str, Any]) -> str:
    return (
        f"{peer['node_id']}  {peer['address']:<24} {peer['direction']:<3}"
        f" since {_when(peer['since_ms'])}  bytes in/out {peer['bytes_in']}/{peer['bytes_out']}"
        f"  records in/out {peer['records_in']}/{peer['records_out']}"
        + (f"  to fetch {peer['to_fetch']:,}" if peer.get("to_fetch") else "")
    )


def _ban_line(ban: dict[str, Any]) -> str:
    return (
        f"{ban['node_id']}  {ban['retry_after']} s left  since {_when(ban['since_ms'])}"
        f"  {ban['reason']}"
    )


def cmd_unban(client: Client, args: argparse.Namespace) -> int:
    client.call("unban", node_id=check_author(args.node_id))
    if args.json:
        print(dumps({"node_id": args.node_id, "unbanned": True}))
    else:
        print(f"lifted the ban on {args.node_id}")
    return EXIT_OK


def _when(ms: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def cmd_id(client: Client, args: argparse.Namespace) -> int:
    try:
        info = client.node_id()
    except DaemonNotRunning:
        offline = _id_from_key_file(paths.data_dir(args.data_dir, os.environ))
        if offline is None:  # the node has never run: no daemon, and no id yet
            raise
        info = offline
    print(dumps(info) if args.json else info["node_id"])
    return EXIT_OK


def _id_from_key_file(home: Path) -> dict[str, str] | None:
    """What the daemon's ``id`` would answer, read from ``identity.key``; None if absent."""
    from meshnode.system import datadir

    try:
        identity = datadir.load_identity(home)
    except datadir.DataDirError as exc:
        fail(EXIT_FAILED, str(exc))
    return None if identity is None else identity.public_names()


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    from meshnode.client.sync_commands import sync_line

    info = client.status()
    if args.json:
        print(dumps(info))
        return EXIT_OK
    rows = [
        ("node", f"{info['node_id']}"),
        ("fingerprint", info["fingerprint"]),
        ("version", info["version"]),
        ("pid", info["pid"]),
        ("uptime", f"{info['uptime_s']:.0f} s"),
        (
            "records",
            f"{info['records']:,} ({info['own_records']:,} own,"
            f" {info['tombstones']:,} deleted, {counted(info['authors'], 'author')})",
        ),
        (
            "store",
            f"{size(info['store_bytes'])} on disk; records {size(info['record_bytes'])} of"
            f" {size(info['store_limit_bytes'])}",
        ),
        ("peers", f"{info['peers']} connected{_overlay_part(info.get('overlay'))}"),
        *([("sync", sync_line(info["sync"]))] if "sync" in info else []),
        ("listening", ", ".join(info["listening"]) or "(not listening)"),
        ("discovery", _discovery_line(info.get("discovery", {}))),
        ("data dir", info["data_dir"]),
        ("socket", info["socket"]),
    ]
    rows += [("DAMAGE", warning) for warning in info.get("store_warnings", [])]
    for name, value in rows:
        print(f"{name + ':':<13}{value}")
    return EXIT_OK


def cmd_doctor(client: Client, args: argparse.Namespace) -> int:
    from meshnode.client.doctor import diagnose, summary

    checks = diagnose(client.status(), client.call("addresses"))
    for check in checks:
        if args.json:
            print(dumps(check.as_json()))
        else:
            print(f"{'ok' if check.ok else 'PROBLEM':<8}{check.check:<11}{check.verdict}")
            if check.hint:
                print(f"{'':<19}try: {check.hint}")
    if not args.json:  # JSON lines stay one check each; the exit code says the same
        print(summary(checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def _overlay_part(overlay: dict[str, int] | None) -> str:
    if not overlay:
        return ""
    return (
        f" (overlay degree {overlay['degree']}: {overlay['outbound']} dialled of"
        f" {overlay['outbound_slots']} slots, {overlay['inbound']} in; at most"
        f" {overlay['max_peers']})"
    )


def _discovery_line(discovery: dict[str, Any]) -> str:
    if not discovery.get("mdns"):
        return "mDNS off"
    if discovery.get("error"):
        return f"mDNS: {discovery['error']}"
    used = ", ".join(discovery.get("interfaces", [])) or "no interface"
    skipped = ", ".join(
        f"{n} ({why})" for n, why in discovery.get("skipped_interfaces", {}).items()
    )
    seen = discovery.get("services", 0)
    line = f"mDNS on {used}{f', not on {skipped}' if skipped else ''};"
    line += f" {counted(seen, 'service')} of this network seen"
    ignored = discovery.get("ignored_services", {})
    if ignored:
        line += "; ignored: " + ", ".join(f"{why} {n}" for why, n in sorted(ignored.items()))
    return line


def cmd_publish(client: Client, args: argparse.Namespace) -> int:
    if args.json_value is not None:
        if args.value is not None:
            raise BadInput("give the value either as an argument or with --json-value, not both")
        try:
            import json

            value = json.loads(args.json_value)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise BadInput(f"--json-value is not valid JSON: {exc}") from None
    elif args.value == "-":
        value = _stdin_value()
    elif args.value is not None:
        value = args.value
    else:
        raise BadInput("publish needs a value (or --json-value JSON, or - for stdin)")
    ttl_ms = None if args.ttl is None else _ttl_ms(args.ttl)
    record = client.publish(args.key, value, ttl_ms=ttl_ms)
    if args.json:
        print(dumps(record))
    else:
        print(f"{record['id']} seq {record['seq']}")
    return EXIT_OK


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    author = check_author(args.author)
    try:
        record = client.get(args.key, author=author)
    except RemoteError as exc:
        if exc.code != "not-found" or author is not None:
            raise
        # "query lists it, get says not found": get reads this node's own records by default.
        raise RemoteError(exc.code, exc.message + _held_by_others(client, args.key)) from None
    if args.json:
        print(dumps(record))
    else:  # the value as it is, and a line break after it unless it ends with one
        shown = show_value(record["value"])
        sys.stdout.write(shown if shown.endswith("\n") else shown + "\n")
    return EXIT_OK


def _held_by_others(client: Client, key: str) -> str:
    """Where another author's ``key`` is stored here, how to get it; else nothing."""
    import shlex  # the error path only

    found = client.query(prefix=key, limit=OTHERS_LOOKED_AT)["records"]
    authors = [r["author"] for r in found if r["key"] == key]
    if not authors:
        return ""
    count = f"{len(authors)} other nodes have it" if len(authors) > 1 else "another node has it"
    return (
        f" among this node's own records; {count}:"
        f" meshnode get {shlex.quote(key)} --author {authors[0]}"
    )


def cmd_query(client: Client, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise BadInput("--limit must be at least 1")
    if args.since_seq is not None and args.since_seq < 0:
        raise BadInput("--since-seq must not be negative")
    answer = client.query(
        prefix=args.prefix,
        author=check_author(args.author),
        limit=args.limit,
        include_deleted=args.deleted,
        min_seq=args.since_seq or 0,
    )
    for record in answer["records"]:
        print(dumps(record) if args.json else _line(record))
    if answer["more"] and not args.json:
        print("(more records match; narrow the prefix or raise --limit)", file=sys.stderr)
    return EXIT_OK


def _line(record: dict[str, Any]) -> str:
    value = "(deleted)" if record["deleted"] else _cell(record["value"])
    return f"{record['key']}\t{value}\t{record['author']}"


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    record = client.delete(args.key)
    print(dumps(record) if args.json else f"{record['id']} seq {record['seq']} (deleted)")
    return EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    if args.exec is not None:
        return _watch_exec(client, args)
    if args.exec_timeout is not None or args.exec_concurrency is not None:
        raise BadInput("--exec-timeout and --exec-concurrency go with --exec")
    try:
        for event in client.watch(prefix=args.prefix, author=check_author(args.author)):
            if args.json:
                print(dumps(event), flush=True)
            else:
                print(f"{event['event']}\t{_line(event['record'])}", flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _watch_exec(client: Client, args: argparse.Namespace) -> int:
    """``watch --exec CMD``: run CMD for each record (``meshnode.client.hooks``)."""
    from meshnode.client.hooks import hook_from_args, watch_and_run
    from meshnode.system.hookspec import (
        DEFAULT_HOOK_CONCURRENCY,
        MAX_HOOK_CONCURRENCY,
        HookSpecError,
    )

    if args.json:
        raise BadInput("--json does not go with --exec: the command gets each record as JSON")
    concurrency = args.exec_concurrency
    if concurrency is None:
        concurrency = DEFAULT_HOOK_CONCURRENCY
    if not 1 <= concurrency <= MAX_HOOK_CONCURRENCY:
        raise BadInput(f"--exec-concurrency is 1 to {MAX_HOOK_CONCURRENCY}")
    timeout_ms = (
        None if args.exec_timeout is None else _option_ms("--exec-timeout", args.exec_timeout)
    )
    try:
        hook = hook_from_args(args.exec, None if timeout_ms is None else timeout_ms / 1000)
    except HookSpecError as exc:
        raise BadInput(str(exc)) from None
    events = client.watch(prefix=args.prefix, author=check_author(args.author))
    watch_and_run(events, hook, concurrency, str(client.socket_path))
    return EXIT_OK


# -- argument parsing ---------------------------------------------------------


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter with the width found cheaply.

    Left to itself, every formatter (argparse makes one per ``add_argument``)
    imports ``shutil`` to ask for the terminal width, which costs the CLI
    tens of milliseconds on each start.
    """

    def __init__(self, prog: str) -> None:
        try:
            width = os.get_terminal_size().columns
        except OSError:
            width = 80
        super().__init__(prog, width=max(width - 2, 40))


class _Parser(argparse.ArgumentParser):
    """The top-level parser, saying which command was meant when the one typed is unknown."""

    def error(self, message: str) -> NoReturn:
        typed = re.search(r"invalid choice: '([^']*)'", message)
        if typed is not None:
            import difflib  # the error path only

            close = difflib.get_close_matches(typed[1], COMMANDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{self.prog} --help lists them"
            message = f"unknown command {typed[1]!r}; {hint}"
        super().error(message)


def _node_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="the node's home (default: $MESHNODE_HOME, else $XDG_DATA_HOME/meshnode)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help="the control socket (default: $MESHNODE_SOCKET, else derived from the data dir)",
    )


COMMANDS = (
    *("run", "config", "network", "id", "peers", "unban", "status", "doctor"),
    *("publish", "get", "query", "delete", "watch", "sync", "export", "import", "service"),
)  # in the order ``meshnode --help`` lists them


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, a parser that knows that command alone.

    A command line parsed by the parser of the one command it names comes out the same
    (``tests/test_cli_parser.py``), and building every other command's parser would be a
    sixth of a CLI call's start.
    """

    def wanted(*names: str) -> bool:
        return only is None or only in names

    # --data-dir and --socket may come before or after the command; SUPPRESS keeps a
    # command's unset option from overwriting one given before the command.
    common = argparse.ArgumentParser(add_help=False, formatter_class=_Formatter)
    _node_options(common, argparse.SUPPRESS)
    reading = argparse.ArgumentParser(add_help=False, formatter_class=_Formatter)
    reading.add_argument("--json", action="store_true", help="print JSON, one object per line")

    parser = _Parser(
        prog="meshnode",
        description="A serverless, local-first mesh node.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"meshnode {__version__}")
    _node_options(parser, None)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
    )

    if wanted("run"):
        run = sub.add_parser(
            "run",
            parents=[common],
            help="run the node daemon in the foreground",
            formatter_class=_Formatter,
        )
        config_commands.add_run_options(run)  # --config, --log-level, --listen, --peer, ...
        run.set_defaults(handler=None)
    if wanted("config", "network"):
        config_commands.add_commands(sub, [common], _Formatter)

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common, reading], help=help_text, formatter_class=_Formatter
        )
        p.set_defaults(handler=handler)
        return p

    _add_node_commands(command, wanted)
    _add_record_commands(command, wanted)
    # Each command module is imported only by a line that may name one of its commands.
    if wanted("sync"):
        from meshnode.client import sync_commands

        sync_commands.add_commands(sub, [common, reading], _Formatter)
    if wanted("export", "import"):
        from meshnode.client import bundle_commands

        bundle_commands.add_commands(sub, [common, reading], _Formatter)
    if wanted("service"):
        from meshnode.client import service_commands

        service_commands.add_commands(sub, [], _Formatter)  # install|uninstall: no node options
    return parser


def _add_node_commands(
    command: Callable[..., argparse.ArgumentParser], wanted: Callable[..., bool]
) -> None:
    if wanted("id"):
        command("id", cmd_id, "print this node's id")
    if wanted("peers"):
        p = command("peers", cmd_peers, "list connected peers")
        shown = p.add_mutually_exclusive_group()  # the bans are a list of their own
        shown.add_argument("--bans", action="store_true", help="list banned nodes instead, and why")
        shown.add_argument(
            "--all",
            action="store_true",
            help="also every known address: its source (static, mdns, exchange, hello), state,"
            " failures and why the last one failed",
        )
    if wanted("unban"):
        p = command("unban", cmd_unban, "lift a ban on a node now")
        p.add_argument("node_id", metavar="ID", help="the banned node's id")
    if wanted("status"):
        command("status", cmd_status, "show the node's state")
    if wanted("doctor"):
        command("doctor", cmd_doctor, "explain why this node sees no peers, or say all is well")


def _add_record_commands(
    command: Callable[..., argparse.ArgumentParser], wanted: Callable[..., bool]
) -> None:
    if wanted("publish"):
        p = command("publish", cmd_publish, "sign and store a record")
        p.add_argument("key", help="the record's key, such as profile/name")
        p.add_argument("value", nargs="?", help="the value as a string; - reads it from stdin")
        p.add_argument("--json-value", metavar="JSON", help="a structured value, as JSON")
        p.add_argument(
            "--ttl", metavar="DURATION", help="expire after DURATION (45s, 30m, 1.5h, 2d)"
        )
    if wanted("get"):
        p = command("get", cmd_get, "print a record's value")
        p.add_argument("key")
        p.add_argument(
            "--author", metavar="ID", help="another node's record (default: this node's)"
        )
    if wanted("query"):
        p = command("query", cmd_query, "list records")
        p.add_argument("--prefix", default="", help="only keys starting with this")
        p.add_argument("--author", metavar="ID", help="only this node's records")
        p.add_argument("--limit", type=int, metavar="N", help="at most N records (default 1000)")
        p.add_argument("--deleted", action="store_true", help="include deletions")
        p.add_argument("--since-seq", type=int, metavar="SEQ", help="only records with seq >= SEQ")
    if wanted("delete"):
        p = command("delete", cmd_delete, "delete one of this node's records (signed tombstone)")
        p.add_argument("key")
    if wanted("watch"):
        _watch_options(
            command("watch", cmd_watch, "print records as they are stored, until interrupted")
        )


def _watch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--author", metavar="ID", help="only this node's records")
    p.add_argument(
        "--exec",
        metavar="CMD",
        help="run CMD for each record instead of printing it: plain words run without a"
        ' shell, shell syntax under sh -c; the record is only in "$MESHNODE_KEY",'
        ' "$MESHNODE_VALUE", ... (quote them) and JSON on stdin',
    )
    p.add_argument(
        "--exec-timeout",
        metavar="DURATION",
        help="stop a run after DURATION: seconds, or 500ms, 5s, 2m (default 10s)",
    )
    p.add_argument(
        "--exec-concurrency", type=int, metavar="N", help="at most N runs at once (default 4)"
    )


def fail(code: int, message: str) -> NoReturn:
    print(f"meshnode: {message}", file=sys.stderr)
    raise SystemExit(code)


def _fail_if_not_a_directory(home: Path) -> None:
    if home.exists() and not home.is_dir():
        said = f"the data dir {home} is a file, not a directory; give --data-dir a directory"
        fail(EXIT_BAD_INPUT, said)


def _fail_if_held_elsewhere(args: argparse.Namespace, socket_path: object) -> None:
    """A daemon that holds the data dir but not this socket: say so, not "start one"."""
    from meshnode.system.datadir import DataDirLock  # the error path only: it costs a crypto import

    home = paths.data_dir(args.data_dir, os.environ)
    pid = DataDirLock.holder(home)
    if pid is None:
        return
    age = _age_s(pid)
    if age is not None and age < STARTING_S:  # meshnode run & then at once meshnode status
        fail(
            EXIT_NO_DAEMON,
            f"a meshnode daemon (pid {pid}) is running on {home} but does not answer at"
            f" {socket_path}: started {age:.1f} s ago, it may still be starting (try again in a"
            " moment); else give the --socket it was started with",
        )
    fail(
        EXIT_NO_DAEMON,
        f"a meshnode daemon (pid {pid}) is running on {home}, but not at {socket_path};"
        " give the --socket it was started with",
    )


STARTING_S = 10.0  # a daemon younger than this that does not answer yet may just be starting


def _age_s(pid: str) -> float | None:
    """Seconds since process ``pid`` started (Linux: /proc), or None where that cannot be told."""
    try:
        with open(f"/proc/{int(pid)}/stat") as stat, open("/proc/uptime") as uptime:
            started = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, in ticks
            since_boot = float(uptime.read().split()[0])
        return since_boot - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


_NODE_OPTIONS = ("--data-dir", "--socket")  # the options that may come before the command
_NODE_OPTIONS_JOINED = tuple(f"{option}=" for option in _NODE_OPTIONS)  # --socket=PATH


def _named_command(words: Sequence[str]) -> str | None:
    """The command a command line names, if it names a known one past nothing but node
    options; else None, and the whole parser explains what it makes of the line."""
    rest = iter(words)
    for word in rest:
        if word in _NODE_OPTIONS:
            next(rest, None)
        elif not word.startswith(_NODE_OPTIONS_JOINED):
            return word if word in COMMANDS else None
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, letting ``publish KEY --ttl 3h VALUE`` put its value after an option.

    argparse fills an optional positional before it sees later words, so a
    value given after ``--ttl`` comes back unrecognised; it is the value.
    """
    words = _negative_durations_joined(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(_named_command(words))
    args, extras = parser.parse_known_args(words)
    if args.command == "publish" and args.value is None and len(extras) == 1:
        args.value = extras.pop()
    if extras:
        inner = _innermost(parser, args)
        said = f"unrecognized arguments: {' '.join(extras)}"
        command = getattr(args, "command", None)
        before = words[: words.index(command)] if command in words else []
        if any(e in before and e.split("=")[0] in inner._option_string_actions for e in extras):
            # meshnode --json status: its own option, given before the command
            path = inner.prog.removeprefix(parser.prog).strip()  # "config show"
            said += f" (options of {path} go after it: meshnode {path} {' '.join(extras)})"
        inner.error(said)
    return args


_DURATION_OPTIONS = ("--ttl", "--exec-timeout")


def _negative_durations_joined(words: list[str]) -> list[str]:
    """``--ttl -5m`` as ``--ttl=-5m``: argparse takes ``-5m`` for an unknown option and says
    ``--ttl`` lacks its argument, where the user needs to hear that a duration is positive.
    Not past ``--``: what follows it is the user's words, as they are."""
    joined: list[str] = []
    for n, word in enumerate(words):
        if word == "--":
            return joined + words[n:]
        if joined and joined[-1] in _DURATION_OPTIONS and re.match(r"-[\d.]", word):
            joined[-1] = f"{joined[-1]}={word}"
        else:
            joined.append(word)
    return joined


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The parser of the command (and action) ``args`` names: an error shows its usage,
    not the whole program's."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = None if sub is None else sub.choices.get(getattr(args, sub.dest, None) or "")
        if chosen is None:
            return parser
        parser = chosen


# A write that failed for want of room: a full SD card under `> peers.json`. Only writes
# fail so, never reads, so the words "cannot write" are true wherever it happened.
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        try:
            return _dispatch(args)
        finally:  # here, not at exit, where a failure would be a traceback; after fail() too
            if sys.stdout is not None:  # None when the process was started with fd 1 closed
                sys.stdout.flush()
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head); nothing left to say
        return EXIT_OK
    except OSError as exc:
        if exc.errno not in _WRITE_FAILURES:
            raise
        _drop_unwritten_output()
        fail(EXIT_FAILED, f"cannot write: {exc.strerror}")


def _drop_unwritten_output() -> None:
    """Let the interpreter exit without trying the failed write once more."""
    with contextlib.suppress(OSError, AttributeError):  # nowhere to point it, or no stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "offline", None) is not None:
        return int(args.offline(args))
    if args.handler is None:
        try:
            return cmd_run(args)
        except KeyboardInterrupt:  # while it starts (or closes): when it runs, ^C stops it
            print("meshnode: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    try:
        with Client(paths.client_socket(args.data_dir, args.socket, os.environ)) as client:
            return int(args.handler(client, args))
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except paths.PathError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except DaemonNotRunning as exc:
        _fail_if_not_a_directory(paths.data_dir(args.data_dir, os.environ))
        _fail_if_held_elsewhere(args, exc.socket_path)
        start = "meshnode run" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
        fail(
            EXIT_NO_DAEMON,
            f"no meshnode daemon is running at {exc.socket_path}; start one with: {start}",
        )
    except RemoteError as exc:
        fail(EXIT_BAD_INPUT if exc.code in _INPUT_ERRORS else EXIT_FAILED, exc.message)
    except Unencodable as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except ClientError as exc:
        _fail_if_not_a_directory(paths.data_dir(args.data_dir, os.environ))  # a socket in a file
        fail(EXIT_FAILED, str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
