"""``meshnode service install``: the systemd unit, the system user and ``/etc/meshnode``.

What a distribution package would ship, done by the one program a user already
has. Every step looks before it acts and changes only what differs from what it
wants, so a second run changes nothing and says so; ``dry_run`` reports the same
steps without doing them; ``root`` does them inside an image (paths prefixed,
no ``systemctl``, the user made by ``systemd-sysusers --root`` or left to the
image's first boot).

The unit texts live here because a wheel carries nothing outside the package;
``systemd/`` in the source tree holds the same texts (``tests/test_units.py``
checks that they agree and has ``systemd-analyze`` verify and score them). The
installer rewrites only the first word of ``ExecStart=``: the ``meshnode`` that
runs the installer, so the service runs the same installation.

The system service runs as the static user ``meshnode``, not ``DynamicUser=``:
members of the group ``meshnode`` reach the control socket in ``/run/meshnode``
(mode 0750, the socket 0660), which needs a group that exists when they log in,
and ``/etc/meshnode/config.toml`` is owned by that user so the daemon can read
it after ``meshnode network join`` rewrites it with mode 0600 (that writer keeps
the file's owner). A dynamic user exists only while the service runs.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from msgspec import Struct, field

SERVICE_USER = "meshnode"
SYSTEM_EXECUTABLE = "/usr/local/bin/meshnode"  # the first word of ExecStart= in SYSTEM_UNIT
USER_EXECUTABLE = "%h/.local/bin/meshnode"  # and in USER_UNIT
SYSTEM_UNIT_PATH = Path("/etc/systemd/system/meshnode.service")
SYSUSERS_PATH = Path("/etc/sysusers.d/meshnode.conf")
CONFIG_DIR = Path("/etc/meshnode")
CONFIG_NAME = "config.toml"
STATE_DIR = Path("/var/lib/meshnode")
# What ProtectHome= and PrivateTmp= hide from the system service: an installation
# there cannot start (status 203/EXEC) or cannot import itself.
HIDDEN_FROM_SERVICE = (
    Path("/home"),
    Path("/root"),
    Path("/run/user"),
    Path("/tmp"),
    Path("/var/tmp"),
)
SYSTEMCTL_TIMEOUT_S = 60

SYSTEM_UNIT = """\
# meshnode as a system service: `sudo meshnode service install` puts this file in
# /etc/systemd/system/ with ExecStart= pointing at the meshnode it was run from.
# Local changes belong in a drop-in (`sudo systemctl edit meshnode`): the installer
# rewrites this file.
[Unit]
Description=meshnode mesh node
# The daemon follows interfaces as they come and go and listens on the wildcard
# address, so it needs no network-online.target.
After=network.target

[Service]
# READY=1 once the control socket accepts and the listeners are open; WATCHDOG=1
# every WatchdogSec/2; RELOADING=1 around a SIGHUP reload; STOPPING=1.
Type=notify
NotifyAccess=main
ExecStart=/usr/local/bin/meshnode run --config /etc/meshnode/config.toml \
--data-dir /var/lib/meshnode --socket /run/meshnode/control.sock
# The reload is asked through the socket, so that systemctl reload waits for it and
# fails when the file does not load (the node then keeps the configuration in force).
ExecReload=/usr/local/bin/meshnode --socket /run/meshnode/control.sock config reload
Restart=on-failure
# Exit 2 is a configuration that cannot be used: restarting would only fail again.
RestartPreventExitStatus=2
RestartSec=5
WatchdogSec=30
# A stop says goodbye to peers and closes the store within 5 s.
TimeoutStopSec=10
SyslogIdentifier=meshnode

# A static user, not DynamicUser=: members of the group meshnode use the control
# socket without sudo (`sudo usermod -aG meshnode $USER`), which needs a group that
# exists while they are logged in, and /etc/meshnode/config.toml is owned by it.
User=meshnode
Group=meshnode
# /var/lib/meshnode: the store and the identity key (0600). /run/meshnode: the
# control socket, created 0660 so the group can reach it. /etc/meshnode: the
# configuration, read-only here (root:meshnode 0750).
StateDirectory=meshnode
StateDirectoryMode=0750
RuntimeDirectory=meshnode
RuntimeDirectoryMode=0750
ConfigurationDirectory=meshnode
ConfigurationDirectoryMode=0750
UMask=0027

# Hardening, as far as the daemon still works: TCP to peers (AF_INET, AF_INET6),
# the control socket (AF_UNIX), interface changes by netlink (AF_NETLINK), mDNS
# multicast on UDP 5353 (joining a group needs no capability), /sys/class/net read,
# and writes only to its state and runtime directories. No address allow list
# (IPAddressDeny=): peers can be anywhere.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# CPython without a JIT maps no writable code; nor do cryptography, PyNaCl or
# zeroconf (tests/test_units.py starts the daemon under the same rule).
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
DevicePolicy=closed
KeyringMode=private
RemoveIPC=yes

[Install]
WantedBy=multi-user.target
"""

USER_UNIT = """\
# meshnode as a user service in a desktop session: `meshnode service install --user`
# puts this file in ~/.config/systemd/user/ with ExecStart= pointing at the meshnode
# it was run from. The daemon keeps its data in $XDG_DATA_HOME/meshnode and its
# control socket under $XDG_RUNTIME_DIR, where `meshnode status` finds it.
[Unit]
Description=meshnode mesh node (user session)

[Service]
Type=notify
NotifyAccess=main
ExecStart=%h/.local/bin/meshnode run
ExecReload=%h/.local/bin/meshnode config reload
Restart=on-failure
RestartPreventExitStatus=2
RestartSec=5
WatchdogSec=30
TimeoutStopSec=10

# A user manager has no privileges to give away, and its namespace options
# (ProtectSystem=, PrivateTmp=...) need unprivileged user namespaces, which some
# distributions refuse: only the seccomp and personality rules, which need neither.
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=default.target
"""

SYSUSERS = """\
# The meshnode system service's user and group (sysusers.d(5)).
u meshnode - "meshnode daemon" /var/lib/meshnode
"""

CONFIG_TEMPLATE = """\
# meshnode's configuration. Every setting is optional; a commented line shows the
# default or an example. `meshnode config show` prints the values in effect and
# where each came from; a reload (`systemctl reload meshnode`, SIGHUP) applies those
# that can change while the node runs. The README lists every setting.
#
# listen = [":7744"]              # where peers connect (host:port); every interface
# peers = ["192.0.2.10:7744"]     # peers to keep a connection to
# network_key = "mesh1..."        # a private mesh: `meshnode network join mesh1...`
# mdns = true                     # find peers on the local link
# mdns_interfaces = ["wlan0"]     # default: every suitable interface
# log_level = "info"              # debug, info, warning or error
"""

_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


class ServiceError(Exception):
    """The service cannot be installed as asked; the message says what to do."""


class NeedsRoot(ServiceError):
    """The system service is installed by root (``sudo``)."""


def _run(argv: Sequence[str]) -> None:
    """Run one of the system's tools, bounded in time; its failure as a ServiceError."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{' '.join(argv)} failed: {exc}") from exc
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise ServiceError(
            f"{' '.join(argv)} failed (exit {result.returncode}): {' '.join(said[-3:])}"
        )


class Host(Struct, frozen=True):
    """What the installer asks of the machine, so tests can stand in for it."""

    euid: int
    booted: bool  # systemd runs as the system manager (/run/systemd/system)
    user_manager: bool  # the user's systemd manager runs ($XDG_RUNTIME_DIR/systemd/private)
    which: Callable[[str], str | None] = shutil.which
    run: Callable[[Sequence[str]], None] = _run

    @classmethod
    def current(cls, env: Mapping[str, str]) -> Host:
        runtime = env.get("XDG_RUNTIME_DIR")
        return cls(
            euid=os.geteuid(),
            booted=Path("/run/systemd/system").is_dir(),
            user_manager=runtime is not None and Path(runtime, "systemd", "private").exists(),
        )


class Target(Struct, frozen=True):
    """One request: which unit, with which command, where, and whether to act."""

    command: tuple[str, ...]  # what runs ``meshnode``: a path, or python -m meshnode
    user: bool = False
    root: Path | None = None  # an image to install into; None: this machine
    dry_run: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    def path(self, path: Path) -> Path:
        """Where ``path`` (as the running system sees it) is on disk now."""
        return _on_disk(path, self.root)

    @property
    def unit_path(self) -> Path:
        if not self.user:
            return SYSTEM_UNIT_PATH
        return user_config_home(self.env) / "systemd" / "user" / "meshnode.service"

    @property
    def config_path(self) -> Path:
        return (user_config_home(self.env) / "meshnode" if self.user else CONFIG_DIR) / CONFIG_NAME


class Step(Struct, frozen=True):
    """One thing the installer did, would do (dry run), found done, or left alone."""

    text: str
    changed: bool


class Report(Struct):
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(step.changed for step in self.steps)


def user_config_home(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME``, else ``~/.config``."""
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".config"


def find_command(
    argv0: str, python: str, which: Callable[[str], str | None] = shutil.which
) -> tuple[str, ...]:
    """The ``meshnode`` that is running, as the words that start it again.

    The script named by ``argv[0]`` (searched on ``$PATH`` when it is a bare name),
    else the ``meshnode`` beside the interpreter (a venv's ``bin/``), else
    ``python -m meshnode``. A script's path is resolved (a symlink in
    ``/usr/local/bin`` may move); the interpreter's is not, since a venv's
    ``python`` works only through its own path.
    """
    found = which(argv0) if os.sep not in argv0 else argv0
    if found and Path(found).name == "meshnode" and _is_executable(Path(found)):
        return (os.path.realpath(found),)
    beside = Path(python).parent / "meshnode"
    if _is_executable(beside):
        return (os.path.realpath(beside),)
    return (os.path.abspath(python), "-m", "meshnode")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def unit_word(word: str, *, program: bool = False) -> str:
    """``word`` as one word of a unit's command line (systemd.service(5), "Command lines").

    ``%`` is always doubled (specifiers); ``$`` only in arguments, since systemd
    substitutes variables there and never in the ``program`` path, which may not
    hold quotes or backslashes at all.
    """
    if any(ord(c) < 32 for c in word) or (program and any(c in word for c in "\"'\\")):
        what = "a control character" if any(ord(c) < 32 for c in word) else "a quote or backslash"
        raise ServiceError(
            f"{word!r} holds {what}, which a unit's ExecStart= cannot carry; install meshnode"
            " under a plainer path"
        )
    escaped = word.replace("%", "%%")
    if not program:
        escaped = escaped.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(target: Target) -> str:
    """The unit text with ``ExecStart=`` starting the command of ``target``."""
    template, default = (
        (USER_UNIT, USER_EXECUTABLE) if target.user else (SYSTEM_UNIT, SYSTEM_EXECUTABLE)
    )
    line = f"\nExecStart={default} "
    assert template.count(line) == 1, "the template's ExecStart= starts with its default"
    program, *arguments = target.command
    words = " ".join([unit_word(program, program=True), *(unit_word(a) for a in arguments)])
    reload_line = f"\nExecReload={default} "
    assert template.count(reload_line) == 1, "the template's ExecReload= starts with its default"
    text = template.replace(line, f"\nExecStart={words} ", 1)
    return text.replace(reload_line, f"\nExecReload={unit_word(program, program=True)} ", 1)


def require_root(target: Target, euid: int) -> None:
    """The system service is installed by root, unless into an image or as a dry run."""
    if not target.user and target.root is None and not target.dry_run and euid != 0:
        raise NeedsRoot(
            "installing the system service needs root: run it with sudo"
            " (sudo meshnode service install), or use --user for a service in your"
            " session, or --dry-run to see what it would do"
        )


def install(target: Target, host: Host, on_step: Callable[[Step], None]) -> Report:
    """Install the unit of ``target`` and what it needs; ``on_step`` hears each step as it ends."""
    require_root(target, host.euid)
    installer = _Installer(target, host, on_step)
    with _no_permission_as_error():
        if target.user:
            installer.install_user()
        else:
            installer.install_system()
    return installer.report


def uninstall(target: Target, host: Host, on_step: Callable[[Step], None]) -> Report:
    """Remove the unit (stopped and disabled first); the data, user and config stay."""
    require_root(target, host.euid)
    installer = _Installer(target, host, on_step)
    with _no_permission_as_error():
        installer.uninstall()
    return installer.report


@contextlib.contextmanager
def _no_permission_as_error() -> Iterator[None]:
    """A file the installer may not look at (a dry run without root) as a ServiceError."""
    try:
        yield
    except PermissionError as exc:
        raise ServiceError(
            f"cannot look at {exc.filename}: permission denied; run it with sudo"
        ) from exc


class _Installer:
    def __init__(self, target: Target, host: Host, on_step: Callable[[Step], None]) -> None:
        self.target = target
        self.host = host
        self.on_step = on_step
        self.report = Report()

    # -- the two installations ------------------------------------------------

    def install_system(self) -> None:
        t = self.target
        unit = render_unit(t)  # first: a path no unit can hold stops it before any change
        self._write(SYSUSERS_PATH, SYSUSERS, 0o644)
        self._service_user()
        ids = self._owner_ids()
        self._directory(CONFIG_DIR, 0o750, "root", None if ids is None else (0, ids[1]))
        self._config_template(0o640, ids)
        unit_changed = self._write(t.unit_path, unit, 0o644)
        self._reload(unit_changed)
        self.report.warnings += reachability(t.command, t.root, lookup_user(SERVICE_USER, t.root))
        if t.root is not None:  # an image: the steps are the image's, not this host's
            self.report.next_steps += [
                f"sudo systemctl --root {t.root} enable meshnode   # started at the image's boot",
                "on the running system: sudo usermod -aG meshnode <user>, to use it without sudo",
            ]
            return
        self.report.next_steps += [
            "sudo systemctl enable --now meshnode",
            "sudo usermod -aG meshnode $USER   # then log in again, to use the node without sudo",
            "meshnode status   # with no node of your own, the CLI finds the system node",
            "journalctl -u meshnode -f   # its log",
        ]

    def install_user(self) -> None:
        t = self.target
        unit = render_unit(t)
        if self.host.euid == 0 and t.root is None:
            self.report.warnings.append(
                "this installs a user service for root; for your own account run it without sudo"
            )
        self._config_template(0o600, None)
        unit_changed = self._write(t.unit_path, unit, 0o644)
        self._reload(unit_changed)
        self.report.next_steps += [
            "systemctl --user enable --now meshnode",
            "loginctl enable-linger $USER   # to keep it running while you are logged out",
            "meshnode status",
            "journalctl --user -u meshnode -f   # its log",
        ]

    def uninstall(self) -> None:
        t = self.target
        unit = t.path(t.unit_path)
        if not unit.exists():
            self._step(f"found no {t.unit_path}: nothing to remove", changed=False)
            return
        manager = self._manager()
        if manager is not None:
            disable = [*manager, "disable", "--now", "meshnode.service"]
            self._act(
                f"stop and disable meshnode.service ({' '.join(disable)})",
                lambda: self.host.run(disable),
                did=f"stopped and disabled meshnode.service ({' '.join(disable)})",
            )
        self._act(f"remove {t.unit_path}", unit.unlink)
        # The links its [Install] made (a glob skips them when they dangle, as in an image).
        links = (wants / "meshnode.service" for wants in sorted(unit.parent.glob("*.wants")))
        for link in (link for link in links if link.is_symlink()):
            self._act(f"remove {t.unit_path.parent / link.relative_to(unit.parent)}", link.unlink)
        self._reload(True)
        kept = t.config_path if t.user else f"{STATE_DIR}, {CONFIG_DIR} and the user {SERVICE_USER}"
        self._step(f"kept {kept} (remove by hand what you want gone)", changed=False)

    # -- steps ------------------------------------------------------------------

    def _step(self, text: str, *, changed: bool) -> None:
        step = Step(text, changed)
        self.report.steps.append(step)
        self.on_step(step)

    def _act(self, what: str, action: Callable[[], object], *, did: str | None = None) -> None:
        """Do ``action`` (not in a dry run) and report it: ``did``, or ``would <what>``."""
        if self.target.dry_run:
            self._step(f"would {what}", changed=True)
            return
        try:
            action()
        except OSError as exc:
            raise ServiceError(f"cannot {what}: {exc.strerror or exc}") from exc
        self._step(did or _past(what), changed=True)

    def _write(self, path: Path, text: str, mode: int) -> bool:
        """Make ``path`` hold ``text`` with ``mode``; whether anything changed."""
        disk = self.target.path(path)
        try:
            current: str | None = disk.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        except (OSError, UnicodeDecodeError) as exc:
            raise ServiceError(f"cannot read {disk}: {exc}") from exc
        if current != text:
            verb = "write" if current is None else "update"
            self._act(f"{verb} {path}", lambda: _write_atomically(disk, text, mode))
            return True
        if stat.S_IMODE(disk.stat().st_mode) != mode:
            self._act(f"set the mode of {path} to {mode:04o}", lambda: disk.chmod(mode))
            return True
        self._step(f"found {path} up to date", changed=False)
        return False

    def _directory(self, path: Path, mode: int, owner: str, ids: tuple[int, int] | None) -> None:
        """``path`` with ``mode``, owned by ``owner``:meshnode once the group exists (``ids``)."""
        disk = self.target.path(path)
        wanted = f"{path} ({owner}:{SERVICE_USER} {mode:04o})"
        try:
            info = disk.stat()
        except FileNotFoundError:
            self._act(f"create {wanted}", lambda: _make_dir(disk, mode, ids))
            return
        wrong = stat.S_IMODE(info.st_mode) != mode
        wrong |= ids is not None and (info.st_uid, info.st_gid) != ids
        if wrong:
            was = f"{_owner_text(info.st_uid, info.st_gid)} {stat.S_IMODE(info.st_mode):04o}"
            self._act(
                f"change {path} from {was} to {owner}:{SERVICE_USER} {mode:04o}",
                lambda: _fix_dir(disk, mode, ids),
            )
        else:
            self._step(f"found {wanted}", changed=False)

    def _config_template(self, mode: int, ids: tuple[int, int] | None) -> None:
        """A commented config file where none is; an existing one is the user's and stays.

        The system's is owned by the service's user: ``meshnode network join``
        rewrites the file 0600 and keeps its owner, so the daemon can still read
        it. Mode 0640 until then: no secret is in it yet, and the group may read it.
        """
        path = self.target.config_path
        disk = self.target.path(path)
        if disk.exists():
            self._step(f"found {path}: left as it is", changed=False)
            service_ids = lookup_user(SERVICE_USER, self.target.root)
            if not self.target.user and not _reachable(path, self.target.root, service_ids):
                self.report.warnings.append(
                    f"the {SERVICE_USER} user cannot read {path}; fix it with: sudo chown"
                    f" {SERVICE_USER}:{SERVICE_USER} {path} && sudo chmod 640 {path}"
                )
            return
        owned = "" if self.target.user else f" owned by {SERVICE_USER}"
        self._act(
            f"write {path} (a commented template, mode {mode:04o}{owned})",
            lambda: _write_atomically(disk, CONFIG_TEMPLATE, mode, ids, parents=0o700),
        )

    def _service_user(self) -> None:
        t = self.target
        what = f"the system user and group {SERVICE_USER}"
        if lookup_user(SERVICE_USER, t.root) is not None:
            self._step(f"found {what}", changed=False)
            return
        sysusers = self.host.which("systemd-sysusers")
        if sysusers is not None:
            snippet = str(t.path(SYSUSERS_PATH))
            argv = (
                [sysusers, snippet]
                if t.root is None
                else [sysusers, "--root", str(t.root), snippet]
            )
            self._act(f"create {what} (systemd-sysusers)", lambda: self.host.run(argv))
        elif t.root is not None:
            self._step(
                f"skipped {what}: no systemd-sysusers here; the image's own creates it at boot"
                f" from {SYSUSERS_PATH}",
                changed=False,
            )
        else:
            argv = self._useradd()
            self._act(f"create {what} (useradd)", lambda: self.host.run(argv))

    def _useradd(self) -> list[str]:
        useradd = self.host.which("useradd")
        if useradd is None:
            raise ServiceError(
                f"neither systemd-sysusers nor useradd is here to create the user {SERVICE_USER};"
                f" create a system user and group {SERVICE_USER} yourself and run this again"
            )
        return useradd_argv(useradd, group_exists=_group_exists(SERVICE_USER))

    def _owner_ids(self) -> tuple[int, int] | None:
        """The ids to give the service's files; None (owners left alone) when that cannot be."""
        t = self.target
        ids = lookup_user(SERVICE_USER, t.root)
        if ids is None and not t.dry_run:
            self._step(
                f"left owners as they are: there is no user {SERVICE_USER} yet; at first boot:"
                f" chown root:{SERVICE_USER} {CONFIG_DIR} &&"
                f" chown {SERVICE_USER}:{SERVICE_USER} {t.config_path}",
                changed=False,
            )
        elif ids is not None and self.host.euid != 0:
            self._step(
                f"left owners as they are (not root): chown root:{SERVICE_USER} {CONFIG_DIR}"
                f" and {SERVICE_USER}:{SERVICE_USER} {t.config_path} in the image",
                changed=False,
            )
            return None
        return ids

    def _manager(self) -> list[str] | None:
        """``systemctl`` for the manager that runs the unit, if one runs (never for an image)."""
        if self.target.root is not None:
            return None
        if self.target.user:
            return ["systemctl", "--user"] if self.host.user_manager else None
        return ["systemctl"] if self.host.booted else None

    def _reload(self, changed: bool) -> None:
        """Tell the manager that a unit file changed, if one runs; its failure is a warning."""
        if not changed:
            return
        manager = self._manager()
        argv = ["systemctl", *(["--user"] if self.target.user else []), "daemon-reload"]
        if manager is None:
            if self.target.root is not None:
                why = "installing into an image"
            else:
                why = f"no {'user ' if self.target.user else ''}systemd manager runs here"
            self._step(f"skipped {' '.join(argv)}: {why}", changed=False)
            return
        try:
            self._act(f"run {' '.join(argv)}", lambda: self.host.run(argv))
        except ServiceError as exc:
            self.report.warnings.append(f"{exc}; run it yourself: {' '.join(argv)}")


def useradd_argv(useradd: str, *, group_exists: bool) -> list[str]:
    """``useradd`` making the service's user as sysusers.d would: a system user, no login."""
    nologin = next(
        (shell for shell in ("/usr/sbin/nologin", "/sbin/nologin") if Path(shell).exists()),
        "/bin/false",
    )
    group = ["--gid", SERVICE_USER] if group_exists else ["--user-group"]
    return [
        useradd, "--system", *group, "--home-dir", str(STATE_DIR), "--no-create-home",
        "--shell", nologin, "--comment", "meshnode daemon", SERVICE_USER,
    ]  # fmt: skip


def lookup_user(name: str, root: Path | None) -> tuple[int, int] | None:
    """``name``'s uid and the gid of its group ``name``; in ``root``'s own files for an image."""
    if root is None:
        try:
            return pwd.getpwnam(name).pw_uid, grp.getgrnam(name).gr_gid
        except KeyError:
            return None
    uid = _id_from(root / "etc" / "passwd", name)
    gid = _id_from(root / "etc" / "group", name)
    return None if uid is None or gid is None else (uid, gid)


def _id_from(path: Path, name: str) -> int | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def reachability(
    command: Sequence[str], root: Path | None, ids: tuple[int, int] | None
) -> list[str]:
    """Why the system service could not start ``command``: a warning that says what to do.

    It needs the script, its interpreter (from the ``#!`` line), both resolved,
    and, for the installation running now, the ``meshnode`` package (an editable
    one lives in its checkout): none of them under a directory the sandbox hides,
    and each readable by the ``meshnode`` user (``ids``; None: it does not exist
    yet, so only the bits for others count).
    """
    script = Path(command[0])
    needed = [script, *_resolved(script, root)]
    interpreter = _shebang(script, root)
    if interpreter is not None:
        needed += [interpreter, *_resolved(interpreter, root)]
    if root is None:
        import meshnode

        needed.append(Path(meshnode.__file__))
    problems = []
    for path in dict.fromkeys(needed):
        hidden = next((h for h in HIDDEN_FROM_SERVICE if path.is_relative_to(h)), None)
        if hidden is not None:
            option = "PrivateTmp" if hidden.name.endswith("tmp") else "ProtectHome"
            problems.append(f"{path} is under {hidden}, which the unit hides ({option}=yes)")
        elif not _on_disk(path, root).exists():
            problems.append(f"{path} does not exist{'' if root is None else ' in ' + str(root)}")
        elif not _reachable(path, root, ids):
            problems.append(f"the {SERVICE_USER} user cannot read {path}")
    if not problems:
        return []
    return [
        f"the service will not start: {'; '.join(problems)}. Install meshnode where every"
        " user can reach it and run the installer from there: sudo python3 -m venv"
        " /opt/meshnode && sudo /opt/meshnode/bin/pip install <the meshnode checkout> &&"
        " sudo /opt/meshnode/bin/meshnode service install"
    ]


def _shebang(script: Path, root: Path | None) -> Path | None:
    """The interpreter a ``#!`` script names."""
    try:
        with _on_disk(script, root).open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return None
    words = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
    return Path(words[0]) if words and words[0].startswith("/") else None


def _resolved(path: Path, root: Path | None) -> list[Path]:
    """Where ``path``'s symlinks lead (inside ``root``), if elsewhere."""
    base = Path("/") if root is None else root
    real = Path(os.path.realpath(_on_disk(path, root)))
    if not real.is_relative_to(base):
        return []
    inside = Path("/") / real.relative_to(base)
    return [] if inside == path else [inside]


def _on_disk(path: Path, root: Path | None) -> Path:
    return path if root is None else root / path.relative_to("/")


def _reachable(path: Path, root: Path | None, ids: tuple[int, int] | None) -> bool:
    """Whether the user ``ids`` may search every directory down to ``path`` and read it."""
    base = Path("/") if root is None else root
    current = base
    for part in path.relative_to("/").parts:
        if not _allows(current, ids, stat.S_IXUSR):
            return False
        current = current / part
    return current.exists() and _allows(current, ids, stat.S_IRUSR)


def _allows(path: Path, ids: tuple[int, int] | None, owner_bit: int) -> bool:
    """Whether the user ``ids`` has ``owner_bit`` (read or search) on ``path``, by its mode."""
    try:
        info = path.stat()
    except OSError:
        return False
    if ids is not None and info.st_uid == ids[0]:
        shift = 0
    elif ids is not None and info.st_gid == ids[1]:
        shift = 3
    else:
        shift = 6
    return bool(info.st_mode & (owner_bit >> shift))


def _owner_text(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def _past(what: str) -> str:
    verb, _, rest = what.partition(" ")
    done = {"write": "wrote", "update": "updated", "run": "ran", "set": "set", "change": "changed"}
    return f"{done.get(verb, verb + 'd')} {rest}"


def _write_atomically(
    path: Path,
    text: str,
    mode: int,
    owner: tuple[int, int] | None = None,
    parents: int = 0o755,
) -> None:
    """``text`` into ``path`` whole or not at all, with ``mode`` and ``owner`` from the start."""
    path.parent.mkdir(mode=parents, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask narrowed the mode os.open gave
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _make_dir(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    path.mkdir(parents=True)
    _fix_dir(path, mode, owner)


def _fix_dir(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)
    path.chmod(mode)
