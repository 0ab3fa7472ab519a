"""Generate ``discovery.json``: the advertisement of ``protocol/discovery.md`` §1, and §2's reading.

Run from the repository root: ``python protocol/vectors/generate_discovery.py``.
``tests/test_advert.py`` checks that the committed file is what this script
produces, and that python-zeroconf puts the TXT record on the wire as written here.
The label's 10 bytes are random at every start; here they are fixed, so that the
label's encoding can be checked too.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from meshnode.core.advert import AdvertError, Resolved, advert_for, network_tag, read_sighting
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, encode_network_key

OUT = Path(__file__).with_name("discovery.json")
KEYS = {"public network": PUBLIC_NETWORK_KEY, "a private network": bytes(range(32))}
LABEL_BYTES = [bytes(10), bytes(range(246, 256))]

# The reader of the reading cases: on the private network, with one interface, eth0.
READER_KEY = bytes(range(32))
READER_LINKS = ("10.231.0.0/24", "fd00::/64")
READER_SCOPE = "eth0"
INSTANCE = advert_for(READER_KEY, bytes(10), 7744).instance
TAG = network_tag(READER_KEY).encode()


def txt_wire(pairs: dict[str, str] | list[bytes]) -> bytes:
    """A TXT record as on the wire (RFC 6763 §6): each string, a length byte before it."""
    items = [f"{k}={v}".encode() for k, v in pairs.items()] if isinstance(pairs, dict) else pairs
    return b"".join(bytes([len(item)]) + item for item in items)


def reader_reaches(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        return ip.scope_id == READER_SCOPE
    return any(ip in ipaddress.ip_network(link) for link in READER_LINKS)


OWN = [b"v=1", b"n=" + TAG]
# name -> (instance, TXT strings or raw bytes, SRV port, addresses as the resolver gave them)
READING: dict[str, tuple[str, list[bytes] | bytes, int, list[str]]] = {
    "a service of the reader's network": (INSTANCE, OWN, 7744, ["10.231.0.2"]),
    "link-local last, scoped ones only, duplicates once": (
        INSTANCE,
        OWN,
        7744,
        ["fe80::2%eth0", "10.231.0.2", "fe80::3", "fd00::2", "10.231.0.2"],
    ),
    "at most 8 addresses": (INSTANCE, OWN, 7744, [f"10.231.0.{n}" for n in range(1, 11)]),
    "the label and the keys in any case": (
        INSTANCE.replace("mn-aaaa", "MN-AAAA"),
        [b"N=" + TAG, b"V=1"],
        7744,
        ["10.231.0.2"],
    ),
    "other keys and an empty key are ignored": (
        INSTANCE,
        [b"=x", b"later=1", *OWN, b"flag"],
        7744,
        ["10.231.0.2"],
    ),
    "of a repeated key the first counts": (INSTANCE, [*OWN, b"v=2"], 7744, ["10.231.0.2"]),
    "leading zeros in v": (INSTANCE, [b"v=01", b"n=" + TAG], 7744, ["10.231.0.2"]),
    "v=2 first": (INSTANCE, [b"v=2", *OWN], 7744, ["10.231.0.2"]),
    "no v": (INSTANCE, [b"n=" + TAG], 7744, ["10.231.0.2"]),
    "v without =": (INSTANCE, [b"v", b"n=" + TAG], 7744, ["10.231.0.2"]),
    "v empty": (INSTANCE, [b"v=", b"n=" + TAG], 7744, ["10.231.0.2"]),
    "v not digits": (INSTANCE, [b"v=1a", b"n=" + TAG], 7744, ["10.231.0.2"]),
    "no n": (INSTANCE, [b"v=1"], 7744, ["10.231.0.2"]),
    "n in upper case": (INSTANCE, [b"v=1", b"n=" + TAG.upper()], 7744, ["10.231.0.2"]),
    "n of another network": (
        INSTANCE,
        [b"v=1", b"n=" + network_tag(PUBLIC_NETWORK_KEY).encode()],
        7744,
        ["10.231.0.2"],
    ),
    "TXT over 200 bytes": (INSTANCE, [*OWN, b"pad=" + b"x" * 180], 7744, ["10.231.0.2"]),
    "a TXT string that runs past the record": (
        INSTANCE,
        txt_wire(OWN) + b"\x09later",
        7744,
        ["10.231.0.2"],
    ),
    "port 0": (INSTANCE, OWN, 0, ["10.231.0.2"]),
    "no address on the reader's links": (INSTANCE, OWN, 7744, ["192.0.2.9", "2001:db8::9"]),
    "no unicast address": (
        INSTANCE,
        OWN,
        7744,
        ["127.0.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255", "::1", "::ffff:10.231.0.2"],
    ),
    "a name, not an address": (INSTANCE, OWN, 7744, ["node.local"]),
    "not a meshnode label": (f"alice.{INSTANCE.split('.', 1)[1]}", OWN, 7744, ["10.231.0.2"]),
    "a label of 16 characters not all base32": (
        "mn-1111111111111111." + INSTANCE.split(".", 1)[1],
        OWN,
        7744,
        ["10.231.0.2"],
    ),
}


def reading() -> list[dict[str, Any]]:
    cases = []
    for name, (instance, strings, port, hosts) in READING.items():
        txt = strings if isinstance(strings, bytes) else txt_wire(strings)
        service = Resolved(instance, txt, port, tuple(hosts))
        try:
            seen = read_sighting(READER_KEY, service, reader_reaches)
        except AdvertError as exc:
            verdict: dict[str, Any] = {"ignored": exc.kind}
        else:
            verdict = {"used": list(seen.addresses)}
        cases.append(
            {"case": name, "instance": instance, "txt": txt.hex(), "port": port, "hosts": hosts}
            | verdict
        )
    return cases


def vectors() -> dict[str, Any]:
    cases = []
    for name, key in KEYS.items():
        for random_bytes in LABEL_BYTES:
            advert = advert_for(key, random_bytes, 7744)
            cases.append(
                {
                    "network": name,
                    "network_key": key.hex(),
                    "network_invite": encode_network_key(key),
                    "label_bytes": random_bytes.hex(),
                    "instance": advert.instance,
                    "server": advert.server,
                    "txt": advert.txt,
                    "txt_wire": txt_wire(advert.txt).hex(),
                }
            )
    return {
        "notes": (
            "Each case: a network key (hex and invite) and the 10 random bytes of a label (hex);"
            " the DNS-SD instance name, SRV target and TXT pairs the node announces with them"
            " (discovery.md §1), the TXT also as on the wire. Only n= depends on the network"
            " key. reading: services as a resolver gives them (instance name, TXT as on the"
            " wire, SRV port, addresses) and what a reader makes of each (discovery.md §2):"
            " the addresses it uses, in order, or the reason it ignores the service. The"
            " reader is on the private network and has one interface, eth0, on the links"
            f" {' and '.join(READER_LINKS)}; link-local addresses reach it with %{READER_SCOPE}."
        ),
        "cases": cases,
        "reading": reading(),
    }


def render() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
