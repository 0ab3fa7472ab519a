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
    [7, code: int, reason: str, retry_after: int]                       goodbye
    [8, [address: str, ...]]                                            peers (peer-exchange)

The rules that let the protocol grow (§4.2): unknown message types are ignored,
elements after a message's known ones are ignored, and so are unknown ``hello``
keys; missing optional fields take their defaults. Everything a node sends beyond
the first version's forms belongs to a ``FEATURES`` entry and goes only to peers
whose ``hello`` listed it, since nodes of 0.1.0 allowed no trailing elements.
Every reason a node gives in a goodbye is one fixed text (``Why``), never an
exception's words. The decoder never buffers more than
``MAX_MESSAGE_BYTES`` of a message, nor decodes one nested deeper or holding
more elements than the protocol's own: a length claiming gigabytes fails at
once, without allocating them.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
from msgspec import Struct

from meshnode.core.msgscan import ScanError, ValueStream
from meshnode.core.record import ID_SIZE

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_RECORDS_PER_MESSAGE = 1024
MAX_IDS_PER_MESSAGE = 16384
MAX_LISTEN_ADDRESSES = 16
MAX_FEATURES = 64
MAX_TEXT = 256  # bytes of UTF-8, for every string field
MAX_EXCHANGED = 32  # addresses in one peers message
MAX_DEPTH = 3  # hello: message array > map > list of strings
MAX_MESSAGE_FIELDS = 256  # room for a hello's map and lists beside the largest id list

# The feature registry (protocol/peer.md §4.3): name -> what announcing it means.
RETRY_AFTER = "retry-after"
PEER_EXCHANGE = "peer-exchange"
FEATURES = {
    RETRY_AFTER: "the sender reads goodbye's fourth element, retry_after",
    PEER_EXCHANGE: "the sender shares, and reads, addresses of other nodes in peers messages",
}
# Message types that belong to a feature: only sent, and only read, where it is in force.
FEATURE_OF_TYPE = {8: PEER_EXCHANGE}


class Why(enum.StrEnum):
    """Every reason a node gives in a goodbye: short, fixed, and never a peer's words."""

    SHUTTING_DOWN = "shutting down"
    LEFT_NETWORK = "left this network"  # its operator gave it another network key
    NOT_A_MESSAGE = "a message is an array starting with a non-negative integer type"
    BAD_TYPE_BYTE = "a msgpack type that messages never use (ext, 0xc1)"
    TOO_LARGE = "a message larger than 2 MiB"
    TOO_MANY_ELEMENTS = "a message with too many elements"
    TOO_DEEP = "a message nested too deep"
    MALFORMED_MSGPACK = "malformed msgpack"
    MALFORMED_HELLO = "malformed hello"
    MALFORMED_RECONCILE = "malformed reconcile"
    MALFORMED_RECORDS = "malformed records"
    MALFORMED_WANT = "malformed want"
    MALFORMED_HAVE = "malformed have"
    MALFORMED_PING = "malformed ping"
    MALFORMED_PONG = "malformed pong"
    MALFORMED_GOODBYE = "malformed goodbye"
    MALFORMED_PEERS = "malformed peers"
    HELLO_FIRST = "the first message must be hello"
    HELLO_TWICE = "hello was sent twice"
    NO_COMMON_VERSION = "no common protocol version"
    RECONCILE_TOO_LARGE = "a reconcile message over the frame size limit"
    RECONCILE_UNASKED = "a reconcile reply to no round"
    RECONCILE_NOT_WAITING = "several reconcile messages without waiting for replies"
    NEGENTROPY = "a negentropy message that does not decode"
    TOO_MANY_QUESTIONS = "too many reconcile messages"
    TOO_MANY_EXCHANGES = "too many peers messages"
    DUPLICATE = "already connected"
    IDLE = "nothing heard for too long"
    BANNED = "banned"
    UNDECRYPTABLE = "a frame that does not decrypt"  # reported locally; nothing is sent


def invalid_record_reason(reason: str) -> str:
    """Goodbye 2's reason: the record's rejection code (``protocol/records.md`` §5)."""
    return f"invalid record: {reason}"


class PeerProtocolError(Exception):
    """The peer broke the protocol; the session ends with ``GoodbyeCode.PROTOCOL``."""

    def __init__(self, why: Why) -> None:
        super().__init__(why.value)
        self.why = why


class GoodbyeCode(enum.IntEnum):
    NORMAL = 0  # shutting down or closing on purpose
    PROTOCOL = 1  # the peer broke the protocol
    INVALID_RECORD = 2  # the peer sent a record that does not verify
    DUPLICATE = 3  # another connection to the same node is kept instead
    IDLE = 4  # nothing received for too long
    VERSION = 5  # no protocol version in common
    OVERLOADED = 6  # the peer asks faster than it may
    BANNED = 7  # the peer is not welcome for a while; retry_after says how long


class Hello(Struct, frozen=True):
    version: int
    features: tuple[str, ...]
    listen: tuple[str, ...]
    agent: str


class Role(enum.IntEnum):
    """Whose Negentropy message a ``reconcile`` carries; either side may run a round."""

    OPEN = 0  # the first message of a round, from its initiator
    REPLY = 1  # from the round's responder
    CONTINUE = 2  # a later message from the round's initiator


class Reconcile(Struct, frozen=True):
    role: Role
    payload: bytes


class Records(Struct, frozen=True):
    raws: tuple[bytes, ...]


class Want(Struct, frozen=True):
    ids: tuple[bytes, ...]


class Have(Struct, frozen=True):
    ids: tuple[bytes, ...]


class Ping(Struct, frozen=True):
    nonce: int


class Pong(Struct, frozen=True):
    nonce: int


class Goodbye(Struct, frozen=True):
    code: int
    reason: str
    retry_after: int | None = None  # seconds; sent only to peers with the retry-after feature


class Peers(Struct, frozen=True):
    """Addresses where other nodes accepted this sender's dial (the ``peer-exchange`` feature)."""

    addresses: tuple[str, ...]


class Deferred(Struct, frozen=True):
    """A message of a feature's type, undecoded: only a session knows if the feature is in force.

    ``parse_deferred`` decodes it where it is; where it is not, it is ignored
    unread (§4.2 rule 1), whatever it holds.
    """

    kind: int
    args: tuple[Any, ...]


Message = Hello | Reconcile | Records | Want | Have | Ping | Pong | Goodbye | Peers


def encode(message: Message) -> bytes:
    body: list[Any]
    match message:  # the most frequent first
        case Records(raws):
            body = [2, list(raws)]
        case Hello(version, features, listen, agent):
            body = [
                0,
                {"v": version, "features": list(features), "listen": list(listen), "agent": agent},
            ]
        case Reconcile(role, payload):
            body = [1, int(role), payload]
        case Want(ids):
            body = [3, list(ids)]
        case Have(ids):
            body = [4, list(ids)]
        case Ping(nonce):
            body = [5, nonce]
        case Pong(nonce):
            body = [6, nonce]
        case Goodbye(code, reason, retry_after):
            body = [7, code, clip(reason)]
            if retry_after is not None:
                body.append(retry_after)
        case Peers(addresses):
            body = [8, list(addresses)]
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
            object_pairs_hook=_str_keyed,
        )

    def feed(self, data: bytes) -> list[Message | Deferred]:
        try:
            values = self._values.feed(data)
        except ScanError as exc:
            raise PeerProtocolError(_SCAN_FAULTS[exc.kind]) from None
        messages: list[Message | Deferred] = []
        for value in values:
            message = parse(value)
            if message is not None:
                messages.append(message)
        return messages


def _str_keyed(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """A map of any message, known or not: keys are str (§4.2), and of a repeated key the
    last value counts."""
    if not all(type(key) is str for key, _ in pairs):
        raise ValueError("a map key that is not a str")
    return dict(pairs)


_SCAN_FAULTS = {
    "type": Why.BAD_TYPE_BYTE,
    "size": Why.TOO_LARGE,
    "elements": Why.TOO_MANY_ELEMENTS,
    "depth": Why.TOO_DEEP,
    "malformed": Why.MALFORMED_MSGPACK,
}


def clip(text: str, most: int = MAX_TEXT) -> str:
    """``text`` cut to at most ``most`` bytes of UTF-8, at a character boundary."""
    return text.encode()[:most].decode(errors="ignore")


def parse(obj: Any) -> Message | Deferred | None:
    """A message from its decoded msgpack form; None for an unknown type.

    Elements after the ones a type defines are ignored (§4.2), so a later
    version can extend a message without breaking this one. A feature's
    message comes back ``Deferred``, for the session to decode or ignore.
    """
    if type(obj) is not list or not obj or type(obj[0]) is not int or obj[0] < 0:
        raise PeerProtocolError(Why.NOT_A_MESSAGE)
    kind, args = obj[0], obj[1:]
    if kind in FEATURE_OF_TYPE:
        return Deferred(kind, tuple(args))
    return _decode(kind, args)


def parse_deferred(message: Deferred) -> Message:
    """Decode a feature's message once its feature is known to be in force."""
    decoded = _decode(message.kind, list(message.args))
    assert decoded is not None, "every type of FEATURE_OF_TYPE has a parser"
    return decoded


def _decode(kind: int, args: list[Any]) -> Message | None:
    entry = _PARSERS.get(kind)
    if entry is None:
        return None  # a type from a later version or a feature: ignored
    parser, malformed = entry
    try:
        message: Message = parser(args)
    except (IndexError, ValueError):
        raise PeerProtocolError(malformed) from None
    return message


def _hello(args: list[Any]) -> Hello:
    body = args[0]
    if type(body) is not dict:
        raise ValueError
    version, features = body.get("v"), body.get("features", [])
    listen, agent = body.get("listen", []), body.get("agent", "")
    if type(version) is not int:
        raise ValueError
    if not _strings(features, MAX_FEATURES) or not _strings(listen, MAX_LISTEN_ADDRESSES):
        raise ValueError
    if not _text(agent):
        raise ValueError
    return Hello(version, tuple(features), tuple(listen), agent)


def _text(value: Any) -> bool:
    return type(value) is str and len(value.encode()) <= MAX_TEXT


def _strings(value: Any, most: int) -> bool:
    return type(value) is list and len(value) <= most and all(_text(v) for v in value)


_ROLES = frozenset(int(role) for role in Role)


def _reconcile(args: list[Any]) -> Reconcile:
    role, payload = args[0], args[1]
    if type(role) is not int or role not in _ROLES or type(payload) is not bytes:
        raise ValueError
    return Reconcile(Role(role), payload)


def _records(args: list[Any]) -> Records:
    raws = args[0]
    if type(raws) is not list or len(raws) > MAX_RECORDS_PER_MESSAGE:
        raise ValueError
    if not all(type(r) is bytes for r in raws):
        raise ValueError  # a bin that is no valid record is goodbye 2, not 1
    return Records(tuple(raws))


def _ids(ids: Any) -> tuple[bytes, ...]:
    if (
        type(ids) is not list
        or len(ids) > MAX_IDS_PER_MESSAGE
        or not all(type(i) is bytes and len(i) == ID_SIZE for i in ids)
    ):
        raise ValueError
    return tuple(ids)


def _nonce(nonce: Any) -> int:
    if type(nonce) is not int or not 0 <= nonce < 2**64:
        raise ValueError
    return nonce


def _goodbye(args: list[Any]) -> Goodbye:
    code, reason = args[0], args[1]
    retry_after = args[2] if len(args) > 2 else None
    if type(code) is not int or type(reason) is not str:
        raise ValueError
    if retry_after is not None and (type(retry_after) is not int or retry_after < 0):
        raise ValueError
    return Goodbye(code, clip(reason), retry_after)


def _peers(args: list[Any]) -> Peers:
    addresses = args[0]
    if not _strings(addresses, MAX_EXCHANGED):
        raise ValueError
    return Peers(tuple(addresses))


_PARSERS: dict[int, tuple[Any, Why]] = {
    0: (_hello, Why.MALFORMED_HELLO),
    1: (_reconcile, Why.MALFORMED_RECONCILE),
    2: (_records, Why.MALFORMED_RECORDS),
    3: (lambda args: Want(_ids(args[0])), Why.MALFORMED_WANT),
    4: (lambda args: Have(_ids(args[0])), Why.MALFORMED_HAVE),
    5: (lambda args: Ping(_nonce(args[0])), Why.MALFORMED_PING),
    6: (lambda args: Pong(_nonce(args[0])), Why.MALFORMED_PONG),
    7: (_goodbye, Why.MALFORMED_GOODBYE),
    8: (_peers, Why.MALFORMED_PEERS),
}
