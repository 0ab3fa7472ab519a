"""Daemons in network namespaces, for the benchmarks that need real multicast.

The namespaces are the tests' own (``tests/netns.py``): nothing is made in the
machine's namespace, and everything is torn down with the ``Lan``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns import Lan, skip_reason

__all__ = ["Lan", "require_namespaces", "start_daemons"]


def require_namespaces() -> None:
    reason = skip_reason()
    if reason is not None:
        raise SystemExit(f"cannot run: {reason}")


def start_daemons(lan: Lan, tmp: str) -> list[Path]:
    """``meshnode run`` on every host of ``lan`` at once, mDNS on, no --peer; their sockets."""
    sockets = [Path(tmp) / f"{host.name}.sock" for host in lan.hosts]
    for host, sock in zip(lan.hosts, sockets, strict=True):
        argv = [sys.executable, "-m", "meshnode", "run", "--data-dir", f"{tmp}/{host.name}"]
        host.popen([*argv, "--socket", str(sock), "--log-level", "warning"])
    return sockets
