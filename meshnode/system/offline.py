"""A node's store while its daemon is stopped: ``meshnode export`` and ``import`` offline.

Offline use takes the data-dir lock, as ``meshnode run`` does, and holds it to
the end: no daemon can start meanwhile, and a running one is found by its lock
(``Busy``: its control socket is then the way in). Reading beside a running
daemon instead, read-only, was rejected: opening the store may set damaged
files aside or migrate the schema (``meshnode.store``), which only the lock's
holder may do, and the daemon's ``export`` is as fast.

Imports take the path records from peers take, ``Node.ingest``: the same
checks, quotas and eviction, verified on two threads as the daemon verifies
(libsodium releases the GIL). Records the user imports count as nobody's
newcomers (``source`` None), so their authors are established at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from meshnode.engine.mesh import verdicts
from meshnode.engine.node import Node
from meshnode.store.base import StoreError, StoreLimits
from meshnode.system import datadir
from meshnode.system.home import open_node

EXPORT_PAGE = 5000  # records per read of the store


class OfflineError(Exception):
    """The data dir cannot be used offline; the message says why and what to do."""


class Busy(OfflineError):
    """A daemon holds the data dir: reach it through its control socket instead."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class OfflineNode:
    """The node of ``home``, locked and open: ``with OfflineNode(home) as node: ...``.

    ``limits`` are the configured store limits (None: the defaults). ``warnings``
    says what damage opening the store found and set aside, as the daemon logs it.
    """

    def __init__(self, home: Path, limits: StoreLimits | None = None) -> None:
        self.home = home
        self.limits = limits or StoreLimits()
        self.warnings: list[str] = []
        self._stack = contextlib.ExitStack()
        self._node: Node | None = None

    def __enter__(self) -> OfflineNode:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._node = None
        self._stack.close()

    def _open(self) -> None:
        home = self.home
        if not (home / datadir.KEY_FILE).is_file():
            raise OfflineError(
                f"no node lives in {home} (it has no {datadir.KEY_FILE}); start it once"
                " with meshnode run, or name its data dir with --data-dir"
            )
        try:
            opened = self._stack.enter_context(open_node(home, self.limits))
        except datadir.AlreadyRunning as exc:
            raise Busy(f"{exc}; its control socket did not answer (is --socket right?)") from None
        except (datadir.DataDirError, StoreError) as exc:
            raise OfflineError(str(exc)) from None
        self.warnings = list(opened.warnings)
        self._node = opened.node

    @property
    def node(self) -> Node:
        if self._node is None:
            raise OfflineError("the offline node is not open")
        return self._node

    def import_records(self, raws: Sequence[bytes]) -> tuple[str, ...]:
        """Verify and store ``raws`` in one transaction; one verdict each (``mesh.verdicts``)."""
        try:
            report = self.node.ingest(raws, now_ms=_now_ms())
        except StoreError as exc:
            raise OfflineError(str(exc)) from None
        return verdicts(raws, report)

    def export_pages(
        self, *, prefix: str = "", author: bytes | None = None
    ) -> Iterator[list[bytes]]:
        """The served set's records (tombstones too, nothing expired), a page at a time."""
        store = self.node.store
        after: tuple[str, bytes] | None = None
        now_ms = _now_ms()
        while True:
            try:
                raws, after = store.served_page(
                    now_ms=now_ms,
                    prefix=prefix,
                    author=author,
                    after=after,
                    limit=EXPORT_PAGE,
                    max_bytes=EXPORT_PAGE * 1024,
                )
            except StoreError as exc:
                raise OfflineError(str(exc)) from None
            if raws:
                yield raws
            if after is None:
                return
