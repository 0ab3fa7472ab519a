"""Reloading a running node (SIGHUP, ``meshnode config reload``): each reloadable key, real daemons.

What may change at run time does, at once, and drops no session it does not have to;
a new network key moves the node to another mesh (``meshnode network join`` while it
runs); what needs a restart is named; a file that does not load changes nothing.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshnode.core.netkey import encode_network_key
from tests.helpers import Daemon

pytestmark = pytest.mark.slow

KEY = encode_network_key(bytes(range(32)))


def wait_until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Node:
    """A daemon with a config file of its own."""

    def __init__(self, home: Path) -> None:
        self.daemon = Daemon(home)
        self.config = home.parent / f"{home.name}.toml"

    def start(self, text: str = "") -> Node:
        self.config.write_text(text)
        self.daemon.start("--config", str(self.config))
        return self

    def reload(self, text: str) -> dict[str, list[str]]:
        """Write the file and reload through the control socket; what changed."""
        self.config.write_text(text)
        with self.daemon.client() as client:
            return client.call("reload")  # type: ignore[no-any-return]

    def setting(self, key: str) -> dict[str, object]:
        with self.daemon.client() as client:
            rows = client.call("config")["settings"]
        [row] = [r for r in rows if r["key"] == key]
        return row  # type: ignore[no-any-return]

    def peers(self) -> list[dict[str, object]]:
        with self.daemon.client() as client:
            return client.call("peers")  # type: ignore[no-any-return]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str], Node]]:
    made: list[Node] = []

    def make(name: str) -> Node:
        node = Node(tmp_path / name)
        made.append(node)
        return node

    yield make
    for node in made:
        node.daemon.cleanup()


def test_sighup_changes_the_log_level_and_drops_no_session(
    nodes: Callable[[str], Node],
) -> None:
    a = nodes("a").start()
    b = nodes("b").start(f'peers = ["{a.daemon.peer_address}"]\nlog_level = "warning"\n')
    wait_until(lambda: len(b.peers()) == 1)
    [before] = b.peers()
    b.config.write_text(f'peers = ["{a.daemon.peer_address}"]\nlog_level = "debug"\n')
    assert b.daemon.process is not None
    b.daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: b.setting("log_level")["value"] == "debug")
    assert str(b.setting("log_level")["source"]).startswith(str(b.config))
    wait_until(lambda: "event=reloaded changed=log_level" in b.daemon.log())
    [after] = b.peers()
    assert (after["node_id"], after["since_ms"]) == (before["node_id"], before["since_ms"])


def test_a_new_static_peer_is_dialled_and_a_dropped_one_let_go(
    nodes: Callable[[str], Node],
) -> None:
    a = nodes("a").start()
    b = nodes("b").start()
    assert b.peers() == []
    changed = b.reload(f'peers = ["{a.daemon.peer_address}"]\n')
    assert changed == {"changed": ["peers"], "restart_needed": []}
    wait_until(lambda: len(b.peers()) == 1)
    assert b.reload("")["changed"] == ["peers"]
    assert b.peers() != []  # the session goes on; only the redial is gone


def test_store_quotas_apply_to_the_next_record(nodes: Callable[[str], Node]) -> None:
    a = nodes("a").start()
    b = nodes("b").start(f'peers = ["{a.daemon.peer_address}"]\n')
    wait_until(lambda: len(b.peers()) == 1)
    b.reload(f'peers = ["{a.daemon.peer_address}"]\nstore_max_author_records = 1\n')
    assert b.setting("store_max_author_records")["value"] == 1
    with a.daemon.client() as client:
        client.publish("one", "1")
        client.publish("two", "2")
    author = a.daemon.call("id")["node_id"]
    # Once B has received both (its session counts them), it has stored only one.
    wait_until(lambda: b.peers()[0]["records_in"] >= 2)
    assert len(b.daemon.call("query", author=author)["records"]) == 1
    status = b.daemon.call("status")
    assert status["records_refused"] >= 1 and status["sync"]["refused"] >= 1  # said, not hidden
    assert "event=records_refused" in b.daemon.log()


def test_hooks_are_replaced_by_a_reload(nodes: Callable[[str], Node], tmp_path: Path) -> None:
    out = tmp_path / "hooked"
    script = f"import sys, os; open({str(out)!r}, 'a').write(os.environ['MESHNODE_KEY'] + '\\n')"
    command = json.dumps([sys.executable, "-c", script])
    hook = f'[[hooks]]\nprefix = "offer/"\nexec = {command}\n'
    node = nodes("node").start()
    node.daemon.call("publish", key="offer/before", value="x")
    assert node.reload(hook)["changed"] == ["hooks"]
    node.daemon.call("publish", key="offer/after", value="x")
    wait_until(out.exists)
    assert out.read_text() == "offer/after\n"


def test_a_new_network_key_moves_the_node_to_the_other_mesh(
    nodes: Callable[[str], Node],
) -> None:
    a = nodes("a").start()
    b = nodes("b").start(f'peers = ["{a.daemon.peer_address}"]\n')
    wait_until(lambda: len(b.peers()) == 1)
    joined = b.daemon.cli("network", "join", KEY, "--config", str(b.config))
    assert joined.returncode == 0, joined.stderr
    wait_until(lambda: b.peers() == [] and a.peers() == [])
    assert "left this network" in a.daemon.log() or "left this network" in b.daemon.log()
    assert KEY not in b.daemon.log() and KEY not in b.config.read_text().replace(KEY, "", 1)
    # The other node joins too: they find each other again, on the new network.
    a.reload(f'network_key = "{KEY}"\n')
    wait_until(lambda: len(b.peers()) == 1, timeout=30)


def test_what_needs_a_restart_is_named_and_kept(nodes: Callable[[str], Node]) -> None:
    node = nodes("node").start()
    answer = node.reload('mdns_interfaces = ["eth0"]\n')
    assert answer == {"changed": [], "restart_needed": ["mdns_interfaces"]}
    wait_until(lambda: "event=reload_restart_needed keys=mdns_interfaces" in node.daemon.log())
    # config show: what is in force, and where it came from; beside it, what the file says
    row = node.setting("mdns_interfaces")
    assert (row["value"], row["source"]) == (None, "default")
    assert row["at_restart"] == {"value": ["eth0"], "source": f"{node.config}:1"}
    shown = node.daemon.cli("config", "show").stdout
    assert 'at restart: ["eth0"]' in shown and f"{node.config}:1" in shown
    # Put back as it runs, it waits for nothing
    assert node.reload("") == {"changed": [], "restart_needed": []}
    assert "at_restart" not in node.setting("mdns_interfaces")


def test_config_show_warns_of_a_file_that_no_longer_loads(nodes: Callable[[str], Node]) -> None:
    node = nodes("node").start('log_level = "warning"\n')
    with node.daemon.client() as client:
        assert "load_error" not in client.call("config")
    node.config.write_text('log_level = "warning"\nmax_peer = 3\n')
    with node.daemon.client() as client:
        assert "max_peer" in client.call("config")["load_error"]
    shown = node.daemon.cli("config", "show")
    assert shown.returncode == 0
    assert "no longer loads (a reload or a restart would fail)" in shown.stderr
    assert "max_peer" in shown.stderr and "warning" in shown.stdout  # what runs, still shown


def test_a_file_that_does_not_load_changes_nothing(nodes: Callable[[str], Node]) -> None:
    node = nodes("node").start('log_level = "warning"\n')
    node.config.write_text('log_level = "warning"\nno_such_key = 1\n')
    failed = node.daemon.cli("config", "reload")
    assert failed.returncode != 0
    assert "no_such_key" in failed.stderr and str(node.config) in failed.stderr
    assert ":2" in failed.stderr  # the line
    assert node.setting("log_level")["value"] == "warning"
    assert node.daemon.call("ping") == "pong"
