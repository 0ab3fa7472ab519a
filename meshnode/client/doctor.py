"""``meshnode doctor``: why this node sees no peers, or that all is well, in plain words.

Each check reads the daemon's ``status`` (and its ``addresses``, for why dials
fail) and gives a one-line verdict and, where something is off, the one thing
to try. The usual mistake at events comes first in mind: a different network
key, which looks from the room exactly like no one being there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msgspec import Struct, structs

from meshnode.client.words import counted
from meshnode.core.addresses import format_address

AVAHI_SOCKET = Path("/run/avahi-daemon/socket")
SHOWN_FAILURES = 3  # failing addresses named in the verdict; peers --all has them all


class Check(Struct, frozen=True):
    check: str
    ok: bool
    verdict: str
    hint: str = ""

    def as_json(self) -> dict[str, Any]:
        return structs.asdict(self)


def diagnose(
    status: dict[str, Any],
    addresses: Sequence[dict[str, Any]] = (),
    *,
    avahi: bool | None = None,
) -> list[Check]:
    """The checks, in the order a person would look.

    ``addresses``: what the ``addresses`` method answers, for why dials fail;
    ``avahi``: whether avahi-daemon runs.
    """
    discovery = status.get("discovery", {})
    checks = [
        _interfaces(discovery),
        _mdns(discovery, AVAHI_SOCKET.exists() if avahi is None else avahi),
        _services(discovery),
        _peers(status, discovery, addresses),
        _handshakes(status),
        _listening(status, discovery),
        _clock(status),
    ]
    return [c for c in checks if c is not None]


def summary(checks: Sequence[Check]) -> str:
    """The last line a person reads: all is well, or how many things are not."""
    failed = [c.check for c in checks if not c.ok]
    if not failed:
        return f"all is well: {counted(len(checks), 'check')} passed"
    return f"{counted(len(failed), 'problem')} ({', '.join(failed)}): see the hints above"


def _interfaces(discovery: dict[str, Any]) -> Check:
    if not discovery.get("mdns"):
        verdict = "mDNS is off: peers come only from --peer and the peers setting"
        return Check("interfaces", True, verdict)
    used = discovery.get("interfaces", [])
    if used:
        return Check("interfaces", True, f"mDNS uses {', '.join(used)}")
    skipped = "; ".join(f"{n}: {why}" for n, why in discovery.get("skipped_interfaces", {}).items())
    return Check(
        "interfaces",
        False,
        "no interface suitable for mDNS" + (f" ({skipped})" if skipped else ""),
        "join a Wi-Fi or plug in a cable, or name the interface in mdns_interfaces",
    )


def _mdns(discovery: dict[str, Any], avahi: bool) -> Check | None:
    if not discovery.get("mdns"):
        return None
    beside = "; avahi-daemon runs too (they share port 5353, which is fine)" if avahi else ""
    if discovery.get("running"):
        return Check("mdns", True, "announcing and listening on port 5353" + beside)
    error = discovery.get("error") or "mDNS is not running"
    hint = "see the daemon's log for mdns_error lines; another program may hold port 5353 alone"
    if avahi and "in use" in error:
        hint = (
            "avahi-daemon keeps port 5353 to itself: set disallow-other-stacks=no in"
            " /etc/avahi/avahi-daemon.conf and restart it; this node retries by itself"
        )
    return Check("mdns", False, error, hint)


def _services(discovery: dict[str, Any]) -> Check | None:
    if not discovery.get("mdns"):
        return None
    seen = discovery.get("services", 0)
    other = discovery.get("ignored_services", {}).get("another network", 0)
    if seen:
        note = f"; {other} of another network ignored" if other else ""
        return Check("services", True, f"{counted(seen, 'node')} of this network seen{note}")
    if other:
        return Check(
            "services",
            False,
            f"{counted(other, 'node')} seen, all of another network: a different network key",
            _OTHER_NETWORK,
        )
    return Check(
        "services",
        False,
        "no other meshnode node seen on the link",
        "start meshnode on another machine on this network; some Wi-Fi networks block"
        " multicast between clients: then give peers with --peer HOST:PORT",
    )


def _peers(
    status: dict[str, Any], discovery: dict[str, Any], addresses: Sequence[dict[str, Any]]
) -> Check:
    count = status.get("peers", 0)
    if count:
        return Check("peers", True, f"{counted(count, 'peer')} connected")
    failing = sorted(
        (a for a in addresses if a.get("failures") and a.get("last_failure")),
        key=lambda a: a.get("source") != "static",  # the ones given by hand first
    )
    if failing:
        said = "; ".join(f"{a['address']}: {a['last_failure']}" for a in failing[:SHOWN_FAILURES])
        more = len(failing) - SHOWN_FAILURES
        return Check(
            "peers",
            False,
            f"no peer is connected; dials fail ({said}{f'; {more} more' if more > 0 else ''})",
            "check each address and that meshnode runs there"
            + (f"; for another network key, {_OTHER_NETWORK}" if _keyed(failing) else ""),
        )
    own = [
        a["address"] for a in addresses if a.get("source") == "static" and a.get("state") == "self"
    ]
    if own:
        return Check(
            "peers",
            False,
            f"no peer is connected; the static peer {', '.join(own)} is this node itself",
            "give the address of another node (--peer HOST:PORT, or peers in the configuration)",
        )
    if discovery.get("services"):
        return Check(
            "peers",
            False,
            "nodes of this network are seen, but none is connected",
            # 2 minutes: the TTL of every mDNS record meshnode sends (runtime.mdns.TTL)
            "a node unplugged without a goodbye is still heard of for up to 2 minutes, until"
            " its mDNS record expires; past that, a firewall may block their peer port"
            " (7744/tcp); meshnode peers --all shows the dials and their failures",
        )
    if not discovery.get("mdns"):
        hint = "mDNS is off: give a peer with --peer HOST:PORT, or start without --no-mdns"
    else:
        hint = "see the interfaces, mdns and services checks"
    return Check("peers", False, "no peer is connected", hint)


_OTHER_NETWORK = (
    "join theirs with their invite, no restart needed: meshnode network join INVITE"
    " (or meshnode network leave, if they are on the public network)"
)


def _keyed(failing: Sequence[dict[str, Any]]) -> bool:
    """Whether a dial failed the way a node of another network makes it fail."""
    return any("network key" in a["last_failure"] for a in failing)


def _handshakes(status: dict[str, Any]) -> Check | None:
    hosts = status.get("wrong_key_from")
    if hosts is None:  # a daemon from before the check
        return None
    if not hosts:
        return Check("handshakes", True, "no node dialled this one with another network key lately")
    shown = ", ".join(hosts[:SHOWN_FAILURES]) + (
        f" and {len(hosts) - SHOWN_FAILURES} more" if len(hosts) > SHOWN_FAILURES else ""
    )
    failed = f"handshakes from {shown} failed in the last 10 minutes: another network key"
    peers = status.get("peers", 0)
    if peers:  # news, not a fault: a port scan must not fail a healthy node
        failed = f"{counted(peers, 'peer')} connected; {failed}"
    return Check(
        "handshakes",
        bool(peers),
        failed,
        "they are nodes of another mesh (or scanners): to meet them, one side joins the"
        " other's network: meshnode network join INVITE (meshnode network show --reveal"
        " gives this one's)",
    )


def _listening(status: dict[str, Any], discovery: dict[str, Any]) -> Check:
    listening = status.get("listening", [])
    reachable = [a for a in listening if not _loopback(a)]
    wildcard = [a for a in reachable if _unspecified(a)]
    if wildcard:  # 0.0.0.0:7744 is no address to dial: the interfaces' are
        port = int(wildcard[0].rsplit(":", 1)[1])
        ipv4 = any(not a.startswith("[") for a in wildcard)  # 0.0.0.0, or :7744 for both
        ipv6 = any(a.startswith(("[", ":")) for a in wildcard)
        announced = [ip for ip in discovery.get("addresses", []) if (ipv6 if ":" in ip else ipv4)]
        at = ", ".join(format_address(ip, port) for ip in announced) or f"any address, port {port}"
        return Check(
            "listening", True, f"peers can dial {at} (listening on {', '.join(reachable)})"
        )
    if reachable:
        return Check("listening", True, f"peers can dial {', '.join(reachable)}")
    if listening:
        port = listening[0].rsplit(":", 1)[1]  # the operator's port, on every interface
        return Check(
            "listening",
            False,
            f"listening on {', '.join(listening)} only: no other machine can dial this node",
            f"start with --listen :{port} (every interface)",
        )
    return Check("listening", False, "not listening for peers", "start with --listen :7744")


def _clock(status: dict[str, Any]) -> Check:
    if status.get("clock_set", True):
        return Check("clock", True, "the clock is set")
    return Check(
        "clock",
        False,
        "the clock reads before 2026: it is not set (a Pi without network time boots in 1970)",
        "connect to a network with NTP, or set the date; records' times are not judged meanwhile",
    )


def _unspecified(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("", "0.0.0.0", "::")


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
