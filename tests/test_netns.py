"""The namespace test network itself: reachability, multicast, IPv6, interface changes, teardown.

Every exchange is a tiny ``python -c`` program per side; each has socket timeouts,
so a lost packet fails the test within seconds instead of hanging it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import netns
from tests.netns import IP, Host, Lan, require_netns

PORT = 15353  # mDNS-like, but clear of a real 5353

TCP_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(5)
print("ready", flush=True)
conn, peer = server.accept()
conn.settimeout(5)
conn.sendall(conn.recv(100).upper())
print(peer[0], flush=True)
"""
TCP_CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
conn.sendall(b"hello")
print(conn.recv(100).decode())
"""
# argv: bind address, port, [group, ifindex to join it on]; prints what came and from whom.
UDP_RECEIVER = """
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.settimeout(5)
if len(sys.argv) > 3:
    group, ifindex = sys.argv[3], int(sys.argv[4])
    if family == socket.AF_INET:
        mreqn = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    else:
        mreq = socket.inet_pton(family, group) + struct.pack("@I", ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
sock.bind((host, port))
print("ready", flush=True)
data, peer = sock.recvfrom(100)
print(data.decode(), peer[0].split("%")[0], flush=True)
"""
# argv: address, port, [scope id]; IPv4 multicast goes out by the helper's 224.0.0.0/4 route.
UDP_SENDER = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
if ":" in host:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.sendto(b"hello", (host, port, 0, int(sys.argv[3])))
else:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", (host, port))
"""


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    require_netns()


def start(host: Host, program: str, *args: object) -> subprocess.Popen[str]:
    """Start ``program`` in ``host`` and wait for its "ready" line."""
    process = host.popen(
        [sys.executable, "-c", program, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # bounded: the program's socket timeouts end it
    assert line == "ready\n", process.communicate(timeout=10)[1]
    return process


def finish(process: subprocess.Popen[str]) -> list[str]:
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    return out.split()


def send_udp(host: Host, *args: object) -> None:
    host.run([sys.executable, "-c", UDP_SENDER, *map(str, args)], timeout=10)


def udp_exchange(receiver: Host, sender: Host, to: str, scope: int = 0) -> list[str]:
    """Send "hello" from ``sender`` to ``to``; return what ``receiver`` got and its source."""
    process = start(receiver, UDP_RECEIVER, "::" if ":" in to else "0.0.0.0", PORT)
    send_udp(sender, to, PORT, scope)
    return finish(process)


def root_links() -> set[str]:
    out = subprocess.run([IP, "-o", "link"], capture_output=True, text=True, timeout=5, check=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def namespaces() -> str:
    return subprocess.run(
        [IP, "netns", "list"], capture_output=True, text=True, timeout=5, check=True
    ).stdout


# Prints "ready", then the interface names it sees each time a line comes in on stdin.
WATCHER = """
import signal, socket, sys
signal.alarm(10)  # a bound on the test, should it ever stop asking
print("ready", flush=True)
for _ in sys.stdin:
    print(*sorted(name for _, name in socket.if_nameindex()), flush=True)
"""


def ask(watcher: subprocess.Popen[str]) -> list[str]:
    assert watcher.stdin is not None and watcher.stdout is not None
    watcher.stdin.write("?\n")
    watcher.stdin.flush()
    return watcher.stdout.readline().split()


def test_two_hosts_talk_tcp_over_ipv4_and_nothing_lands_in_the_root_namespace() -> None:
    before = root_links()
    with Lan.create(hosts=2) as lan:
        a, b = lan.hosts
        assert (a.ipv4, b.ipv4) == (["10.231.0.1"], ["10.231.0.2"])
        assert a.interfaces["eth0"].index == int(
            a.run(["cat", "/sys/class/net/eth0/ifindex"]).stdout
        )
        server = start(b, TCP_SERVER, b.ipv4[0], PORT)
        reply = a.run([sys.executable, "-c", TCP_CLIENT, b.ipv4[0], str(PORT)], timeout=10)
        assert reply.stdout.split() == ["HELLO"]
        assert finish(server) == [a.ipv4[0]]
        assert root_links() == before


@pytest.mark.parametrize(("ipv4", "group"), [(True, "224.0.0.251"), (False, "ff02::fb")])
def test_multicast_sent_in_one_host_is_received_in_another(ipv4: bool, group: str) -> None:
    with Lan.create(hosts=3, ipv4=ipv4) as lan:
        a, b, c = lan.hosts
        wildcard = "0.0.0.0" if ipv4 else "::"
        receivers = [
            start(host, UDP_RECEIVER, wildcard, PORT, group, host.interfaces["eth0"].index)
            for host in (b, c)
        ]
        send_udp(a, group, PORT, a.interfaces["eth0"].index)  # IPv4 ignores the scope id
        sender = a.ipv4[0] if ipv4 else a.interfaces["eth0"].ipv6
        assert [finish(r) for r in receivers] == [["hello", sender]] * 2


def test_ipv6_only_segment_has_link_local_addresses_that_carry_udp() -> None:
    with Lan.create(hosts=2, ipv4=False) as lan:
        a, b = lan.hosts
        for host in lan.hosts:
            eth0 = host.interfaces["eth0"]
            assert eth0.ipv4 is None and host.ipv4 == []
            assert host.run([IP, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout == ""
            shown = host.run([IP, "-6", "addr", "show", "dev", "eth0", "scope", "link"]).stdout
            assert f"inet6 {eth0.ipv6}/64 scope link" in shown and "tentative" not in shown
        got = udp_exchange(b, a, b.interfaces["eth0"].ipv6, scope=a.interfaces["eth0"].index)
        assert got == ["hello", a.interfaces["eth0"].ipv6]


def test_teardown_kills_processes_and_deletes_namespaces_when_the_body_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netns, "STOP_TIMEOUT", 0.3)  # the process below ignores SIGTERM
    stubborn = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""
    with pytest.raises(RuntimeError, match="boom"), Lan.create(hosts=2) as lan:
        made = list(lan.namespaces)
        process = lan.hosts[0].popen(
            [sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        orphan = int(process.stdout.readline())
        raise RuntimeError("boom")
    assert len(made) == 3 and lan.namespaces == []
    assert not any(name in namespaces().split() for name in made)
    assert process.returncode == -signal.SIGKILL
    stat = Path(f"/proc/{orphan}/stat")  # the child that outlived its parent: gone or a zombie
    if stat.exists():
        assert stat.read_text().rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def test_an_interface_added_to_a_running_host_appears_works_and_disappears() -> None:
    with Lan.create(hosts=1) as lan:
        [a] = lan.hosts
        second = lan.add_segment()
        b = lan.add_host(second)  # only on the second segment
        watcher = a.popen(
            [sys.executable, "-c", WATCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watcher.stdout is not None and watcher.stdout.readline() == "ready\n"
        assert ask(watcher) == ["eth0", "lo"]
        eth1 = lan.attach(a, second)
        assert (eth1.name, eth1.ipv4, a.ipv4) == (
            "eth1",
            "10.231.1.1",
            ["10.231.0.1", "10.231.1.1"],
        )
        assert ask(watcher) == ["eth0", "eth1", "lo"]
        assert udp_exchange(b, a, b.ipv4[0]) == ["hello", eth1.ipv4]
        lan.detach(a, "eth1")
        assert ask(watcher) == ["eth0", "lo"]
        assert list(a.interfaces) == ["eth0"]
