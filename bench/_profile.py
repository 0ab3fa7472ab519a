"""Where a simulator run spends its time, by layer: the profile issue 8 asks for.

cProfile's own time per function (``tottime``) is summed into the layers of the
package (docs/ARCHITECTURE.md) and the libraries beneath them, so the answer to
"what dominates" is a short table rather than a wall of functions. Built-in
functions carry no file; they are placed by the library their name points to
(the ChaCha20-Poly1305 and Ed25519 bindings, msgpack's C extension), and the
rest (``len``, ``dict.get``, ``heapq``) stay "Python built-ins".

cProfile slows the run about twofold, evenly enough that the shares hold; the
wall time of an unprofiled run is the figure to quote.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# First match wins: a fragment of a function's file (of a built-in's name) and its layer.
_LAYERS: tuple[tuple[str, str], ...] = (
    ("ChaCha20Poly1305", "crypto: ChaCha20-Poly1305 (cryptography)"),
    ("Ed25519", "crypto: Ed25519 (cryptography)"),
    ("crypto_sign", "crypto: Ed25519 (libsodium)"),
    ("crypto_scalarmult", "crypto: X25519 (libsodium)"),
    ("cryptography", "crypto: other (cryptography)"),
    ("hashlib", "crypto: hashes (hashlib)"),
    ("_hashlib", "crypto: hashes (hashlib)"),
    ("blake2", "crypto: hashes (hashlib)"),
    ("sha256", "crypto: hashes (hashlib)"),
    ("msgpack", "msgpack"),
    ("Packer", "msgpack"),
    ("Unpacker", "msgpack"),
    ("meshnode/core/msgscan", "core: msgscan (bounding messages)"),
    ("meshnode/core/messages", "core: messages (codec)"),
    ("meshnode/core/negentropy", "core: negentropy"),
    ("meshnode/core/channel", "core: channel (framing, encryption calls)"),
    ("meshnode/core/noise", "core: noise / handshake"),
    ("meshnode/core/handshake", "core: noise / handshake"),
    ("meshnode/core/session", "core: session"),
    ("meshnode/core/record", "core: record"),
    ("meshnode/core", "core: other"),
    ("meshnode/store", "store"),
    ("meshnode/engine/dissemination", "engine: dissemination"),
    ("meshnode/engine/peering", "engine: peer policy"),
    ("meshnode/engine/exchange", "engine: peer policy"),
    ("meshnode/engine/mesh", "engine: mesh"),
    ("meshnode/engine", "engine: other"),
    ("meshnode/sim", "simulator: loop, links, checks"),
    ("<string>", "dataclass __init__ (events, actions)"),
    ("dataclasses", "dataclass __init__ (events, actions)"),
    ("heapq", "simulator: loop, links, checks"),
    ("random", "random"),
)


def profiled(run: Callable[[], T]) -> tuple[T, list[dict[str, Any]], list[dict[str, Any]]]:
    """``run()`` under cProfile; its result, the layers and the top functions.

    Layers and functions are lists of ``{"name", "s", "share"}``, largest first.
    """
    profile = cProfile.Profile()
    result = profile.runcall(run)
    stats = pstats.Stats(profile)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    layers: dict[str, float] = defaultdict(float)
    functions: list[tuple[float, str]] = []
    for (path, line, name), entry in raw.items():
        own = entry[2]
        layers[_layer(path, name)] += own
        functions.append((own, _where(path, line, name)))
    functions.sort(reverse=True)
    return (
        result,
        [_row(name, s, total) for name, s in sorted(layers.items(), key=lambda i: -i[1])],
        [_row(name, s, total) for s, name in functions[:20]],
    )


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    width = max(len(row["name"]) for row in rows)
    lines = [title]
    lines += [f"  {row['name']:<{width}}  {row['s']:8.2f} s  {row['share']:6.1%}" for row in rows]
    return "\n".join(lines)


def _layer(path: str, name: str) -> str:
    where = name if path == "~" else path.replace("\\", "/")
    for fragment, layer in _LAYERS:
        if fragment in where:
            return layer
    return "Python built-ins" if path == "~" else "Python standard library"


def _where(path: str, line: int, name: str) -> str:
    if path == "~":
        return name
    short = path.replace("\\", "/").rsplit("/meshnode/", 1)[-1].rsplit("site-packages/", 1)[-1]
    return f"{short}:{line} {name}"


def _row(name: str, seconds: float, total: float) -> dict[str, Any]:
    return {"name": name, "s": round(seconds, 2), "share": round(seconds / total, 3)}
