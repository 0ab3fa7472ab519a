"""Real multi-host networks for tests, built from Linux network namespaces.

Discovery (mDNS multicast), dialing and interface changes can only be trusted
once they have crossed real interfaces rather than loopback. A ``Lan`` gives
each host its own namespace, joined to bridges ("segments") that live in one
extra "switch" namespace. Each veth is created inside the switch namespace with
its peer born directly in the host namespace as ``eth0``, ``eth1``..., so
nothing is ever created in the initial namespace. Names carry a random token,
so parallel runs do not collide, and teardown always runs::

    with Lan.create(hosts=2) as lan:
        a, b = lan.hosts
        b.popen([sys.executable, "-c", SERVER, b.ipv4[0]])
        a.run([sys.executable, "-c", CLIENT, b.ipv4[0]], timeout=5)

Needs root, iproute2's ``ip`` and bridge/veth support; ``skip_reason()`` says
what is missing, so tests skip with a clear reason instead of failing.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

import pytest

PREFIX: Final = "mnt-"  # every namespace this module makes starts with it
_FOUND_IP = shutil.which(
    "ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
)
IP: Final = _FOUND_IP or "ip"
IP_TIMEOUT: Final = 5.0  # for each ``ip`` call; they take milliseconds
STOP_TIMEOUT = 3.0  # how long a process gets to exit after SIGTERM before SIGKILL
REAP_TIMEOUT = 20.0  # how long a killed process may take to be gone
_UNREAPED: list[subprocess.Popen[Any]] = []  # killed, not yet gone: see ``Host.stop``
_IP_ERRORS = (RuntimeError, OSError, subprocess.TimeoutExpired)


def _ip(*args: str) -> str:
    """Run ``ip`` with a timeout; raise with its stderr, which names what went wrong."""
    result = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@functools.cache
def skip_reason() -> str | None:
    """Why namespace tests cannot run here (not root, no ``ip``, a locked-down container), or None.

    It tries everything a ``Lan`` needs once per run: a namespace, a bridge, a
    veth pair and ``ip netns exec``, so a test skips instead of failing halfway.
    """
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if _FOUND_IP is None:
        return "network namespace tests need iproute2's `ip`, which is not installed"
    probe = f"{PREFIX}probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("netns", "exec", probe, IP, "link", "show", "lo")
    except _IP_ERRORS as exc:
        return f"network namespaces with a bridge and veths cannot be made here: {exc}"
    finally:
        with contextlib.suppress(*_IP_ERRORS):
            _ip("netns", "delete", probe)
    return None


def require_netns() -> None:
    """Skip the calling test, with the reason, where namespaces cannot be made."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


@dataclass(frozen=True)
class Segment:
    """One Ethernet segment: a bridge in the switch namespace, and its subnet if any."""

    index: int
    bridge: str
    ipv4: bool  # False: IPv6 link-local only

    def ipv4_address(self, host_index: int) -> str | None:
        """The address host ``host_index`` gets here: 10.231.<segment>.<host + 1>."""
        if not self.ipv4:
            return None
        if not 0 <= host_index < 254:
            raise ValueError(f"a /24 segment holds 254 hosts, not host {host_index}")
        return f"10.231.{self.index}.{host_index + 1}"


@dataclass(frozen=True)
class Interface:
    """One interface of a host, as the kernel reports it once it is up."""

    name: str
    segment: Segment
    index: int  # the ifindex: the scope id for link-local addresses
    ipv4: str | None
    ipv6: str  # link-local, without "%scope"


@dataclass
class Host:
    """One host: a namespace, its interfaces, and the processes started in it."""

    name: str
    ns: str
    index: int
    interfaces: dict[str, Interface] = field(default_factory=dict)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def ipv4(self) -> list[str]:
        return [i.ipv4 for i in self.interfaces.values() if i.ipv4 is not None]

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's namespace."""
        return [IP, "netns", "exec", self.ns, *argv]

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this namespace to completion, its output captured as text."""
        command = self.command(argv)
        try:
            return subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=check, input=input
            )
        except subprocess.CalledProcessError as exc:
            exc.add_note(f"stderr: {exc.stderr.strip()}")  # what actually went wrong
            raise

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this namespace; it is stopped when the ``Lan`` closes."""
        process = subprocess.Popen(self.command(argv), **kwargs)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """SIGTERM what ``popen`` started, SIGKILL it after ``STOP_TIMEOUT``, then SIGKILL
        anything else left in the namespace (children that outlived their parent)."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                try:
                    process.wait(REAP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    # Killed, but the kernel has not let it go yet (seen on a loaded machine:
                    # an exit stuck in uninterruptible sleep). It is reaped later; keeping it
                    # referenced spares the test a ResourceWarning for what it cannot help.
                    _UNREAPED.append(process)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        self.processes.clear()
        with contextlib.suppress(*_IP_ERRORS):
            for pid in _ip("netns", "pids", self.ns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


class Lan:
    """Hosts in namespaces, joined by bridges in a switch namespace; use it with ``with``."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.prefix = f"{PREFIX}{token}-"  # every namespace of this Lan starts with it
        self.switch = f"{self.prefix}sw"
        self.segments: list[Segment] = []
        self.hosts: list[Host] = []
        self.namespaces: list[str] = []  # made so far, deleted on close

    @classmethod
    def create(cls, hosts: int = 2, ipv4: bool = True) -> Lan:
        """A Lan of ``hosts`` hosts on one segment; IPv6 link-local only if not ``ipv4``."""
        lan = cls()
        try:
            lan._add_namespace(lan.switch)
            segment = lan.add_segment(ipv4=ipv4)
            for _ in range(hosts):
                lan.add_host(segment)
        except BaseException:
            lan.close()
            raise
        return lan

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)

    def add_segment(self, ipv4: bool = True) -> Segment:
        """A new bridge, with multicast snooping off so mDNS floods to every port."""
        segment = Segment(len(self.segments), f"br{len(self.segments)}", ipv4)
        sw = ("-n", self.switch, "link")
        _ip(*sw, "add", segment.bridge, "type", "bridge", "mcast_snooping", "0")
        _ip(*sw, "set", segment.bridge, "addrgenmode", "none")  # keep the switch silent
        _ip(*sw, "set", segment.bridge, "up")
        self.segments.append(segment)
        return segment

    def add_host(self, segment: Segment | None = None) -> Host:
        """A new host namespace with ``lo`` up, attached to ``segment`` as ``eth0`` if given."""
        index = len(self.hosts)
        host = Host(f"h{index}", f"{self.prefix}h{index}", index)
        self._add_namespace(host.ns)
        self.hosts.append(host)
        _ip("-n", host.ns, "link", "set", "lo", "up")
        if segment is not None:
            self.attach(host, segment)
        return host

    def attach(self, host: Host, segment: Segment) -> Interface:
        """Give ``host`` (running or not) a new interface on ``segment``, up and addressed.

        It is the lowest free ``ethN``. Its link-local address is fe80::e7:<segment>:<host + 1>,
        added without DAD so it is usable at once; on an IPv4 segment it also gets
        10.231.<segment>.<host + 1>/24. One interface per host and segment.
        """
        if any(i.segment == segment for i in host.interfaces.values()):
            raise ValueError(f"{host.name} is already on {segment.bridge}")
        name = next(f"eth{n}" for n in itertools.count() if f"eth{n}" not in host.interfaces)
        port = f"{host.name}-{name}"  # the switch-side end, unique within the switch namespace
        sw, ns = ("-n", self.switch, "link"), ("-n", host.ns)
        _ip(*sw, "add", port, "type", "veth", "peer", "name", name, "netns", host.ns)
        _ip(*sw, "set", port, "master", segment.bridge, "addrgenmode", "none")
        _ip(*sw, "set", port, "up")
        _ip(*ns, "link", "set", name, "addrgenmode", "none")
        link_local = f"fe80::e7:{segment.index:x}:{host.index + 1:x}/64"
        _ip(*ns, "addr", "add", link_local, "dev", name, "nodad")
        ipv4 = segment.ipv4_address(host.index)
        if ipv4 is not None:
            _ip(*ns, "addr", "add", f"{ipv4}/24", "dev", name)
        _ip(*ns, "link", "set", name, "up")
        host.interfaces[name] = interface = _read_interface(host, name, segment)
        _ensure_multicast_route(host)
        return interface

    def route(self, host: Host, segment: Segment, via: Host) -> None:
        """Reach ``segment``'s subnet from ``host`` through ``via``, which forwards for it.

        ``via`` must share a segment with ``host`` and be on ``segment`` itself: the
        dual-homed host between two subnets, as a home router or a Pi with two NICs.
        """
        shared = {i.segment for i in host.interfaces.values()}
        hop = next((i for i in via.interfaces.values() if i.segment in shared), None)
        if (
            hop is None
            or hop.ipv4 is None
            or not any(i.segment == segment for i in via.interfaces.values())
        ):
            raise ValueError(f"{via.name} joins no IPv4 segment of {host.name} to {segment.bridge}")
        # /proc/sys/net belongs to the namespace of the process that writes it.
        via.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"], timeout=IP_TIMEOUT)
        _ip("-n", host.ns, "route", "add", f"10.231.{segment.index}.0/24", "via", hop.ipv4)

    def detach(self, host: Host, name: str) -> None:
        """Delete ``host``'s interface ``name`` (and so its veth peer), as if unplugged."""
        _ip("-n", host.ns, "link", "delete", name)
        del host.interfaces[name]
        _ensure_multicast_route(host)

    def close(self) -> None:
        """Stop every process and delete every namespace; safe to call again."""
        try:
            for host in self.hosts:
                host.stop()
        finally:
            failed = []
            for name in reversed(self.namespaces):
                try:
                    _ip("netns", "delete", name)
                except _IP_ERRORS as exc:
                    failed.append(str(exc))
            self.namespaces.clear()
            if failed:
                raise RuntimeError("could not delete namespaces: " + "; ".join(failed))


def _read_interface(host: Host, name: str, segment: Segment) -> Interface:
    """Read back what the kernel made of the interface, so tests use its real state."""
    [link] = json.loads(_ip("-j", "-n", host.ns, "addr", "show", "dev", name))
    addresses = {(a["family"], a.get("scope")): a for a in link["addr_info"]}
    ipv4 = addresses.get(("inet", "global"))
    link_local = addresses[("inet6", "link")]
    if link_local.get("tentative"):
        raise RuntimeError(f"{host.ns} {name}: {link_local['local']} is still tentative")
    return Interface(
        name, segment, link["ifindex"], ipv4["local"] if ipv4 else None, link_local["local"]
    )


def _ensure_multicast_route(host: Host) -> None:
    """Route 224.0.0.0/4 out of the first IPv4 interface, so multicast sent without
    IP_MULTICAST_IF has a way out (there is no default route)."""
    ipv4 = [i.name for i in host.interfaces.values() if i.ipv4 is not None]
    if ipv4 and not _ip("-n", host.ns, "route", "show", "exact", "224.0.0.0/4").strip():
        _ip("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", ipv4[0])
