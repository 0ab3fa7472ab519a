"""mDNS discovery: python-zeroconf in its own thread, bridged into trio.

python-zeroconf runs an asyncio loop in a thread of its own. Everything it
reports (a service resolved, a service gone) crosses into trio as one
message on a bounded memory channel, sent with ``TrioToken.run_sync_soon``:
the trio side awaits the channel and never polls zeroconf, and every
blocking zeroconf call (start, an interface or address update, the goodbyes
and close) runs in a worker thread that trio waits for. The state here is
only ever changed on the trio thread.

What is heard is judged by ``meshnode.core.advert`` (addresses off this
node's own links are never taken: a service cannot send it to dial
elsewhere) and handed to the engine as ``Hint``/``Withdrawn`` events, one
group per service; what is announced is this node's advertisement under a
label drawn at random at start, registered without probing
(``protocol/discovery.md``), re-announced with its new addresses whenever an
interface changes.

A node gone without a goodbye is not left to its PTR record: python-zeroconf
keeps one at least 1125 s, whatever its TTL. When dialling a service's address
fails (for a reason of the far side's: refused, unanswered), the bridge looks at
the service's SRV record; once that is older than its TTL, it asks the link for
the service again (RFC 6762 §10.4: a failure is a reason to doubt the cache). A
service that does not answer is suspect; one still silent when asked again
``GONE_AFTER`` later is forgotten, its records dropped from zeroconf's cache
so that its next answer is news. A lost answer or a short outage is not enough.

Interfaces are followed through a netlink socket (Linux), or re-read every
few seconds where there is none; a burst of changes (a Wi-Fi handover makes
several) settles first. Discovery never ends the daemon: a zeroconf failure
is logged, shown in ``status``, and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import math
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import trio
from msgspec import Struct, field
from zeroconf import (
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from meshnode.core.addresses import IPAddress
from meshnode.core.advert import (
    LABEL_BYTES,
    SERVICE_TYPE,
    UNREACHABLE,
    Advert,
    AdvertError,
    Resolved,
    advert_for,
    label_of,
    moved,
    read_sighting,
)
from meshnode.engine.events import Event, Hint, Withdrawn
from meshnode.system.interfaces import Choice, choose, machine_interfaces

log = logging.getLogger("meshnode.mdns")

SOURCE = "mdns"
SETTLE = 0.5  # seconds without interface changes before zeroconf is told
MAX_SETTLE = 3.0  # ... but never longer, however busy the links: within the 5 s promised
RESCAN = 3.0  # seconds between interface reads without netlink, and before a first retry
MAX_RETRY = 30.0  # retries after failures back off to this (port 5353 held, say)
RESOLVE_TIMEOUT_MS = 3000
RESOLVE_ATTEMPTS = 3  # a service not resolved after these waits for its next announcement
MAX_RESOLVING = 16  # resolutions at once; more services wait their turn
MAX_PENDING = 256  # messages from zeroconf not yet taken by trio; more are dropped, and counted
MAX_SERVICES = 512  # services remembered; past it, the one heard of longest ago is forgotten
STOP_TIMEOUT = 2.0  # seconds zeroconf gets to send its goodbyes and close, of the 5 s of a stop
TTL = 120  # seconds, every record we announce
DOUBT_INTERVAL = 5.0  # seconds: a service is asked after at most once so often, however many fail
QUIET_AFTER_CHANGE = 10.0  # seconds after this node's interfaces change when no dial is doubted
# A service that did not answer is asked again this much later, and forgotten if silent then
# too: a quarter of the 120 s TTL RFC 6762 gives SRV records, longer than a lost answer.
GONE_AFTER = 30.0
# Labels of its own a node still knows as its own when others' caches echo them back: the
# current one and those of its last moves (one per move to other links, which is rare).
OWN_LABELS_KEPT = 8
_PTR, _SRV, _IN = 12, 33, 1  # DNS record types and the class (RFC 1035, RFC 2782)
_RTMGRP_LINK, _RTMGRP_IPV4_IFADDR, _RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100


class _Gone(Struct, frozen=True):
    instance: str


Message = Resolved | _Gone
Channel = trio.MemorySendChannel[Message]


class DiscoveryState(Struct):
    """What ``status`` and ``doctor`` show of discovery."""

    running: bool = False
    interfaces: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)  # announced; link-local with %interface
    skipped: dict[str, str] = field(default_factory=dict)  # interface -> why not
    services: dict[str, list[str]] = field(default_factory=dict)  # instance -> addresses
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> services (fixed reasons)
    dropped: int = 0  # messages from zeroconf lost to a full channel
    instance: str | None = None  # this node's own service instance, under its current label
    error: str | None = None


class Discovery:
    def __init__(
        self,
        *,
        network_key: bytes,
        interfaces: tuple[str, ...] | None,
        steps: Callable[[Sequence[Event]], Awaitable[object]],
    ) -> None:
        """``steps`` hands the engine events at one instant (``PeerService.steps``)."""
        self._key = network_key
        self._names = interfaces
        self._steps = steps
        self.state = DiscoveryState()
        self._zc: Zeroconf | None = None
        self._bridge: _Bridge | None = None
        self._choice: Choice | None = None  # what zeroconf runs on, once it does
        self._retry = RESCAN  # the wait before the next retry after a failure, doubling
        self._links: Choice | None = None  # the links addresses are judged against, from start
        self._advert: Advert | None = None
        self._own: dict[str, None] = {}  # the instances this node announced lately, in order
        self._announced: list[str] = []  # the addresses announced under the current label
        self._hinted: dict[str, tuple[str, ...]] = {}  # instance -> its addresses, last heard
        self._doubted: dict[str, float] = {}  # instance -> when a failed dial last asked after it
        self._links_changed = -math.inf  # when the interfaces in use last changed
        self._ignored: dict[str, str] = {}  # instance -> why not used, last heard
        self._unreachable: dict[str, Resolved] = {}  # judged again when the links change

    async def run(self, port: int) -> None:
        """Announce ``port`` and browse until cancelled; then say goodbye and stop zeroconf."""
        self._new_label(port)
        send, receive = trio.open_memory_channel[Message](MAX_PENDING)
        token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow_interfaces, send, token)
                async with receive:
                    async for message in receive:
                        await self._heard(message)
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()

    # -- interfaces ---------------------------------------------------------------------

    async def _follow_interfaces(self, send: Channel, token: trio.lowlevel.TrioToken) -> None:
        changes = await _netlink()
        with changes if changes is not None else contextlib.nullcontext():
            while True:
                choice = choose(await trio.to_thread.run_sync(machine_interfaces), self._names)
                failed = self.state.error is not None and bool(choice.used)
                if failed or self._choice is None or _used(choice) != _used(self._choice):
                    await self._apply(choice, send, token)
                retry = self._retry if self.state.error is not None else None
                changes = await self._wait_for_change(changes, retry=retry)

    async def _wait_for_change(
        self, changes: trio.socket.SocketType | None, *, retry: float | None
    ) -> trio.socket.SocketType | None:
        """Until the links changed and settled (netlink), or a while (no netlink, or a retry)."""
        if changes is None:
            await trio.sleep(RESCAN if retry is None else retry)
            return None
        try:
            with trio.move_on_after(float("inf") if retry is None else retry):
                await changes.recv(65536)
            with trio.move_on_after(MAX_SETTLE):
                while True:  # a handover makes several changes in a row: let them settle
                    with trio.move_on_after(SETTLE) as quiet:
                        await changes.recv(65536)
                    if quiet.cancelled_caught:
                        break
        except OSError as exc:  # ENOBUFS after a burst, say: read the links again, then poll
            log.debug("event=mdns_netlink_lost error=%r", str(exc))
            changes.close()
            return None
        return changes

    async def _apply(self, choice: Choice, send: Channel, token: trio.lowlevel.TrioToken) -> None:
        if self._choice is not None:  # a change, not the start
            self._links_changed = trio.current_time()
        self.state.interfaces = [i.name for i in choice.used]
        self.state.addresses = _announced(choice)
        self.state.skipped = dict(choice.skipped)
        self._links = choice  # answers may come while zeroconf is still starting
        try:
            if not choice.used:
                await self._stop()
                self.state.error = "no interface suitable for mDNS"
                self._choice = choice
                return
            before = self._service_info(self._choice) if self._choice is not None else None
            relabel = moved(self._announced, self.state.addresses)
            if relabel:  # on other links now: a new label, so that the two are not linked
                assert self._advert is not None
                self._new_label(self._advert.port)
            info = self._service_info(choice)
            if self._zc is None:
                start = functools.partial(_start, own=frozenset(self._own))
                self._zc, self._bridge = await trio.to_thread.run_sync(
                    start, choice, info, send, token, self._count_drop
                )
            else:
                assert self._bridge is not None
                self._bridge.own = frozenset(self._own)
                gone = before if relabel else None
                await trio.to_thread.run_sync(_update, self._zc, choice, info, gone)
            self._announced = list(self.state.addresses)
        except Exception as exc:  # zeroconf's own errors too: discovery never ends the daemon
            error = f"mDNS failed: {exc or type(exc).__name__}; retrying"
            if error != self.state.error:  # the same failure again is news to no one
                log.warning("event=mdns_error error=%r", str(exc) or type(exc).__name__)
                self._retry = RESCAN
            else:
                self._retry = min(self._retry * 2, MAX_RETRY)
            self.state.error = error
            self.state.running = self._zc is not None
            return
        self._choice = choice
        self._retry = RESCAN
        self.state.error = None
        self.state.running = True
        log.info(
            "event=mdns_interfaces used=%s skipped=%s",
            ",".join(self.state.interfaces) or "-",
            ",".join(self.state.skipped) or "-",
        )
        for service in list(self._unreachable.values()):  # perhaps on one of the new links
            await self._heard(service)

    def _new_label(self, port: int) -> None:
        self._advert = advert_for(self._key, secrets.token_bytes(LABEL_BYTES), port)
        self._own[self._advert.instance] = None
        while len(self._own) > OWN_LABELS_KEPT:
            del self._own[next(iter(self._own))]
        self.state.instance = self._advert.instance

    def _service_info(self, choice: Choice) -> ServiceInfo:
        advert = self._advert
        assert advert is not None
        return ServiceInfo(
            SERVICE_TYPE,
            advert.instance,
            port=advert.port,
            properties=advert.txt,
            server=advert.server,
            parsed_addresses=[*choice.ipv4, *_ipv6_addresses(choice)],
            host_ttl=TTL,
            other_ttl=TTL,
        )

    async def _stop(self) -> None:
        """Goodbyes and close (in a worker thread); forget what was heard."""
        zc, bridge, self._zc, self._bridge = self._zc, self._bridge, None, None
        self.state.running = False
        if zc is not None:
            try:
                # Bounded, so that a stop stays within its 5 s whatever zeroconf does.
                with trio.move_on_after(STOP_TIMEOUT) as late:
                    await trio.to_thread.run_sync(_close, zc, bridge, abandon_on_cancel=True)
                if late.cancelled_caught:
                    log.warning("event=mdns_stop_slow: goodbyes not confirmed; went on")
            except Exception as exc:
                log.warning("event=mdns_stop_failed error=%r", str(exc) or type(exc).__name__)
        taken_back = [e for instance in list(self._hinted) for e in self._forget(instance)]
        if taken_back:
            await self._steps(taken_back)
        self._ignored.clear()
        self._unreachable.clear()
        self.state.ignored.clear()

    # -- what was heard -------------------------------------------------------------------

    def doubt(self, address: str) -> None:
        """A dial to ``address`` failed: ask after the services that gave it, if they may be gone.

        On the trio thread; never waits: the question goes to zeroconf's loop.
        """
        zc, bridge = self._zc, self._bridge
        loop = None if zc is None else zc.loop
        if loop is None or bridge is None:
            return
        now = trio.current_time()
        if now - self._links_changed < QUIET_AFTER_CHANGE:
            return  # dials fail while a link comes and goes; the services have not gone
        for instance, addresses in self._hinted.items():
            last = self._doubted.get(instance)
            if address in addresses and (last is None or now - last >= DOUBT_INTERVAL):
                self._doubted[instance] = now
                with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to ask
                    loop.call_soon_threadsafe(bridge.verify, instance)

    async def _heard(self, message: Message) -> None:
        events = self._news(message)
        self._tally()
        if events:
            await self._steps(events)

    def _news(self, message: Message) -> list[Event]:
        """What ``message`` tells the engine: the hints it gives, and those it takes back."""
        if isinstance(message, _Gone):
            self._ignored.pop(message.instance, None)
            self._unreachable.pop(message.instance, None)
            return self._forget(message.instance)
        if message.instance.lower() in self._own:
            return []
        try:
            sighting = read_sighting(self._key, message, self._reachable)
        except AdvertError as exc:
            _remember(self._ignored, message.instance, exc.kind)
            if exc.kind == UNREACHABLE:
                _remember(self._unreachable, message.instance, message)
            return self._forget(message.instance)
        self._ignored.pop(message.instance, None)
        self._unreachable.pop(message.instance, None)
        old = set(self._hinted.pop(message.instance, ()))
        self._hinted[message.instance] = sighting.addresses  # kept in the order last heard
        events: list[Event] = []
        while len(self._hinted) > MAX_SERVICES:  # the one heard of longest ago goes, withdrawn
            events += self._forget(next(iter(self._hinted)))
        self.state.services[message.instance] = list(sighting.addresses)
        events += self._withdrawn(old - set(sighting.addresses))
        events += [Hint(address, SOURCE, group=sighting.label) for address in sighting.addresses]
        return events

    def _forget(self, instance: str) -> list[Event]:
        self.state.services.pop(instance, None)
        self._doubted.pop(instance, None)
        return self._withdrawn(self._hinted.pop(instance, ()))

    def _withdrawn(self, addresses: Iterable[str]) -> list[Event]:
        """Hints to take back: those no other service still gives."""
        return [
            Withdrawn(address, SOURCE)
            for address in addresses
            if not any(address in given for given in self._hinted.values())
        ]

    def _tally(self) -> None:
        counts: dict[str, int] = {}
        for why in self._ignored.values():
            counts[why] = counts.get(why, 0) + 1
        self.state.ignored = counts

    def _count_drop(self) -> None:
        self.state.dropped += 1

    def _reachable(self, ip: IPAddress) -> bool:
        """On a link discovery uses: in one of its prefixes, or link-local on one of them."""
        choice = self._links
        if choice is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
            scopes = {str(i.index) for i in choice.used} | {i.name for i in choice.used}
            return ip.scope_id in scopes
        return any(ip in ipaddress.ip_network(net) for i in choice.used for net in i.networks)


class _Bridge:
    """Runs in zeroconf's event loop: registers, browses, resolves, tells trio."""

    def __init__(
        self,
        zc: Zeroconf,
        send: Channel,
        token: trio.lowlevel.TrioToken,
        own: frozenset[str],
        on_drop: Callable[[], None],
    ) -> None:
        self._zc = zc
        self._send = send
        self._token = token
        self.own = own  # this node's instances, lowercase: replaced whole, never changed
        self._on_drop = on_drop
        self._resolving: set[str] = set()
        self._verifying: set[str] = set()
        self._suspect: dict[str, float] = {}  # name -> when it first did not answer (loop time)
        self._closed = False
        self._waiting: dict[str, None] = {}  # in the order heard; bounded
        self._tasks: set[asyncio.Future[None]] = set()
        self._browser: AsyncServiceBrowser | None = None

    async def start(self, info: ServiceInfo) -> None:
        await self._zc.async_register_service(info, cooperating_responders=True)
        self._browser = AsyncServiceBrowser(self._zc, [SERVICE_TYPE], handlers=[self._changed])

    async def cancel(self) -> None:
        """Stop browsing, and the resolutions and questions under way (none is left pending
        when the loop closes); a question due later is not asked."""
        self._closed = True
        if self._browser is not None:
            await self._browser.async_cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _changed(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        try:
            label_of(name)  # a name no node makes is not worth a resolution
        except AdvertError:
            return
        if state_change is ServiceStateChange.Removed:
            self._waiting.pop(name, None)
            self._suspect.pop(name, None)
            self._tell(_Gone(name))
        elif name.lower() not in self.own:
            self._resolve(name)

    def _resolve(self, name: str) -> None:
        if self._closed or name in self._resolving or name in self._waiting:
            return
        if len(self._resolving) >= MAX_RESOLVING:
            self._waiting[name] = None
            while len(self._waiting) > MAX_SERVICES:  # the oldest waits longest: dropped
                del self._waiting[next(iter(self._waiting))]
            return
        self._resolving.add(name)
        task = asyncio.ensure_future(self._lookup(name))
        self._tasks.add(task)  # the loop keeps only weak references to its tasks
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, name: str) -> None:
        try:
            for attempt in range(RESOLVE_ATTEMPTS):  # a busy link or a busy host loses answers
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if await info.async_request(self._zc, RESOLVE_TIMEOUT_MS):
                    self._suspect.pop(name, None)
                    hosts = tuple(info.parsed_scoped_addresses())
                    self._tell(Resolved(name, info.text or b"", info.port, hosts))
                    return
                await asyncio.sleep(attempt + 1)
        except Exception as exc:  # a malformed answer is zeroconf's to report, never fatal here
            log.debug("event=mdns_resolve_failed name=%r error=%r", name, str(exc))
        finally:
            self._resolving.discard(name)
            if self._waiting:
                waiting = next(iter(self._waiting))
                del self._waiting[waiting]
                self._resolve(waiting)

    def verify(self, name: str) -> None:
        """Ask the link after ``name`` if its records have expired; it is gone if none answers."""
        if self._closed or name in self._verifying or len(self._verifying) >= MAX_RESOLVING:
            return
        self._verifying.add(name)
        task = asyncio.ensure_future(self._verify(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _verify(self, name: str) -> None:
        try:
            now = current_time_millis()
            srv = self._zc.cache.async_all_by_details(name, _SRV, _IN)
            if any(not record.is_expired(now) for record in srv):
                self._suspect.pop(name, None)
                return  # heard within its TTL: a node that refuses is not a node that left
            # The cache has nothing fresh, so this goes to the link (a few queries in 3 s).
            if await AsyncServiceInfo(SERVICE_TYPE, name).async_request(
                self._zc, RESOLVE_TIMEOUT_MS
            ):
                self._suspect.pop(name, None)
                log.debug("event=mdns_service_answers name=%r", name)
                return
            self._silent(name)
        except Exception as exc:  # as in _lookup: zeroconf's to report, never fatal here
            log.debug("event=mdns_verify_failed name=%r error=%r", name, str(exc))
        finally:
            self._verifying.discard(name)

    def _silent(self, name: str) -> None:
        """``name`` did not answer: suspect the first time, and asked again ``GONE_AFTER``
        later; gone if silent then too, which a lost answer is not."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        since = self._suspect.setdefault(name, now)
        while len(self._suspect) > MAX_SERVICES:  # bounded: the oldest suspicion goes
            del self._suspect[next(iter(self._suspect))]
        if since == now:
            log.debug("event=mdns_service_silent name=%r", name)
            loop.call_later(GONE_AFTER, self.verify, name)
            return
        if now - since < GONE_AFTER:
            return
        del self._suspect[name]
        cache = self._zc.cache
        records = [*cache.async_entries_with_name(name)]
        pointers = cache.async_all_by_details(SERVICE_TYPE, _PTR, _IN)
        records += [r for r in pointers if getattr(r, "alias", None) == name]
        cache.async_remove_records(records)  # its next answer is news to the browser again
        log.info("event=mdns_service_gone name=%r: no answer since its records expired", name)
        self._tell(_Gone(name))

    def _tell(self, message: Message) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the daemon is stopping
            self._token.run_sync_soon(self._deliver, message)

    def _deliver(self, message: Message) -> None:
        """On the trio thread."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self._on_drop()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


T = TypeVar("T")


def _remember(table: dict[str, T], instance: str, value: T) -> None:
    """Keep ``table`` in the order services were last heard, and bounded: the oldest goes."""
    table.pop(instance, None)
    table[instance] = value
    while len(table) > MAX_SERVICES:
        del table[next(iter(table))]


# -- zeroconf's blocking calls, each run in a worker thread ---------------------------------


def _start(
    choice: Choice,
    info: ServiceInfo,
    send: Channel,
    token: trio.lowlevel.TrioToken,
    on_drop: Callable[[], None],
    *,
    own: frozenset[str],
) -> tuple[Zeroconf, _Bridge]:
    zc = Zeroconf(interfaces=_zeroconf_interfaces(choice), ip_version=_ip_version(choice))
    try:
        bridge = _Bridge(zc, send, token, own, on_drop)
        _on_loop(zc, bridge.start(info))
    except BaseException:
        zc.close()
        raise
    return zc, bridge


def _update(zc: Zeroconf, choice: Choice, info: ServiceInfo, gone: ServiceInfo | None) -> None:
    """New interfaces, then the advertisement with the addresses they have now; under a new
    label, after the goodbyes of ``gone`` (the old one) on whatever links are left of it."""
    if gone is not None:
        zc.unregister_service(gone)
    zc.update_interfaces(_zeroconf_interfaces(choice), _ip_version(choice))
    if gone is not None:
        zc.register_service(info, cooperating_responders=True)
    else:
        zc.update_service(info)


def _close(zc: Zeroconf, bridge: _Bridge | None) -> None:
    try:
        if bridge is not None:
            _on_loop(zc, bridge.cancel())
        zc.unregister_all_services()  # the goodbyes
    finally:
        zc.close()


def _on_loop(zc: Zeroconf, coroutine: Coroutine[Any, Any, None]) -> None:
    loop = zc.loop
    assert loop is not None
    asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=RESCAN)


def _used(choice: Choice) -> tuple[tuple[str, int, tuple[str, ...], tuple[str, ...]], ...]:
    return tuple((i.name, i.index, i.ipv4, i.ipv6) for i in choice.used)


def _zeroconf_interfaces(choice: Choice) -> list[str | int]:
    """python-zeroconf's form: IPv4 addresses, and IPv6 interface indexes."""
    return [*choice.ipv4, *choice.ipv6_indexes]


def _ip_version(choice: Choice) -> IPVersion:
    if choice.ipv4 and choice.ipv6_indexes:
        return IPVersion.All
    return IPVersion.V6Only if choice.ipv6_indexes else IPVersion.V4Only


def _announced(choice: Choice) -> list[str]:
    """The addresses this node announces, as people dial them: IPv6 link-local with its
    interface."""
    return [
        *choice.ipv4,
        *(
            f"{ip}%{interface.name}" if ipaddress.ip_address(ip).is_link_local else ip
            for interface in choice.used
            for ip in interface.ipv6
        ),
    ]


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
