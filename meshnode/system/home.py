"""A data dir opened as a node: locked, its identity loaded, its store open, verifiers running.

The daemon (``meshnode run``) and a stopped node's ``export``/``import``
(``meshnode.system.offline``) open a node the same way, so that both hold the
lock while the store is open and verify on the same threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from msgspec import Struct

from meshnode.engine.node import Node
from meshnode.store.base import StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.system import datadir

# Verification runs on both cores when many records come at once (libsodium releases the GIL).
VERIFY_THREADS = 2


class OpenNode(Struct, frozen=True):
    node: Node
    created: bool  # the identity was made just now: a first start
    warnings: tuple[str, ...]  # damage found when the store was opened, and set aside


@contextlib.contextmanager
def open_node(home: Path, limits: StoreLimits) -> Iterator[OpenNode]:
    """The node of ``home`` until the block ends; then its store closed and its lock released.

    Raises ``datadir.AlreadyRunning`` (a daemon holds ``home``), another
    ``datadir.DataDirError``, or ``StoreError`` (the store cannot be opened).
    """
    lock = datadir.DataDirLock(home)
    lock.acquire()
    try:
        identity, created = datadir.load_or_create_identity(home, os.urandom(32))
        mask = os.umask(0o077)  # the store's files are the node's user's alone
        try:
            store = SQLiteStore(home / datadir.STORE_FILE, identity.public_key, limits)
        finally:
            os.umask(mask)
        try:  # from here on the store is closed whatever happens, ^C included
            with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="verify") as verifiers:
                node = Node(identity, store, parallel_map=verifiers.map)
                yield OpenNode(node, created, tuple(store.warnings))
        finally:
            store.close()
    finally:
        lock.release()
