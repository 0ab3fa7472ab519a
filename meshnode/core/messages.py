"""The peer protocol's messages, and a bounded decoder for the decrypted stream.

Specification: ``protocol/peer.md`` §4. After the handshake each side sends a
stream of msgpack arrays whose first element is the message type::

    [0, {"v": 1, "features": [str], "listen": [str], "agent": str}]   hello
    [1, role: int, negentropy_message: bin]                             reconcile
    [2, [record: bin, ...]]                                             records
    [3, [record_id: bin32, ...]]                                        want
    [4, [record_id: bin32, ...]]                                        have
    [5, nonce: int]                                                     ping
    [6, nonce: int]                                                     pong
    [7, code: int, reason: str]                                         goodbye

Unknown message types are ignored (so a later version can add some); known
ones must have exactly their shape. The decoder never buffers more than
``MAX_MESSAGE_BYTES`` of a message, nor decodes one nested deeper or holding
more elements than the protocol's own: a length claiming gigabytes fails at
once, without allocating them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from meshnode.core.msgscan import ScanError, ValueStream
from meshnode.core.record import ID_SIZE, MAX_RECORD_BYTES

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_RECORDS_PER_MESSAGE = 1024
MAX_IDS_PER_MESSAGE = 16384
MAX_LISTEN_ADDRESSES = 16
MAX_TEXT = 256
MAX_DEPTH = 3  # hello: message array > map > list of strings
MAX_MESSAGE_FIELDS = 256  # room for a hello's map and lists beside the largest id list


class PeerProtocolError(Exception):
    """The peer broke the protocol; the session ends with ``Goodbye.PROTOCOL``."""


class GoodbyeCode(enum.IntEnum):
    NORMAL = 0  # shutting down or closing on purpose
    PROTOCOL = 1  # the peer broke the protocol
    INVALID_RECORD = 2  # the peer sent a record that does not verify
    DUPLICATE = 3  # another connection to the same node is kept instead
    IDLE = 4  # nothing received for too long
    VERSION = 5  # no protocol version in common
    OVERLOADED = 6  # the peer cannot keep up


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    features: tuple[str, ...]
    listen: tuple[str, ...]
    agent: str


class Role(enum.IntEnum):
    """Whose Negentropy message a ``reconcile`` carries; either side may run a round."""

    OPEN = 0  # the first message of a round, from its initiator
    REPLY = 1  # from the round's responder
    CONTINUE = 2  # a later message from the round's initiator


@dataclass(frozen=True, slots=True)
class Reconcile:
    role: Role
    payload: bytes


@dataclass(frozen=True, slots=True)
class Records:
    raws: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Want:
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Have:
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Goodbye:
    code: int
    reason: str


Message = Hello | Reconcile | Records | Want | Have | Ping | Pong | Goodbye


def encode(message: Message) -> bytes:
    body: list[Any]
    match message:
        case Hello(version, features, listen, agent):
            body = [
                0,
                {"v": version, "features": list(features), "listen": list(listen), "agent": agent},
            ]
        case Reconcile(role, payload):
            body = [1, int(role), payload]
        case Records(raws):
            body = [2, list(raws)]
        case Want(ids):
            body = [3, list(ids)]
        case Have(ids):
            body = [4, list(ids)]
        case Ping(nonce):
            body = [5, nonce]
        case Pong(nonce):
            body = [6, nonce]
        case Goodbye(code, reason):
            body = [7, code, reason[:MAX_TEXT]]
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


class MessageDecoder:
    """Decrypted bytes in, messages out; bounded, and strict about shapes.

    Message boundaries are found by ``msgscan`` before anything is decoded, so
    a message may not pass ``MAX_MESSAGE_BYTES``, nest deeper than the
    protocol's messages do, or hold more elements than the largest of them.
    """

    def __init__(self) -> None:
        self._values = ValueStream(
            max_bytes=MAX_MESSAGE_BYTES,
            max_depth=MAX_DEPTH,
            max_items=MAX_IDS_PER_MESSAGE + MAX_MESSAGE_FIELDS,
        )

    def feed(self, data: bytes) -> list[Message]:
        try:
            values = self._values.feed(data)
        except ScanError as exc:
            raise PeerProtocolError(str(exc)) from None
        messages: list[Message] = []
        for value in values:
            message = parse(value)
            if message is not None:
                messages.append(message)
        return messages


def parse(obj: Any) -> Message | None:
    """A message from its decoded msgpack form; None for an unknown type."""
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise PeerProtocolError("a message is an array starting with its type")
    kind, args = obj[0], obj[1:]
    parser = _PARSERS.get(kind)
    if parser is None:
        if kind < 0:
            raise PeerProtocolError("message types are non-negative")
        return None  # a type from a later version: ignored
    try:
        message: Message = parser(*args)
    except (TypeError, ValueError) as exc:
        raise PeerProtocolError(f"message type {kind} is malformed: {exc}") from None
    return message


def _hello(body: Any) -> Hello:
    if type(body) is not dict:
        raise ValueError("hello is a map")
    version, features = body.get("v"), body.get("features", [])
    listen, agent = body.get("listen", []), body.get("agent", "")
    if type(version) is not int:
        raise ValueError("hello needs a protocol version")
    if not _strings(features, 64) or not _strings(listen, MAX_LISTEN_ADDRESSES):
        raise ValueError("features and listen are short lists of short strings")
    if type(agent) is not str or len(agent) > MAX_TEXT:
        raise ValueError("agent is a short string")
    return Hello(version, tuple(features), tuple(listen), agent)


def _strings(value: Any, most: int) -> bool:
    return (
        type(value) is list
        and len(value) <= most
        and all(type(v) is str and len(v) <= MAX_TEXT for v in value)
    )


_ROLES = frozenset(int(role) for role in Role)


def _reconcile(role: Any, payload: Any) -> Reconcile:
    if type(role) is not int or role not in _ROLES or type(payload) is not bytes:
        raise ValueError("reconcile is a role (0, 1 or 2) and bin")
    return Reconcile(Role(role), payload)


def _records(raws: Any) -> Records:
    if type(raws) is not list or len(raws) > MAX_RECORDS_PER_MESSAGE:
        raise ValueError(f"records is a list of at most {MAX_RECORDS_PER_MESSAGE}")
    if not all(type(r) is bytes and len(r) <= MAX_RECORD_BYTES for r in raws):
        raise ValueError("each record is bin of at most the record size")
    return Records(tuple(raws))


def _ids(ids: Any) -> tuple[bytes, ...]:
    if (
        type(ids) is not list
        or len(ids) > MAX_IDS_PER_MESSAGE
        or not all(type(i) is bytes and len(i) == ID_SIZE for i in ids)
    ):
        raise ValueError(f"a list of at most {MAX_IDS_PER_MESSAGE} 32-byte record ids")
    return tuple(ids)


def _nonce(nonce: Any) -> int:
    if type(nonce) is not int or not 0 <= nonce < 2**64:
        raise ValueError("a nonce is an unsigned 64-bit integer")
    return nonce


def _goodbye(code: Any, reason: Any) -> Goodbye:
    if type(code) is not int or type(reason) is not str:
        raise ValueError("goodbye is a code and a reason")
    return Goodbye(code, reason[:MAX_TEXT])


_PARSERS: dict[int, Any] = {
    0: _hello,
    1: _reconcile,
    2: _records,
    3: lambda ids: Want(_ids(ids)),
    4: lambda ids: Have(_ids(ids)),
    5: lambda nonce: Ping(_nonce(nonce)),
    6: lambda nonce: Pong(_nonce(nonce)),
    7: _goodbye,
}
