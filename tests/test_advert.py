"""The mDNS advertisement of protocol/discovery.md: what a node announces, and what it takes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshnode.core.advert import (
    SERVICE_TYPE,
    AdvertError,
    advert_for,
    instance_label,
    network_tag,
    read_sighting,
)
from meshnode.core.identity import Identity
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.nodeid import encode_node_id

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors" / "discovery.json"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NODE = Identity(bytes([7]) * 32).public_key


def txt_of(key: bytes, **extra: bytes) -> dict[bytes, bytes | None]:
    advert = advert_for(key, NODE, 7744)
    return {k.encode(): v.encode() for k, v in advert.txt.items()} | {
        k.encode(): v for k, v in extra.items()
    }


def sighting(**changes: object) -> object:
    args: dict[str, object] = {
        "network_key": KEY,
        "instance": advert_for(KEY, NODE, 7744).instance,
        "txt": txt_of(KEY),
        "port": 7744,
        "hosts": ["10.231.0.2"],
    }
    args.update(changes)
    return read_sighting(**args)  # type: ignore[arg-type]


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
    advert = advert_for(key, bytes.fromhex(str(case["public_key"])), 7744)
    assert advert.instance == case["instance"]
    assert advert.server == case["server"]
    assert advert.txt == case["txt"]


def test_the_label_is_mn_and_sixteen_base32_characters() -> None:
    label = instance_label(KEY, NODE)
    assert label.startswith("mn-") and len(label) == 19
    assert set(label[3:]) <= set("abcdefghijklmnopqrstuvwxyz234567")


def test_the_advert_names_no_machine_and_no_node_id() -> None:
    advert = advert_for(KEY, NODE, 7744)
    announced = " ".join([advert.instance, advert.server, *advert.txt.values()]).lower()
    for form in (
        NODE.hex(),
        encode_node_id(NODE),
        base64.b32encode(NODE).decode().lower().rstrip("="),
    ):
        assert form[:8].lower() not in announced
    assert advert.server == f"{advert.label}.local."


def test_two_networks_give_a_node_unlinkable_labels_and_tags() -> None:
    assert instance_label(KEY, NODE) != instance_label(OTHER_KEY, NODE)
    assert network_tag(KEY) != network_tag(OTHER_KEY)
    assert network_tag(KEY) == network_tag(KEY)  # every member computes the same tag


def test_a_member_reads_a_service_of_its_network() -> None:
    seen = read_sighting(
        KEY,
        advert_for(KEY, NODE, 7744).instance,
        txt_of(KEY, later=b"ignored"),
        7744,
        ["10.231.0.2", "fe80::1%eth0", "10.231.0.2"],
    )
    assert seen.label == instance_label(KEY, NODE)
    assert seen.addresses == ("10.231.0.2:7744", "[fe80::1%eth0]:7744")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"txt": txt_of(OTHER_KEY)}, "another network"),
        ({"network_key": PUBLIC_NETWORK_KEY}, "another network"),
        ({"txt": {b"n": txt_of(KEY)[b"n"]}}, "no advertisement version"),
        ({"txt": txt_of(KEY) | {b"v": b"2"}}, "advertisement version 2"),
        ({"txt": txt_of(KEY) | {b"v": b"one"}}, "no advertisement version"),
        ({"txt": txt_of(KEY, pad=b"x" * 300)}, "TXT record larger"),
        ({"port": None}, "no usable port"),
        ({"port": 0}, "no usable port"),
        ({"hosts": []}, "no usable address"),
        ({"hosts": ["fe80::1", "0.0.0.0", "224.0.0.251", "host.local"]}, "no usable address"),
        ({"instance": "printer._ipp._tcp.local."}, "not a _meshnode._tcp"),
        ({"instance": f"alice.{SERVICE_TYPE}"}, "no node makes"),
        ({"instance": f"mn-{'A' * 16}.{SERVICE_TYPE}"}, "no node makes"),
    ],
)
def test_a_service_breaking_a_rule_is_not_used(changes: dict[str, object], why: str) -> None:
    with pytest.raises(AdvertError, match=why):
        sighting(**changes)


def test_at_most_eight_addresses_of_one_service_are_taken() -> None:
    hosts = [f"10.231.0.{n}" for n in range(1, 20)]
    assert len(sighting(hosts=hosts).addresses) == 8  # type: ignore[attr-defined]
