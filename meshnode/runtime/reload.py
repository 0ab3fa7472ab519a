"""Reloading the configuration while the node runs: ``SIGHUP`` and ``meshnode config reload``.

The files and environment are read again with the command line the daemon was
started with (``meshnode.system.config.Inputs``), and what can change at run time
does: the log level, static peers, the overlay's limits, store quotas, hooks and
the network key. What cannot (where the node listens, mDNS on or off and its
interfaces) keeps its value, and the log names it as waiting for a restart. A
configuration that does not load changes nothing: the node goes on as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from msgspec import Struct, structs

from meshnode.engine.settings import Settings
from meshnode.system import config
from meshnode.system.hookspec import HookConfig
from meshnode.system.notify import Notifier

log = logging.getLogger(__name__)

# What a running node cannot take without a restart: its sockets and its discovery.
RESTART_KEYS = frozenset({"listen", "mdns", "mdns_interfaces"})


class ReloadError(Exception):
    """The configuration did not load; the one in force is kept. The message says why."""


class Reloaded(Struct, frozen=True):
    changed: tuple[str, ...]  # keys whose new value is in force
    restart_needed: tuple[str, ...]  # keys that changed but wait for a restart


class Appliers(Struct, frozen=True):
    """What a reload changes, each part by its owner."""

    settings: Callable[[Settings], Awaitable[None]]  # the engine and the peer edge
    network_key: Callable[[bytes], None]  # discovery re-advertises under the new key
    hooks: Callable[[tuple[HookConfig, ...], int], None]


class Reloader:
    def __init__(
        self,
        inputs: config.Inputs,
        effective: config.Effective,
        *,
        appliers: Appliers,
        notifier: Notifier,
    ) -> None:
        self.inputs = inputs
        self.effective = effective
        # What the files now say of the keys that wait for a restart, as ``config`` shows a
        # setting: key -> {value, source}. Empty until a reload finds one changed.
        self.at_restart: dict[str, dict[str, Any]] = {}
        self._appliers = appliers
        self._notifier = notifier
        self._lock = trio.Lock()  # two reloads at once would apply in either order

    async def check(self) -> str | None:
        """Why the configuration would not load now (a reload or a restart would fail), or None."""
        try:
            await trio.to_thread.run_sync(config.load, self.inputs)
        except config.ConfigError as exc:
            return str(exc)
        return None

    async def reload(self) -> Reloaded:
        """Read the configuration again and apply what changed; ``ReloadError`` if it fails."""
        async with self._lock:
            self._notifier.reloading()
            try:
                return await self._reload()
            finally:  # nothing awaited here: systemd must hear it, cancelled or not
                self._notifier.ready("reloaded")

    async def _reload(self) -> Reloaded:
        started = trio.current_time()
        try:
            new = await trio.to_thread.run_sync(config.load, self.inputs)
        except config.ConfigError as exc:
            log.error("event=reload_failed error=%r kept=current configuration", str(exc))
            raise ReloadError(str(exc)) from None
        with trio.CancelScope(shield=True):  # applied whole, or not at all
            reloaded = await self._apply(new, started)
        return reloaded

    async def _apply(self, new: config.Effective, started: float) -> Reloaded:
        old = self.effective
        changed = config.differences(old, new)
        waiting = tuple(k for k in changed if k in RESTART_KEYS)
        # What waits for a restart is shown (config show) as it is in force, from where it came.
        kept = {key: old.sources.get(key, "default") for key in waiting}
        applied = structs.replace(
            new,
            settings=_runtime_part(new.settings, old.settings),
            sources={**new.sources, **kept},
        )
        if applied.log_level != old.log_level:
            logging.getLogger().setLevel(applied.log_level.upper())
        if applied.settings != old.settings:
            await self._appliers.settings(applied.settings)
        new_key = applied.settings.peers.network_key
        if new_key != old.settings.peers.network_key:
            self._appliers.network_key(new_key)
        if (applied.hooks, applied.hook_concurrency) != (old.hooks, old.hook_concurrency):
            self._appliers.hooks(applied.hooks, applied.hook_concurrency)
        self.effective = applied
        self.at_restart = {
            row["key"]: {"value": row["value"], "source": row["source"]}
            for row in config.describe(new)
            if row["key"] in waiting
        }
        now_in_force = tuple(k for k in changed if k not in RESTART_KEYS)
        log.info(
            "event=reloaded changed=%s restart_needed=%s took_ms=%.1f",
            ",".join(now_in_force) or "-",
            ",".join(waiting) or "-",
            (trio.current_time() - started) * 1000,
        )
        if waiting:
            log.warning(
                "event=reload_restart_needed keys=%s when=next_start",
                ",".join(waiting),
            )
        return Reloaded(now_in_force, waiting)


def _runtime_part(new: Settings, old: Settings) -> Settings:
    """``new``, but with what needs a restart as it is now."""
    peers = structs.replace(new.peers, listen=old.peers.listen, dial_sources=old.peers.dial_sources)
    return structs.replace(new, peers=peers, discovery=old.discovery)
