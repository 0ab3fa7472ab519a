"""``meshnode config`` and ``meshnode network``: the configuration in force, and invites.

Each command asks a running daemon first (control methods ``config`` and
``reload``, protocol/control.md) and otherwise reads the files itself, exactly as
``meshnode run`` would with the same flags and environment, so they all work
with no daemon. The network key itself never crosses the control socket:
``network show --reveal`` reads it from the file the daemon names, which only
those allowed to read that file can do.

Imported by ``meshnode.client.cli`` at start, so its top level imports only
what every command needs anyway; the configuration module, ``secrets``,
``json`` and ``segno`` are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from meshnode.client import Client, ClientError, DaemonNotRunning, RemoteError
from meshnode.client.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NO_DAEMON, EXIT_OK
from meshnode.core.jsonview import dumps
from meshnode.core.netkey import (
    NETWORK_KEY_SIZE,
    NetworkKeyError,
    decode_network_key,
    encode_network_key,
)
from meshnode.system import paths

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from meshnode.system.config import Effective, Inputs

# The exit codes of meshnode.client.cli, which imports this module.
_INPUT_ERRORS = {"invalid-params", "unknown-method", "bad-request", "config-error"}
LOG_LEVELS = ("debug", "info", "warning", "error")  # as meshnode.system.config.LOG_LEVELS


class CommandFailed(Exception):
    """A command that cannot go on; ``code`` is its exit code, the message says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- the options `meshnode run` shares with `config show` ------------------------------


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file (default: $MESHNODE_CONFIG, else"
        " $CONFIGURATION_DIRECTORY/config.toml, else $XDG_CONFIG_HOME/meshnode/config.toml)",
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The flags that override the configuration (``meshnode run`` and ``config show``)."""
    add_config_option(parser)
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,  # --log-level DEBUG, as other tools take it
        help="how much to log to stderr (default: log_level in the config, else info)",
    )
    parser.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="accept peers here, instead of 'listen' (repeatable; default :7744, every"
        " interface, IPv4 and IPv6)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="keep a connection to this peer too, besides 'peers' (repeatable)",
    )
    parser.add_argument(
        "--no-mdns",
        action="store_true",
        help="do not announce or look for peers on the local link (also 'mdns' in the config)",
    )
    parser.add_argument(
        "--network-key",
        metavar="KEY",
        help="join the mesh of this key (mesh1...; default $MESHNODE_NETWORK_KEY, else"
        " network_key in the config, else the public network)",
    )


def inputs_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Inputs:
    """What the command line and the environment say, for ``meshnode.system.config.load``."""
    from meshnode.system.config import Inputs

    env = dict(os.environ if env is None else env)
    return Inputs(
        data_dir=paths.data_dir(args.data_dir, env),
        config_file=getattr(args, "config", None),
        listen=getattr(args, "listen", None),
        peers=tuple(getattr(args, "peer", None) or ()),
        network_key=getattr(args, "network_key", None),
        mdns=False if getattr(args, "no_mdns", False) else None,
        log_level=getattr(args, "log_level", None),
        env=env,
    )


def _load(args: argparse.Namespace) -> Effective:
    from meshnode.system import config

    try:
        effective = config.load(inputs_from_args(args))
    except config.ConfigError as exc:
        raise CommandFailed(EXIT_BAD_INPUT, str(exc)) from None
    for warning in effective.warnings:
        print(f"meshnode: warning: {warning}", file=sys.stderr)
    return effective


def _client(args: argparse.Namespace) -> Client:
    return Client(paths.client_socket(args.data_dir, args.socket, os.environ))


def _daemon_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running daemon's answer to ``config``; None when no daemon runs."""
    try:
        with _client(args) as client:
            answer: dict[str, Any] = client.call("config")
    except DaemonNotRunning:
        return None
    return answer


def _local_config(args: argparse.Namespace) -> dict[str, Any]:
    """What ``config`` would answer for a daemon started with these flags, here and now."""
    from meshnode.system import config

    effective = _load(args)
    return {
        "file": str(effective.config_file),
        "files": [str(path) for path in effective.files],
        "settings": config.describe(effective),
    }


def _row(shown: dict[str, Any], key: str) -> dict[str, Any]:
    return next(row for row in shown["settings"] if row["key"] == key)


def _no_daemon_note(args: argparse.Namespace) -> None:
    socket = paths.client_socket(args.data_dir, args.socket, os.environ)
    print(
        f"meshnode: no daemon is running at {socket}; this is what `meshnode run` would use",
        file=sys.stderr,
    )


# -- meshnode config ------------------------------------------------------------------


def cmd_config_show(args: argparse.Namespace) -> int:
    flags = _run_flags(args)
    shown = _daemon_config(args)
    running = shown is not None
    if flags:  # a question about a start with these flags, whatever the daemon uses now
        print(
            f"meshnode: with {', '.join(flags)}: this is what `meshnode run` would use",
            file=sys.stderr,
        )
        shown = _local_config(args)
    elif shown is None:
        _no_daemon_note(args)
        shown = _local_config(args)
    if args.json:
        print(dumps({**shown, "running": running, "for_flags": flags}))
        return EXIT_OK
    if (problem := shown.get("load_error")) is not None:
        print(
            f"meshnode: warning: the configuration no longer loads (a reload or a restart would"
            f" fail): {problem}",
            file=sys.stderr,
        )
    print(f"file: {shown['file']}{_unread(shown) if shown['file'] not in shown['files'] else ''}")
    for other in shown["files"]:
        if other != shown["file"]:
            print(f"also: {other} (the old place: move its settings to the file above)")
    for row in shown["settings"]:
        for n, (key, value) in enumerate(_shown_values(row)):
            source = "" if n else row["source"]  # hooks: where the first of them is
            print(f"{key:<25} {value:<36} {source}".rstrip())
        if (waiting := row.get("at_restart")) is not None:  # a reload found it changed
            for _, value in _shown_values({"key": row["key"], "value": waiting["value"]}):
                print(f"{'':<25} {'at restart: ' + value:<36} {waiting['source']}")
    return EXIT_OK


def _unread(shown: dict[str, Any]) -> str:
    """Why the main file's settings are not shown: it is not there, or came after the start."""
    if not Path(shown["file"]).is_file():
        return " (not there: defaults)"
    return " (not read: made after the node started; meshnode config reload reads it)"


def _run_flags(args: argparse.Namespace) -> list[str]:
    """The flags of ``meshnode run`` given to ``config show``, as typed."""
    given = {
        "--config": args.config is not None,
        "--log-level": args.log_level is not None,
        "--listen": bool(args.listen),
        "--peer": bool(args.peer),
        "--no-mdns": args.no_mdns,
        "--network-key": args.network_key is not None,
    }
    return [flag for flag, there in given.items() if there]


def _shown_values(row: dict[str, Any]) -> list[tuple[str, str]]:
    """A row as lines of (key, value) for people: hooks one per line, the network by its id."""
    key, value = row["key"], row["value"]
    if key == "network_key":  # the public key hides nothing; a private one is never shown
        return [(key, value if value == "public" else f"{value} (network show --reveal)")]
    if key == "hooks":
        return [(f"hooks[{n}]", dumps(hook)) for n, hook in enumerate(value, 1)] or [
            (key, "(none)")
        ]
    if value is None:
        return [(key, "(the default rule)")]
    if isinstance(value, bool):
        return [(key, "true" if value else "false")]
    return [(key, str(value) if isinstance(value, str | int) else dumps(value))]


def cmd_config_reload(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            answer = client.call("reload")
    except RemoteError as exc:
        if exc.code != "config-error":
            raise
        raise CommandFailed(
            EXIT_BAD_INPUT, f"{exc.message} (nothing changed: the daemon keeps what it had)"
        ) from None
    except DaemonNotRunning as exc:
        start = "meshnode run" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
        raise CommandFailed(
            EXIT_NO_DAEMON,
            f"no meshnode daemon is running at {exc.socket_path}; start one with: {start}",
        ) from None
    if args.json:
        print(dumps(answer))
        return EXIT_OK
    changed, restart = answer["changed"], answer["restart_needed"]
    if changed:
        print(f"reloaded: {', '.join(changed)} changed")
    else:
        print("reloaded: nothing changed now" if restart else "reloaded: nothing changed")
    if restart:
        print(
            f"needs a restart to take effect: {', '.join(restart)}"
            " (systemctl restart meshnode, or stop and start meshnode run)"
        )
    return EXIT_OK


def cmd_config_path(args: argparse.Namespace) -> int:
    path, running = _config_file(args)
    if args.json:
        print(dumps({"file": str(path), "exists": path.is_file(), "running": running}))
    else:
        print(path)
    return EXIT_OK


def _config_file(args: argparse.Namespace) -> tuple[Path, bool]:
    """The file a running daemon reads, else the one ``meshnode run`` would; and whether one
    runs (asked only without ``--config``, which names the file whatever runs)."""
    from meshnode.system import config

    if not args.config:
        shown = _daemon_config(args)
        if shown is not None:
            return Path(shown["file"]), True
    home = paths.data_dir(args.data_dir, os.environ)
    return config.config_file(home, args.config, os.environ), False


# -- meshnode network -----------------------------------------------------------------


def cmd_network_new(args: argparse.Namespace) -> int:
    import secrets

    if args.qr and args.json:
        raise CommandFailed(EXIT_BAD_INPUT, "--qr is drawn for people, --json is for scripts")
    key = secrets.token_bytes(NETWORK_KEY_SIZE)
    invite = encode_network_key(key)
    if args.json:
        from meshnode.system import config

        print(dumps({"invite": invite, "network_id": config.network_id(key)}))
        return EXIT_OK
    if args.qr:
        _draw_qr(invite)
    print(invite)
    print(f"meshnode: to join, on each node: meshnode network join {invite}", file=sys.stderr)
    return EXIT_OK


def _draw_qr(invite: str) -> None:
    """The invite as a QR code of half-block characters, 41 columns wide.

    In capitals, which QR codes in its compact alphanumeric mode (invites accept
    either case). On a terminal the code is drawn white on black whatever the
    terminal's own colours, so that a camera reads it on light themes too.
    """
    import io

    import segno

    drawn = io.StringIO()
    segno.make(invite.upper(), error="m").terminal(out=drawn, compact=True)
    colour, reset = ("\033[97;40m", "\033[0m") if sys.stdout.isatty() else ("", "")
    for line in drawn.getvalue().splitlines():
        print(f"{colour}{line}{reset}")


def _invite(text: str) -> str:
    """The invite, checked: a mistyped character is bad input (exit 2), said as such."""
    invite = text.strip()
    try:
        decode_network_key(invite)
    except NetworkKeyError as exc:
        why = str(exc).removeprefix("invalid network key: ")
        raise CommandFailed(
            EXIT_BAD_INPUT,
            f"that invite is mistyped or invalid: {why}; check it character by character,"
            " or scan its QR code",
        ) from None
    return invite.lower()  # a scanned QR code gives capitals


def cmd_network_join(args: argparse.Namespace) -> int:
    return _put_on_network(args, _invite(args.invite))


def cmd_network_leave(args: argparse.Namespace) -> int:
    return _put_on_network(args, None)


def _put_on_network(args: argparse.Namespace, invite: str | None) -> int:
    """Store the network key of ``invite`` (None: take it out, for the public network) in
    the file the node reads, and move a running daemon over to it."""
    from meshnode.core.netkey import PUBLIC_NETWORK_KEY
    from meshnode.system import config

    command = "join ..." if invite else "leave"
    target, shown = _network_file(args)
    _check_not_overridden(shown, args.force)
    changed = _write_network_key(target, invite)
    name = config.network_id(decode_network_key(invite) if invite else PUBLIC_NETWORK_KEY)
    network = f"network {name}" if invite else f"the public network ({name})"
    say: Callable[[str], object] = _silent if args.json else print  # --json: one object, last
    if invite:
        say(f"stored the key of {network} in {target} (mode 0600)")
    elif changed:
        say(f"took the network key out of {target}, for {network}")
    else:
        say(f"no network key in {target} to take out, for {network}")
    if shown is None:
        daemon = "not_running"
        system_file = Path("/etc/meshnode/config.toml")
        if target != system_file and system_file.exists() and not args.config:
            print(
                f"meshnode: note: the system service reads {system_file}; for it: sudo meshnode"
                f" network {command} --config {system_file}",
                file=sys.stderr,
            )
        in_force = _row({"settings": config.describe(_load(args))}, "network_key")
    else:
        with _client(args) as client:
            answer = client.call("reload")
        after = _daemon_config(args)  # what the daemon runs with now
        in_force = _row(after, "network_key") if after else {"network_id": name, "source": "-"}
        daemon = "restart_needed" if "network_key" in answer["restart_needed"] else "moved"
    if in_force["network_id"] != name:  # another file, the environment or a flag says more
        daemon = "overridden"
        say(
            f"but the node's network comes from {in_force['source']}: it is on network"
            f" {in_force['network_id']}"
        )
    elif daemon == "not_running":
        if changed or invite:
            say(f"it takes effect when a node that reads {target} starts")
    elif daemon == "restart_needed":
        say("the daemon needs a restart to move to it (systemctl restart meshnode)")
    elif "network_key" in answer["changed"]:
        say(
            f"the running node moved to {network}: sessions of the old network close,"
            " discovery announces the new one"
        )
    else:
        daemon = "already_on_it"
        say(f"the running node was on {network} already")
    if args.json:
        result = {"network_id": in_force["network_id"], "file": str(target), "daemon": daemon}
        print(dumps({**result, "source": in_force["source"]}))
    return EXIT_OK


def _network_file(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None]:
    """The file to change: the running daemon's, else the one ``meshnode run`` would read;
    and the daemon's ``config`` answer, None if none runs or ``--config`` names another."""
    from meshnode.system import config

    shown = _daemon_config(args)
    home = paths.data_dir(args.data_dir, os.environ)
    target = config.config_file(home, args.config, os.environ)
    if shown is None or Path(shown["file"]) == target:
        return target, shown
    if not args.config:
        return Path(shown["file"]), shown
    print(
        f"meshnode: warning: the running daemon reads {shown['file']}, not {target};"
        " the change takes effect when a node starts with this file",
        file=sys.stderr,
    )
    return target, None


def _write_network_key(target: Path, invite: str | None) -> bool:
    """Whether the file changed (``set_network_key``); CommandFailed if it cannot be."""
    from meshnode.system import config

    try:
        return config.set_network_key(target, invite)
    except config.ConfigError as exc:
        raise CommandFailed(EXIT_FAILED, str(exc)) from None
    except PermissionError:
        raise CommandFailed(
            EXIT_FAILED, f"cannot write {target}: permission denied (the daemon's file? try sudo)"
        ) from None
    except OSError as exc:
        raise CommandFailed(EXIT_FAILED, f"cannot write {target}: {exc.strerror or exc}") from None


def _silent(line: str) -> None:
    pass


def _check_not_overridden(shown: dict[str, Any] | None, force: bool) -> None:
    """Refuse to store a key the node would not use: an override from env or a flag wins."""
    if shown is not None:
        source = _row(shown, "network_key")["source"]
        overridden = source.startswith(("env ", "flag "))
        who = f"the running daemon's network key comes from {source}"
    else:
        overridden = bool(os.environ.get("MESHNODE_NETWORK_KEY"))
        who = "$MESHNODE_NETWORK_KEY is set here"
    if not overridden:
        return
    if not force:
        raise CommandFailed(
            EXIT_BAD_INPUT,  # nothing was stored
            f"{who}, which overrides the file: remove it, or change the file anyway with --force",
        )
    print(f"meshnode: warning: {who}, which overrides the file", file=sys.stderr)


def cmd_network_show(args: argparse.Namespace) -> int:
    from meshnode.system import config

    shown = _daemon_config(args)
    if shown is not None:
        row = _row(shown, "network_key")
        key = _key_of_daemon(row["source"], row["network_id"]) if args.reveal else None
    else:
        effective = _load(args)
        row = _row({"settings": config.describe(effective)}, "network_key")
        key = effective.settings.peers.network_key
    public = row["value"] == "public"
    result = {
        "network": "public" if public else "private",
        "network_id": row["network_id"],
        "source": row["source"],
        "running": shown is not None,
    }
    if args.reveal and key is not None:
        result["invite"] = encode_network_key(key)
    if args.json:
        print(dumps(result))
        return EXIT_OK
    label = "public (anyone running meshnode can join)" if public else "private"
    print(f"network: {label}, id {row['network_id']}")
    running = "" if shown is not None else " (no daemon runs: as meshnode run would)"
    print(f"set by:  {row['source']}{running}")
    if "invite" in result:
        print(f"invite:  {result['invite']}")
    elif not public:
        print("invite:  (hidden; meshnode network show --reveal)")
    return EXIT_OK


def _key_of_daemon(source: str, expected_id: str) -> bytes:
    """The running daemon's key, read from where it came from, if this process can read it."""
    import tomllib

    from meshnode.core.netkey import PUBLIC_NETWORK_KEY
    from meshnode.system import config

    if source == "default":
        return PUBLIC_NETWORK_KEY
    if source.startswith(("env ", "flag ")):
        text = os.environ.get("MESHNODE_NETWORK_KEY", "") if source.startswith("env ") else ""
        key = _decoded(text)
        if key is None or config.network_id(key) != expected_id:
            raise CommandFailed(
                EXIT_FAILED,
                f"the running daemon's key comes from {source}, which this command cannot read",
            )
        return key
    path = Path(source.rpartition(":")[0] or source)
    try:
        stored = tomllib.loads(path.read_text(encoding="utf-8")).get("network_key")
    except PermissionError:
        raise CommandFailed(
            EXIT_FAILED, f"cannot read {path}: permission denied (the daemon's file? try sudo)"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CommandFailed(EXIT_FAILED, f"cannot read the key from {path}: {exc}") from None
    key = _decoded(stored)
    if key is None or config.network_id(key) != expected_id:
        raise CommandFailed(
            EXIT_FAILED,
            f"{path} no longer holds the key the daemon uses; meshnode config reload, or see"
            " meshnode network show without --reveal",
        )
    return key


def _decoded(text: object) -> bytes | None:
    try:
        return decode_network_key(text) if isinstance(text, str) else None
    except NetworkKeyError:
        return None


# -- the parsers ----------------------------------------------------------------------


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A handler whose failures are one line on stderr and an exit code, as the CLI's are."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CommandFailed as exc:
            message, code = str(exc), exc.code
        except paths.PathError as exc:
            message, code = str(exc), EXIT_BAD_INPUT
        except RemoteError as exc:
            message = exc.message
            code = EXIT_BAD_INPUT if exc.code in _INPUT_ERRORS else EXIT_FAILED
        except ClientError as exc:
            message, code = str(exc), EXIT_FAILED
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head); nothing left to say
            return EXIT_OK
        print(f"meshnode: {message}", file=sys.stderr)
        return code

    return run


def add_commands(
    sub: Any, parents: Sequence[argparse.ArgumentParser], formatter_class: Any
) -> None:
    """``meshnode config`` and ``meshnode network``, on the CLI's subcommand parsers."""

    def action(group: Any, name: str, handler: Callable[..., int], help_text: str) -> Any:
        parser = group.add_parser(
            name, parents=list(parents), help=help_text, formatter_class=formatter_class
        )
        parser.set_defaults(handler=None, offline=_guarded(handler))
        return parser

    config = sub.add_parser(
        "config",
        parents=list(parents),
        help="the configuration in force, and reloading it",
        formatter_class=formatter_class,
    )
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = action(config_sub, "show", cmd_config_show, "the configuration and each value's source")
    add_run_options(show)
    show.add_argument("--json", action="store_true", help="print one JSON object")
    reload = action(
        config_sub, "reload", cmd_config_reload, "make the running daemon read its files again"
    )
    reload.add_argument("--json", action="store_true", help="print one JSON object")
    path = action(config_sub, "path", cmd_config_path, "print the configuration file's path")
    add_config_option(path)
    path.add_argument("--json", action="store_true", help="print one JSON object")

    network = sub.add_parser(
        "network",
        parents=list(parents),
        help="network keys and invites",
        formatter_class=formatter_class,
    )
    network_sub = network.add_subparsers(dest="network_command", required=True, metavar="ACTION")
    new = action(network_sub, "new", cmd_network_new, "make a network: print its invite")
    new.add_argument("--qr", action="store_true", help="also draw the invite as a QR code")
    new.add_argument("--json", action="store_true", help="print one JSON object")
    join = action(network_sub, "join", cmd_network_join, "put this node on the invite's network")
    join.add_argument("invite", metavar="INVITE", help="the network's invite, mesh1...")
    leave = action(
        network_sub, "leave", cmd_network_leave, "take the key out: back to the public network"
    )
    for changing in (join, leave):
        changing.add_argument(
            "--force",
            action="store_true",
            help="change the file even though $MESHNODE_NETWORK_KEY or a flag overrides it",
        )
        add_config_option(changing)
        changing.add_argument("--json", action="store_true", help="print one JSON object")
    show = action(network_sub, "show", cmd_network_show, "which network this node is on")
    show.add_argument("--reveal", action="store_true", help="also print the invite (the secret)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(show)
