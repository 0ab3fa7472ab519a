"""The peer protocol's fixed transcript (protocol/vectors/peer.json) holds byte for byte."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from meshnode.core import messages as m
from meshnode.core.handshake import PeerHandshake
from meshnode.core.identity import Identity
from meshnode.core.record import decode_record
from meshnode.core.x25519 import KeyPair
from meshnode.engine import exchange

VECTORS_DIR = Path(__file__).parents[1] / "protocol" / "vectors"
VECTOR = json.loads((VECTORS_DIR / "peer.json").read_text(encoding="utf-8"))


def test_committed_transcript_is_what_the_generator_produces() -> None:
    spec = importlib.util.spec_from_file_location("generate_peer", VECTORS_DIR / "generate_peer.py")
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (VECTORS_DIR / "peer.json").read_text(encoding="utf-8") == module.render()


def side(name: str, initiator: bool) -> PeerHandshake:
    return PeerHandshake(
        initiator=initiator,
        identity=Identity(bytes.fromhex(VECTOR[f"{name}_identity_seed"])),
        static_key=KeyPair(bytes.fromhex(VECTOR[f"{name}_static"])),
        network_key=bytes.fromhex(VECTOR["network_key"]),
        rng=lambda: bytes.fromhex(VECTOR[f"{name}_ephemeral"]),
    )


def test_both_sides_reproduce_the_handshake_and_read_the_whole_transcript() -> None:
    alice, bob = side("alice", True), side("bob", False)
    shake = {k: bytes.fromhex(v) for k, v in VECTOR["handshake"].items()}
    assert alice.start() == shake["message1"]
    assert bob.receive_data(shake["message1"]) == shake["message2"]
    assert alice.receive_data(shake["message2"]) == shake["message3"]
    assert bob.receive_data(shake["message3"]) == b""
    assert alice.established is not None and bob.established is not None
    assert alice.established.handshake_hash.hex() == VECTOR["handshake_hash"]
    assert (
        Identity(bytes.fromhex(VECTOR["bob_identity_seed"])).public_key
        == alice.established.remote_node
    )

    channels = {"alice": alice.established.channel, "bob": bob.established.channel}
    decoders = {"alice": m.MessageDecoder(), "bob": m.MessageDecoder()}
    for entry in VECTOR["transcript"]:
        sender = entry["from"]
        receiver = "bob" if sender == "alice" else "alice"
        plaintext = bytes.fromhex(entry["plaintext"])
        assert channels[sender].seal(plaintext).hex() == entry["wire"]
        opened = channels[receiver].open(bytes.fromhex(entry["wire"]))
        assert opened == plaintext
        [decoded] = decoders[receiver].feed(opened)
        # Both hellos list peer-exchange, so its peers message is in force and decodes.
        message = m.parse_deferred(decoded) if isinstance(decoded, m.Deferred) else decoded
        assert type(message).__name__.lower() == entry["message"]
        assert m.encode(message) == plaintext


def test_the_transcripts_records_are_valid() -> None:
    for raw in VECTOR["records"].values():
        decode_record(bytes.fromhex(raw))


def test_the_transcript_keeps_the_session_rules() -> None:
    """Only the round's initiator wants, and only what the peer alone has (peer.md §5.2)."""
    records = {name: decode_record(bytes.fromhex(raw)) for name, raw in VECTOR["records"].items()}
    holds = {
        "alice": {records["shared"].id, records["only_alice"].id},
        "bob": {records["shared"].id, records["only_bob"].id},
    }
    wants = [
        (entry["from"], m.MessageDecoder().feed(bytes.fromhex(entry["plaintext"]))[0])
        for entry in VECTOR["transcript"]
        if entry["message"] == "want"
    ]
    assert wants
    for sender, want in wants:
        assert sender == "alice"
        assert isinstance(want, m.Want) and not set(want.ids) & holds[sender]


def test_every_field_of_the_file_is_described() -> None:
    described = {name for key in VECTOR["notes"] for name in key.split(", ")}
    assert set(VECTOR) - {"notes"} <= described


def test_a_receiver_reads_every_peers_message_of_the_vectors_as_written() -> None:
    for case in VECTOR["peers_reading"]:
        plaintext = bytes.fromhex(case["plaintext"])
        try:
            [deferred] = m.MessageDecoder().feed(plaintext)
            assert isinstance(deferred, m.Deferred)
            peers = m.parse_deferred(deferred)
        except m.PeerProtocolError:
            assert case["verdict"] == "violation", case["case"]
            continue
        assert case["verdict"] == "taken" and isinstance(peers, m.Peers), case["case"]
        for name, via in (("over_lan", "192.0.2.24:40000"), ("over_loopback", "127.0.0.1:40000")):
            hints = [exchange.taken_as(address, via=via) for address in peers.addresses]
            assert [h for h in hints if h is not None] == case[f"hints_{name}"], case["case"]
