"""Cost at rest of a formed mesh: mDNS packets per node and minute, and an idle daemon's CPU.

A mesh that has formed should cost next to nothing while nothing is published: a few mDNS
packets per node and minute (as RFC 6762's backoff allows) and, goal, < 1 % of one core per
daemon. 8 namespaces on one bridge run ``meshnode run`` (mDNS on, no --peer) and a ninth runs
no daemon, only a listener that counts the mDNS datagrams it hears (IPv4 224.0.0.251 and IPv6
ff02::fb, port 5353) and never sends. Once every node has a peer the mesh is left to settle
(--settle), then over --window seconds the listener counts packets (by source and kind) and
each daemon's utime + stime is read from /proc/<pid>/stat at both ends. Packets during
formation and settling are counted apart. Unicast mDNS (answers to QU questions) is not seen
by the listener; at rest there is next to none. Needs root and network namespaces.

python-zeroconf caches a PTR record for at least 1125 s whatever its TTL (120 s here) and
refreshes it at 75 %: at rest a browser asks again about every 14 minutes (one node asks, the
others hear it and keep quiet), so a window under 15 minutes may hold no refresh at all;
--window 900 takes one in, --window 20 is a quick try.

    sudo python bench/cost_at_rest.py [--nodes 8] [--settle 10] [--window 60]
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import emit, log
from _lan import Lan, peer_count, require_namespaces, start_daemons, wait_formed, warm_up

from tests.netns import Host

GOAL_CPU_PERCENT = 1.0  # of one core, per idle daemon
GOAL_MDNS_PER_NODE_MIN = 5.0  # "a few": a query and the answers to the others' refreshes
LISTENER_TIMEOUT_S = 10.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# Runs in the listener's namespace: binds port 5353, joins the mDNS groups on its interface and
# writes one line per datagram heard: "<monotonic time> <family> <source> <kind> <bytes>".
# It never sends. CLOCK_MONOTONIC is the same in every namespace, so times compare with ours.
LISTENER = r"""
import selectors, socket, struct, sys, time

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
selector.register(v4, selectors.EVENT_READ, "ipv4")
selector.register(v6, selectors.EVENT_READ, "ipv6")
with open(path, "a", buffering=1) as out:
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            data, source = key.fileobj.recvfrom(65535)
            now = time.monotonic()
            kind = "short" if len(data) < 12 else "response" if data[2] & 0x80 else "query"
            out.write(f"{now:.6f} {key.data} {source[0].split('%')[0]} {kind} {len(data)}\n")
"""


@dataclass(frozen=True)
class Packet:
    at: float  # time.monotonic()
    family: str  # "ipv4" or "ipv6"
    source: str
    kind: str  # "query", "response" or "short"
    size: int


@dataclass(frozen=True)
class Phases:
    """The monotonic times the phases start and end: started - formed - window - ended."""

    started: float
    formed: float
    window: float
    ended: float


@dataclass(frozen=True)
class Measured:
    phases: Phases
    packets: list[Packet]
    names: dict[str, str]  # source address -> host name
    cpu_percent: dict[str, float]  # host name -> % of one core over the window
    threads: dict[str, float]  # thread role -> % of one core, all daemons together
    peers: dict[str, int]  # host name -> sessions at the end of the window


def measure(nodes: int, settle: float, window: float) -> Measured:
    with tempfile.TemporaryDirectory() as tmp, Lan.create(hosts=nodes) as lan:
        daemons = list(lan.hosts)
        listener = lan.add_host(lan.segments[0])
        packets_path = Path(tmp) / "mdns.txt"
        _start_listener(listener, packets_path)
        started = time.monotonic()
        sockets = start_daemons(_only(lan, daemons), tmp)
        wait_formed(sockets)
        formed = time.monotonic()
        log(f"formed after {formed - started:.1f} s; settling for {settle:g} s")
        time.sleep(settle)
        pids = {host.name: _python_pid(host) for host in daemons}
        log(f"measuring for {window:g} s")
        before, before_threads, window_start = _cpu(pids), _threads(pids), time.monotonic()
        time.sleep(window)
        after, after_threads, ended = _cpu(pids), _threads(pids), time.monotonic()
        _check_alive(daemons)
        elapsed = ended - window_start
        return Measured(
            phases=Phases(started, formed, window_start, ended),
            packets=_read_packets(packets_path),
            names=_addresses(daemons),
            cpu_percent={
                name: 100 * (after[name] - before[name]) / CLOCK_TICK / elapsed for name in pids
            },
            threads=_thread_percent(before_threads, after_threads, elapsed),
            peers={
                host.name: peer_count(sock) for host, sock in zip(daemons, sockets, strict=True)
            },
        )


def _only(lan: Lan, hosts: list[Host]) -> Lan:
    """``lan`` as ``start_daemons`` is to see it: only ``hosts`` (the listener runs no daemon).

    A shallow copy: the hosts are the same objects, so the real ``lan`` stops what starts.
    """
    view = copy.copy(lan)
    view.hosts = hosts
    return view


def _start_listener(host: Host, path: Path) -> None:
    [interface] = host.interfaces.values()
    assert interface.ipv4 is not None
    argv = [sys.executable, "-c", LISTENER, interface.ipv4, str(interface.index), str(path)]
    process = host.popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], LISTENER_TIMEOUT_S)
    if not readable or process.stdout.readline().strip() != "ready":
        raise SystemExit(f"the mDNS listener did not start (exit code {process.poll()})")


def _python_pid(host: Host) -> int:
    """The daemon's own pid: ``ip netns exec`` execs the command, so it is the one started.

    Checked, not assumed: if ``ip`` ever forked instead, its only child would be the daemon.
    """
    [process] = host.processes
    pid = process.pid
    if not _is_daemon(pid):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) != 1 or not _is_daemon(int(children[0])):
            raise SystemExit(f"{host.name}: cannot find the meshnode process under pid {pid}")
        pid = int(children[0])
    return pid


def _is_daemon(pid: int) -> bool:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return Path(os.fsdecode(argv[0])).name.startswith("python") and b"meshnode" in argv


def _stat_ticks(path: str) -> tuple[str, int]:
    """(name, utime + stime) from a /proc stat file; the name is read from ``comm``."""
    fields = Path(path, "stat").read_text().rsplit(")", 1)[1].split()
    name = Path(path, "comm").read_text().strip()
    return name, int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _cpu(pids: dict[str, int]) -> dict[str, int]:
    """Ticks of CPU each daemon has used so far, all its threads (live and gone) together."""
    return {name: _stat_ticks(f"/proc/{pid}")[1] for name, pid in pids.items()}


def _threads(pids: dict[str, int]) -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, tid) -> (what the thread does, ticks so far), for every daemon's live threads."""
    found = {}
    for pid in pids.values():
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                name, ticks = _stat_ticks(str(task))
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            found[pid, int(task.name)] = (_role(pid, int(task.name), name), ticks)
    return found


def _role(pid: int, tid: int, name: str) -> str:
    """Trio names a worker thread after the call it runs ("_handle from me..."), and zeroconf's
    loop thread keeps the name it was born with, that of the worker that started it."""
    if tid == pid:
        return "trio (main)"
    if name.startswith("_start from"):
        return "zeroconf"
    return "trio workers"


def _thread_percent(
    before: dict[tuple[int, int], tuple[str, int]],
    after: dict[tuple[int, int], tuple[str, int]],
    elapsed: float,
) -> dict[str, float]:
    """% of one core by role over the window (threads that ended meanwhile are missed)."""
    ticks: dict[str, int] = collections.Counter()
    for key, (name, end) in after.items():
        ticks[name] += end - before.get(key, (name, 0))[1]
    return {name: 100 * t / CLOCK_TICK / elapsed for name, t in sorted(ticks.items())}


def _check_alive(hosts: list[Host]) -> None:
    for host in hosts:
        code = host.processes[0].poll()
        if code is not None:
            raise SystemExit(f"the daemon on {host.name} exited with {code} during the window")


def _addresses(hosts: list[Host]) -> dict[str, str]:
    names = {}
    for host in hosts:
        for interface in host.interfaces.values():
            names[interface.ipv6] = host.name
            if interface.ipv4 is not None:
                names[interface.ipv4] = host.name
    return names


def _read_packets(path: Path) -> list[Packet]:
    packets = []
    for line in path.read_text().splitlines():
        at, family, source, kind, size = line.split()
        packets.append(Packet(float(at), family, source, kind, int(size)))
    return packets


def _per_minute(count: int, seconds: float) -> float:
    return round(count * 60 / seconds, 1)


def _percents(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f} %" for name, share in shares.items())


def report(measured: Measured, nodes: int) -> None:
    phases = measured.phases
    window = phases.ended - phases.window
    inside = [p for p in measured.packets if phases.window <= p.at < phases.ended]
    formation = [p for p in measured.packets if p.at < phases.formed]
    settling = [p for p in measured.packets if phases.formed <= p.at < phases.window]
    total_min = _per_minute(len(inside), window)
    per_node_min = round(total_min / nodes, 1)
    by_source = collections.Counter(measured.names.get(p.source, p.source) for p in inside)
    by_kind = collections.Counter(f"{p.family} {p.kind}" for p in inside)
    cpu = measured.cpu_percent
    cpu_mean, cpu_max = statistics.mean(cpu.values()), max(cpu.values())
    log(f"--- cost at rest: {nodes} nodes, window {window:.1f} s ---")
    log(
        f"mDNS during formation ({phases.formed - phases.started:.1f} s): {len(formation)}"
        f" packets; while settling ({phases.window - phases.formed:.1f} s): {len(settling)}"
    )
    log(
        f"mDNS in the window: {len(inside)} packets, {total_min} per minute,"
        f" {per_node_min} per node per minute (goal <= {GOAL_MDNS_PER_NODE_MIN:g})"
    )
    log("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
    log("  by source: " + ", ".join(f"{s} {n}" for s, n in sorted(by_source.items())))
    log(
        f"CPU per daemon: mean {cpu_mean:.2f} %, max {cpu_max:.2f} % of one core"
        f" (goal < {GOAL_CPU_PERCENT:g} %)"
    )
    log(f"  by node: {_percents(cpu)}")
    log(f"  by thread, all nodes together: {_percents(measured.threads)}")
    log("peers at the end: " + ", ".join(f"{n} {c}" for n, c in measured.peers.items()))
    emit(
        {
            "bench": "cost-at-rest",
            "nodes": nodes,
            "window_s": round(window, 1),
            "formation_s": round(phases.formed - phases.started, 2),
            "mdns_formation_packets": len(formation),
            "mdns_settle_packets": len(settling),
            "mdns_window_packets": len(inside),
            "mdns_per_min": total_min,
            "mdns_per_node_per_min": per_node_min,
            "mdns_by_source": dict(sorted(by_source.items())),
            "mdns_by_kind": dict(sorted(by_kind.items())),
            "goal_mdns_per_node_per_min": GOAL_MDNS_PER_NODE_MIN,
            "cpu_percent_by_node": {n: round(p, 3) for n, p in cpu.items()},
            "cpu_percent_mean": round(cpu_mean, 3),
            "cpu_percent_max": round(cpu_max, 3),
            "cpu_percent_by_thread": {n: round(p, 3) for n, p in measured.threads.items()},
            "goal_cpu_percent": GOAL_CPU_PERCENT,
            "meets_goal": per_node_min <= GOAL_MDNS_PER_NODE_MIN and cpu_max < GOAL_CPU_PERCENT,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after forming")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    args = parser.parse_args()
    require_namespaces()
    warm_up()
    log(f"{args.nodes} nodes forming a mesh by mDNS, and a listener")
    report(measure(args.nodes, args.settle, args.window), args.nodes)


if __name__ == "__main__":
    main()
