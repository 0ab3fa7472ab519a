"""The node's configuration: one TOML file, the environment and the flags, into one tree.

Where the file is (the first that applies; see ``config_file``):

1. ``meshnode run --config FILE``;
2. ``$MESHNODE_CONFIG``;
3. ``$CONFIGURATION_DIRECTORY/config.toml`` (systemd sets it for the system unit:
   ``/etc/meshnode/config.toml``);
4. ``$XDG_CONFIG_HOME/meshnode/config.toml``, by default ``~/.config/meshnode/config.toml``.

A missing file is fine: every key has a default. The file of meshnode 0.6 and
earlier, ``<data dir>/config.toml``, is still read when it exists, below the main
file (the main file wins key by key), with a warning to move its settings.

Every key, with its default and unit::

    listen = [":7744"]          # where peers dial in: "host:port" strings; ":7744" is every
                                # interface, IPv4 and IPv6
    peers = []                  # "host:port" of peers to keep connected (dialled again and again)
    network_key = "mesh1..."    # the invite of a private network; default: the public network
    mdns = true                 # announce and look for peers on the local link
    mdns_interfaces = ["wlan0", "eth*"]  # names or patterns; default: every suitable one
                                # (not loopback, bridges, veths or tunnels: discovery.md §1)
    log_level = "info"          # "debug", "info", "warning" or "error"
    target_degree = 6           # sessions the node seeks (the overlay's degree)
    max_peers = 128             # sessions at once, either direction (1 to 128)
    outbound_slots = 8          # of those, kept for peers this node dials (below max_peers)
    min_outbound = 2            # seek peers while fewer than this were dialled by this node
    store_max_bytes = "256MiB"  # records stored in total
    store_max_author_bytes = "8MiB"      # records stored of one author
    store_max_author_records = 10000     # records stored of one author
    tombstone_retention = "30d" # how long a deletion is kept, so peers learn of it
    hook_concurrency = 4        # hooks running at once (1 to 64)

    [[hooks]]                   # as many as you like; none by default
    prefix = "offer/"           # records whose key starts with this (default "": all)
    author = "node1..."         # only this author's (default: any author)
    exec = ["notify-send", "new offer"]  # a list runs as it is; a string of plain words is
                                # split (shlex), one in shell syntax runs under sh -c
    timeout = "10s"             # killed past this (default 10s)

Units: a **size** is a whole number of bytes or a string with a unit: ``B``, ``KB``,
``MB``, ``GB`` (powers of 1000) or ``KiB``, ``MiB``, ``GiB`` (powers of 1024),
e.g. ``"256MiB"``; a size is at least 17 KiB, one record. A **duration** is a
number of seconds or a string of numbers with units ``ms``, ``s``, ``m``, ``h``,
``d``, ``w``, e.g. ``"30d"``, ``"1h30m"``, ``"500ms"``.

Precedence: flags > environment > file > defaults. Every key but ``hooks`` has a
variable ``MESHNODE_<KEY>`` (``MESHNODE_LOG_LEVEL=debug``, ``MESHNODE_MDNS=false``;
lists comma-separated, ``MESHNODE_PEERS=192.0.2.1:7744,192.0.2.2:7744``); a variable
replaces the file's value, lists included, and an empty one counts as unset. The
flags: ``--listen`` replaces ``listen``, ``--peer`` *adds* to ``peers`` (from the
environment or the file), ``--network-key``, ``--no-mdns`` and ``--log-level``
replace theirs. ``MESHNODE_HOME`` and ``MESHNODE_SOCKET`` are paths
(``meshnode.system.paths``), not keys.

Errors name the key, the file and the line: unknown keys (a typo never goes
unnoticed), wrong types, bad values, TOML syntax. Nothing here imports the engine
until a tree is built, so that ``meshnode network join`` and ``config path`` start
fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field, structs

from meshnode.core import durations
from meshnode.core.addresses import DEFAULT_PORT, AddressError, format_address, parse_address
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, NetworkKeyError, decode_network_key
from meshnode.core.nodeid import NodeIdError, decode_node_id
from meshnode.system.hookspec import (
    DEFAULT_HOOK_CONCURRENCY,
    DEFAULT_HOOK_TIMEOUT_S,
    MAX_HOOK_CONCURRENCY,
    HookConfig,
    HookSpecError,
    parse_command,
)

if TYPE_CHECKING:
    from meshnode.engine.settings import Settings

CONFIG_FILE = "config.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_STORE_BYTES = 17 * 1024  # one record: meshnode.core.record.MAX_RECORD_BYTES
MAX_PEERS_LIMIT = 128  # meshnode.runtime.peers.MAX_CONNECTIONS: more could never connect


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key, the file and the line."""


class Inputs(Struct, frozen=True):
    """What the command line and the environment give; the daemon keeps it to reload."""

    data_dir: Path
    config_file: str | None = None  # --config
    listen: Sequence[str] | None = None  # --listen (replaces)
    peers: Sequence[str] = ()  # --peer (adds)
    network_key: str | None = None  # --network-key
    mdns: bool | None = None  # False from --no-mdns; None: not given
    log_level: str | None = None  # --log-level
    env: Mapping[str, str] = field(default_factory=dict)


class Effective(Struct, frozen=True):
    """The configuration in force, and where each value came from."""

    settings: Settings  # meshnode.engine.settings.Settings, whole
    log_level: str
    hooks: tuple[HookConfig, ...]
    hook_concurrency: int
    config_file: Path  # the main file (read or not): where ``network join`` writes
    files: tuple[Path, ...]  # the files actually read: the main file first, then the old one
    sources: Mapping[str, str]  # key -> "default" | "<file>:<line>" | "env MESHNODE_X" | "flag --x"
    warnings: tuple[str, ...] = ()  # for the log: an old file read, a key others can read


def config_file(data_dir: Path, explicit: str | None, env: Mapping[str, str]) -> Path:
    """The main configuration file: ``--config``, ``$MESHNODE_CONFIG``, systemd's, XDG's.

    ``data_dir`` is the last resort, for a service started with no ``HOME`` at all.
    """
    if explicit:
        chosen = Path(explicit)
    elif env.get("MESHNODE_CONFIG"):
        chosen = Path(env["MESHNODE_CONFIG"])
    elif env.get("CONFIGURATION_DIRECTORY"):  # systemd: one or more, ':'-separated
        chosen = Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / CONFIG_FILE
    elif env.get("XDG_CONFIG_HOME"):
        chosen = Path(env["XDG_CONFIG_HOME"]) / "meshnode" / CONFIG_FILE
    elif env.get("HOME"):
        chosen = Path(env["HOME"]) / ".config" / "meshnode" / CONFIG_FILE
    else:
        chosen = data_dir / CONFIG_FILE
    return Path(os.path.abspath(chosen.expanduser()))


def network_id(key: bytes) -> str:
    """A short name for a network that gives nothing of its key away: 8 hex digits."""
    return hashlib.sha256(b"meshnode network id" + key).hexdigest()[:8]


# -- the keys: how each is read from TOML and the environment, and shown again ----------


class _Bad(Exception):
    """A value that does not fit its key; the caller adds where it came from."""


class _Kind(Struct, frozen=True):
    parse: Callable[[Any], Any]  # a TOML value (or what from_env made) -> the value used
    show: Callable[[Any], Any]  # the value used -> TOML, for ``config show``
    from_env: Callable[[str], Any]  # an environment variable's text -> a TOML value


def _text(text: str) -> str:
    return text


def _words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def _env_bool(text: str) -> Any:
    word = text.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise _Bad(f"is true or false, got {text!r}")


def _env_number(text: str) -> Any:
    word = text.strip()
    return int(word) if word.isascii() and word.isdigit() else word


def _addresses(needs_host: bool) -> Callable[[Any], Any]:
    def parse(value: Any) -> tuple[tuple[str | None, int], ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Bad('is a list of "host:port" strings, e.g. ["192.0.2.10:7744"]')
        try:
            chosen = tuple(parse_address(v, min_port=1 if needs_host else 0) for v in value)
        except AddressError as exc:
            raise _Bad(f"contains a bad address ({exc})") from None
        for n, (host, port) in enumerate(chosen):
            if needs_host and host is None:
                raise _Bad(f"has an address without a host (':{port}'); a peer is dialled there")
            if not needs_host and port and (host, port) in chosen[:n]:  # one listener per address
                raise _Bad(f"names {format_address(host, port)} twice")
        return chosen

    return parse


def _show_addresses(value: tuple[tuple[str | None, int], ...]) -> list[str]:
    return [format_address(host, port) for host, port in value]


def _network_key(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Bad('is a string, the invite "mesh1..." of a network')
    try:
        return decode_network_key(value)
    except NetworkKeyError as exc:
        raise _Bad(
            f"holds an invalid network key: {_why(exc)}; make one with: meshnode network new"
        ) from None


def _why(exc: NetworkKeyError) -> str:
    """Why an invite is refused (bech32m says "a character is wrong or missing")."""
    return str(exc).removeprefix("invalid network key: ")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("is true or false")
    return value


def _interfaces(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _Bad('is a list of interface names, e.g. ["wlan0"]')
    return tuple(value)


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise _Bad(f"is one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def _count(low: int, high: int | None = None) -> Callable[[Any], Any]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"is a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"{low} to {high}"
            raise _Bad(f"must be {span}, got {value}")
        return value

    return parse


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number, unit = match.groups()
        size = int(float(number) * _SIZE_UNITS[(unit or "b").lower()])
    else:
        raise _Bad(f'is a size: bytes, or a string such as "256MiB" or "1GB"; got {value!r}')
    if size < MIN_STORE_BYTES:
        raise _Bad(f"must be at least {MIN_STORE_BYTES} bytes (17KiB, one record), got {size}")
    return size


def _show_size(size: int) -> int | str:
    for unit in ("GiB", "MiB", "KiB"):
        if size % _SIZE_UNITS[unit.lower()] == 0:
            return f"{size // _SIZE_UNITS[unit.lower()]}{unit}"
    return size


def _duration_ms(value: Any) -> int:
    """Milliseconds of a duration: a number of seconds, or ``"30d"``, ``"1h30m"``, ``"500ms"``."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return durations.seconds_ms(value, value)
        if isinstance(value, str):
            return durations.parse_ms(value)
    except durations.DurationError as exc:
        raise _Bad(str(exc)) from None
    raise _Bad(f"{durations.WRITTEN_AS}; got {value!r}")


def _show_duration(ms: int) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        if ms % durations.UNIT_MS[unit] == 0:
            return f"{ms // durations.UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


def _same(value: Any) -> Any:
    return value


_KEYS: dict[str, _Kind] = {
    "listen": _Kind(_addresses(needs_host=False), _show_addresses, _words),
    "peers": _Kind(_addresses(needs_host=True), _show_addresses, _words),
    "network_key": _Kind(_network_key, _same, _text),  # never shown: see describe()
    "mdns": _Kind(_bool, _same, _env_bool),
    "mdns_interfaces": _Kind(_interfaces, lambda v: v if v is None else list(v), _words),
    "log_level": _Kind(_log_level, _same, _text),
    "target_degree": _Kind(_count(1), _same, _env_number),
    "max_peers": _Kind(_count(1, MAX_PEERS_LIMIT), _same, _env_number),
    "outbound_slots": _Kind(_count(0), _same, _env_number),
    "min_outbound": _Kind(_count(0), _same, _env_number),
    "store_max_bytes": _Kind(_size, _show_size, _env_number),
    "store_max_author_bytes": _Kind(_size, _show_size, _env_number),
    "store_max_author_records": _Kind(_count(1), _same, _env_number),
    "tombstone_retention": _Kind(_duration_ms, _show_duration, _text),
    "hook_concurrency": _Kind(_count(1, MAX_HOOK_CONCURRENCY), _same, _env_number),
}
_HOOK_KEYS = ("prefix", "author", "exec", "timeout")
_KNOWN = (*_KEYS, "hooks")


def env_name(key: str) -> str:
    return f"MESHNODE_{key.upper()}"


# Every variable that sets a key, and those that say where the file is.
ENV_VARIABLES = (*(env_name(key) for key in _KEYS), "MESHNODE_CONFIG", "CONFIGURATION_DIRECTORY")


# -- files ------------------------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?")
_HOOKS_HEADER = re.compile(r"\s*\[\[\s*hooks\s*\]\]\s*(#.*)?")


def _assignment(key: str) -> re.Pattern[str]:
    """``key = ...`` (or a dotted ``key.x = ...``), the key bare or quoted."""
    name = re.escape(key)
    return re.compile(rf"\s*(?:{name}|\"{name}\"|'{name}')\s*[=.]")


class _File(Struct, frozen=True):
    """One configuration file read: its table, its lines (to say where a key is), its mode."""

    path: Path
    lines: tuple[str, ...]
    data: dict[str, Any]
    mode: int

    def where(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line else str(self.path)

    def key_line(self, key: str) -> int | None:
        """The line (from 1) of a top-level ``key =``, else of a table ``[key]`` or ``[[key]]``.

        tomllib says where a syntax error is, not where a key is: found here from the
        text, which is enough for every file TOML's own syntax allows to be read.
        """
        assignment = _assignment(key)
        for number, text in enumerate(self.lines):
            if _HEADER.fullmatch(text):
                break  # top-level keys come before the first table
            if assignment.match(text):
                return number + 1
        for number, text in enumerate(self.lines):
            header = _HEADER.fullmatch(text)
            if header and header.group(1).split(".")[0].strip("\"'") == key:
                return number + 1
        return None

    def hook_line(self, index: int, key: str | None = None) -> int | None:
        """The line of the ``index``-th ``[[hooks]]`` (from 0), or of ``key`` in that table."""
        headers = [n for n, text in enumerate(self.lines) if _HOOKS_HEADER.fullmatch(text)]
        if index >= len(headers):  # written inline: hooks = [{...}]
            return self.key_line("hooks")
        if key is not None:
            assignment = _assignment(key)
            for number in range(headers[index] + 1, len(self.lines)):
                if _HEADER.fullmatch(self.lines[number]):
                    break
                if assignment.match(self.lines[number]):
                    return number + 1
        return headers[index] + 1


def _read(path: Path) -> _File | None:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = tuple(text.splitlines())
    import tomllib  # here, not at the top: most nodes have no file, and it is 2 % of a start

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if at:
            where = f"{path}:{at.group(1)}:{at.group(2)}"
            message = message[: at.start()]
        else:  # "(at end of document)": the line after the last newline
            last_line = text.count("\n") + 1
            where = f"{path}:{last_line}"
            message = message.replace(" (at end of document)", " at the end of the file")
        raise ConfigError(f"{where}: not valid TOML: {message}") from None
    return _File(path, lines, data, mode)


def _values(file: _File) -> dict[str, tuple[Any, str]]:
    """Each key the file sets, checked: (value, "<file>:<line>")."""
    chosen: dict[str, tuple[Any, str]] = {}
    for key, raw in file.data.items():
        line = file.key_line(key)
        if key not in _KNOWN:
            import difflib

            close = difflib.get_close_matches(key, _KNOWN, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; the keys are {', '.join(_KNOWN)}"
            raise ConfigError(f"{file.where(line)}: unknown key {key!r}{hint}")
        if key == "hooks":
            chosen[key] = (_hooks(file, raw), file.where(file.hook_line(0)))
            continue
        try:
            chosen[key] = (_KEYS[key].parse(raw), file.where(line))
        except _Bad as exc:
            raise ConfigError(f"{file.where(line)}: {key} {exc}") from None
    return chosen


def _hooks(file: _File, raw: Any) -> tuple[HookConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(h, dict) for h in raw):
        line = file.where(file.key_line("hooks"))
        raise ConfigError(f"{line}: hooks are tables: write each as [[hooks]] with its keys below")
    return tuple(_hook(file, n, table) for n, table in enumerate(raw))


def _hook(file: _File, index: int, table: dict[str, Any]) -> HookConfig:
    def bad(key: str | None, problem: str) -> ConfigError:
        return ConfigError(f"{file.where(file.hook_line(index, key))}: hook {index + 1}: {problem}")

    for key in table:
        if key not in _HOOK_KEYS:
            import difflib

            problem = f"unknown key {key!r}; a hook has {', '.join(_HOOK_KEYS)}"
            close = difflib.get_close_matches(key, _HOOK_KEYS, n=1)
            if close:
                problem = f"unknown key {key!r}; did you mean {close[0]}?"
            elif key in _KNOWN or difflib.get_close_matches(key, _KNOWN, n=1):
                problem += (
                    " (TOML puts every key below a [[hooks]] line into that hook:"
                    " settings of the node go above the first one)"
                )
            raise bad(key, problem)
    prefix = table.get("prefix", "")
    if not isinstance(prefix, str):
        raise bad("prefix", "prefix is a string, the start of the keys it is for")
    author = table.get("author")
    if author is not None:
        try:
            if not isinstance(author, str):
                raise NodeIdError("not a string")
            decode_node_id(author)
        except NodeIdError:
            raise bad(
                "author", f"author is a node id (meshnode id prints one), got {author!r}"
            ) from None
    if "exec" not in table:
        raise bad(None, 'exec is missing: the command to run, e.g. exec = ["notify-send", "new"]')
    if not isinstance(table["exec"], str | list):
        raise bad("exec", "exec is a command: a list of strings, or one string of words")
    try:
        command = parse_command(table["exec"])  # as ``meshnode watch --exec`` reads one
    except HookSpecError as exc:
        raise bad("exec", f"exec: {exc}") from None
    try:
        timeout_ms = _duration_ms(table.get("timeout", DEFAULT_HOOK_TIMEOUT_S))
    except _Bad as exc:
        raise bad("timeout", f"timeout {exc}") from None
    return HookConfig(command=command, prefix=prefix, author=author, timeout_s=timeout_ms / 1000)


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    chosen: dict[str, tuple[Any, str]] = {}
    for key, kind in _KEYS.items():
        name = env_name(key)
        text = env.get(name)
        if not text:
            continue
        try:
            chosen[key] = (kind.parse(kind.from_env(text)), f"env {name}")
        except _Bad as exc:
            raise ConfigError(f"${name}: {key} {exc}") from None
    return chosen


def _from_flags(inputs: Inputs) -> dict[str, tuple[Any, str]]:
    given: list[tuple[str, Any, str]] = []
    if inputs.listen is not None:
        given.append(("listen", list(inputs.listen), "--listen"))
    if inputs.peers:
        given.append(("peers", list(inputs.peers), "--peer"))
    if inputs.network_key is not None:
        given.append(("network_key", inputs.network_key, "--network-key"))
    if inputs.mdns is not None:
        given.append(("mdns", inputs.mdns, "--mdns" if inputs.mdns else "--no-mdns"))
    if inputs.log_level is not None:
        given.append(("log_level", inputs.log_level, "--log-level"))
    chosen: dict[str, tuple[Any, str]] = {}
    for key, raw, flag in given:
        try:
            chosen[key] = (_KEYS[key].parse(raw), f"flag {flag}")
        except _Bad as exc:
            raise ConfigError(f"{flag}: {key} {exc}") from None
    return chosen


# -- the tree ---------------------------------------------------------------------------


def load(inputs: Inputs) -> Effective:
    """The configuration in force for these flags and this environment; raises ConfigError."""
    from meshnode.engine.settings import PeerSettings, Settings

    main = config_file(inputs.data_dir, inputs.config_file, inputs.env)
    files, warnings = _files(inputs, main)
    defaults = _values_of(Settings(peers=PeerSettings(listen=((None, DEFAULT_PORT),))))
    merged = _merge(
        [
            {key: (value, "default") for key, value in defaults.items()},
            *(_values(file) for file in reversed(files)),  # the old file below the main one
            _from_env(inputs.env),
            _from_flags(inputs),
        ]
    )
    values = {key: value for key, (value, _) in merged.items()}
    sources = {key: source for key, (_, source) in merged.items()}
    return Effective(
        settings=_settings(values, sources),
        log_level=values["log_level"],
        hooks=values["hooks"],
        hook_concurrency=values["hook_concurrency"],
        config_file=main,
        files=tuple(file.path for file in files),
        sources=sources,
        warnings=tuple(warnings),
    )


def _files(inputs: Inputs, main: Path) -> tuple[list[_File], list[str]]:
    """The files to read (the main one, then the old one in the data dir), and what to warn of."""
    files: list[_File] = []
    warnings: list[str] = []
    main_file = _read(main)
    if main_file is not None:
        files.append(main_file)
    elif inputs.config_file or inputs.env.get("MESHNODE_CONFIG"):
        warnings.append(f"{main} does not exist (yet): nothing is read from it")
    legacy = Path(os.path.abspath(inputs.data_dir / CONFIG_FILE))
    legacy_file = _read(legacy) if legacy != main else None
    if legacy_file is not None:
        files.append(legacy_file)
        warnings.append(
            f"read the old configuration file {legacy}; move its settings to {main}"
            " (the new file wins where both set a key)"
        )
    for file in files:
        if "network_key" in file.data and file.mode & 0o044:
            # Group too: the system node's group is everyone who may use its socket.
            who = "every user" if file.mode & 0o004 else "its group"
            warnings.append(
                f"{file.path} holds the network key and {who} can read it; chmod 600 {file.path}"
            )
    return files, warnings


def _merge(layers: Sequence[Mapping[str, tuple[Any, str]]]) -> dict[str, tuple[Any, str]]:
    """Each key from the last layer that sets it, except that ``--peer`` adds to the one below."""
    merged: dict[str, tuple[Any, str]] = {}
    for layer in layers:
        for key, (value, source) in layer.items():
            if key == "peers" and source == "flag --peer" and merged["peers"][0]:
                below, below_source = merged["peers"]
                merged[key] = (below + value, f"{below_source} + {source}")
            else:
                merged[key] = (value, source)
    return merged


def _settings(values: Mapping[str, Any], sources: Mapping[str, str]) -> Settings:
    from meshnode.engine.settings import DiscoverySettings, PeerSettings, Settings, SettingsError
    from meshnode.store.base import StoreLimits

    try:
        peers = PeerSettings(
            network_key=values["network_key"],
            listen=values["listen"],
            peers=values["peers"],
            max_peers=values["max_peers"],
            outbound_slots=values["outbound_slots"],
            target_degree=values["target_degree"],
            min_outbound=values["min_outbound"],
            # What discovery finds is dialled, within the bounds; what peers say, not.
            dial_sources=frozenset({"mdns", "exchange"}) if values["mdns"] else frozenset(),
        )
    except SettingsError as exc:
        involved = [k for k in _KEYS if re.search(rf"\b{k}\b", str(exc))]
        where = "; ".join(f"{k} from {sources[k]}" for k in involved if sources[k] != "default")
        raise ConfigError(f"{exc} ({where})" if where else str(exc)) from None
    store = structs.replace(
        StoreLimits(),
        max_total_bytes=values["store_max_bytes"],
        max_author_bytes=values["store_max_author_bytes"],
        max_author_records=values["store_max_author_records"],
        tombstone_retention_ms=values["tombstone_retention"],
    )
    discovery = DiscoverySettings(mdns=values["mdns"], interfaces=values["mdns_interfaces"])
    return Settings(peers=peers, discovery=discovery, store=store)


def _values_of(
    settings: Settings,
    log_level: str = "info",
    hooks: tuple[HookConfig, ...] = (),
    hook_concurrency: int = DEFAULT_HOOK_CONCURRENCY,
) -> dict[str, Any]:
    """Every key's value in a configuration, as ``load`` holds it (the defaults: a bare one)."""
    return {
        "listen": settings.peers.listen,
        "peers": settings.peers.peers,
        "network_key": settings.peers.network_key,
        "mdns": settings.discovery.mdns,
        "mdns_interfaces": settings.discovery.interfaces,
        "log_level": log_level,
        "target_degree": settings.peers.target_degree,
        "max_peers": settings.peers.max_peers,
        "outbound_slots": settings.peers.outbound_slots,
        "min_outbound": settings.peers.min_outbound,
        "store_max_bytes": settings.store.max_total_bytes,
        "store_max_author_bytes": settings.store.max_author_bytes,
        "store_max_author_records": settings.store.max_author_records,
        "tombstone_retention": settings.store.tombstone_retention_ms,
        "hook_concurrency": hook_concurrency,
        "hooks": hooks,
    }


def _effective_values(effective: Effective) -> dict[str, Any]:
    return _values_of(
        effective.settings, effective.log_level, effective.hooks, effective.hook_concurrency
    )


def differences(old: Effective, new: Effective) -> list[str]:
    """The keys whose value differs between two configurations, in the documented order."""
    before, after = _effective_values(old), _effective_values(new)
    return [key for key in after if before[key] != after[key]]


def describe(effective: Effective) -> list[dict[str, Any]]:
    """Each key, its value as TOML would write it, and its source: JSON-able, for people.

    The network key is never shown: its value is ``"public"``, or ``"private <id>"``
    with the network's id (``network_id``, also in the row's ``network_id``),
    which gives nothing of the key away and differs when the network does.
    """
    rows = []
    for key, value in _effective_values(effective).items():
        row: dict[str, Any] = {"key": key, "source": effective.sources.get(key, "default")}
        if key == "network_key":
            row["network_id"] = network_id(value)
            public = value == PUBLIC_NETWORK_KEY
            row["value"] = "public" if public else f"private {row['network_id']}"
        elif key == "hooks":
            row["value"] = [_show_hook(hook) for hook in value]
        else:
            row["value"] = _KEYS[key].show(value)
        rows.append(row)
    return rows


def _show_hook(hook: HookConfig) -> dict[str, Any]:
    shown: dict[str, Any] = {"prefix": hook.prefix}
    if hook.author is not None:
        shown["author"] = hook.author
    shown["exec"] = list(hook.command)
    shown["timeout"] = _show_duration(round(hook.timeout_s * 1000))
    return shown


# -- writing the network key ------------------------------------------------------------

_KEY_LINE = re.compile(
    r"(?P<head>\s*(?:network_key|\"network_key\"|'network_key')\s*=\s*)"
    r"(?P<value>\"[^\"\\]*\"|'[^']*')?(?P<rest>.*)"
)


def set_network_key(path: Path, invite: str | None) -> bool:
    """Store ``invite`` as the ``network_key`` of the TOML file at ``path``, all else kept;
    None takes the key out (the node goes back to the public network). False if there was
    no key to take out, and the file is left alone.

    Comments, other keys and their order stay as they were; the file (and its
    directory) is made if missing. The new file replaces the old at once (a
    temporary file renamed over it), so a reader sees one or the other, never half.
    It ends up mode 0600, and keeps its owner and group where this process may
    give them (as root: always), so that the daemon's user can still read it.
    Raises ConfigError (a bad invite, a file that is not valid TOML) or OSError.
    """
    if invite is not None:
        try:
            decode_network_key(invite)
        except NetworkKeyError as exc:
            raise ConfigError(f"not an invite: {exc}") from None
    target = Path(os.path.realpath(path))  # a symlinked config stays a symlink
    try:
        old = target.read_text(encoding="utf-8")
        status: os.stat_result | None = target.stat()
    except FileNotFoundError:
        old, status = "", None
    except UnicodeDecodeError:
        raise ConfigError(f"{target}: not UTF-8 text; fix it before storing a key") from None
    import tomllib  # as in ``_read``

    try:
        had = tomllib.loads(old)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{target} is not valid TOML ({exc}); fix it first") from None
    if invite is None and "network_key" not in had:
        return False  # on the public network already, as far as this file goes
    new = _with_network_key(old, invite) if invite else _without_network_key(old)
    try:
        edited = tomllib.loads(new).get("network_key") == invite
    except tomllib.TOMLDecodeError:  # a key written over several lines, say
        edited = False
    if not edited:  # an odd file this cannot edit
        raise ConfigError(f"cannot set network_key in {target}: edit it by hand")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _replace(target, new.encode("utf-8"), status)
    return True


_KEY_COMMENT = "# the network this node is on (meshnode network join)"


def _without_network_key(text: str) -> str:
    """``text`` without its top-level ``network_key`` line, and the comment join put above it."""
    lines = text.splitlines(keepends=True)
    top = next((n for n, line in enumerate(lines) if _HEADER.fullmatch(line.rstrip("\r\n"))), None)
    for number, line in enumerate(lines[:top]):
        if _KEY_LINE.fullmatch(line.rstrip("\r\n")):
            ours = number > 0 and lines[number - 1].rstrip("\r\n") == _KEY_COMMENT
            # join's comment goes too, and the blank line it put before a table
            spacer = ours and number + 1 < len(lines) and not lines[number + 1].strip()
            del lines[number - 1 if ours else number : number + 2 if spacer else number + 1]
            break
    return "".join(lines)


def _with_network_key(text: str, invite: str) -> str:
    lines = text.splitlines(keepends=True)
    top = next((n for n, line in enumerate(lines) if _HEADER.fullmatch(line.rstrip("\r\n"))), None)
    for number, line in enumerate(lines[:top]):
        body = line.rstrip("\r\n")
        match = _KEY_LINE.fullmatch(body)
        if match:
            rest = match["rest"] if match["value"] else ""
            lines[number] = f'{match["head"]}"{invite}"{rest}{line[len(body) :]}'
            return "".join(lines)
    entry = f'{_KEY_COMMENT}\nnetwork_key = "{invite}"\n'
    if top is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join([*lines, entry])
    return "".join([*lines[:top], entry, "\n", *lines[top:]])


def _replace(target: Path, content: bytes, status: os.stat_result | None) -> None:
    import tempfile

    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".new")
    try:
        os.fchmod(fd, 0o600)
        if status is not None:
            _keep_owner(fd, status)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def _keep_owner(fd: int, status: os.stat_result) -> None:
    """Give the new file the old one's owner and group, as far as this process may."""
    if (status.st_uid, status.st_gid) == (os.geteuid(), os.getegid()):
        return
    try:
        os.fchown(fd, status.st_uid, status.st_gid)  # root may
    except PermissionError:
        with contextlib.suppress(PermissionError):  # a member of the group may keep the group
            os.fchown(fd, -1, status.st_gid)
