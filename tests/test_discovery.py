"""Zero-configuration discovery: the interface rule, the settings, and real daemons finding
each other by multicast DNS in network namespaces (tests/netns.py), with no --peer given."""

from __future__ import annotations

import base64
import json
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshnode.client import Client, ClientError
from meshnode.core.netkey import encode_network_key
from meshnode.core.nodeid import decode_node_id
from meshnode.engine import peering
from meshnode.engine.peering import PeerPolicy
from meshnode.engine.settings import PeerSettings, Settings
from meshnode.system import config
from meshnode.system.interfaces import Interface, choose
from tests.helpers import Daemon
from tests.netns import Host, Lan, require_netns

MDNS = frozenset({"mdns"})
IFACE = Interface(
    "eth0",
    2,
    ("10.231.0.2",),
    ("fe80::2",),
    up=True,
    multicast=True,
    loopback=False,
    networks=("10.231.0.0/24", "fe80::/64"),
)


def interface(name: str, **changes: object) -> Interface:
    fields = {
        "name": name,
        "index": 3,
        "ipv4": ("10.1.0.2",),
        "ipv6": (),
        "up": True,
        "multicast": True,
        "loopback": False,
    }
    fields.update(changes)
    return Interface(**fields)  # type: ignore[arg-type]


# -- which interfaces ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        *("lo", "docker0", "br-3f2a", "virbr0", "cni0", "podman1", "veth9a1b", "tun0", "wg0"),
        *("tailscale0", "zt5u4y", "nordlynx"),
    ],
)
def test_container_bridges_veths_and_tunnels_are_left_out_by_default(name: str) -> None:
    choice = choose([IFACE, interface(name)])
    assert [i.name for i in choice.used] == ["eth0"]
    assert dict(choice.skipped)[name].startswith("a container bridge, veth or tunnel")


@pytest.mark.parametrize("name", ["wlan0", "enp3s0", "lo0", "brx", "bridge0", "wlp2s0"])
def test_other_names_are_used_by_default(name: str) -> None:
    assert [i.name for i in choose([interface(name)]).used] == [name]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"loopback": True}, "loopback"),
        ({"up": False}, "down"),
        ({"multicast": False}, "no multicast"),
        ({"ipv4": ()}, "no address"),
    ],
)
def test_an_interface_mdns_cannot_use_is_left_out_with_the_reason(
    changes: dict[str, object], why: str
) -> None:
    assert choose([interface("wlan0", **changes)]).skipped == (("wlan0", why),)


def test_mdns_interfaces_names_the_ones_to_use_even_a_bridge() -> None:
    choice = choose([IFACE, interface("docker0"), interface("wlan0")], ["docker*", "wlan0"])
    assert [i.name for i in choice.used] == ["docker0", "wlan0"]
    assert choice.skipped == (("eth0", "not in mdns_interfaces"),)
    assert choice.ipv4 == ["10.1.0.2", "10.1.0.2"] and choice.ipv6_indexes == []


# -- the settings ----------------------------------------------------------------------


def load(home: Path, text: str = "", mdns: bool = True) -> Settings:
    if text:
        (home / "config.toml").write_text(text)
    path = str(home / "config.toml")
    return config.load(config.Inputs(home, config_file=path, mdns=None if mdns else False)).settings


def test_mdns_is_on_by_default_and_its_hints_and_exchanged_ones_are_dialled(
    tmp_path: Path,
) -> None:
    settings = load(tmp_path)
    assert settings.discovery.mdns and settings.discovery.interfaces is None
    # Not "hello": what a peer says of itself is not dialled; what it shares of others
    # is, so that a mesh spans subnets that multicast does not cross.
    assert settings.peers.dial_sources == {"mdns", "exchange"}
    assert settings.peers.exchange


def test_no_mdns_keeps_todays_static_behaviour(tmp_path: Path) -> None:
    settings = load(tmp_path, mdns=False)
    assert not settings.discovery.mdns and not settings.peers.dial_sources


def test_the_config_file_turns_mdns_off_or_names_interfaces(tmp_path: Path) -> None:
    assert not load(tmp_path, "mdns = false\n").discovery.mdns
    named = load(tmp_path, 'mdns_interfaces = ["wlan0", "eth*"]\n')
    assert named.discovery.interfaces == ("wlan0", "eth*")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('mdns = "yes"\n', "mdns is true or false"),
        ("mdns_interfaces = []\n", "mdns_interfaces is a list of interface names"),
        ('mdns_interfaces = "wlan0"\n', "mdns_interfaces is a list of interface names"),
        ("mdns_interfaces = [1]\n", "mdns_interfaces is a list of interface names"),
    ],
)
def test_bad_discovery_settings_are_errors_that_name_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, text)


# -- one service, several addresses ------------------------------------------------------


def test_the_addresses_of_one_service_are_dialled_one_at_a_time() -> None:
    import random

    policy = PeerPolicy(PeerSettings(dial_sources=MDNS), random.Random(1))
    for address in ("10.231.0.2:7744", "[fe80::2%2]:7744"):
        assert policy.hint(address, "mdns", now=0.0, group="mn-a")
    assert policy.hint("10.231.0.3:7744", "mdns", now=0.0, group="mn-b")
    assert policy.due(0.0) == ["10.231.0.2:7744", "10.231.0.3:7744"]
    policy.failed("10.231.0.2:7744", now=0.0)
    assert policy.due(0.0) == ["[fe80::2%2]:7744"]  # the next address of mn-a, after a failure


def test_a_hint_withdrawn_while_in_use_is_forgotten_once_its_session_ends() -> None:
    import random

    policy = PeerPolicy(PeerSettings(dial_sources=MDNS), random.Random(1))
    address = "10.231.0.2:7744"
    policy.hint(address, "mdns", now=0.0)
    assert policy.due(0.0) == [address]
    policy.opened(b"n" * 32, address, initiator=True, now=0.1)
    policy.withdraw(address, "mdns")
    assert [v.state for v in policy.addresses()] == ["connected"]  # in use: kept for now
    policy.ended(b"n" * 32, address, initiator=True, now=5.0)
    assert policy.addresses() == []
    assert policy.due(100.0) == []


def test_a_static_peer_heard_of_by_mdns_stays_static_and_ungrouped() -> None:
    import random

    policy = PeerPolicy(PeerSettings(peers=(("10.231.0.2", 7744),)), random.Random(1))
    policy.hint("10.231.0.2:7744", "mdns", now=0.0, group="mn-x")
    policy.withdraw("10.231.0.2:7744", "mdns")
    [view] = policy.addresses()
    assert view.origin == "static"
    assert policy.due(0.0) == ["10.231.0.2:7744"]


def test_a_withdrawn_service_is_forgotten_but_not_its_backoff() -> None:
    import random

    settings = PeerSettings(dial_sources=MDNS, outbound_slots=1)
    policy = PeerPolicy(settings, random.Random(1))
    a, b = "10.231.0.2:7744", "10.231.0.3:7744"
    policy.hint(a, "mdns", now=0.0, group="mn-a")
    policy.hint(b, "mdns", now=0.0, group="mn-b")
    [first] = policy.due(0.0)
    policy.failed(first, now=0.0)
    policy.withdraw(b if first == a else a, "hello")  # another source's word does not count
    assert {v.address for v in policy.addresses()} == {a, b}
    policy.withdraw(first, "mdns")
    assert {v.address for v in policy.addresses()} != {a, b}
    policy.hint(first, "mdns", now=0.1)  # the service is back at once
    assert first not in policy.due(0.5)  # its backoff (1 s ± 20 %) still holds


# -- real daemons in namespaces ------------------------------------------------------------

NETNS = pytest.mark.slow
FORM_TIMEOUT = 20.0


class NsDaemon:
    """``meshnode run`` inside one namespace, mDNS on, no --peer; its socket in ``tmp``."""

    def __init__(self, host: Host, tmp: Path, *extra: str) -> None:
        self.host = host
        self.home = tmp / host.name
        self.socket = tmp / f"{host.name}.sock"
        self.log_path = tmp / f"{host.name}.log"
        self.extra = extra
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        argv = [sys.executable, "-m", "meshnode", "run", "--data-dir", str(self.home)]
        argv += ["--socket", str(self.socket), *self.extra]
        self.process = self.host.popen(argv, stdout=log, stderr=log)
        log.close()

    def kill(self) -> None:
        """SIGKILL: no goodbye to peers, none on mDNS; the store as the kernel left it."""
        self.process.kill()
        self.process.wait(10)

    def call(self, method: str, **params: object) -> object:
        with Client(self.socket, timeout=10) as client:
            return client.call(method, **params)

    def peers(self) -> int:
        try:
            return len(self.call("peers"))  # type: ignore[arg-type]
        except ClientError:
            return 0

    def status_ok(self) -> bool:
        try:
            self.call("status")
        except ClientError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def mesh(hosts: int, tmp: Path) -> Iterator[tuple[Lan, list[NsDaemon]]]:
    require_netns()
    with Lan.create(hosts=hosts) as lan:
        yield lan, [NsDaemon(host, tmp) for host in lan.hosts]


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line a helper process prints, stripped; "" if none comes within ``timeout``
    (a helper that failed to start must fail the test, not hang it)."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if readable else ""


def stored(daemon: NsDaemon) -> int:
    return int(daemon.call("status")["records"])  # type: ignore[index]


def discovery(daemon: NsDaemon) -> dict[str, Any]:
    return daemon.call("status")["discovery"]  # type: ignore[index,no-any-return]


def wait_for(condition: object, timeout: float, what: str, daemons: list[NsDaemon]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    logs = "\n".join(f"--- {d.host.name}\n{d.log()[-3000:]}" for d in daemons)
    raise AssertionError(f"{what} within {timeout} s\n{logs}")


@NETNS
def test_eight_nodes_on_one_bridge_find_each_other_and_share_a_record(tmp_path: Path) -> None:
    """Everyone hears everyone, yet each keeps within its bounds, here set below the 7 others
    so that a node dialling all it hears would break them; the record crosses by relay.
    (With 2 inbound slots each, 8 nodes wanting 2 outbound each would fill all 16 exactly,
    and some would starve: 3 leave room, as the defaults' 120 do.)"""
    require_netns()
    bounds = tmp_path / "bounds.toml"
    bounds.write_text("target_degree = 3\nmax_peers = 6\noutbound_slots = 3\n")
    with Lan.create(hosts=8) as lan:
        daemons = [NsDaemon(host, tmp_path, "--config", str(bounds)) for host in lan.hosts]
        wait_for(
            lambda: all(d.peers() >= 1 for d in daemons),
            FORM_TIMEOUT,
            "every node connected",
            daemons,
        )
        time.sleep(1.0)  # let every node fill its outbound slots, and the duplicates close
        degrees = [d.peers() for d in daemons]
        assert all(1 <= degree <= 6 for degree in degrees), degrees
        overlay = daemons[0].call("status")["overlay"]  # type: ignore[index]
        assert overlay["max_peers"] == 6 and overlay["outbound_slots"] == 3
        daemons[3].call("publish", key="offer/soldering-help", value="table 4")
        author = daemons[3].call("id")["node_id"]  # type: ignore[index]

        def everywhere() -> bool:
            for d in daemons:
                try:
                    d.call("get", key="offer/soldering-help", author=author)
                except ClientError:
                    return False
            return True

        wait_for(everywhere, FORM_TIMEOUT, "the record on every node", daemons)
        status = daemons[0].call("status")["discovery"]  # type: ignore[index]
        assert status["running"] and status["interfaces"] == ["eth0"]
        wait_for(
            lambda: daemons[0].call("status")["discovery"]["services"] == 7,  # type: ignore[index]
            FORM_TIMEOUT,
            "every other node's service resolved",
            daemons,
        )


def exchanged(daemon: NsDaemon, subnet: str) -> set[str]:
    """Addresses in ``subnet`` (a prefix such as "10.231.1.") the node learnt by peer exchange."""
    addresses = daemon.call("addresses")
    return {
        a["address"]
        for a in addresses  # type: ignore[attr-defined]
        if a["source"] == "exchange" and a["address"].startswith(subnet)
    }


def holds(daemon: NsDaemon, key: str, author: str) -> bool:
    try:
        daemon.call("get", key=key, author=author)
    except ClientError:
        return False
    return True


@NETNS
def test_a_node_on_two_subnets_joins_them_and_each_side_learns_of_the_other(
    tmp_path: Path,
) -> None:
    """Multicast stops at each subnet; the node on both carries records across, and tells
    each side of the other by peer exchange, so they can dial each other (it routes)."""
    require_netns()
    with Lan.create(hosts=2) as lan:
        near, far = lan.segments[0], lan.add_segment()
        between = lan.add_host(near)
        lan.attach(between, far)
        beyond = [lan.add_host(far), lan.add_host(far)]
        for host in lan.hosts[:2]:
            lan.route(host, far, via=between)
        for host in beyond:
            lan.route(host, near, via=between)
        daemons = [NsDaemon(host, tmp_path) for host in lan.hosts]
        wait_for(lambda: all(d.peers() >= 1 for d in daemons), FORM_TIMEOUT, "connected", daemons)

        first, last = daemons[0], daemons[-1]
        first.call("publish", key="offer/tea", value="near side")
        last.call("publish", key="offer/cake", value="far side")
        authors = [d.call("id")["node_id"] for d in (first, last)]  # type: ignore[index]
        wait_for(
            lambda: holds(last, "offer/tea", authors[0]) and holds(first, "offer/cake", authors[1]),
            FORM_TIMEOUT,
            "records across the subnets",
            daemons,
        )
        wait_for(
            lambda: exchanged(first, "10.231.1.") and exchanged(last, "10.231.0."),
            FORM_TIMEOUT,
            "each side told of the other by peer exchange",
            daemons,
        )


@NETNS
def test_a_node_killed_and_restarted_rejoins_and_catches_up(tmp_path: Path) -> None:
    with mesh(3, tmp_path) as (_, daemons):
        wait_for(lambda: all(d.peers() == 2 for d in daemons), FORM_TIMEOUT, "formed", daemons)
        daemons[2].kill()
        daemons[0].call("publish", key="news/while-away", value="you missed this")
        author = daemons[0].call("id")["node_id"]  # type: ignore[index]
        daemons[2].start()

        def caught_up() -> bool:
            try:
                daemons[2].call("get", key="news/while-away", author=author)
            except ClientError:
                return False
            return daemons[2].peers() >= 1

        wait_for(caught_up, FORM_TIMEOUT, "the restarted node caught up", daemons)


@NETNS
def test_an_ipv6_only_link_with_link_local_addresses_forms_a_mesh(tmp_path: Path) -> None:
    require_netns()
    with Lan.create(hosts=3, ipv4=False) as lan:
        daemons = [NsDaemon(host, tmp_path) for host in lan.hosts]
        wait_for(
            lambda: all(d.peers() == 2 for d in daemons), FORM_TIMEOUT, "all connected", daemons
        )
        addresses = [p["address"] for p in daemons[0].call("peers")]  # type: ignore[attr-defined]
        assert all(a.startswith("[fe80::") for a in addresses), addresses


# Runs in a namespace: hears every mDNS datagram on its one interface (port 5353 is shared,
# as with avahi) and writes each as a line of hex. It never sends.
CAPTURE = r"""
import selectors, socket, struct, sys

ipv4, index, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def bound(family, address):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, 5353))
    return sock


v4 = bound(socket.AF_INET, "0.0.0.0")
group4 = socket.inet_aton("224.0.0.251") + socket.inet_aton(ipv4)
v4.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group4)
v6 = bound(socket.AF_INET6, "::")
group6 = socket.inet_pton(socket.AF_INET6, "ff02::fb") + struct.pack("@I", index)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group6)
selector = selectors.DefaultSelector()
selector.register(v4, selectors.EVENT_READ)
selector.register(v6, selectors.EVENT_READ)
with open(path, "a", buffering=1) as out:
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            out.write(key.fileobj.recv(65535).hex() + "\n")
"""


def forms_of(node_id: str) -> list[bytes]:
    """Every way a node id could appear in a packet: bech32, the raw key, its hex, its base32
    (whole, and the 10 bytes a label has), compared in lowercase as DNS names are."""
    key = decode_node_id(node_id)
    b32 = base64.b32encode(key).decode().rstrip("=").lower()
    return [node_id.lower().encode(), key, key.hex().encode(), b32.encode(), b32[:16].encode()]


@NETNS
def test_a_node_of_another_network_is_never_connected(tmp_path: Path) -> None:
    """It is never connected, is sent no record, and hears no member's node id in anything
    the members multicast."""
    require_netns()
    other = encode_network_key(bytes(range(32)))
    with Lan.create(hosts=3) as lan:
        heard = tmp_path / "heard.hex"
        outsider_host = lan.hosts[2]
        eth0 = outsider_host.interfaces["eth0"]
        assert eth0.ipv4 is not None
        capture = outsider_host.popen(
            [sys.executable, "-c", CAPTURE, eth0.ipv4, str(eth0.index), str(heard)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert first_line(capture, 10.0) == "ready"
        members = [NsDaemon(host, tmp_path) for host in lan.hosts[:2]]
        outsider = NsDaemon(outsider_host, tmp_path, "--network-key", other)
        daemons = [*members, outsider]
        wait_for(lambda: all(d.peers() == 1 for d in members), FORM_TIMEOUT, "members met", daemons)
        with Client(members[0].socket, timeout=10) as client:
            client.publish("offer/soldering-help", "table 4")
        wait_for(lambda: stored(members[1]) == 1, FORM_TIMEOUT, "the record shared", daemons)
        time.sleep(1.0)  # the members' announcements and answers have all gone out by now
        assert outsider.peers() == 0
        assert stored(outsider) == 0
        ignored = discovery(outsider)["ignored_services"]
        assert ignored.get("another network", 0) >= 1
        packets = [bytes.fromhex(line).lower() for line in heard.read_text().split()]
        assert sum(b"_meshnode" in p for p in packets) >= 2  # it heard both members' services
        for member in members:
            node_id = str(member.call("id")["node_id"])  # type: ignore[index]
            for form in forms_of(node_id):
                assert not any(form.lower() in p for p in packets), (node_id, form)


@NETNS
def test_nodes_that_join_another_network_while_running_find_each_other_on_it(
    tmp_path: Path,
) -> None:
    """A reload with a new key: sessions of the old network close, discovery re-advertises."""
    require_netns()
    key = encode_network_key(bytes(range(32)))
    with Lan.create(hosts=2) as lan:
        configs = [tmp_path / f"{host.name}.toml" for host in lan.hosts]
        for config in configs:
            config.write_text("")
        daemons = [
            NsDaemon(host, tmp_path, "--config", str(config))
            for host, config in zip(lan.hosts, configs, strict=True)
        ]
        first: list[dict[str, object]] = []

        def met() -> bool:  # both dialled at once: a duplicate lives a moment before it closes
            if daemons[0].peers() != 1 or daemons[1].peers() != 1:
                return False
            first[:] = daemons[0].call("peers")  # type: ignore[assignment]
            return len(first) == 1

        wait_for(met, FORM_TIMEOUT, "first met", daemons)
        [before] = first
        for daemon, config in zip(daemons, configs, strict=True):
            config.write_text(f'network_key = "{key}"\n')
            assert daemon.call("reload") == {"changed": ["network_key"], "restart_needed": []}

        def met_again() -> bool:
            peers = daemons[0].call("peers")
            return len(peers) == 1 and peers[0]["since_ms"] != before["since_ms"]  # type: ignore[index]

        wait_for(met_again, FORM_TIMEOUT, "met again on the new network", daemons)
        assert "left this network" in daemons[0].log() + daemons[1].log()

        def advertised_anew() -> bool:  # each hears the other's service under the new key
            return all(d.call("status")["discovery"]["services"] >= 1 for d in daemons)  # type: ignore[index]

        wait_for(advertised_anew, FORM_TIMEOUT, "services of the new network seen", daemons)


@NETNS
def test_an_interface_plugged_into_a_running_node_is_used_within_5_s(tmp_path: Path) -> None:
    require_netns()
    with Lan.create(hosts=1) as lan:
        late = lan.add_host()  # no interface yet: a laptop before it joins the Wi-Fi
        daemons = [NsDaemon(lan.hosts[0], tmp_path), NsDaemon(late, tmp_path)]
        wait_for(daemons[1].status_ok, FORM_TIMEOUT, "the late node up", daemons)
        assert daemons[1].call("status")["discovery"]["interfaces"] == []  # type: ignore[index]
        lan.attach(late, lan.segments[0])
        took = wait_for(
            lambda: all(d.peers() == 1 for d in daemons), 5.0, "connected over eth0", daemons
        )
        assert took <= 5.0
        # ... and advertised on it: the first node heard the late node's service, not only
        # its dial (a connection alone could be the first node's work).
        assert discovery(daemons[0])["services"] == 1
        assert discovery(daemons[1])["interfaces"] == ["eth0"]
        lan.detach(late, "eth0")
        wait_for(
            lambda: daemons[1].call("status")["discovery"]["interfaces"] == [],  # type: ignore[index]
            5.0,
            "the unplugged interface noticed",
            daemons,
        )


@NETNS
def test_a_node_moved_to_other_links_is_announced_there_under_a_new_label(tmp_path: Path) -> None:
    """A laptop taken from one Wi-Fi network to another: its label does not follow it, so that
    a listener on both cannot tell it is the same machine by its advertisement."""
    require_netns()
    with Lan.create(hosts=2) as lan:
        laptop = lan.hosts[1]
        elsewhere = lan.add_segment()
        daemons = [NsDaemon(host, tmp_path) for host in lan.hosts]
        there = NsDaemon(lan.add_host(elsewhere), tmp_path)
        everyone = [*daemons, there]
        wait_for(lambda: daemons[1].peers() == 1, FORM_TIMEOUT, "the first link formed", everyone)
        first = discovery(daemons[1])["instance"]
        assert isinstance(first, str) and first.startswith("mn-")
        lan.detach(laptop, "eth0")
        lan.attach(laptop, elsewhere)
        wait_for(lambda: there.peers() == 1, FORM_TIMEOUT, "joined on the other link", everyone)
        assert discovery(there)["services"] == 1
        second = discovery(daemons[1])["instance"]
        assert second not in (first, None)
        # Renumbered where it runs (another lease, another MAC): a new label again, and the
        # old one's goodbyes leave the other node one service, not two.
        laptop.run(["ip", "addr", "flush", "dev", "eth0"])
        laptop.run(["ip", "addr", "add", "10.231.1.200/24", "dev", "eth0"])
        laptop.run(["ip", "addr", "add", "fe80::e7:1:c8/64", "dev", "eth0", "nodad"])
        wait_for(
            lambda: discovery(daemons[1])["instance"] not in (first, second),
            5.0,
            "a new label after renumbering",
            everyone,
        )
        wait_for(
            lambda: discovery(there)["services"] == 1 and there.peers() == 1,
            FORM_TIMEOUT,
            "the old label gone and the laptop reached at its new address",
            everyone,
        )


@NETNS
def test_the_bridge_stops_with_no_thread_left(tmp_path: Path) -> None:
    """Discovery started and cancelled under trio, in a namespace: every thread is gone after."""
    require_netns()
    script = textwrap.dedent(
        """
        import threading, trio
        from meshnode.runtime.mdns import Discovery
        events = []
        async def steps(given):
            events.extend(given)
        async def main():
            d = Discovery(network_key=bytes(32), interfaces=None, steps=steps)
            with trio.move_on_after(1.5):
                await d.run(7744)
            assert not d.state.running, d.state
            assert d.state.interfaces == ["eth0"], d.state
        trio.run(main)
        # trio keeps idle worker threads ("Trio thread N") for reuse: those are its own
        left = [t.name for t in threading.enumerate()
                if t is not threading.main_thread() and not t.name.startswith("Trio thread")]
        assert not left, left
        print("clean")
        """
    )
    with Lan.create(hosts=1) as lan:
        result = lan.hosts[0].run([sys.executable, "-c", script], timeout=30, check=False)
    assert result.stdout.strip() == "clean", result.stderr


# -- the operator's view ------------------------------------------------------------------


@pytest.mark.slow
def test_peers_all_lists_known_addresses_with_source_state_and_failures(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory().start("--peer", "127.0.0.1:1")  # nothing listens there
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = daemon.cli("peers", "--all", "--json").stdout.splitlines()
        [known] = [json.loads(line) for line in lines]
        if known["failures"] >= 1:
            break
        time.sleep(0.1)
    assert known["kind"] == "address"  # beside the sessions, kind "session", in one stream
    assert known["address"] == "127.0.0.1:1" and known["source"] == "static"
    assert known["state"] in ("idle", "dialling") and known["failures"] >= 1
    text = daemon.cli("peers", "--all").stdout
    assert "no peer is connected" in text and "known addresses:" in text
    assert "127.0.0.1:1" in text and "static" in text and "failed" in text
    status = daemon.cli("status").stdout
    assert "mDNS off" in status and "overlay degree 0" in status


FAKE_SERVICES = """
import asyncio, random, sys
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf
from meshnode.core.advert import network_tag, SERVICE_TYPE
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
ours = network_tag(PUBLIC_NETWORK_KEY)
rng = random.Random(7)

def fake(n):
    label = "mn-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    kind = n % 5
    txt = {"v": "1", "n": ours}
    addresses = [f"10.231.0.{100 + n}"]  # on the link, but nobody listens there
    if kind == 1:
        txt = {"v": "1", "n": "someothernetwrk"}
    elif kind == 2:  # TXT as raw bytes on the wire, most of them broken
        txt = [
            b"\\x05v=1",  # a string's length runs past the record's end
            b"\\x0fn=" + ours.encode(),  # no v
            b"\\x03v=1\\xff" + b"x" * 255,  # past the 200 bytes a reader takes
            b"\\x05v=one",  # v is no number
            b"\\x04v=42",  # a later version
        ][(n // 5) % 5]
    elif kind == 3:
        addresses = ["192.0.2.%d" % (n % 250 + 1), "127.0.0.1"]  # off the link, loopback
    elif kind == 4:
        label = "printer-%d" % n
    return ServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=rng.randrange(1, 65536),
                       properties=txt, server=f"{label}.local.", parsed_addresses=addresses)

async def main():
    zc = AsyncZeroconf(interfaces=[sys.argv[1]])
    for n in range(100):
        await zc.async_register_service(fake(n), cooperating_responders=True)
    print("registered", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@NETNS
def test_a_hundred_fake_services_leave_the_table_bounded_and_dials_slow(tmp_path: Path) -> None:
    """Malformed TXT, other networks and versions, off-link and dead addresses, odd names."""
    require_netns()
    with Lan.create(hosts=2) as lan:
        node, faker = lan.hosts
        daemon = NsDaemon(node, tmp_path)
        wait_for(daemon.status_ok, FORM_TIMEOUT, "the node up", [daemon])
        started = time.monotonic()
        fakes = faker.popen(
            [sys.executable, "-c", FAKE_SERVICES, faker.ipv4[0]],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert first_line(fakes, 30.0) == "registered"
        time.sleep(4.0)
        known = daemon.call("addresses")
        elapsed = time.monotonic() - started
        assert isinstance(known, list)
        # Only the 20 well-formed fakes of this network on the link are known; and every
        # kind of broken advertisement was seen and set aside for its reason.
        assert 1 <= len(known) <= 20
        assert {k["address"].rsplit(".", 1)[0] for k in known} <= {"10.231.0"}  # only on-link
        tried = sum(1 for k in known if k["failures"] or k["state"] == "dialling")
        assert tried <= peering.HINT_DIAL_BURST + elapsed * peering.HINT_DIALS_PER_S + 1
        ignored = daemon.call("status")["discovery"]["ignored_services"]  # type: ignore[index]
        assert ignored.get("another network", 0) >= 1
        assert ignored.get("no address this node can reach", 0) >= 1
        assert ignored.get("malformed advertisement", 0) >= 1
        assert ignored.get("another advertisement version", 0) >= 1
        assert daemon.peers() == 0
        assert daemon.process.poll() is None  # and it runs on


FAKE_NODE = """
import asyncio, sys
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf
from meshnode.core.advert import advert_for
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
advert = advert_for(PUBLIC_NETWORK_KEY, bytes(range(10)), 7799)  # nobody listens on 7799

async def main():
    zc = AsyncZeroconf(interfaces=[sys.argv[1]])
    info = ServiceInfo(advert.instance.split(".", 1)[1], advert.instance, port=advert.port,
                       properties=advert.txt, server=advert.server, parsed_addresses=[sys.argv[1]],
                       host_ttl=3, other_ttl=3)  # records that go stale in 3 s
    await zc.async_register_service(info, cooperating_responders=True)
    print("registered", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


@NETNS
def test_a_node_gone_without_a_goodbye_is_forgotten_once_its_dials_fail(tmp_path: Path) -> None:
    """python-zeroconf keeps a PTR 1125 s; a failed dial makes the node ask after the service.

    While the service still answers it stays, though nobody accepts at its address; killed
    (no goodbye), it is suspect when it first does not answer, and forgotten when asked
    again later.
    """
    require_netns()
    with Lan.create(hosts=2) as lan:
        node, faker = lan.hosts
        daemon = NsDaemon(node, tmp_path, "--log-level", "debug")
        wait_for(daemon.status_ok, FORM_TIMEOUT, "the node up", [daemon])
        fake = faker.popen(
            [sys.executable, "-c", FAKE_NODE, faker.ipv4[0]], stdout=subprocess.PIPE, text=True
        )
        assert first_line(fake, 30.0) == "registered"

        def seen() -> int:
            return daemon.call("status")["discovery"]["services"]  # type: ignore[index,no-any-return]

        wait_for(lambda: seen() == 1, 10, "the fake node seen", [daemon])
        # Dials fail all along; once its records go stale, a failed dial asks after it.
        wait_for(lambda: "event=mdns_service_answers" in daemon.log(), 20, "asked", [daemon])
        assert seen() == 1, "a node that still answers was forgotten"
        fake.kill()
        fake.wait(10)
        fake.stdout.close()
        wait_for(lambda: seen() == 0, 60, "the dead node forgotten", [daemon])
        log = daemon.log()
        assert log.index("event=mdns_service_silent") < log.index("event=mdns_service_gone")


def test_past_max_services_the_one_heard_of_longest_ago_is_withdrawn_and_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trio

    from meshnode.core.advert import Resolved, advert_for, network_tag
    from meshnode.engine.events import Hint, Withdrawn
    from meshnode.runtime import mdns

    monkeypatch.setattr(mdns, "MAX_SERVICES", 2)
    events: list[object] = []

    async def steps(given: Sequence[object]) -> None:
        events.extend(given)

    key = bytes(32)
    txt = b"\x03v=1" + bytes([2 + 13]) + b"n=" + network_tag(key).encode()

    async def main() -> mdns.Discovery:
        found = mdns.Discovery(network_key=key, interfaces=None, steps=steps)
        found._links = choose([IFACE])  # the link it would be started on
        for n in range(3):
            name = advert_for(key, bytes([n]) * 10, 7744).instance
            await found._heard(Resolved(name, txt, 7744, (f"10.231.0.{n + 10}",)))
        return found

    found = trio.run(main)
    assert len(found.state.services) == 2
    assert Withdrawn("10.231.0.10:7744", "mdns") in events  # the oldest: its hint taken back
    assert sum(isinstance(e, Hint) for e in events) == 3


def test_an_address_two_services_give_is_withdrawn_only_when_neither_does() -> None:
    """A node restarted with a new label is two services for a while, at one address."""
    import trio

    from meshnode.core.advert import Resolved, advert_for, network_tag
    from meshnode.engine.events import Withdrawn
    from meshnode.runtime import mdns

    key = bytes(32)
    txt = b"\x03v=1" + bytes([2 + 13]) + b"n=" + network_tag(key).encode()
    old, new = (advert_for(key, bytes([n]) * 10, 7744).instance for n in (1, 2))
    taken_back: list[list[str]] = []

    async def steps(given: Sequence[object]) -> None:
        taken_back.append([e.address for e in given if isinstance(e, Withdrawn)])

    async def main() -> None:
        found = mdns.Discovery(network_key=key, interfaces=None, steps=steps)
        found._links = choose([IFACE])
        await found._heard(Resolved(old, txt, 7744, ("10.231.0.10", "10.231.0.11")))
        await found._heard(Resolved(new, txt, 7744, ("10.231.0.10",)))
        await found._heard(mdns._Gone(old))  # .10 is still the new service's
        await found._stop()  # and goes with it

    trio.run(main)
    assert taken_back == [[], [], ["10.231.0.11:7744"], ["10.231.0.10:7744"]]
