"""``meshnode run``: the daemon's start-up, its task tree and its shutdown.

Start-up is synchronous and fails early with one clear message: data dir,
lock, identity, store, control socket. Then one trio nursery owns every task
(the control server, the purge loop, the signal watcher); SIGINT or SIGTERM
cancels it, and the store is closed once the last task has finished.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import trio

from meshnode import __version__
from meshnode.core.addresses import parse_address
from meshnode.engine.actions import Purged
from meshnode.engine.events import Purge
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Node
from meshnode.engine.settings import Settings
from meshnode.runtime.api import Api, Paths
from meshnode.runtime.clock import system_wall_clock_ms
from meshnode.runtime.control import ControlServer, ControlSocketError, bind
from meshnode.runtime.mdns import Discovery
from meshnode.runtime.peers import ListenError, PeerService
from meshnode.runtime.publisher import Publisher
from meshnode.runtime.storethread import StoreThread
from meshnode.runtime.watch import WatchHub
from meshnode.store.base import StoreError
from meshnode.store.sqlite import SQLiteStore
from meshnode.system import datadir

log = logging.getLogger("meshnode")

PURGE_INTERVAL_S = 60.0
GOODBYE_TIMEOUT = 1.0  # of the 2 s a clean stop may take


class StartupError(Exception):
    """The daemon cannot start; the message is meant for the user as it is."""


@dataclass(frozen=True)
class DaemonConfig:
    """Where the node lives, and its settings, whole (``meshnode.engine.settings``)."""

    data_dir: Path
    socket_path: Path
    settings: Settings = field(default_factory=Settings)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run(config: DaemonConfig) -> None:
    """Run the daemon until SIGINT or SIGTERM; raise ``StartupError`` if it cannot start."""
    os.umask(0o077)  # every file the node creates is private to its user
    try:
        datadir.prepare(config.data_dir)
        lock = datadir.DataDirLock(config.data_dir)
        lock.acquire()
    except datadir.DataDirError as exc:
        raise StartupError(str(exc)) from None
    try:
        try:
            identity, created = datadir.load_or_create_identity(config.data_dir, os.urandom(32))
            store = SQLiteStore(
                config.data_dir / datadir.STORE_FILE, identity.public_key, config.settings.store
            )
        except (datadir.DataDirError, StoreError) as exc:
            raise StartupError(str(exc)) from None
        try:  # from here on the store is closed whatever happens, ^C included
            if created:
                log.info("created a new identity %s (%s)", identity.node_id, identity.fingerprint)
            for warning in store.warnings:
                log.error("%s", warning)
            # Verification runs on both cores when peers send many records at once.
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as verifiers:
                trio.run(_main, config, Node(identity, store, parallel_map=verifiers.map))
        finally:
            store.close()
    finally:
        lock.release()


async def _main(config: DaemonConfig, node: Node) -> None:
    try:
        listener = await bind(config.socket_path)
    except ControlSocketError as exc:
        raise StartupError(str(exc)) from None
    store_thread = StoreThread()
    mesh = Mesh(
        node,
        agent=f"meshnode/{__version__}",
        rng=random.SystemRandom(),
        settings=config.settings,
        now=trio.current_time(),
    )
    clock = system_wall_clock_ms  # the one wall clock, for every part that reads one
    peers = PeerService(
        mesh,
        node.identity,
        store_thread=store_thread,
        hub=WatchHub(),
        config=config.settings.peers,
        wall_clock_ms=clock,
    )
    publisher = Publisher(peers)
    paths = Paths(data_dir=str(config.data_dir), socket=str(config.socket_path))
    api = Api(node, peers, publisher=publisher, paths=paths, wall_clock_ms=clock)
    try:
        try:
            peer_listeners = await peers.open_listeners()
        except ListenError as exc:
            await listener.aclose()
            raise StartupError(str(exc)) from None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope, peers)
            nursery.start_soon(peers.run, peer_listeners)
            nursery.start_soon(publisher.run)
            nursery.start_soon(ControlServer(api, listener).serve)
            nursery.start_soon(_purge_loop, peers)
            discovery = config.settings.discovery
            port = _advertised_port(peers.listening)
            if discovery.mdns and port is not None:
                mdns = Discovery(
                    network_key=config.settings.peers.network_key,
                    interfaces=discovery.interfaces,
                    step=peers.step,
                )
                api.discovery = mdns.state
                nursery.start_soon(mdns.run, port)
            log.info(
                "meshnode %s ready: node %s, data dir %s, control socket %s",
                __version__,
                node.identity.node_id,
                config.data_dir,
                config.socket_path,
            )
    finally:
        _unlink_quietly(config.socket_path)
        log.info("stopped")


async def _stop_on_signal(cancel_scope: trio.CancelScope, peers: PeerService) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            try:
                with trio.move_on_after(GOODBYE_TIMEOUT):
                    await peers.goodbye()
            finally:
                cancel_scope.cancel()
            return


async def _purge_loop(peers: PeerService) -> None:
    """Drop expired records and old tombstones, now and then, from the store."""
    while True:
        started = trio.current_time()
        try:
            actions = await peers.step(Purge())
        except StoreError as exc:
            log.error("purging expired records failed: %s", exc)
        else:
            freed = sum(a.freed_bytes for a in actions if isinstance(a, Purged))
            if freed:
                log.info("purged %d bytes of expired records", freed)
        await trio.sleep_until(started + PURGE_INTERVAL_S)


def _advertised_port(listening: list[str]) -> int | None:
    """The port to announce: the first listener's that others can reach (not loopback)."""
    for address in listening:
        host, port = parse_address(address)
        if host is None or not ipaddress.ip_address(host).is_loopback:
            return port
    return None


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
