"""The node's configuration file: ``<data dir>/config.toml``, all of it optional.

    listen = ["0.0.0.0:7744", "[::]:7744"]   # default: every interface, port 7744
    peers = ["192.0.2.10:7744", "[2001:db8::5]:7744"]
    network_key = "mesh1..."                  # default: the public network
    mdns = true                               # find peers on the local link (default: true)
    mdns_interfaces = ["wlan0", "eth*"]       # default: every suitable one (discovery.md §1)

Command-line options win: ``--listen`` replaces ``listen``, ``--peer`` adds to
``peers``, ``--network-key`` (or ``$MESHNODE_NETWORK_KEY``) replaces
``network_key``, ``--no-mdns`` turns ``mdns`` off. Unknown settings are an error,
so a typo never goes unnoticed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshnode.core.addresses import DEFAULT_PORT, AddressError, parse_address
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, NetworkKeyError, decode_network_key
from meshnode.engine.settings import DiscoverySettings, PeerSettings, Settings, SettingsError

CONFIG_FILE = "config.toml"
_KNOWN = {"listen", "peers", "network_key", "mdns", "mdns_interfaces"}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the setting."""


def load(
    home: Path,
    *,
    listen: Sequence[str] | None,
    peers: Sequence[str],
    network_key: str | None,
    env: Mapping[str, str],
    mdns: bool = True,
) -> Settings:
    path = home / CONFIG_FILE
    data = _read(path)
    where = f"{path}: " if data else ""

    def addresses(values: Any, name: str) -> list[tuple[str | None, int]]:
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f'{where}{name} is a list of "host:port" strings')
        try:
            return [parse_address(v) for v in values]
        except AddressError as exc:
            raise ConfigError(f"{where}{name}: {exc}") from None

    chosen_listen = (
        addresses(list(listen), "--listen")
        if listen is not None
        else addresses(data.get("listen", [f":{DEFAULT_PORT}"]), "listen")
    )
    dial = addresses(data.get("peers", []), "peers") + addresses(list(peers), "--peer")
    for host, _ in dial:
        if host is None:
            raise ConfigError("a peer address needs a host")
    key_text = network_key or env.get("MESHNODE_NETWORK_KEY") or data.get("network_key")
    if key_text is None:
        key = PUBLIC_NETWORK_KEY
    elif not isinstance(key_text, str):
        raise ConfigError(f"{where}network_key is a string")
    else:
        try:
            key = decode_network_key(key_text)
        except NetworkKeyError as exc:
            raise ConfigError(f"{exc}; make one with: meshnode network new") from None
    discovery = _discovery(data, where, mdns)
    try:
        peer_settings = PeerSettings(
            network_key=key,
            listen=tuple(chosen_listen),
            peers=tuple((host, port) for host, port in dial if host is not None),
            # What discovery finds is dialled, within the bounds; what peers say, not.
            dial_sources=frozenset({"mdns", "exchange"}) if discovery.mdns else frozenset(),
        )
    except SettingsError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return Settings(peers=peer_settings, discovery=discovery)


def _discovery(data: Mapping[str, Any], where: str, mdns: bool) -> DiscoverySettings:
    enabled = data.get("mdns", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}mdns is true or false")
    names = data.get("mdns_interfaces")
    if names is not None and (
        not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
    ):
        raise ConfigError(f'{where}mdns_interfaces is a list of interface names, e.g. ["wlan0"]')
    return DiscoverySettings(
        mdns=enabled and mdns, interfaces=None if names is None else tuple(names)
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - _KNOWN
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data
