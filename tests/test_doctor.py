"""meshnode doctor: a verdict and a hint for each thing that keeps a node alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from meshnode.client.doctor import diagnose, summary
from tests.helpers import Daemon

WELL = {
    "peers": 3,
    "listening": ["0.0.0.0:7744", "[::]:7744"],
    "clock_set": True,
    "wrong_key_from": [],
    "discovery": {
        "mdns": True,
        "running": True,
        "interfaces": ["wlan0"],
        "addresses": ["192.168.1.20", "fe80::1%wlan0"],
        "skipped_interfaces": {"lo": "loopback"},
        "services": 3,
        "ignored_services": {},
        "error": None,
    },
}


def status(**changes: Any) -> dict[str, Any]:
    found = json.loads(json.dumps(WELL))
    discovery = changes.pop("discovery", {})
    found.update(changes)
    found["discovery"].update(discovery)
    return found


def problems(found: dict[str, Any]) -> dict[str, str]:
    return {c.check: f"{c.verdict} / {c.hint}" for c in diagnose(found, avahi=False) if not c.ok}


def test_a_node_with_peers_is_well() -> None:
    assert problems(status()) == {}


def test_the_last_line_says_all_is_well_or_counts_the_problems() -> None:
    assert summary(diagnose(status(), avahi=False)) == "all is well: 7 checks passed"
    lonely = diagnose(status(peers=0, listening=["127.0.0.1:7744"]), avahi=False)
    assert summary(lonely) == "2 problems (peers, listening): see the hints above"


def test_a_different_network_key_is_said_plainly() -> None:
    found = problems(
        status(peers=0, discovery={"services": 0, "ignored_services": {"another network": 5}})
    )
    assert "different network key" in found["services"]
    assert "meshnode network join INVITE" in found["services"]
    assert "network leave, if they are on the public network" in found["services"]


def test_no_interface_names_what_was_skipped_and_what_to_do() -> None:
    found = problems(
        status(
            peers=0,
            discovery={
                "interfaces": [],
                "services": 0,
                "skipped_interfaces": {"docker0": "a bridge"},
            },
        )
    )
    assert "docker0: a bridge" in found["interfaces"] and "mdns_interfaces" in found["interfaces"]


def test_failing_dials_are_named_with_why_the_ones_given_by_hand_first() -> None:
    addresses = [
        {"address": f"10.0.0.{i}:7744", "source": "mdns", "failures": 2, "last_failure": "timeout"}
        for i in range(4)
    ]
    addresses.append(
        {"address": "192.0.2.10:7744", "source": "static", "failures": 1, "last_failure": "refused"}
    )
    addresses.append({"address": "10.0.0.9:7744", "source": "mdns", "failures": 0})
    [peers] = [c for c in diagnose(status(peers=0), addresses, avahi=False) if c.check == "peers"]
    assert not peers.ok
    assert peers.verdict == (
        "no peer is connected; dials fail (192.0.2.10:7744: refused; 10.0.0.0:7744: timeout;"
        " 10.0.0.1:7744: timeout; 2 more)"
    )
    assert "network key" not in peers.hint  # nothing failed the way another network does


def test_a_dial_that_another_network_hangs_up_on_suggests_joining_it() -> None:
    hung_up = "closed during the handshake: most likely the node has another network key"
    failing = [
        {"address": "10.0.0.1:7744", "source": "static", "failures": 1, "last_failure": hung_up}
    ]
    [peers] = [c for c in diagnose(status(peers=0), failing, avahi=False) if c.check == "peers"]
    assert "meshnode network join INVITE" in peers.hint


def test_nodes_dialling_in_with_another_network_key_are_named() -> None:
    """The dialled side of the usual mistake, which sees nothing else of it."""
    found = problems(status(peers=0, wrong_key_from=["10.231.0.4"]))
    assert found["handshakes"].startswith(
        "handshakes from 10.231.0.4 failed in the last 10 minutes: another network key"
    )
    assert "network show --reveal" in found["handshakes"]


def test_with_peers_connected_a_failed_handshake_is_news_not_a_fault() -> None:
    """A port scan of an exposed 7744 must not make doctor fail a healthy node."""
    [shaken] = [
        c for c in diagnose(status(wrong_key_from=["192.0.2.66"])) if c.check == "handshakes"
    ]
    assert shaken.ok and shaken.verdict.startswith("3 peers connected; handshakes from 192.0.2.66")


def test_an_ipv4_only_listener_is_not_said_to_be_dialled_on_ipv6() -> None:
    [listening] = [
        c
        for c in diagnose(status(listening=["0.0.0.0:7744"]), avahi=False)
        if c.check == "listening"
    ]
    assert listening.verdict == "peers can dial 192.168.1.20:7744 (listening on 0.0.0.0:7744)"


def test_a_node_listening_on_every_interface_names_the_addresses_to_dial() -> None:
    [listening] = [c for c in diagnose(status(), avahi=False) if c.check == "listening"]
    assert listening.ok
    assert listening.verdict == (
        "peers can dial 192.168.1.20:7744, [fe80::1%wlan0]:7744"
        " (listening on 0.0.0.0:7744, [::]:7744)"
    )


def test_seen_but_not_connected_points_at_the_firewall() -> None:
    assert "firewall" in problems(status(peers=0))["peers"]


def test_an_empty_link_suggests_another_node_or_static_peers() -> None:
    found = problems(status(peers=0, discovery={"services": 0}))
    assert "no other meshnode node" in found["services"] and "--peer" in found["services"]


def test_loopback_only_and_an_unset_clock_are_problems() -> None:
    found = problems(status(listening=["127.0.0.1:17745"], clock_set=False))
    assert "no other machine can dial" in found["listening"]
    [listening] = [c for c in diagnose(status(listening=["127.0.0.1:17745"])) if not c.ok]
    assert listening.hint == "start with --listen :17745 (every interface)"  # the port kept
    assert "not set" in found["clock"]


def test_a_static_peer_that_is_this_node_itself_is_named() -> None:
    itself = {"address": "127.0.0.1:7744", "source": "static", "state": "self", "failures": 0}
    [peers] = [c for c in diagnose(status(peers=0), [itself]) if c.check == "peers"]
    assert not peers.ok and "127.0.0.1:7744 is this node itself" in peers.verdict


def test_mdns_off_is_a_choice_not_a_problem() -> None:
    checks = diagnose(status(discovery={"mdns": False}), avahi=False)
    assert [c.check for c in checks] == ["interfaces", "peers", "handshakes", "listening", "clock"]
    assert checks[0].ok and "mDNS is off" in checks[0].verdict


def test_avahi_beside_it_is_mentioned_and_fine() -> None:
    [mdns] = [c for c in diagnose(status(), avahi=True) if c.check == "mdns"]
    assert mdns.ok and "avahi-daemon runs too" in mdns.verdict


def test_an_avahi_that_keeps_port_5353_to_itself_is_named_with_the_setting_to_change() -> None:
    held = {"running": False, "error": "mDNS failed: [Errno 98] Address already in use; retrying"}
    [mdns] = [c for c in diagnose(status(discovery=held), avahi=True) if c.check == "mdns"]
    assert not mdns.ok and "Address already in use" in mdns.verdict
    assert "disallow-other-stacks=no" in mdns.hint


def test_the_command_on_a_lonely_daemon_exits_1_with_json_too(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory().start()  # --no-mdns, loopback only: alone by construction
    text = daemon.cli("doctor")
    assert text.returncode == 1
    assert "PROBLEM" in text.stdout and "no peer is connected" in text.stdout
    assert text.stdout.splitlines()[-1].endswith("see the hints above")
    lines = daemon.cli("doctor", "--json").stdout.splitlines()
    checks = {c["check"]: c for c in map(json.loads, lines)}
    assert not checks["listening"]["ok"] and checks["clock"]["ok"]


def test_the_dialled_side_of_a_different_network_key_says_so(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """A static peer started with another key: the node it dials names it in doctor."""
    import time

    from meshnode.core.netkey import encode_network_key

    dialled = daemon_factory("dialled").start()
    other_key = encode_network_key(bytes(range(32)))
    daemon_factory("dialler").start("--network-key", other_key, "--peer", dialled.peer_address)
    deadline = time.monotonic() + 15
    while not dialled.call("status")["wrong_key_from"]:
        assert time.monotonic() < deadline, "no handshake failed on the network key"
        time.sleep(0.1)
    assert dialled.call("status")["wrong_key_from"] == ["127.0.0.1"]
    shown = dialled.cli("doctor").stdout
    assert "handshakes from 127.0.0.1 failed in the last 10 minutes: another network key" in shown
