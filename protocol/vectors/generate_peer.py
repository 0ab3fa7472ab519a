"""Generate ``peer.json``: a fixed peer-protocol transcript, byte for byte.

Run from the repository root: ``python protocol/vectors/generate_peer.py``.
Every key and random value is fixed below, and Ed25519 and the Noise
handshake are deterministic given them, so a second implementation fed the
same inputs must produce exactly these bytes. ``tests/test_peer_vectors.py``
checks that the committed file is what this script produces and that a
responder reading the initiator's bytes (and back) gets these messages.
``peers_reading`` adds how a receiver reads ``peers`` messages (§4.1, §4.5,
§5.9): violations, and the hints it takes from each address.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgpack

from meshnode.core import messages as m
from meshnode.core.handshake import BINDING_CONTEXT, PROLOGUE, PROTOCOL_NAME, PeerHandshake
from meshnode.core.identity import Identity
from meshnode.core.negentropy import Initiator, Responder, SortedItems
from meshnode.core.record import sign_record
from meshnode.core.session import STRATEGY
from meshnode.core.x25519 import KeyPair
from meshnode.engine.exchange import taken_as
from meshnode.store.base import reconcile_timestamp

OUT = Path(__file__).with_name("peer.json")
T0 = 1_790_000_000_000


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"meshnode peer vector {label}".encode()).digest()


def _wire(sender: Any, message: m.Message) -> dict[str, str]:
    plain = m.encode(message)
    return {
        "message": type(message).__name__.lower(),
        "plaintext": plain.hex(),
        "wire": sender.seal(plain).hex(),
    }


def build() -> dict[str, Any]:
    alice, bob = Identity(_seed("alice identity")), Identity(_seed("bob identity"))
    network_key = _seed("network key")
    keys = {
        name: _seed(name)
        for name in ("alice static", "bob static", "alice ephemeral", "bob ephemeral")
    }
    initiator = PeerHandshake(
        initiator=True,
        identity=alice,
        static_key=KeyPair(keys["alice static"]),
        network_key=network_key,
        rng=lambda: keys["alice ephemeral"],
    )
    responder = PeerHandshake(
        initiator=False,
        identity=bob,
        static_key=KeyPair(keys["bob static"]),
        network_key=network_key,
        rng=lambda: keys["bob ephemeral"],
    )
    msg1 = initiator.start()
    msg2 = responder.receive_data(msg1)
    msg3 = initiator.receive_data(msg2)
    responder.receive_data(msg3)
    a, b = initiator.established, responder.established
    assert a is not None and b is not None

    shared = sign_record(alice, seq=1, key="profile/name", value="Alice", created_ms=T0)
    only_alice = sign_record(alice, seq=2, key="offer/tea", value="hot", created_ms=T0 + 1000)
    only_bob = sign_record(bob, seq=1, key="offer/bread", value="rye", created_ms=T0 + 2000)
    alice_items = SortedItems(
        (reconcile_timestamp(r.created_ms), r.id) for r in (shared, only_alice)
    )
    bob_items = SortedItems((reconcile_timestamp(r.created_ms), r.id) for r in (shared, only_bob))
    round_ = Initiator(alice_items, strategy=STRATEGY, frame_size_limit=60_000)
    bob_round = Responder(bob_items, strategy=STRATEGY, frame_size_limit=60_000)
    features = (m.RETRY_AFTER, m.PEER_EXCHANGE)
    transcript = [
        ("alice", _wire(a.channel, m.Hello(1, features, ("192.0.2.1:7744",), "meshnode/0.6.0"))),
        ("bob", _wire(b.channel, m.Hello(1, features, (), "meshnode/0.6.0"))),
        # Both listed peer-exchange: Bob tells Alice of nodes he dialled (peer.md §5.9).
        ("bob", _wire(b.channel, m.Peers(("192.0.2.7:7744", "[2001:db8::7]:7744")))),
    ]
    outgoing: bytes | None = round_.initiate()
    have: tuple[bytes, ...] = ()
    need: tuple[bytes, ...] = ()
    role = m.Role.OPEN
    while outgoing is not None:
        transcript.append(("alice", _wire(a.channel, m.Reconcile(role, outgoing))))
        reply = bob_round.reconcile(outgoing)
        transcript.append(("bob", _wire(b.channel, m.Reconcile(m.Role.REPLY, reply))))
        role = m.Role.CONTINUE
        step = round_.reconcile(reply)
        have += step.have_ids
        need += step.need_ids
        outgoing = step.message
    assert (have, need) == ((only_alice.id,), (only_bob.id,))
    # The round's initiator wants what only the peer has and pushes what only it has
    # (peer.md §5.2); the responder answers the want (§5.3).
    transcript += [
        ("alice", _wire(a.channel, m.Want((only_bob.id,)))),
        ("alice", _wire(a.channel, m.Records((only_alice.raw,)))),
        ("bob", _wire(b.channel, m.Records((only_bob.raw,)))),
        ("alice", _wire(a.channel, m.Ping(42))),
        ("bob", _wire(b.channel, m.Pong(42))),
        ("alice", _wire(a.channel, m.Goodbye(0, "shutting down"))),
    ]
    return {
        "notes": NOTES,
        "protocol": PROTOCOL_NAME,
        "prologue": PROLOGUE.hex(),
        "binding_context": BINDING_CONTEXT.hex(),
        "network_key": network_key.hex(),
        "alice_identity_seed": alice.seed().hex(),
        "bob_identity_seed": bob.seed().hex(),
        "alice_node_id": alice.node_id,
        "bob_node_id": bob.node_id,
        **{name.replace(" ", "_"): value.hex() for name, value in keys.items()},
        "handshake": {"message1": msg1.hex(), "message2": msg2.hex(), "message3": msg3.hex()},
        "handshake_hash": a.handshake_hash.hex(),
        "records": {
            "shared": shared.raw.hex(),
            "only_alice": only_alice.raw.hex(),
            "only_bob": only_bob.raw.hex(),
        },
        "transcript": [{"from": who, **entry} for who, entry in transcript],
        "peers_reading": peers_reading(),
    }


OVER_LAN = "192.0.2.24:40000"
OVER_LOOPBACK = "127.0.0.1:40000"
ADDRESSES = [
    "198.51.100.9:7744",
    "[2001:DB8:0:0::1]:7744",  # another spelling: taken as RFC 5952 writes it
    "[::ffff:192.0.2.1]:7744",  # IPv4-mapped: taken as IPv4
    "[fd00::1]:7745",
    "node.local:7744",  # a name
    "198.51.100.9",  # no port
    "198.51.100.9:0",
    "198.51.100.9:65536",
    "010.1.2.3:7744",  # a leading zero
    "[fe80::1%eth0]:7744",  # link-local
    "169.254.1.1:7744",
    "[fd00::2%eth0]:7744",  # a zone
    "127.0.0.1:7745",  # loopback: only over loopback
    "[::1]:7745",
    "0.0.0.0:7744",  # unspecified
    "224.0.0.251:5353",  # multicast
    "255.255.255.255:7744",  # broadcast
    "[fec0::1]:7744",  # outside IPv6's unicast blocks
    "[64:ff9b::c633:6409]:7744",
]


def peers_reading() -> list[dict[str, Any]]:
    """``peers`` messages as plaintext and what a receiver with the feature in force makes of
    each: a violation, or the hints it takes, over a session on the LAN or over loopback."""
    cases: list[dict[str, Any]] = [
        {"case": "addresses of every form", "message": [8, ADDRESSES]},
        {"case": "an empty list", "message": [8, []]},
        {"case": "elements after the list are ignored", "message": [8, ["198.51.100.9:7744"], 1]},
        {"case": "32 addresses", "message": [8, [f"198.51.100.{n}:7744" for n in range(32)]]},
        {"case": "33 addresses", "message": [8, [f"198.51.100.{n}:7744" for n in range(33)]]},
        {"case": "an address of 257 bytes", "message": [8, ["1" * 257]]},
        {"case": "an element that is not a str", "message": [8, [b"198.51.100.9:7744"]]},
        {"case": "no list", "message": [8]},
        {"case": "not a list", "message": [8, "198.51.100.9:7744"]},
    ]
    for case in cases:
        plaintext = msgpack.packb(case["message"], use_bin_type=True)
        case["plaintext"] = plaintext.hex()
        del case["message"]
        try:
            [deferred] = m.MessageDecoder().feed(plaintext)
            assert isinstance(deferred, m.Deferred)
            peers = m.parse_deferred(deferred)
        except m.PeerProtocolError:
            case["verdict"] = "violation"
            continue
        assert isinstance(peers, m.Peers)
        case["verdict"] = "taken"
        for name, via in (("over_lan", OVER_LAN), ("over_loopback", OVER_LOOPBACK)):
            hints = (taken_as(address, via=via) for address in peers.addresses)
            case[f"hints_{name}"] = [hint for hint in hints if hint is not None]
    return cases


NOTES = {
    "about": "One session between Alice (the dialer: Noise initiator and session initiator) and"
    " Bob (the responder), from the first handshake byte to goodbye. Byte strings are lowercase"
    " hex. Every input is fixed: the keys, and the plaintext of each message (msgpack as"
    " peer.md 4.2's senders write it, hello's keys in the order of its table), so an"
    " implementation fed the same keys and plaintexts must produce these bytes exactly.",
    "protocol": "the Noise protocol name",
    "prologue": "the Noise prologue (peer.md section 2)",
    "binding_context": "the bytes signed before the Noise static key in the identity binding",
    "network_key": "the 32-byte network key, used as the Noise PSK",
    "alice_identity_seed, bob_identity_seed": "RFC 8032 Ed25519 private seeds (32 bytes): the"
    " node identities",
    "alice_node_id, bob_node_id": "the node ids of those identities (records.md section 1)",
    "alice_static, bob_static": "X25519 private keys (32 bytes, RFC 7748, before clamping):"
    " the Noise static keys s",
    "alice_ephemeral, bob_ephemeral": "X25519 private keys: the Noise ephemeral keys e, the"
    " only randomness of a handshake",
    "handshake": "the three handshake messages as sent on the stream, each with its 2-byte"
    " big-endian length prefix; message1 from Alice, message2 from Bob, message3 from Alice",
    "handshake_hash": "the Noise handshake hash h after message 3 (both sides compute it)",
    "records": "the records of the session, each a whole record encoding (records.md): Alice"
    " holds shared and only_alice, Bob holds shared and only_bob",
    "transcript": "the messages after the handshake in the order sent: from (the sender),"
    " message (its name in peer.md section 4), plaintext (the msgpack encoding of the message),"
    " wire (the transport frame as sent on the stream: 2-byte big-endian length prefix, then"
    " ChaChaPoly ciphertext and tag, nonces counting from 0 per direction)",
    "peers_reading": "peers messages (type 8) as plaintext, each read by a node with the"
    " peer-exchange feature in force: verdict violation (goodbye 1, peer.md 4.1) or taken, and"
    " then the hints it takes, in canonical form (4.5), over a session on the LAN"
    f" ({OVER_LAN}) and over loopback ({OVER_LOOPBACK}) (5.9). Where the feature is not in"
    " force, every one of these is ignored unread.",
}


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stderr.write(f"wrote {OUT}\n")
