"""The configuration: where the file is, what each key means, who wins, and errors that point.

Flags beat the environment, the environment beats the file, the file beats the
defaults; every error names the key, the file and the line; the network key is
never shown; ``network join`` edits the file in place and atomically.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from meshnode.core.addresses import AddressError, format_address, parse_address
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, encode_network_key
from meshnode.core.nodeid import encode_node_id
from meshnode.engine.settings import PeerSettings
from meshnode.store.base import StoreLimits
from meshnode.system import config
from meshnode.system.config import ConfigError, Effective, Inputs, load
from meshnode.system.hookspec import HookConfig

KEY, OTHER, THIRD = bytes(range(32)), bytes(32), bytes([7] * 32)
INVITE, OTHER_INVITE, THIRD_INVITE = (encode_network_key(k) for k in (KEY, OTHER, THIRD))
NODE_ID = encode_node_id(bytes(32))


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


def test_an_address_written_as_a_url_is_told_to_drop_the_scheme() -> None:
    with pytest.raises(AddressError, match="no scheme"):
        parse_address("http://127.0.0.1:7744")


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """The main configuration file of these tests (written by each test that wants one)."""
    return tmp_path / "etc" / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def effective(home: Path, conf: Path, **inputs: Any) -> Effective:
    return load(Inputs(home, config_file=str(conf), **inputs))


# -- where the file is ------------------------------------------------------------------


def test_the_file_is_found_by_flag_then_variable_then_systemd_then_xdg(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "MESHNODE_CONFIG": "/srv/mesh.toml",
        "CONFIGURATION_DIRECTORY": "/etc/meshnode:/etc/other",
        "XDG_CONFIG_HOME": "/home/ada/.xdg",
        "HOME": "/home/ada",
    }
    assert config.config_file(data, "/x/flag.toml", env) == Path("/x/flag.toml")
    assert config.config_file(data, None, env) == Path("/srv/mesh.toml")
    del env["MESHNODE_CONFIG"]
    assert config.config_file(data, None, env) == Path("/etc/meshnode/config.toml")
    del env["CONFIGURATION_DIRECTORY"]
    assert config.config_file(data, None, env) == Path("/home/ada/.xdg/meshnode/config.toml")
    del env["XDG_CONFIG_HOME"]
    assert config.config_file(data, None, env) == Path("/home/ada/.config/meshnode/config.toml")
    assert config.config_file(data, None, {}) == data / "config.toml"  # a service with no HOME
    relative = config.config_file(data, "here.toml", {})
    assert relative.is_absolute() and relative.name == "here.toml"


# -- defaults and precedence ------------------------------------------------------------


def test_without_a_file_a_node_listens_everywhere_on_the_public_network(
    home: Path, conf: Path
) -> None:
    chosen = effective(home, conf)
    assert chosen.settings.peers.listen == ((None, 7744),)
    assert chosen.settings.peers.peers == ()
    assert chosen.settings.peers.network_key == PUBLIC_NETWORK_KEY
    assert chosen.settings.peers == PeerSettings(
        listen=((None, 7744),), dial_sources=frozenset({"mdns", "exchange"})
    )
    assert chosen.settings.store == StoreLimits()
    assert chosen.settings.discovery.mdns and chosen.settings.discovery.interfaces is None
    assert (chosen.log_level, chosen.hooks, chosen.hook_concurrency) == ("info", (), 4)
    assert chosen.config_file == conf and chosen.files == ()
    assert set(chosen.sources.values()) == {"default"}
    assert [row["key"] for row in config.describe(chosen)] == [*config._KEYS, "hooks"]


FULL = f"""\
# every key, each on its own line (the line numbers matter below)
listen = ["127.0.0.1:7000", "[::1]:7000"]
peers = ["192.0.2.10:7744", "[2001:db8::5]:7744"]
network_key = "{INVITE}"
mdns = false
mdns_interfaces = ["wlan0", "eth*"]
log_level = "debug"
target_degree = 4
max_peers = 40
outbound_slots = 10
min_outbound = 3
store_max_bytes = "1GiB"
store_max_author_bytes = 1000000
store_max_author_records = 500
tombstone_retention = "2w"
hook_concurrency = 2

[[hooks]]
prefix = "offer/"
author = "{NODE_ID}"
exec = ["notify-send", "new offer"]
timeout = "1m30s"

[[hooks]]  # a string is split into words as a shell would, and run without one
exec = "logger -t 'meshnode hook'"
"""


def test_every_key_of_the_file_lands_in_the_settings_tree(home: Path, conf: Path) -> None:
    chosen = effective(home, write(conf, FULL))
    peers = chosen.settings.peers
    assert peers.listen == (("127.0.0.1", 7000), ("::1", 7000))
    assert peers.peers == (("192.0.2.10", 7744), ("2001:db8::5", 7744))
    assert peers.network_key == KEY
    assert (peers.target_degree, peers.max_peers, peers.outbound_slots) == (4, 40, 10)
    assert peers.min_outbound == 3
    assert peers.dial_sources == frozenset()  # mdns off: nothing found is dialled
    assert not chosen.settings.discovery.mdns
    assert chosen.settings.discovery.interfaces == ("wlan0", "eth*")
    assert chosen.settings.store == StoreLimits(
        max_total_bytes=2**30,
        max_author_bytes=1_000_000,
        max_author_records=500,
        tombstone_retention_ms=14 * 86_400_000,
    )
    assert chosen.log_level == "debug" and chosen.hook_concurrency == 2
    assert chosen.hooks == (
        HookConfig(("notify-send", "new offer"), prefix="offer/", author=NODE_ID, timeout_s=90),
        HookConfig(("logger", "-t", "meshnode hook")),
    )
    assert chosen.files == (conf,)
    assert chosen.sources["listen"] == f"{conf}:2"
    assert chosen.sources["hook_concurrency"] == f"{conf}:16"
    assert chosen.sources["hooks"] == f"{conf}:18"


@pytest.mark.parametrize(
    ("key", "file_value", "env_value", "flag", "expected"),
    [
        ("log_level", '"warning"', "error", {"log_level": "debug"}, ("warning", "error", "debug")),
        ("listen", '["10.0.0.1:1"]', "10.0.0.2:2", {"listen": ["10.0.0.3:3"]}, (1, 2, 3)),
        ("network_key", f'"{INVITE}"', OTHER_INVITE, {"network_key": THIRD_INVITE}, (1, 2, 3)),
        ("mdns", "false", "true", {"mdns": False}, (False, True, False)),
        ("max_peers", "50", "60", None, (50, 60)),
        ("tombstone_retention", '"1d"', "2d", None, (86_400_000, 2 * 86_400_000)),
        ("store_max_bytes", '"1MB"', "2MiB", None, (10**6, 2 * 2**20)),
        ("mdns_interfaces", '["eth0"]', "wlan0, wlan1", None, (("eth0",), ("wlan0", "wlan1"))),
        ("hook_concurrency", "8", "9", None, (8, 9)),
    ],
)
def test_flags_beat_the_environment_which_beats_the_file_which_beats_the_default(
    home: Path,
    conf: Path,
    key: str,
    file_value: str,
    env_value: str,
    flag: dict[str, Any] | None,
    expected: tuple[Any, ...],
) -> None:
    def value(chosen: Effective) -> Any:
        found = config._effective_values(chosen)[key]
        numbered = {
            "listen": {
                ((None, 7744),): 0,
                (("10.0.0.1", 1),): 1,
                (("10.0.0.2", 2),): 2,
                (("10.0.0.3", 3),): 3,
            },
            "network_key": {PUBLIC_NETWORK_KEY: 0, KEY: 1, OTHER: 2, THIRD: 3},
        }
        return numbered[key][found] if key in numbered else found

    default = effective(home, conf)
    write(conf, f"{key} = {file_value}\n")
    from_file = effective(home, conf)
    env = {f"MESHNODE_{key.upper()}": env_value}
    from_env = effective(home, conf, env=env)
    assert value(from_file) == expected[0] != value(default)
    assert from_file.sources[key] == f"{conf}:1"
    assert value(from_env) == expected[1]
    assert from_env.sources[key] == f"env MESHNODE_{key.upper()}"
    if flag is not None:
        from_flag = effective(home, conf, env=env, **flag)
        assert value(from_flag) == expected[2]
        assert from_flag.sources[key].startswith("flag --")


def test_peer_flags_add_to_the_list_and_the_variable_replaces_the_files(
    home: Path, conf: Path
) -> None:
    write(conf, 'peers = ["192.0.2.1:1", "192.0.2.2:2"]\n')
    added = effective(home, conf, peers=["192.0.2.9:9"])
    assert added.settings.peers.peers == (("192.0.2.1", 1), ("192.0.2.2", 2), ("192.0.2.9", 9))
    assert added.sources["peers"] == f"{conf}:1 + flag --peer"
    env = {"MESHNODE_PEERS": "192.0.2.5:5,192.0.2.6:6"}
    replaced = effective(home, conf, env=env)
    assert replaced.settings.peers.peers == (("192.0.2.5", 5), ("192.0.2.6", 6))
    both = effective(home, conf, env=env, peers=["192.0.2.9:9"])
    assert both.settings.peers.peers[-1] == ("192.0.2.9", 9) and len(both.settings.peers.peers) == 3
    assert effective(home, conf, env={"MESHNODE_PEERS": ""}).settings.peers.peers[0] == (
        "192.0.2.1",
        1,
    ), "an empty variable counts as unset"


@pytest.mark.parametrize(
    ("text", "ms"),
    [("90", 90_000), ("45s", 45_000), ("1h30m", 5_400_000), ("500ms", 500), ("1.5h", 5_400_000)],
)
def test_durations_are_seconds_or_numbers_with_units(
    home: Path, conf: Path, text: str, ms: int
) -> None:
    write(conf, f'tombstone_retention = "{text}"\n')
    assert effective(home, conf).settings.store.tombstone_retention_ms == ms


@pytest.mark.parametrize(
    ("text", "size"),
    [("20000", 20_000), ('"64KiB"', 65_536), ('"64kb"', 64_000), ('"1.5GB"', 1_500_000_000)],
)
def test_sizes_are_bytes_or_numbers_with_units(
    home: Path, conf: Path, text: str, size: int
) -> None:
    write(conf, f"store_max_author_bytes = {text}\n")
    assert effective(home, conf).settings.store.max_author_bytes == size


def test_bounds_written_out_agree_with_the_code_they_stand_for() -> None:
    from meshnode.client.config_commands import LOG_LEVELS
    from meshnode.core.record import MAX_RECORD_BYTES
    from meshnode.runtime.peers import MAX_CONNECTIONS

    assert config.MIN_STORE_BYTES == MAX_RECORD_BYTES
    assert config.MAX_PEERS_LIMIT == MAX_CONNECTIONS
    assert LOG_LEVELS == config.LOG_LEVELS


# -- errors -----------------------------------------------------------------------------

BAD_FILES = [
    ("# hi\npeer = []\n", 2, "unknown key 'peer'; did you mean peers?"),
    ("[store]\nmax = 1\n", 1, "unknown key 'store'"),
    ('\n\npeers = "192.0.2.1:1"', 3, "peers is a list"),
    ('peers = [":7744"]', 1, "without a host"),
    ('listen = ["x:y"]', 1, "the port 'y' is not a number"),
    ('listen = ["127.0.0.1:7744", "127.0.0.1:7744"]', 1, "names 127.0.0.1:7744 twice"),
    ('peers = ["192.0.2.1:0"]', 1, "port must be 1 to 65535"),  # 0 is for listening only
    ('peers = ["192.0.2.1:99999"]', 1, "port must be 1 to 65535"),
    ('network_key = "hunter2"', 1, "network_key holds an invalid network key"),
    ("network_key = 5", 1, "network_key is a string"),
    (f'network_key = "{INVITE[:-2]}{INVITE[-1]}{INVITE[-2]}"', 1, "a character is wrong"),
    ('mdns = "yes"', 1, "mdns is true or false"),
    ("mdns_interfaces = []", 1, "mdns_interfaces is a list of interface names"),
    ('log_level = "loud"', 1, "log_level is one of debug, info, warning, error"),
    ("max_peers = 1.5", 1, "max_peers is a whole number"),
    ("max_peers = true", 1, "max_peers is a whole number"),
    ("max_peers = 500", 1, "max_peers must be 1 to 128"),
    ("target_degree = 0", 1, "target_degree must be at least 1"),
    ('store_max_bytes = "lots"', 1, "store_max_bytes is a size"),
    ("store_max_bytes = 100", 1, "must be at least 17408 bytes"),
    ('tombstone_retention = "3 days"', 1, "tombstone_retention is a duration"),
    ('tombstone_retention = "0s"', 1, "must be a positive duration"),
    ("tombstone_retention = inf", 1, "must be a finite duration"),
    ("tombstone_retention = nan", 1, "must be a finite duration"),
    ("tombstone_retention = 1e300", 1, "must be at most 100 years"),
    ("tombstone_retention = 1e308", 1, "must be at most 100 years"),
    ("tombstone_retention = 1" + "0" * 400, 1, "must be at most 100 years"),
    ('[[hooks]]\nexec = ["a"]\ntimeout = -inf\n', 3, "hook 1: timeout must be a finite"),
    ("hook_concurrency = 0", 1, "hook_concurrency must be 1 to 64"),
    ('hooks = "notify-send"', 1, "hooks are tables"),
    ('[[hooks]]\nprefix = "a/"\n', 1, "hook 1: exec is missing"),
    (
        '[[hooks]]\nexec = ["a"]\n\n[[hooks]]\nexec = []\n',
        5,
        "hook 2: exec: a hook needs a command",
    ),
    ('[[hooks]]\nexec = ["a"]\ntimout = "1s"\n', 3, "hook 1: unknown key 'timout'"),
    ('[[hooks]]\nexec = "a \'b"\n', 2, "hook 1: exec: cannot split the command"),
    ('[[hooks]]\nexec = ["a"]\nprefix = 1\n', 3, "hook 1: prefix is a string"),
    ('[[hooks]]\nexec = ["a"]\nauthor = "ada"\n', 3, "hook 1: author is a node id"),
    ('[[hooks]]\nexec = ["a"]\ntimeout = "soon"\n', 3, "hook 1: timeout is a duration"),
    ('[[hooks]]\nexec = ["a"]\nmax_peers = 5\n', 3, "settings of the node go above the first"),
    ('[[hooks]]\nexec = ["a"]\nmax_peer = 5\n', 3, "settings of the node go above the first"),
    (
        '[[hooks]]\nexec = ["a"]\nprefixes = "a/"\n',
        3,
        "hook 1: unknown key 'prefixes'; did you mean prefix?",
    ),
    ('[[hooks]]\nexec = [""]\n', 2, "hook 1: exec: a hook needs a command"),
    ("[[hooks]]\nexec = 5\n", 2, "hook 1: exec is a command: a list of strings"),
    ('[[hooks]]\nexec = ["a", 1]\n', 2, "hook 1: exec: a command is a list of strings"),
]


@pytest.mark.parametrize(("content", "line", "why"), BAD_FILES)
def test_a_bad_file_is_an_error_naming_the_file_the_line_and_the_key(
    home: Path, conf: Path, content: str, line: int, why: str
) -> None:
    write(conf, content)
    with pytest.raises(ConfigError) as error:
        effective(home, conf)
    assert str(error.value).startswith(f"{conf}:{line}: ")
    assert why in str(error.value)


@pytest.mark.parametrize(
    ("content", "where"),
    [("peers = [\n", "2"), ("peers = [", "1"), ("a = 1\nb = = 2\n", "2:5"), ('x = "abc', "1")],
)
def test_bad_toml_is_an_error_with_the_line(
    home: Path, conf: Path, content: str, where: str
) -> None:
    write(conf, content)
    with pytest.raises(ConfigError, match="not valid TOML") as error:
        effective(home, conf)
    assert str(error.value).startswith(f"{conf}:{where}: ")


def test_an_unreadable_file_is_a_clear_error(home: Path, conf: Path) -> None:
    conf.mkdir(parents=True)  # a directory where the file should be (unreadable even to root)
    with pytest.raises(ConfigError, match=f"cannot read {conf}"):
        effective(home, conf)
    conf.rmdir()
    conf.write_bytes(b'log_level = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        effective(home, conf)


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"MESHNODE_MDNS": "maybe"}, "$MESHNODE_MDNS: mdns is true or false"),
        ({"MESHNODE_MAX_PEERS": "many"}, "$MESHNODE_MAX_PEERS: max_peers is a whole number"),
        (
            {"MESHNODE_NETWORK_KEY": "mesh1nope"},
            "$MESHNODE_NETWORK_KEY: network_key holds an invalid",
        ),
        ({"MESHNODE_PEERS": "192.0.2.1:x"}, "$MESHNODE_PEERS: peers contains a bad address"),
        ({"MESHNODE_LOG_LEVEL": "chatty"}, "$MESHNODE_LOG_LEVEL: log_level is one of"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(
    home: Path, conf: Path, env: dict[str, str], why: str
) -> None:
    with pytest.raises(ConfigError) as error:
        effective(home, conf, env=env)
    assert str(error.value).startswith(why)


def test_a_bad_flag_is_an_error_naming_it(home: Path, conf: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--listen: listen contains a bad address"):
        effective(home, conf, listen=["nowhere:port"])
    with pytest.raises(
        ConfigError, match=r"^--network-key: network_key holds an invalid network key"
    ):
        effective(home, conf, network_key="mesh1qqqq")


def test_keys_that_contradict_each_other_say_where_each_was_set(home: Path, conf: Path) -> None:
    write(conf, "max_peers = 10\n")
    with pytest.raises(ConfigError) as error:
        effective(home, conf, env={"MESHNODE_OUTBOUND_SLOTS": "10"})
    assert "outbound_slots must be 0 to 9" in str(error.value)
    assert f"max_peers from {conf}:1" in str(error.value)
    assert "outbound_slots from env MESHNODE_OUTBOUND_SLOTS" in str(error.value)


# -- the old file in the data dir -------------------------------------------------------


def test_the_old_file_in_the_data_dir_is_read_below_the_main_one_with_a_warning(
    home: Path, conf: Path
) -> None:
    write(home / "config.toml", 'peers = ["192.0.2.1:1"]\nlog_level = "warning"\n')
    only_old = effective(home, conf)
    assert only_old.settings.peers.peers == (("192.0.2.1", 1),)
    assert only_old.files == (home / "config.toml",)
    assert only_old.sources["peers"] == f"{home / 'config.toml'}:1"
    (warning,) = [w for w in only_old.warnings if "old configuration file" in w]
    assert f"move its settings to {conf}" in warning
    write(conf, 'log_level = "error"\n')
    both = effective(home, conf)
    assert both.log_level == "error" and both.settings.peers.peers == (("192.0.2.1", 1),)
    assert both.files == (conf, home / "config.toml")
    pointed_at = load(Inputs(home, config_file=str(home / "config.toml")))
    assert pointed_at.warnings == () and pointed_at.files == (home / "config.toml",)


def test_a_key_that_others_can_read_is_warned_of(home: Path, conf: Path) -> None:
    write(conf, f'network_key = "{INVITE}"\n').chmod(0o644)
    assert any("chmod 600" in w for w in effective(home, conf).warnings)
    conf.chmod(0o600)
    assert effective(home, conf).warnings == ()


def test_an_explicit_file_that_does_not_exist_is_mentioned(home: Path, conf: Path) -> None:
    assert any("does not exist" in w for w in effective(home, conf).warnings)
    assert load(Inputs(home, env={"XDG_CONFIG_HOME": str(conf.parent)})).warnings == ()


# -- describe ---------------------------------------------------------------------------


def test_describe_says_each_value_and_source_and_never_the_network_key(
    home: Path, conf: Path
) -> None:
    write(conf, FULL)
    for chosen in (
        effective(home, conf),
        effective(home, conf, env={"MESHNODE_NETWORK_KEY": OTHER_INVITE}),
        effective(home, conf, network_key=THIRD_INVITE),
    ):
        rows = config.describe(chosen)
        text = json.dumps(rows)
        for secret in (INVITE, OTHER_INVITE, THIRD_INVITE, KEY.hex(), OTHER.hex(), THIRD.hex()):
            assert secret not in text
        row = next(r for r in rows if r["key"] == "network_key")
        assert row["network_id"] == config.network_id(chosen.settings.peers.network_key)
        assert row["value"] == f"private {row['network_id']}"
    shown = {row["key"]: row for row in config.describe(effective(home, conf))}
    assert shown["listen"] == {
        "key": "listen",
        "value": ["127.0.0.1:7000", "[::1]:7000"],
        "source": f"{conf}:2",
    }
    assert shown["store_max_bytes"]["value"] == "1GiB"
    assert shown["tombstone_retention"]["value"] == "2w"
    assert shown["hooks"]["value"][1] == {
        "prefix": "",
        "exec": ["logger", "-t", "meshnode hook"],
        "timeout": "10s",
    }
    public = config.describe(
        effective(home, conf, network_key=encode_network_key(PUBLIC_NETWORK_KEY))
    )
    assert next(r for r in public if r["key"] == "network_key")["value"] == "public"


def test_described_values_read_back_as_the_same_configuration(home: Path, conf: Path) -> None:
    write(conf, FULL)
    chosen = effective(home, conf)
    lines = []
    for row in config.describe(chosen):
        if row["key"] not in ("network_key", "hooks") and row["value"] is not None:
            lines.append(f"{row['key']} = {json.dumps(row['value'])}")
    again = effective(home, write(conf.with_name("again.toml"), "\n".join(lines)))
    assert config.differences(chosen, again) == ["network_key", "hooks"]


def test_differences_name_the_keys_that_changed(home: Path, conf: Path) -> None:
    before = effective(home, conf)
    write(conf, 'log_level = "debug"\npeers = ["192.0.2.1:1"]\n')
    assert config.differences(before, effective(home, conf)) == ["peers", "log_level"]
    assert config.differences(before, before) == []


# -- writing the network key ------------------------------------------------------------

COMMENTED = f"""\
# The node on the kitchen Pi.
listen = [":7744"]   # every interface
network_key = "{INVITE}"  # the old event's
log_level = "info"

[[hooks]]
exec = ["true"]
"""


def test_set_network_key_replaces_the_key_and_keeps_everything_else(conf: Path) -> None:
    write(conf, COMMENTED)
    config.set_network_key(conf, OTHER_INVITE)
    assert conf.read_text() == COMMENTED.replace(INVITE, OTHER_INVITE)


def test_set_network_key_adds_the_key_above_the_first_table(home: Path, conf: Path) -> None:
    text = COMMENTED.replace(f'network_key = "{INVITE}"  # the old event\'s\n', "")
    write(conf, text)
    config.set_network_key(conf, OTHER_INVITE)
    new = conf.read_text()
    assert new.startswith(text.split("[[hooks]]")[0])
    assert new.endswith('[[hooks]]\nexec = ["true"]\n')
    assert effective(home, conf).settings.peers.network_key == OTHER
    assert effective(home, conf).sources["network_key"].startswith(f"{conf}:")


def test_no_network_key_takes_the_line_out_and_keeps_everything_else(
    home: Path, conf: Path
) -> None:
    without = COMMENTED.replace(f'network_key = "{INVITE}"  # the old event\'s\n', "")
    write(conf, COMMENTED)
    config.set_network_key(conf, None)
    assert conf.read_text() == without
    assert effective(home, conf).settings.peers.network_key == PUBLIC_NETWORK_KEY
    config.set_network_key(conf, OTHER_INVITE)  # join puts its comment above the key...
    config.set_network_key(conf, None)  # ... and leave takes both out again
    assert conf.read_text() == without


@pytest.mark.parametrize("invite", [OTHER_INVITE, None])
def test_a_key_written_over_several_lines_is_left_to_be_edited_by_hand(
    conf: Path, invite: str | None
) -> None:
    text = f'network_key = """\n{INVITE}"""\n'
    write(conf, text)
    with pytest.raises(config.ConfigError, match="edit it by hand"):
        config.set_network_key(conf, invite)
    assert conf.read_text() == text


def test_set_network_key_makes_the_file_and_its_directory_mode_0600(home: Path, conf: Path) -> None:
    target = conf.parent / "new" / "config.toml"
    config.set_network_key(target, INVITE)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert effective(home, target).settings.peers.network_key == KEY
    write(conf, "log_level = 'debug'").chmod(0o644)
    config.set_network_key(conf, INVITE)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert conf.read_text().startswith("log_level = 'debug'\n")


def test_set_network_key_replaces_the_file_at_once_or_not_at_all(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(conf, COMMENTED)
    inode = conf.stat().st_ino
    config.set_network_key(conf, OTHER_INVITE)
    assert conf.stat().st_ino != inode, "a new file renamed over the old one, not rewritten"

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        config.set_network_key(conf, THIRD_INVITE)
    assert conf.read_text() == COMMENTED.replace(INVITE, OTHER_INVITE)
    assert sorted(p.name for p in conf.parent.iterdir()) == ["config.toml"], "no temporary left"


@pytest.mark.parametrize(
    ("content", "invite", "why"),
    [
        ("", "mesh1nope", "invalid network key"),
        ("", INVITE[:-1] + ("q" if INVITE[-1] != "q" else "p"), "a character is wrong"),
        ("peers = [", INVITE, "not valid TOML"),
    ],
)
def test_set_network_key_refuses_a_bad_invite_or_a_broken_file_and_changes_nothing(
    conf: Path, content: str, invite: str, why: str
) -> None:
    write(conf, content)
    with pytest.raises(ConfigError, match=why):
        config.set_network_key(conf, invite)
    assert conf.read_text() == content


def test_set_network_key_writes_through_a_symlink(home: Path, conf: Path) -> None:
    real = write(conf.parent / "real.toml", "mdns = false\n")
    conf.symlink_to(real)
    config.set_network_key(conf, INVITE)
    assert conf.is_symlink() and "network_key" in real.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_set_network_key_as_root_keeps_the_owner_and_group(conf: Path) -> None:
    write(conf, "mdns = true\n")
    os.chown(conf, 4321, 8765)
    config.set_network_key(conf, INVITE)
    assert (conf.stat().st_uid, conf.stat().st_gid) == (4321, 8765)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
