"""mDNS discovery: python-zeroconf in its own thread, bridged into trio.

python-zeroconf runs an asyncio loop in a thread of its own. Everything it
reports (a service resolved, a service gone) crosses into trio as one
message on a bounded memory channel, sent from that loop with
``TrioToken.run_sync_soon``: the trio side awaits the channel and never polls
zeroconf, and every blocking zeroconf call (start, an interface update, the
goodbyes and close) runs in a worker thread that trio waits for. What is
heard is judged by ``meshnode.core.advert`` and handed to the engine as
``Hint``/``Withdrawn`` events; what is announced is this node's advertisement,
registered without probing (``protocol/discovery.md`` §4).

Interfaces are watched through a netlink socket (Linux), or re-read every few
seconds where there is none; a burst of changes (one Wi-Fi handover makes
several) settles for ``SETTLE`` seconds before zeroconf is told once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from meshnode.core.advert import SERVICE_TYPE, Advert, AdvertError, advert_for, read_sighting
from meshnode.engine.events import Event, Hint, Withdrawn
from meshnode.system.interfaces import Choice, choose, machine_interfaces

log = logging.getLogger("meshnode.mdns")

SOURCE = "mdns"
SETTLE = 0.5  # seconds without interface changes before zeroconf is told
RESCAN = 3.0  # seconds between interface reads where netlink is not available
RESOLVE_TIMEOUT_MS = 3000
MAX_RESOLVING = 16  # resolutions at once; more services wait their turn
MAX_PENDING = 256  # messages from zeroconf not yet taken by trio; more are dropped
MAX_SERVICES = 512  # services remembered; past it, new ones are not resolved
STOP_TIMEOUT = 3.0
_RTMGRP_LINK, _RTMGRP_IPV4_IFADDR, _RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100


@dataclass(frozen=True, slots=True)
class _Resolved:
    name: str
    txt: dict[bytes, bytes | None]
    port: int | None
    hosts: list[str]


@dataclass(frozen=True, slots=True)
class _Gone:
    name: str


Message = _Resolved | _Gone
Channel = trio.MemorySendChannel[Message]


@dataclass
class DiscoveryState:
    """What ``status`` and ``doctor`` show of discovery."""

    running: bool = False
    interfaces: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # interface -> why not
    services: dict[str, list[str]] = field(default_factory=dict)  # label -> addresses (ours)
    ignored: dict[str, int] = field(default_factory=dict)  # why -> services of that kind
    dropped: int = 0  # messages from zeroconf lost to a full channel
    error: str | None = None


class Discovery:
    def __init__(
        self,
        *,
        network_key: bytes,
        public_key: bytes,
        interfaces: tuple[str, ...] | None,
        step: Callable[[Event], Awaitable[object]],
    ) -> None:
        """``step`` hands the engine an event (``PeerService.step``)."""
        self._key = network_key
        self._public_key = public_key
        self._names = interfaces
        self._step = step
        self.state = DiscoveryState()
        self._zc: Zeroconf | None = None
        self._choice: Choice | None = None
        self._addresses: dict[str, tuple[str, ...]] = {}  # service name -> hinted addresses
        self._own = ""

    async def run(self, port: int) -> None:
        """Announce ``port`` and browse until cancelled; then say goodbye and stop zeroconf."""
        advert = advert_for(self._key, self._public_key, port)
        self._own = advert.instance
        send, receive = trio.open_memory_channel[Message](MAX_PENDING)
        token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_interfaces, advert, send, token)
                async with receive:
                    async for message in receive:
                        await self._heard(message)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                await trio.to_thread.run_sync(self._stop)

    # -- zeroconf, from trio ------------------------------------------------------------

    async def _watch_interfaces(
        self, advert: Advert, send: Channel, token: trio.lowlevel.TrioToken
    ) -> None:
        changes = await _netlink()
        with changes if changes is not None else contextlib.nullcontext():
            await self._follow_interfaces(changes, advert, send, token)

    async def _follow_interfaces(
        self,
        changes: trio.socket.SocketType | None,
        advert: Advert,
        send: Channel,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        while True:
            choice = choose(await trio.to_thread.run_sync(machine_interfaces), self._names)
            if self._choice is None or _used(choice) != _used(self._choice):
                await self._apply(choice, advert, send, token)
            if changes is None:
                await trio.sleep(RESCAN)
                continue
            await changes.recv(65536)
            while True:  # a handover makes several changes in a row: let them settle
                with trio.move_on_after(SETTLE) as quiet:
                    await changes.recv(65536)
                if quiet.cancelled_caught:
                    break

    async def _apply(
        self, choice: Choice, advert: Advert, send: Channel, token: trio.lowlevel.TrioToken
    ) -> None:
        self._choice = choice
        self.state.interfaces = [i.name for i in choice.used]
        self.state.skipped = dict(choice.skipped)
        try:
            if self._zc is None and choice.used:
                await trio.to_thread.run_sync(self._start, choice, advert, send, token)
            elif self._zc is not None and choice.used:
                await trio.to_thread.run_sync(self._update, choice)
            elif self._zc is not None:
                await trio.to_thread.run_sync(self._stop)
        except (OSError, RuntimeError) as exc:
            self.state.error = f"mDNS failed: {exc}"
            log.warning("event=mdns_error error=%r", str(exc))
            return
        self.state.error = None if choice.used else "no interface suitable for mDNS"
        self.state.running = self._zc is not None
        log.info(
            "event=mdns_interfaces used=%s skipped=%s",
            ",".join(self.state.interfaces) or "-",
            ",".join(self.state.skipped) or "-",
        )

    # -- zeroconf, in worker threads -----------------------------------------------------

    def _start(
        self, choice: Choice, advert: Advert, send: Channel, token: trio.lowlevel.TrioToken
    ) -> None:
        zc = Zeroconf(interfaces=_zeroconf_interfaces(choice), ip_version=_ip_version(choice))
        self._zc = zc
        info = ServiceInfo(
            SERVICE_TYPE,
            advert.instance,
            port=advert.port,
            properties=advert.txt,
            server=advert.server,
            parsed_addresses=[*choice.ipv4, *_ipv6_addresses(choice)],
        )
        bridge = _Bridge(zc, send, token, self._own)
        loop = zc.loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(bridge.start(info), loop).result(timeout=STOP_TIMEOUT)

    def _update(self, choice: Choice) -> None:
        assert self._zc is not None
        self._zc.update_interfaces(_zeroconf_interfaces(choice), _ip_version(choice))

    def _stop(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            zc.unregister_all_services()  # the goodbyes
        finally:
            zc.close()
        self.state.running = False

    # -- what was heard ---------------------------------------------------------------------

    async def _heard(self, message: _Resolved | _Gone) -> None:
        if isinstance(message, _Gone):
            for address in self._addresses.pop(message.name, ()):
                await self._step(Withdrawn(address, SOURCE))
            self.state.services.pop(message.name, None)
            return
        if message.name == self._own:
            return
        if message.name not in self._addresses and len(self._addresses) >= MAX_SERVICES:
            self._count("too many services")
            return
        try:
            sighting = read_sighting(
                self._key, message.name, message.txt, message.port, self._scoped(message.hosts)
            )
        except AdvertError as exc:
            self._count(str(exc))
            return
        old = set(self._addresses.get(message.name, ()))
        self._addresses[message.name] = sighting.addresses
        self.state.services[message.name] = list(sighting.addresses)
        for address in old - set(sighting.addresses):
            await self._step(Withdrawn(address, SOURCE))
        for address in sighting.addresses:
            await self._step(Hint(address, SOURCE, group=sighting.label))

    def _count(self, why: str) -> None:
        self.state.ignored[why] = self.state.ignored.get(why, 0) + 1

    def _scoped(self, hosts: list[str]) -> list[str]:
        """Give an unscoped link-local address the interface, where only one can have heard it."""
        v6 = [i for i in self._choice.used if i.ipv6] if self._choice else []
        scoped = []
        for host in hosts:
            unscoped = host.lower().startswith("fe80:") and "%" not in host
            scoped.append(f"{host}%{v6[0].name}" if unscoped and len(v6) == 1 else host)
        return scoped


class _Bridge:
    """Runs in zeroconf's event loop: registers, browses, resolves, tells trio."""

    def __init__(
        self, zc: Zeroconf, send: Channel, token: trio.lowlevel.TrioToken, own: str
    ) -> None:
        self._zc = zc
        self._send = send
        self._token = token
        self._own = own
        self._resolving: set[str] = set()
        self._waiting: list[str] = []
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self, info: ServiceInfo) -> None:
        await self._zc.async_register_service(info, cooperating_responders=True)
        self._browser = AsyncServiceBrowser(self._zc, [SERVICE_TYPE], handlers=[self._changed])

    def _changed(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self._tell(_Gone(name))
        elif name != self._own:
            self._resolve(name)

    def _resolve(self, name: str) -> None:
        if name in self._resolving or name in self._waiting:
            return
        if len(self._resolving) >= MAX_RESOLVING:
            if len(self._waiting) < MAX_SERVICES:
                self._waiting.append(name)
            return
        self._resolving.add(name)
        task = asyncio.ensure_future(self._lookup(name))
        self._tasks.add(task)  # the loop keeps only weak references to its tasks
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(self._zc, RESOLVE_TIMEOUT_MS):
                self._tell(
                    _Resolved(
                        name, dict(info.properties), info.port, info.parsed_scoped_addresses()
                    )
                )
        except Exception as exc:  # a malformed answer is zeroconf's to report, never fatal here
            log.debug("event=mdns_resolve_failed name=%r error=%r", name, str(exc))
        finally:
            self._resolving.discard(name)
            if self._waiting:
                self._resolve(self._waiting.pop(0))

    def _tell(self, message: _Resolved | _Gone) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the daemon is stopping
            self._token.run_sync_soon(self._deliver, message)

    def _deliver(self, message: _Resolved | _Gone) -> None:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            log.debug("event=mdns_dropped name=%r", getattr(message, "name", "?"))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


def _used(choice: Choice) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    return tuple((i.name, i.ipv4, i.ipv6) for i in choice.used)


def _zeroconf_interfaces(choice: Choice) -> list[str | int]:
    """python-zeroconf's form: IPv4 addresses, and IPv6 interface indexes."""
    return [*choice.ipv4, *choice.ipv6_indexes]


def _ip_version(choice: Choice) -> IPVersion:
    if choice.ipv4 and choice.ipv6_indexes:
        return IPVersion.All
    return IPVersion.V6Only if choice.ipv6_indexes else IPVersion.V4Only


def _ipv6_addresses(choice: Choice) -> list[str]:
    return [ip for interface in choice.used for ip in interface.ipv6]


async def _netlink() -> trio.socket.SocketType | None:
    """A socket that wakes on any link or address change, or None where there is none."""
    try:
        sock = trio.socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except (OSError, AttributeError):
        return None
    try:
        await sock.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
    except OSError:
        sock.close()
        return None
    return sock
