"""Beside avahi-daemon, the mDNS stack of most Linux desktops: meshnode and avahi share port 5353
on one host and both keep working, and avahi's own tools, on any host of the link, see
meshnode's service as DNS-SD says they should (``protocol/discovery.md`` §1: the SRV target
``<label>.local.``, its addresses, and TXT ``v=1``, ``n=<tag>``).

Every host is a network namespace (tests/netns.py), so no packet leaves the test's own bridge.
avahi-daemon runs there as it would on a desktop, except that nothing of the machine's is used
or touched: it gets a D-Bus system bus of its own (a private dbus-daemon: ``avahi-browse``
reaches avahi only through D-Bus), and a private /run through a mount namespace, since its pid
file and socket have fixed paths under /run/avahi-daemon and two daemons would collide there.
It needs Debian's avahi-daemon and avahi-utils (dbus-daemon, iproute2 and util-linux come with
the machine); without them these tests skip and name the packages.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from meshnode.core.advert import SERVICE_TYPE, label_of, network_tag
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.runtime.mdns import MAX_RETRY
from tests.netns import Host, Lan, require_netns
from tests.test_discovery import FORM_TIMEOUT, NsDaemon

SLOW = pytest.mark.slow
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# Every program these tests run beside meshnode, and the Debian package that has it.
PACKAGES = {
    "avahi-daemon": "avahi-daemon",
    "avahi-browse": "avahi-utils",
    "dbus-daemon": "dbus-daemon",
    "unshare": "util-linux",
    "ss": "iproute2",
}
# Bounds, not expectations: each takes about a second, but a busy machine starts processes slowly.
START_TIMEOUT = 30.0  # dbus-daemon, then avahi-daemon, each up
UP_TIMEOUT = 60.0  # a node answering on its control socket
BROWSE_TIMEOUT = 20.0  # one ``avahi-browse --terminate`` to its end
SEE_TIMEOUT = 20.0  # for avahi to have resolved a service, browsing again and again
BROWSE_TYPE = SERVICE_TYPE.removesuffix(".local.")  # _meshnode._tcp, as avahi-browse takes it

# The bus is this avahi's and its clients' alone, so it lets anyone own and call anything.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""
# Debian's defaults, narrowed to the test's link: eth0 only, a host name of its own, nothing of
# avahi's to announce and no wide-area DNS-SD. ``extra``: more [server] settings.
AVAHI_CONFIG = """[server]
host-name={host_name}
use-ipv4=yes
use-ipv6=yes
allow-interfaces=eth0
enable-dbus=yes
{extra}
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""
STARTED = "Server startup complete."  # what avahi-daemon logs once it answers and browses
# Run by ``sh -c`` in a new mount namespace: $1 is mounted on /run, then the rest is exec'd.
PRIVATE_RUN = 'mount --bind "$1" /run && shift && exec "$@"'


def program(name: str) -> str:
    """The full path of one of ``PACKAGES``' programs (sbin included); skip if it is missing."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        missing = [p for p in PACKAGES if shutil.which(p, path=SEARCH_PATH) is None]
        packages = " ".join(sorted({PACKAGES[p] for p in missing}))
        pytest.skip(
            f"the avahi tests need {', '.join(missing)}: "
            f"apt-get install -y --no-install-recommends {packages}"
        )
    return found


def require_avahi() -> None:
    """Skip, with the reason, where namespaces cannot be made or a program is missing."""
    require_netns()
    for name in PACKAGES:
        program(name)


class Logged(Protocol):
    host: Host

    def log(self) -> str: ...


@dataclass(frozen=True)
class Seen:
    """One resolved service, as a line of ``avahi-browse --resolve --parsable`` gives it."""

    interface: str
    protocol: str  # what avahi heard it over: IPv4 or IPv6
    name: str  # the instance label
    host_name: str  # the SRV target
    address: str
    port: int
    txt: frozenset[str]


def parse_browse(output: str) -> list[Seen]:
    """The resolved lines of ``avahi-browse --parsable --resolve``, fields separated by ``;``:
    ``=``, interface, protocol, name, type, domain, host name, address, port, TXT strings."""
    seen = []
    for line in output.splitlines():
        fields = line.split(";")
        if fields[0] != "=" or len(fields) != 10:
            continue
        interface, protocol, name, _, _, host_name, address, port, txt = fields[1:]
        seen.append(
            Seen(
                interface,
                protocol,
                name,
                host_name,
                address,
                int(port),
                frozenset(shlex.split(txt)),
            )
        )
    return seen


class Avahi:
    """avahi-daemon on ``host``, with a D-Bus system bus and a /run of its own; started at once.

    Its processes are ``host``'s, so the ``Lan`` stops them when it closes, however a test ends.
    """

    def __init__(self, host: Host, tmp: Path, *settings: str) -> None:
        self.host = host
        self.home = tmp / f"{host.name}-avahi"
        self.run_dir = self.home / "run"  # mounted on /run for avahi alone
        (self.run_dir / "avahi-daemon").mkdir(parents=True)
        self.bus = self.home / "bus"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus}"}
        self.log_path = self.home / "avahi.log"
        self.last_browse = "(none yet)"  # what avahi-browse printed last, for failure messages
        bus_config = self.home / "bus.conf"
        bus_config.write_text(BUS_CONFIG.format(path=self.bus))
        config = self.home / "avahi-daemon.conf"
        config.write_text(
            AVAHI_CONFIG.format(host_name=f"avahi-{host.name}", extra="\n".join(settings))
        )
        with open(self.home / "dbus.log", "wb") as log:
            self.bus_process = host.popen(
                [program("dbus-daemon"), "--nofork", f"--config-file={bus_config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait(self.bus.exists, self.bus_process, "its D-Bus socket")
        daemon = [program("avahi-daemon"), "--no-drop-root", "--no-chroot", "--no-proc-title"]
        with open(self.log_path, "wb") as log:
            self.process = host.popen(
                self.private_run([*daemon, "--file", str(config)]),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait(lambda: STARTED in self.log(), self.process, repr(STARTED))

    def private_run(self, argv: Sequence[str]) -> list[str]:
        """``argv`` in a mount namespace of its own where /run is this avahi's: avahi-daemon
        itself, and anything that looks for avahi where a desktop has it (``meshnode doctor``)."""
        unshare = [program("unshare"), "--mount", "--"]
        return [*unshare, "sh", "-c", PRIVATE_RUN, "sh", str(self.run_dir), *argv]

    def _wait(self, ready: Callable[[], bool], process: subprocess.Popen[Any], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.host.name}: no {what} within {START_TIMEOUT} s\n{self.log()}"
                )
            time.sleep(0.05)

    def browse(self, service_type: str = BROWSE_TYPE) -> list[Seen]:
        """What ``avahi-browse -r -t -p`` shows now: every service it resolved, then it ends."""
        argv = [program("avahi-browse"), "--resolve", "--terminate", "--parsable", "--no-db-lookup"]
        result = subprocess.run(
            self.host.command([*argv, service_type]),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BROWSE_TIMEOUT,
            check=False,
        )
        self.last_browse = result.stdout + result.stderr
        assert result.returncode == 0, f"avahi-browse: {result.stderr.strip()}\n{self.log()}"
        return parse_browse(result.stdout)

    def stop(self) -> None:
        """avahi-daemon alone, as ``systemctl stop avahi-daemon`` would; its bus stays."""
        self.process.terminate()
        self.process.wait(BROWSE_TIMEOUT)

    def log(self) -> str:
        files = [self.home / "dbus.log", self.log_path]
        logs = [f.read_text(errors="replace") for f in files if f.exists()]
        return "\n".join([*logs, f"last avahi-browse:\n{self.last_browse}"])


def wait_for(condition: Callable[[], object], timeout: float, what: str, *logged: Logged) -> Any:
    """``condition()``'s first truthy value within ``timeout``; else fail with every log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(f"--- {x.host.name} {type(x).__name__}\n{x.log()[-3000:]}" for x in logged)
    raise AssertionError(f"{what} within {timeout} s\n{logs}")


def meshnode(node: NsDaemon, *args: str, wrap: Callable[[list[str]], list[str]] = list) -> Any:
    """``meshnode <args> --json`` run on the node's host, as its operator would; the JSON."""
    argv = [sys.executable, "-m", "meshnode", args[0], "--socket", str(node.socket), *args[1:]]
    result = node.host.run(wrap([*argv, "--json"]), timeout=20, check=False)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines, f"meshnode {' '.join(args)}: {result.stderr.strip()}"
    return lines[0] if len(lines) == 1 else lines


def holders_of_5353(host: Host) -> set[int]:
    """The pids of the processes with a UDP socket on port 5353 on ``host``."""
    listing = host.run([program("ss"), "-H", "-u", "-a", "-n", "-p", "sport = :5353"]).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", listing)}


def services(node: NsDaemon) -> int:
    """How many other nodes' services the node's discovery has resolved and kept."""
    return int(node.call("status")["discovery"]["services"])  # type: ignore[index]


def node_ids(node: NsDaemon) -> set[str]:
    return {p["node_id"] for p in node.call("peers")}  # type: ignore[attr-defined]


# -- one host, two mDNS stacks ----------------------------------------------------------


@SLOW
def test_beside_avahi_a_node_shares_port_5353_and_still_finds_and_is_found(tmp_path: Path) -> None:
    """The usual Linux desktop: avahi-daemon, started at boot, holds 5353 before meshnode does.

    Both bind it with SO_REUSEADDR and so both hear every mDNS packet of the link. meshnode's
    discovery must run without an error, find the node on the other host and be found by it,
    and ``doctor`` must tell the operator that avahi beside it is fine; avahi, for its part,
    must still see the link (the other host's service).
    """
    require_avahi()
    with Lan.create(hosts=2) as lan:
        desktop, other = lan.hosts
        avahi = Avahi(desktop, tmp_path)
        nodes = [NsDaemon(desktop, tmp_path), NsDaemon(other, tmp_path)]
        logged: list[Logged] = [avahi, *nodes]
        wait_for(lambda: all(n.status_ok() for n in nodes), UP_TIMEOUT, "both nodes up", *logged)
        ids = [n.call("id")["node_id"] for n in nodes]  # type: ignore[index]
        wait_for(
            lambda: node_ids(nodes[0]) == {ids[1]} and node_ids(nodes[1]) == {ids[0]},
            FORM_TIMEOUT,
            "the two nodes connected to each other",
            *logged,
        )
        wait_for(
            lambda: all(services(n) == 1 for n in nodes),
            FORM_TIMEOUT,
            "each node's discovery resolving the other's service",
            *logged,
        )
        status = meshnode(nodes[0], "status")
        assert status["discovery"]["running"] and status["discovery"]["error"] is None, status
        assert status["discovery"]["interfaces"] == ["eth0"]
        assert holders_of_5353(desktop) == {status["pid"], avahi.process.pid}
        checks = meshnode(nodes[0], "doctor", wrap=avahi.private_run)
        [mdns] = [c for c in checks if c["check"] == "mdns"]
        assert mdns["ok"] and "avahi-daemon runs too" in mdns["verdict"], mdns
        theirs = {other.ipv4[0], other.interfaces["eth0"].ipv6}
        seen = wait_for(
            lambda: [s for s in avahi.browse() if s.address in theirs],
            SEE_TIMEOUT,
            "avahi on the node's host seeing the other node",
            *logged,
        )
        assert {s.port for s in seen} == {7744}


@SLOW
def test_an_avahi_that_keeps_5353_to_itself_is_reported_and_the_node_takes_it_once_avahi_goes(
    tmp_path: Path,
) -> None:
    """avahi-daemon's ``disallow-other-stacks=yes`` binds 5353 without SO_REUSEADDR, so no one
    else can: the node must keep running without mDNS, say why in ``status`` and ``doctor``,
    and retry, so that mDNS is up within seconds once that avahi has stopped."""
    require_avahi()
    with Lan.create(hosts=1) as lan:
        [desktop] = lan.hosts
        avahi = Avahi(desktop, tmp_path, "disallow-other-stacks=yes")
        node = NsDaemon(desktop, tmp_path)
        discovery = wait_for(
            lambda: node.status_ok() and meshnode(node, "status")["discovery"]["error"],
            UP_TIMEOUT,
            "the node's mDNS error in status",
            avahi,
            node,
        )
        assert "Address already in use" in discovery and "retrying" in discovery
        assert not meshnode(node, "status")["discovery"]["running"]
        checks = meshnode(node, "doctor", wrap=avahi.private_run)
        [mdns] = [c for c in checks if c["check"] == "mdns"]
        assert not mdns["ok"] and "Address already in use" in mdns["verdict"], mdns
        avahi.stop()
        wait_for(
            lambda: meshnode(node, "status")["discovery"]["running"],
            MAX_RETRY + 10.0,  # retries back off from 3 s to ``MAX_RETRY``
            "the node's mDNS running once avahi stopped",
            node,
        )
        assert meshnode(node, "status")["discovery"]["error"] is None


# -- what avahi's tools show of a node -----------------------------------------------------


@SLOW
def test_avahi_browse_on_another_host_resolves_the_node_and_drops_it_at_its_goodbye(
    tmp_path: Path,
) -> None:
    """What a person types on another Linux machine of the room, ``avahi-browse -r``, shows
    the node as DNS-SD says: its random label, the SRV target ``<label>.local``, the node's
    IPv4 address and port, and TXT ``v=1`` with the network's tag. The node's host runs avahi
    too, as a desktop does. When the node stops, its goodbyes make avahi forget it at once,
    not after the 120 s TTL."""
    require_avahi()
    with Lan.create(hosts=2) as lan:
        desktop, laptop = lan.hosts
        beside = Avahi(desktop, tmp_path)
        node = NsDaemon(desktop, tmp_path)
        browser = Avahi(laptop, tmp_path)
        logged: list[Logged] = [beside, node, browser]
        wait_for(node.status_ok, UP_TIMEOUT, "the node up", *logged)
        assert "0.0.0.0:7744" in meshnode(node, "status")["listening"]
        ipv4 = desktop.ipv4[0]
        seen = wait_for(
            lambda: (found := browser.browse()) and ipv4 in {s.address for s in found} and found,
            SEE_TIMEOUT,
            f"avahi-browse on the other host resolving the node at {ipv4}",
            *logged,
        )
        # avahi lists a service once for each protocol it heard it over (IPv4, IPv6), each
        # resolved to one of its addresses: the node's IPv4 one, or its IPv6 link-local one.
        [label] = {s.name for s in seen}  # the one node on the link
        assert label_of(f"{label}.{SERVICE_TYPE}") == label  # mn- and 16 random characters
        for service in seen:
            assert service.address in {ipv4, desktop.interfaces["eth0"].ipv6}
            assert service.interface == "eth0"
            assert service.host_name == f"{label}.local"
            assert service.port == 7744
            assert service.txt == {"v=1", f"n={network_tag(PUBLIC_NETWORK_KEY)}"}
        node.process.terminate()
        node.process.wait(10)
        wait_for(lambda: not browser.browse(), 10.0, "avahi forgetting the stopped node", *logged)
