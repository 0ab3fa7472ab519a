"""``meshnode run``: the daemon's start-up, its task tree and its shutdown.

Start-up is synchronous and fails early with one clear message: data dir,
lock, identity, store, control socket. Then one trio nursery owns every task
(the peer edge, the control server, discovery, hooks, the purge loop, the
reports to systemd, the signal watcher). The service manager hears ``READY=1``
once the control socket accepts and the peer listeners are open.

SIGHUP reloads the configuration (``meshnode.runtime.reload``). SIGINT or SIGTERM
stops the node: goodbye to every peer (at most ``GOODBYE_TIMEOUT``), mDNS goodbyes,
then the store is closed once the last task has finished, well inside the 5 s a
service manager is promised. A second signal during the stop ends the process at
once: SQLite's write-ahead log keeps every committed record, whatever is cut short.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import trio
from msgspec import Struct, field

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
from meshnode.runtime.hooks import HookRunner
from meshnode.runtime.logs import setup_logging
from meshnode.runtime.mdns import Discovery, DiscoveryState
from meshnode.runtime.peers import ListenError, PeerService
from meshnode.runtime.publisher import Publisher
from meshnode.runtime.reload import Appliers, Reloader, ReloadError
from meshnode.runtime.storethread import StoreThread
from meshnode.runtime.watch import WatchHub
from meshnode.store.base import StoreError
from meshnode.system import datadir
from meshnode.system.config import Effective, Inputs
from meshnode.system.home import open_node
from meshnode.system.hookspec import DEFAULT_HOOK_CONCURRENCY
from meshnode.system.notify import Notifier

log = logging.getLogger("meshnode")

PURGE_INTERVAL_S = 60.0
GOODBYE_TIMEOUT = 1.0  # of the 5 s a stop may take: the rest is mDNS goodbyes and the store
STATUS_INTERVAL_S = 10.0  # how often systemctl status hears the peers and records
EXIT_CUT_SHORT = 130  # a second signal ended the stop: the exit status of an interrupted program


class StartupError(Exception):
    """The daemon cannot start; the message is meant for the user as it is."""


class DaemonConfig(Struct, frozen=True):
    """Where the node lives, and its settings, whole (``meshnode.engine.settings``).

    ``inputs`` and ``effective`` are the configuration as loaded and what it was
    loaded from, so that a reload reads it again the same way; without them (a
    benchmark, a test) the node runs with ``settings`` and cannot reload.
    """

    data_dir: Path
    socket_path: Path
    settings: Settings = field(default_factory=Settings)
    log_level: str = "info"
    inputs: Inputs | None = None
    effective: Effective | None = None


def run(config: DaemonConfig) -> None:
    """Run the daemon until SIGINT or SIGTERM; raise ``StartupError`` if it cannot start."""
    setup_logging(config.log_level)
    for warning in config.effective.warnings if config.effective else ():
        log.warning("event=config_warning message=%r", warning)
    notifier = Notifier.from_environ()  # read before any child could inherit it
    os.umask(0o077)  # every file the node creates is private to its user
    with contextlib.ExitStack() as stack:
        stack.callback(notifier.close)
        try:
            datadir.prepare(config.data_dir)
            opened = stack.enter_context(open_node(config.data_dir, config.settings.store))
        except (datadir.DataDirError, StoreError) as exc:
            raise StartupError(str(exc)) from None
        identity = opened.node.identity
        if opened.created:
            log.info(
                "event=identity_created node=%s fingerprint=%s",
                identity.node_id,
                identity.fingerprint,
            )
        for warning in opened.warnings:
            log.error("%s", warning)
        trio.run(_Daemon(config, opened.node, notifier).main)


class _Daemon:
    """One running node: its parts, and the tasks of its one nursery."""

    def __init__(self, config: DaemonConfig, node: Node, notifier: Notifier) -> None:
        self.config = config
        self.node = node
        self.notifier = notifier
        self.effective = config.effective
        settings = config.settings
        self.key = settings.peers.network_key
        self.store_thread = StoreThread()
        self.hub = WatchHub()
        self.discovery_scope: trio.CancelScope | None = None
        self.started = False  # its work began (and it said event=ready)

    async def main(self) -> None:
        config = self.config
        try:
            listener = await bind(config.socket_path)
        except ControlSocketError as exc:
            raise StartupError(str(exc)) from None
        mesh = Mesh(
            self.node,
            agent=f"meshnode/{__version__}",
            rng=random.SystemRandom(),
            settings=config.settings,
            now=trio.current_time(),
        )
        clock = system_wall_clock_ms  # the one wall clock, for every part that reads one
        self.peers = peers = PeerService(
            mesh,
            self.node.identity,
            store_thread=self.store_thread,
            hub=self.hub,
            config=config.settings.peers,
            wall_clock_ms=clock,
        )
        publisher = Publisher(peers)
        paths = Paths(data_dir=str(config.data_dir), socket=str(config.socket_path))
        self.api = api = Api(
            self.node, peers, publisher=publisher, paths=paths, wall_clock_ms=clock
        )
        effective = self.effective
        self.hooks = HookRunner(
            effective.hooks if effective is not None else (),
            effective.hook_concurrency if effective is not None else DEFAULT_HOOK_CONCURRENCY,
            self.hub,
            socket=str(config.socket_path),
        )
        if config.inputs is not None and self.effective is not None:
            api.reloader = Reloader(
                config.inputs,
                self.effective,
                appliers=Appliers(
                    settings=peers.reconfigure,
                    network_key=self._switch_network,
                    hooks=self.hooks.replace,
                ),
                notifier=self.notifier,
            )
        try:
            try:
                peer_listeners = await peers.open_listeners()
            except ListenError as exc:
                await listener.aclose()
                raise StartupError(str(exc)) from None
            # Signals are caught before READY=1 can go out (systemd may answer it with a
            # SIGHUP at once), and their watcher lives outside the work it stops, so that
            # it still hears a second signal while the work winds down.
            wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
            with trio.open_signal_receiver(*wanted) as signals:
                async with trio.open_nursery() as root:
                    async with trio.open_nursery() as nursery:
                        self.work = nursery
                        root.start_soon(self._on_signals, signals)
                        self._start_work(nursery, peer_listeners, publisher, listener)
                    root.cancel_scope.cancel()
        finally:
            _unlink_quietly(config.socket_path)
            if self.started:  # a start that failed says why instead
                log.info("event=stopped")

    def _start_work(
        self,
        nursery: trio.Nursery,
        peer_listeners: list[trio.SocketListener],
        publisher: Publisher,
        listener: trio.SocketListener,
    ) -> None:
        config, peers, api = self.config, self.peers, self.api
        nursery.start_soon(peers.run, peer_listeners)
        nursery.start_soon(publisher.run)
        nursery.start_soon(ControlServer(api, listener).serve)
        nursery.start_soon(self._purge_loop)
        nursery.start_soon(self.hooks.run)
        discovery = config.settings.discovery
        port = _advertised_port(peers.listening)
        if discovery.mdns and port is not None:
            nursery.start_soon(self._discover, port)
        self.started = True
        log.info(
            "event=ready version=%s node=%s data_dir=%s socket=%s",
            __version__,
            self.node.identity.node_id,
            config.data_dir,
            config.socket_path,
        )
        # READY=1 first: counting the records of a large store takes a moment.
        self.notifier.ready("ready")
        if self.notifier.enabled:
            nursery.start_soon(self._report_to_systemd)

    # -- signals ----------------------------------------------------------------------

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        """SIGHUP reloads; SIGINT or SIGTERM stops, and a second one stops at once."""
        stopping = False
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if not stopping:  # a reload of its own: a SIGTERM never waits behind it
                    self.work.start_soon(self._reload_on_signal)
            elif stopping:
                log.warning(
                    "event=stop_cut_short signal=%s: exiting now; the store keeps every"
                    " committed record",
                    name,
                )
                self.hooks.kill_all()  # they run in sessions of their own: none outlives the node
                logging.shutdown()
                os._exit(EXIT_CUT_SHORT)
            else:
                stopping = True
                log.info("event=stopping signal=%s", name)
                self.notifier.stopping()
                self.work.start_soon(self._stop)

    async def _reload_on_signal(self) -> None:
        reloader = self.api.reloader
        if reloader is None:
            log.warning("event=reload_unavailable: this node was started without a configuration")
            return
        try:
            await reloader.reload()
        except ReloadError:
            pass  # logged; the configuration in force is kept
        except Exception:  # a bug in applying it must not take the node down
            log.exception("event=reload_failed: the configuration in force is kept")

    async def _stop(self) -> None:
        try:
            with trio.move_on_after(GOODBYE_TIMEOUT):
                await self.peers.goodbye()
        finally:
            self.work.cancel_scope.cancel()

    # -- parts --------------------------------------------------------------------------

    async def _discover(self, port: int) -> None:
        """Run discovery under the current network key; again under a new one after a switch."""
        while True:
            mdns = Discovery(
                network_key=self.key,
                interfaces=self.config.settings.discovery.interfaces,
                steps=self.peers.steps,
            )
            self.api.discovery = mdns.state
            self.peers.on_dial_failed = mdns.doubt
            try:
                with trio.CancelScope() as self.discovery_scope:
                    await mdns.run(port)  # until cancelled: it says goodbye on the way out
            finally:
                self.peers.on_dial_failed = lambda address: None
            self.api.discovery = DiscoveryState(error="restarting under the new network key")

    def _switch_network(self, key: bytes) -> None:
        """The node moved to another network: advertise under the new key (goodbye first)."""
        self.key = key
        if self.discovery_scope is not None:
            self.discovery_scope.cancel()
        log.info("event=network_switched sessions=closed discovery=restarting")

    async def _status_line(self) -> str:
        peers = self.peers.sessions
        line = f"{peers} peer{'' if peers == 1 else 's'}"
        try:
            stats = await self.store_thread.run(self.node.store.stats, system_wall_clock_ms())
        except StoreError:  # a status line is never worth stopping the node for
            return line
        return f"{line}, {stats.records} record{'' if stats.records == 1 else 's'}"

    async def _report_to_systemd(self) -> None:
        """STATUS= now and then, and WATCHDOG=1 while the store thread still answers."""
        interval = self.notifier.watchdog_interval
        every = min(STATUS_INTERVAL_S, interval) if interval else STATUS_INTERVAL_S
        self.notifier.status(await self._status_line())
        last_status = trio.current_time()
        while True:
            await trio.sleep(every)
            if interval is not None:
                # A store thread stuck in a call would stall every peer and client:
                # then the pings stop, and systemd restarts the node.
                await self.store_thread.run(_nothing)
                self.notifier.watchdog()
            if trio.current_time() - last_status >= STATUS_INTERVAL_S:
                last_status = trio.current_time()
                self.notifier.status(await self._status_line())

    async def _purge_loop(self) -> None:
        """Drop expired records and old tombstones, now and then, from the store."""
        while True:
            started = trio.current_time()
            try:
                actions = await self.peers.step(Purge())
            except StoreError as exc:
                log.error("event=store_error where=purge error=%r", str(exc))
            else:
                freed = sum(a.freed_bytes for a in actions if isinstance(a, Purged))
                if freed:
                    log.info("event=purged bytes=%d", freed)
            await trio.sleep_until(started + PURGE_INTERVAL_S)


def _nothing() -> None:
    """A store-thread call that returns at once, to prove the thread answers."""


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
