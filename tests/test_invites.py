"""Invites and the configuration from the command line: ``meshnode network`` and ``config``.

An organiser makes a network and shows its invite (as text and as a QR code);
each participant joins it, which stores the key in the configuration file (0600)
and moves a running node over; ``network show`` and ``config show`` say which
network and where each value came from, and never print the key unasked.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import segno

from meshnode.core.netkey import decode_network_key, encode_network_key
from meshnode.core.rpc import encode_response, error_map
from meshnode.system import config
from tests.fake_daemon import FakeDaemon, answer, read_requests
from tests.helpers import Daemon

KEY = bytes(range(32))
INVITE = encode_network_key(KEY)
OTHER_INVITE = encode_network_key(bytes(32))


@dataclass
class Node:
    """A node's environment for the CLI, with no daemon unless a test starts a fake one."""

    home: Path
    conf: Path  # where the configuration file is ($XDG_CONFIG_HOME/meshnode/config.toml)
    env: dict[str, str]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meshnode", *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=30,
            check=False,
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    sockets = Path(tempfile.mkdtemp(prefix="mni", dir="/tmp"))  # socket paths are short
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "MESHNODE_HOME": str(tmp_path / "home"),
        "MESHNODE_SOCKET": str(sockets / "control.sock"),
    }
    yield Node(tmp_path / "home", tmp_path / "xdg" / "meshnode" / "config.toml", env)
    shutil.rmtree(sockets, ignore_errors=True)


def network_row(file: Path, source: str, invite: str | None) -> dict[str, Any]:
    key = decode_network_key(invite) if invite else None
    return {
        "key": "network_key",
        "value": f"private {config.network_id(key)}" if key else "public",
        "network_id": config.network_id(key) if key else "b36fc854",
        "source": source,
    }


def config_answer(
    file: Path, source: str, invite: str | None, *, read: bool = False
) -> dict[str, Any]:
    """What a daemon's ``config`` answers of its network: the file it reads (``read``: it
    exists) and the network key's row."""
    return {
        "file": str(file),
        "files": [str(file)] if read else [],
        "settings": [network_row(file, source, invite)],
    }


def answers(*results: Any, seen: list[str] | None = None) -> list[Callable[[socket.socket], None]]:
    """Fake daemon handlers: one connection each, one request answered with each result."""

    def handler(result: Any) -> Callable[[socket.socket], None]:
        def serve(conn: socket.socket) -> None:
            for request in read_requests(conn, 1):
                if seen is not None:
                    seen.append(request.method)
                answer(conn, request, result)

        return serve

    return [handler(result) for result in results]


# -- network new ----------------------------------------------------------------------


def test_network_new_prints_a_fresh_invite_and_how_to_join(node: Node) -> None:
    first, second = node.run("network", "new"), node.run("network", "new")
    assert first.returncode == 0
    invite = first.stdout.strip()
    assert invite.startswith("mesh1") and len(decode_network_key(invite)) == 32
    assert invite != second.stdout.strip()
    assert f"meshnode network join {invite}" in first.stderr


def test_network_new_qr_draws_the_invite_as_a_qr_code(node: Node) -> None:
    result = node.run("network", "new", "--qr")
    assert result.returncode == 0
    *drawing, invite = result.stdout.splitlines()
    decode_network_key(invite)
    # Half blocks back to modules (1: dark): each character is two rows, top and bottom.
    halves = {" ": (1, 1), "\u2580": (0, 1), "\u2584": (1, 0), "\u2588": (0, 0)}
    rows: list[list[int]] = []
    for line in drawing:
        pairs = [halves[c] for c in line]
        rows += [[top for top, _ in pairs], [bottom for _, bottom in pairs]]
    expected = [list(row) for row in segno.make(invite.upper(), error="m").matrix_iter(border=4)]
    assert rows[: len(expected)] == expected
    assert len(drawing[0]) <= 41, "fits a narrow terminal"


def test_network_new_json_gives_the_invite_and_its_network_id(node: Node) -> None:
    result = node.run("network", "new", "--json")
    assert result.returncode == 0 and result.stderr == ""
    made = json.loads(result.stdout)
    assert made == {
        "invite": made["invite"],
        "network_id": config.network_id(decode_network_key(made["invite"])),
    }
    refused = node.run("network", "new", "--json", "--qr")
    assert refused.returncode == 2 and refused.stdout == ""


# -- network join ---------------------------------------------------------------------


def test_a_mistyped_invite_is_refused_as_bad_input_and_stores_nothing(node: Node) -> None:
    mistyped = INVITE[:10] + ("q" if INVITE[10] != "q" else "p") + INVITE[11:]
    result = node.run("network", "join", mistyped)
    assert result.returncode == 2
    assert "mistyped" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not node.conf.exists()
    assert node.run("network", "join", "hunter2").returncode == 2


def test_join_without_a_daemon_stores_the_key_for_the_next_start(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text("# my laptop\nlog_level = 'warning'\n")
    result = node.run("network", "join", INVITE.upper())  # as a QR code scanner reads it
    assert result.returncode == 0, result.stderr
    assert "takes effect when a node that reads" in result.stdout
    assert stat.S_IMODE(node.conf.stat().st_mode) == 0o600
    assert node.conf.read_text().startswith("# my laptop\nlog_level = 'warning'\n")
    assert f'network_key = "{INVITE}"' in node.conf.read_text()
    shown = node.run("network", "show")
    assert shown.returncode == 0
    assert f"private, id {config.network_id(KEY)}" in shown.stdout
    assert f"{node.conf}:" in shown.stdout and INVITE not in shown.stdout
    revealed = node.run("network", "show", "--reveal")
    assert f"invite:  {INVITE}" in revealed.stdout
    as_json = json.loads(node.run("network", "show", "--json").stdout)
    assert as_json == {
        "network": "private",
        "network_id": config.network_id(KEY),
        "source": f"{node.conf}:4",  # below the comment that says what it is
        "running": False,
    }


def test_join_json_says_where_the_key_went_and_what_the_daemon_did(node: Node) -> None:
    result = node.run("network", "join", "--json", INVITE)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "network_id": config.network_id(KEY),
        "file": str(node.conf),
        "daemon": "not_running",
        "source": f"{node.conf}:2",  # below the comment join writes
    }
    shown = config_answer(node.conf, "", None)
    after = config_answer(node.conf, f"{node.conf}:2", INVITE)
    reloaded = {"changed": ["network_key"], "restart_needed": []}
    with FakeDaemon(answers(shown, reloaded, after)) as fake:
        moved = node.run("network", "join", "--json", INVITE, MESHNODE_SOCKET=str(fake.socket))
    assert json.loads(moved.stdout)["daemon"] == "moved"


def test_join_says_so_when_another_source_keeps_the_node_on_another_network(
    node: Node,
) -> None:
    result = node.run(
        "network", "join", "--force", "--json", INVITE, MESHNODE_NETWORK_KEY=OTHER_INVITE
    )
    assert result.returncode == 0
    said = json.loads(result.stdout)
    assert said["daemon"] == "overridden" and said["source"] == "env MESHNODE_NETWORK_KEY"
    assert said["network_id"] == config.network_id(bytes(32))  # the environment's network


def test_leave_takes_the_key_out_and_the_node_is_on_the_public_network(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text("# my laptop\nlog_level = 'warning'\n")
    assert node.run("network", "join", INVITE).returncode == 0
    left = node.run("network", "leave")
    assert left.returncode == 0, left.stderr
    assert "took the network key out of" in left.stdout and "the public network" in left.stdout
    assert node.conf.read_text() == "# my laptop\nlog_level = 'warning'\n"  # as it was
    assert json.loads(node.run("network", "show", "--json").stdout)["network"] == "public"
    again = node.run("network", "leave")  # nothing to take out: still fine, and said
    assert "no network key in" in again.stdout and "to take out" in again.stdout
    assert "takes effect" not in again.stdout, "nothing changed, so nothing is to take effect"
    assert json.loads(node.run("network", "leave", "--json").stdout)["daemon"] == "not_running"
    assert node.conf.read_text() == "# my laptop\nlog_level = 'warning'\n"


def test_leave_moves_a_running_daemon_back_to_the_public_network(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text(f'network_key = "{INVITE}"\n')
    shown = config_answer(node.conf, f"{node.conf}:1", INVITE, read=True)
    reloaded = {"changed": ["network_key"], "restart_needed": []}
    after = config_answer(node.conf, "default", None, read=True)
    with FakeDaemon(answers(shown, reloaded, after)) as fake:
        result = node.run("network", "leave", MESHNODE_SOCKET=str(fake.socket))
    assert result.returncode == 0, result.stderr
    assert "moved to the public network" in result.stdout
    assert "network_key" not in node.conf.read_text()


def test_join_refuses_when_the_environment_would_override_the_file(node: Node) -> None:
    result = node.run("network", "join", INVITE, MESHNODE_NETWORK_KEY=OTHER_INVITE)
    assert result.returncode == 2
    assert "MESHNODE_NETWORK_KEY" in result.stderr and "--force" in result.stderr
    assert not node.conf.exists()
    forced = node.run("network", "join", "--force", INVITE, MESHNODE_NETWORK_KEY=OTHER_INVITE)
    assert forced.returncode == 0 and "warning" in forced.stderr
    assert INVITE in node.conf.read_text()


def test_join_with_a_running_daemon_writes_its_file_and_reloads_it(node: Node) -> None:
    daemons_file = node.home / "elsewhere.toml"
    seen: list[str] = []
    shown = config_answer(daemons_file, "default", None)
    reloaded = {"changed": ["network_key"], "restart_needed": []}
    after = config_answer(daemons_file, f"{daemons_file}:2", INVITE)
    with FakeDaemon(answers(shown, reloaded, after, seen=seen)) as fake:
        result = node.run("network", "join", INVITE, MESHNODE_SOCKET=str(fake.socket))
    assert result.returncode == 0, result.stderr
    assert seen == ["config", "reload", "config"]
    assert f"moved to network {config.network_id(KEY)}" in result.stdout
    assert INVITE in daemons_file.read_text() and not node.conf.exists()


def test_join_refuses_when_the_running_daemon_takes_its_key_from_a_flag(node: Node) -> None:
    shown = config_answer(node.conf, "flag --network-key", OTHER_INVITE)
    with FakeDaemon(answers(shown)) as fake:
        result = node.run("network", "join", INVITE, MESHNODE_SOCKET=str(fake.socket))
    assert result.returncode == 2 and "flag --network-key" in result.stderr
    assert not node.conf.exists()


# -- network show with a daemon -------------------------------------------------------


def test_network_show_reveals_a_running_daemons_key_only_from_its_file(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text(f'network_key = "{INVITE}"\n')
    shown = config_answer(node.conf, f"{node.conf}:1", INVITE, read=True)
    with FakeDaemon(answers(shown, shown)) as fake:
        hidden = node.run("network", "show", MESHNODE_SOCKET=str(fake.socket))
        revealed = node.run("network", "show", "--reveal", MESHNODE_SOCKET=str(fake.socket))
    assert INVITE not in hidden.stdout and "--reveal" in hidden.stdout
    assert revealed.returncode == 0 and f"invite:  {INVITE}" in revealed.stdout
    node.conf.write_text(f'network_key = "{OTHER_INVITE}"\n')  # edited since the daemon read it
    with FakeDaemon(answers(shown)) as fake:
        stale = node.run("network", "show", "--reveal", MESHNODE_SOCKET=str(fake.socket))
    assert stale.returncode == 1 and "no longer holds the key" in stale.stderr
    assert OTHER_INVITE not in stale.stdout + stale.stderr


# -- config show, reload, path --------------------------------------------------------


def test_config_show_without_a_daemon_says_what_run_would_use(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text(f'peers = ["192.0.2.1:7744"]\nnetwork_key = "{INVITE}"\n')
    result = node.run("config", "show", "--peer", "192.0.2.2:1", MESHNODE_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "meshnode: with --peer: this is what `meshnode run` would use\n"
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["file:"] == f"file: {node.conf}"
    assert lines["peers"].endswith(f"{node.conf}:1 + flag --peer")
    assert '["192.0.2.1:7744", "192.0.2.2:1"]' in lines["peers"]
    assert lines["log_level"].split()[1:] == ["debug", "env", "MESHNODE_LOG_LEVEL"]
    assert lines["max_peers"].split()[1:] == ["128", "default"]
    assert f"private {config.network_id(KEY)} (network show --reveal)" in (lines["network_key"])
    assert INVITE not in result.stdout
    plain = node.run("config", "show", "--json")
    assert "no daemon is running" in plain.stderr and "meshnode run" in plain.stderr
    as_json = json.loads(plain.stdout)
    assert as_json["file"] == str(node.conf) and as_json["files"] == [str(node.conf)]
    assert as_json["running"] is False
    assert {"key": "listen", "value": [":7744"], "source": "default"} in as_json["settings"]
    assert INVITE not in json.dumps(as_json)


def test_config_show_asks_a_running_daemon(node: Node) -> None:
    daemons = node.home / "daemon.toml"
    rows = [{"key": "log_level", "value": "error", "source": f"{daemons}:1"}]
    shown = {"file": str(daemons), "files": [str(daemons)], "settings": rows}
    with FakeDaemon(answers(shown)) as fake:
        result = node.run("config", "show", MESHNODE_SOCKET=str(fake.socket))
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [
        f"file: {daemons}",
        f"{'log_level':<25} {'error':<36} {daemons}:1",
    ]


def test_config_show_with_run_flags_answers_for_them_though_a_daemon_runs(node: Node) -> None:
    other = node.conf.parent / "other.toml"
    other.parent.mkdir(parents=True)
    other.write_text("max_peers = 12\n")
    shown = {"file": "/daemons.toml", "files": [], "settings": []}
    with FakeDaemon(answers(shown, shown, shown)) as fake:  # asked only whether it runs
        result = node.run(
            "config", "show", "--config", str(other), MESHNODE_SOCKET=str(fake.socket)
        )
        typo = node.run(
            "config", "show", "--config", str(other) + "x", MESHNODE_SOCKET=str(fake.socket)
        )
        as_json = node.run(
            "config", "show", "--json", "--no-mdns", MESHNODE_SOCKET=str(fake.socket)
        )
    assert result.returncode == 0, result.stderr
    assert "with --config: this is what `meshnode run` would use" in result.stderr
    assert (
        f"max_peers                 12                                   {other}:1" in result.stdout
    )
    assert typo.returncode == 0 and "(not there: defaults)" in typo.stdout
    answer = json.loads(as_json.stdout)
    assert (answer["running"], answer["for_flags"]) == (True, ["--no-mdns"])
    assert {"key": "mdns", "value": False, "source": "flag --no-mdns"} in answer["settings"]


def test_a_bad_configuration_is_exit_2_with_the_file_and_line(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text("\nmax_peer = 5\n")
    for command in (("config", "show"), ("network", "show")):
        result = node.run(*command)
        assert result.returncode == 2
        assert f"{node.conf}:2: unknown key 'max_peer'; did you mean max_peers?" in result.stderr


def test_config_reload_asks_the_daemon_and_says_what_changed(node: Node) -> None:
    missing = node.run("config", "reload")
    assert missing.returncode == 3 and "no meshnode daemon is running" in missing.stderr
    result = {"changed": ["log_level", "listen"], "restart_needed": ["listen"]}
    with FakeDaemon(answers(result, result)) as fake:
        said = node.run("config", "reload", MESHNODE_SOCKET=str(fake.socket))
        as_json = node.run("config", "reload", "--json", MESHNODE_SOCKET=str(fake.socket))
    assert said.stdout.splitlines()[0] == "reloaded: log_level, listen changed"
    assert "needs a restart to take effect: listen" in said.stdout
    assert json.loads(as_json.stdout) == result


def test_a_reload_the_daemon_refuses_is_exit_2_with_its_reason(node: Node) -> None:
    why = f"{node.conf}:2: max_peers must be 1 to 128, got 500"

    def refuse(conn: socket.socket) -> None:
        for request in read_requests(conn, 1):
            conn.sendall(encode_response(request.msgid, error_map("config-error", why), None))

    with FakeDaemon([refuse]) as fake:
        result = node.run("config", "reload", MESHNODE_SOCKET=str(fake.socket))
    assert result.returncode == 2
    assert result.stderr == f"meshnode: {why} (nothing changed: the daemon keeps what it had)\n"


def test_config_path_prints_the_file(node: Node, tmp_path: Path) -> None:
    assert node.run("config", "path").stdout == f"{node.conf}\n"
    chosen = tmp_path / "chosen.toml"
    assert node.run("config", "path", "--config", str(chosen)).stdout == f"{chosen}\n"
    assert node.run("config", "path", MESHNODE_CONFIG=str(chosen)).stdout == f"{chosen}\n"
    as_json = json.loads(node.run("config", "path", "--json").stdout)
    assert as_json == {"file": str(node.conf), "exists": False, "running": False}


# -- meshnode run ---------------------------------------------------------------------


def test_run_refuses_a_bad_file_before_it_starts(node: Node) -> None:
    node.conf.parent.mkdir(parents=True)
    node.conf.write_text('[[hooks]]\nexec = ["true"]\ntimeout = "forever"\n')
    result = node.run("run", "--no-mdns", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.startswith(f"meshnode: {node.conf}:3: hook 1: timeout is a duration")


@pytest.mark.slow
def test_run_takes_its_log_level_from_the_file_and_warns_of_the_old_one(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = daemon_factory()
    daemon.data_dir.mkdir(parents=True)
    (daemon.data_dir / "config.toml").write_text('log_level = "warning"\n')
    daemon.start("--config", str(tmp_path / "absent.toml"))
    assert daemon.cli("status").returncode == 0
    daemon.stop()
    log = daemon.log()
    assert "old configuration file" in log and "move its settings to" in log
    assert " INFO " not in log, "log_level from the old file applies"


@pytest.mark.slow
def test_join_moves_a_running_daemon_to_the_new_network(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text("# this node's\nmdns = false\n")
    daemon = daemon_factory().start("--config", str(conf))
    result = daemon.cli("network", "join", INVITE)
    assert result.returncode == 0, result.stderr + daemon.log()
    assert f"moved to network {config.network_id(KEY)}" in result.stdout
    assert conf.read_text().startswith("# this node's\nmdns = false\n")
    shown = json.loads(daemon.cli("network", "show", "--json").stdout)
    assert shown["running"] and shown["network_id"] == config.network_id(KEY)
    assert shown["source"] == f"{conf}:4"
    again = daemon.cli("network", "join", INVITE)
    assert f"was on network {config.network_id(KEY)} already" in again.stdout
    other = daemon.cli("network", "join", OTHER_INVITE)
    assert f"moved to network {config.network_id(bytes(32))}" in other.stdout, other.stdout
