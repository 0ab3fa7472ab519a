"""Addresses and config.toml: what a node listens on, whom it dials, which mesh it joins."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshnode.core.addresses import AddressError, format_address, parse_address
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, encode_network_key
from meshnode.system.config import ConfigError, load


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.10:7744", ("192.0.2.10", 7744)),
        ("[2001:db8::5]:7744", ("2001:db8::5", 7744)),
        ("[::]:9000", ("::", 9000)),
        ("node.local", ("node.local", 7744)),
        (":7744", (None, 7744)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_addresses(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_address(text) == expected
    assert parse_address(format_address(*expected)) == expected


@pytest.mark.parametrize(
    "text", ["", "1.2.3.4:99999", "1.2.3.4:x", "::1:7744", "[::1", "[nope]:1", "[::1]x"]
)
def test_bad_addresses_say_why(text: str) -> None:
    with pytest.raises(AddressError, match="address"):
        parse_address(text)


def settings(home: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"listen": None, "peers": [], "network_key": None, "env": {}}
    args.update(kwargs)
    return load(home, **args)  # type: ignore[arg-type]


def test_without_a_config_a_node_listens_everywhere_on_the_public_network(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    assert chosen.peers.listen == ((None, 7744),)
    assert chosen.peers.peers == ()
    assert chosen.peers.network_key == PUBLIC_NETWORK_KEY


def test_the_config_file_sets_peers_listen_and_key_and_flags_win(tmp_path: Path) -> None:
    key, other = bytes(range(32)), bytes(32)
    (tmp_path / "config.toml").write_text(
        'listen = ["127.0.0.1:7000"]\n'
        'peers = ["192.0.2.10:7744", "[2001:db8::5]:7744"]\n'
        f'network_key = "{encode_network_key(key)}"\n'
    )
    chosen = settings(tmp_path)
    assert chosen.peers.listen == (("127.0.0.1", 7000),)
    assert chosen.peers.peers == (("192.0.2.10", 7744), ("2001:db8::5", 7744))
    assert chosen.peers.network_key == key
    overridden = settings(
        tmp_path,
        listen=["[::1]:1"],
        peers=["192.0.2.11:1"],
        env={"MESHNODE_NETWORK_KEY": encode_network_key(other)},
    )
    assert overridden.peers.listen == (("::1", 1),)
    assert overridden.peers.peers[-1] == ("192.0.2.11", 1) and len(overridden.peers.peers) == 3
    assert overridden.peers.network_key == other
    assert settings(tmp_path, network_key=encode_network_key(key)).peers.network_key == key


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("peers = [", "not valid TOML"),
        ("peer = []", "unknown setting"),
        ('peers = "192.0.2.1:1"', "list"),
        ('peers = [":7744"]', "needs a host"),
        ('network_key = "hunter2"', "invalid network key"),
        ("network_key = 5", "string"),
        ('listen = ["x:y"]', "port"),
    ],
)
def test_a_bad_config_is_a_clear_error_naming_the_file(
    tmp_path: Path, content: str, why: str
) -> None:
    (tmp_path / "config.toml").write_text(content)
    with pytest.raises(ConfigError, match=why):
        settings(tmp_path)
