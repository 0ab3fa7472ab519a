"""The mDNS advertisement of protocol/discovery.md: what a node announces, and what it takes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshnode.core import advert
from meshnode.core.addresses import IPAddress
from meshnode.core.advert import (
    SERVICE_TYPE,
    AdvertError,
    Resolved,
    advert_for,
    instance_label,
    moved,
    network_tag,
    read_sighting,
)
from meshnode.core.netkey import PUBLIC_NETWORK_KEY

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors" / "discovery.json"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
LABEL = bytes(range(10))
ON_LINK = (ipaddress.ip_network("10.231.0.0/24"), ipaddress.ip_network("fd00::/64"))


def reachable(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        return ip.scope_id in ("2", "eth0")
    return any(ip in net for net in ON_LINK)


def txt(*items: bytes) -> bytes:
    return b"".join(bytes([len(item)]) + item for item in items)


def own_txt(key: bytes = KEY) -> bytes:
    return txt(b"v=1", b"n=" + network_tag(key).encode())


def resolved(**changes: object) -> Resolved:
    fields: dict[str, object] = {
        "instance": advert_for(KEY, LABEL, 7744).instance,
        "txt": own_txt(),
        "port": 7744,
        "hosts": ("10.231.0.2",),
    }
    fields.update(changes)
    return Resolved(**fields)  # type: ignore[arg-type]


def test_the_vectors_are_what_the_generator_makes() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import generate_discovery as g; print(g.render(), end='')"],
        cwd=VECTORS.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == VECTORS.read_text()


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text())["cases"])
def test_every_vector_is_reproduced(case: dict[str, object]) -> None:
    key = bytes.fromhex(str(case["network_key"]))
    made = advert_for(key, bytes.fromhex(str(case["label_bytes"])), 7744)
    assert made.instance == case["instance"]
    assert made.server == case["server"]
    assert made.txt == case["txt"]


def test_python_zeroconf_puts_the_txt_record_on_the_wire_as_the_vectors_write_it() -> None:
    from zeroconf import ServiceInfo

    for case in json.loads(VECTORS.read_text())["cases"]:
        info = ServiceInfo(SERVICE_TYPE, case["instance"], port=7744, properties=case["txt"])
        assert info.text.hex() == case["txt_wire"]


@pytest.mark.parametrize(
    "case", json.loads(VECTORS.read_text())["reading"], ids=lambda case: case["case"]
)
def test_every_reading_vector_is_judged_as_written(case: dict[str, Any]) -> None:
    links = [ipaddress.ip_network(link) for link in ("10.231.0.0/24", "fd00::/64")]

    def reader_reaches(ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
            return ip.scope_id == "eth0"
        return any(ip in link for link in links)

    service = Resolved(case["instance"], bytes.fromhex(case["txt"]), case["port"], case["hosts"])
    try:
        seen = read_sighting(bytes(range(32)), service, reader_reaches)
    except AdvertError as exc:
        assert exc.kind == case["ignored"]
    else:
        assert list(seen.addresses) == case["used"]


def test_the_label_is_mn_and_sixteen_base32_characters_of_random_bytes() -> None:
    label = instance_label(LABEL)
    assert label.startswith("mn-") and len(label) == 19
    assert set(label[3:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    with pytest.raises(ValueError, match="10 random bytes"):
        instance_label(bytes(9))


def test_the_advert_depends_on_the_node_in_nothing_but_its_random_label() -> None:
    made = advert_for(KEY, LABEL, 7744)
    assert made.txt == {"v": "1", "n": network_tag(KEY)}
    assert made.server == f"{made.label}.local."  # never the machine's host name


def test_a_node_gone_to_other_links_needs_a_new_label_but_not_one_that_kept_an_address() -> None:
    wifi_a = ["192.168.1.20", "fe80::1c2b:3aff:fe4d:5e6f%wlan0"]
    wifi_b = ["10.40.0.7", "fe80::8a1:77ff:fe02:9b1%wlan0"]  # a per-network MAC: new fe80 too
    assert moved(wifi_a, wifi_b)
    assert not moved(wifi_a, [*wifi_a, "10.0.0.5"])  # a cable plugged in beside the Wi-Fi
    assert not moved(wifi_a, ["10.40.0.7", wifi_a[1]])  # the same fe80 links the two anyway
    assert not moved([], wifi_b) and not moved(wifi_a, [])  # not announcing: nothing to link


def test_two_networks_have_unlinkable_tags_that_every_member_computes_alike() -> None:
    assert network_tag(KEY) != network_tag(OTHER_KEY)
    assert network_tag(KEY) == network_tag(bytes(KEY))


def test_a_member_reads_a_service_of_its_network() -> None:
    seen = read_sighting(
        KEY,
        resolved(
            txt=own_txt() + txt(b"later=ignored", b"V=2"),  # keys are case-insensitive: first wins
            hosts=("10.231.0.2", "fe80::1%2", "10.231.0.2"),
        ),
        reachable,
    )
    assert seen.label == instance_label(LABEL)
    assert seen.addresses == ("10.231.0.2:7744", "[fe80::1%2]:7744")


def test_names_and_keys_are_read_without_regard_to_case() -> None:
    instance = advert_for(KEY, LABEL, 7744).instance.upper().replace("LOCAL.", "local.")
    upper = txt(b"V=1", b"N=" + network_tag(KEY).encode())
    assert read_sighting(KEY, resolved(instance=instance, txt=upper), reachable).addresses


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"txt": own_txt(OTHER_KEY)}, advert.OTHER_NETWORK),
        ({"txt": txt(b"n=" + network_tag(KEY).encode())}, advert.MALFORMED),
        ({"txt": txt(b"v=2", b"n=" + network_tag(KEY).encode())}, advert.OTHER_VERSION),
        ({"txt": txt(b"v=one", b"n=" + network_tag(KEY).encode())}, advert.MALFORMED),
        ({"txt": own_txt() + txt(b"pad=" + b"x" * 200)}, advert.MALFORMED),
        ({"port": None}, advert.MALFORMED),
        ({"port": 0}, advert.MALFORMED),
        ({"hosts": ()}, advert.UNREACHABLE),
        (
            {"hosts": ("127.0.0.1", "::1", "0.0.0.0", "224.0.0.251", "255.255.255.255")},
            advert.UNREACHABLE,
        ),
        ({"hosts": ("fe80::1", "fe80::1%7", "host.local")}, advert.UNREACHABLE),
        ({"hosts": ("192.0.2.9", "2001:db8::9")}, advert.UNREACHABLE),  # off this node's links
        ({"instance": "printer._ipp._tcp.local."}, advert.NOT_OURS),
        ({"instance": f"alice.{SERVICE_TYPE}"}, advert.NOT_OURS),
        ({"instance": f"mn-{'1' * 16}.{SERVICE_TYPE}"}, advert.NOT_OURS),
    ],
)
def test_a_service_breaking_a_rule_is_not_used_for_one_reason_of_a_fixed_set(
    changes: dict[str, object], kind: str
) -> None:
    with pytest.raises(AdvertError) as caught:
        read_sighting(KEY, resolved(**changes), reachable)
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    "host", ["0.1.2.3", "127.0.0.1", "224.0.0.251", "240.0.0.1", "255.255.255.255", "::1",
             "::ffff:10.231.0.2", "64:ff9b::a00:1", "fec0::1", "ff02::fb"]
)  # fmt: skip
def test_no_service_sends_a_node_outside_the_unicast_blocks_whatever_its_links(host: str) -> None:
    with pytest.raises(AdvertError) as caught:
        read_sighting(KEY, resolved(hosts=(host,)), lambda ip: True)
    assert caught.value.kind == advert.UNREACHABLE


def test_on_the_public_network_the_tag_is_public_too() -> None:
    assert read_sighting(
        PUBLIC_NETWORK_KEY, resolved(txt=own_txt(PUBLIC_NETWORK_KEY)), reachable
    ).addresses


def test_at_most_eight_reachable_addresses_of_one_service_are_taken() -> None:
    hosts = ("192.0.2.1", *(f"10.231.0.{n}" for n in range(1, 20)))
    seen = read_sighting(KEY, resolved(hosts=hosts), reachable)
    assert seen.addresses == tuple(f"10.231.0.{n}:7744" for n in range(1, 9))


def test_link_local_addresses_come_last_so_a_routable_one_is_dialled_first() -> None:
    """A handshake on a routable address makes it one peer exchange may pass on."""
    hosts = ("fe80::2%eth0", "10.231.0.2", "fe80::3%2", "fd00::2")
    seen = read_sighting(KEY, resolved(hosts=hosts), reachable)
    assert seen.addresses == (
        "10.231.0.2:7744",
        "[fd00::2]:7744",
        "[fe80::2%eth0]:7744",
        "[fe80::3%2]:7744",
    )
