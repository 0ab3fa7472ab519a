"""How the CLI says numbers to people: counts with their noun, sizes in binary units.

Every command that reports speaks of peers, nodes and bytes; one way of saying them,
so that ``status``, ``doctor`` and ``sync`` agree (``1 peer``, ``2 peers``, ``1.5 MiB``).
The ``--json`` forms keep the plain numbers.
"""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``1 peer``, ``2 peers``, ``20,014 records``: the plural is the singular with an s."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def size(n: int) -> str:
    """Bytes as people read them: 570 B, 1.5 KiB, 256 MiB."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if round(n / factor, 1) >= 1:  # 1,048,575 B is 1 MiB, not 1024 KiB
            return f"{n / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"
