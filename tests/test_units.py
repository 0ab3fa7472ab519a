"""The systemd units: what ``systemd/`` ships, verified and scored by ``systemd-analyze``, and
the daemon shown to work inside the system unit's sandbox.

``systemd-analyze verify`` checks that ExecStart's program exists, so the units are
checked as the installer writes them, pointing at this test's Python. Every
``systemd-analyze`` call is bounded (60 s); without it those tests skip and say why.
The sandbox tests run the real daemon under the rules a test can apply without
systemd: the kernel's MemoryDenyWriteExecute (``PR_SET_MDWE``) and, under
``strace``, a comparison of what it does with what the unit allows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.client import Client, ClientError
from meshnode.system import service
from tests.netns import Lan, require_netns

ROOT = Path(__file__).parents[1]
ANALYZE = shutil.which("systemd-analyze")
TIMEOUT_S = 60
GOAL_EXPOSURE = 2.0
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)"
)

# Starts the program in argv[1:] with the kernel's MemoryDenyWriteExecute on: no mapping
# may be writable and executable, none may become executable (what the unit asks for).
MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )


def written_unit(tmp_path: Path, *, user: bool, command: tuple[str, ...]) -> Path:
    """The unit as the installer writes it, starting ``command``."""
    path = tmp_path / ("user" if user else "system") / "meshnode.service"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(service.render_unit(service.Target(command=command, user=user)))
    return path


def complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What ``systemd-analyze verify`` said about our unit (it exits 0 on unknown keys)."""
    return [line for line in (result.stdout + result.stderr).splitlines() if "meshnode" in line]


# -- what systemd/ ships ------------------------------------------------------------------


def test_the_systemd_folder_holds_the_units_the_installer_writes() -> None:
    """One text each: the installer carries them in the package, systemd/ shows them."""
    assert (ROOT / "systemd" / "meshnode.service").read_text() == service.SYSTEM_UNIT
    assert (ROOT / "systemd" / "user" / "meshnode.service").read_text() == service.USER_UNIT
    assert (ROOT / "systemd" / "meshnode.sysusers").read_text() == service.SYSUSERS


def test_the_system_unit_runs_the_daemon_on_the_system_paths() -> None:
    lines = service.SYSTEM_UNIT.splitlines()
    [start] = [line for line in lines if line.startswith("ExecStart=")]
    assert start == (
        "ExecStart=/usr/local/bin/meshnode run --config /etc/meshnode/config.toml"
        " --data-dir /var/lib/meshnode --socket /run/meshnode/control.sock"
    )
    for setting in (
        "Type=notify",
        "NotifyAccess=main",
        "User=meshnode",
        "Group=meshnode",
        "StateDirectory=meshnode",
        "StateDirectoryMode=0750",
        "RuntimeDirectory=meshnode",
        "RuntimeDirectoryMode=0750",
        "ConfigurationDirectory=meshnode",
        "ExecReload=/usr/local/bin/meshnode --socket /run/meshnode/control.sock config reload",
        "RestartPreventExitStatus=2",
        "Restart=on-failure",
        "RestartSec=5",
        "WatchdogSec=30",
        "TimeoutStopSec=10",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "WantedBy=multi-user.target",
    ):
        assert setting in lines
    assert not any(line.startswith("IPAddressDeny=") for line in lines)  # peers are anywhere


def test_the_user_unit_uses_the_session_defaults() -> None:
    lines = service.USER_UNIT.splitlines()
    assert "ExecStart=%h/.local/bin/meshnode run" in lines  # data dir and socket: XDG defaults
    for setting in ("Type=notify", "Restart=on-failure", "WantedBy=default.target"):
        assert setting in lines
    assert any(line.startswith("ExecReload=") for line in lines)


# -- systemd-analyze ----------------------------------------------------------------------


@needs_analyze
def test_systemd_analyze_verifies_the_system_unit(tmp_path: Path) -> None:
    unit = written_unit(tmp_path, user=False, command=(sys.executable, "-m", "meshnode"))
    result = analyze("verify", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints(result) == []


@needs_analyze
def test_systemd_analyze_verifies_the_user_unit(tmp_path: Path) -> None:
    unit = written_unit(tmp_path, user=True, command=(sys.executable, "-m", "meshnode"))
    runtime = tmp_path / "runtime"  # a user manager needs its runtime directory
    runtime.mkdir(mode=0o700)
    result = analyze(
        "--user", "verify", str(unit), env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints(result) == []


@needs_analyze
def test_an_executable_path_with_spaces_and_signs_is_written_so_systemd_finds_it(
    tmp_path: Path,
) -> None:
    """verify fails when ExecStart's first word names no executable: it must parse whole."""
    odd = tmp_path / "my venv 100%" / "$HOME;x" / "meshnode"
    odd.parent.mkdir(parents=True)
    odd.write_text("#!/bin/sh\n")
    odd.chmod(0o755)
    unit = written_unit(tmp_path, user=False, command=(str(odd), "--flag=$HOME"))
    result = analyze("verify", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints(result) == []


@pytest.mark.parametrize("path", ['/opt/"mesh"/meshnode', "/opt/it's/meshnode", "/opt/a\\b"])
def test_a_program_path_systemd_refuses_is_refused_before_it_is_written(path: str) -> None:
    with pytest.raises(service.ServiceError, match="plainer path"):
        service.render_unit(service.Target(command=(path,)))


def test_a_newline_cannot_reach_a_unit_file() -> None:
    with pytest.raises(service.ServiceError):
        service.render_unit(service.Target(command=("/opt/x", "\nExecStartPre=/bin/rm")))


@needs_analyze
def test_the_system_unit_is_rated_at_most_2_0_exposed() -> None:
    """``bench/unit_security.py`` scores it (``systemd-analyze security --offline=true``)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "unit_security.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["exposure"] <= GOAL_EXPOSURE, (
        f"exposure {figures['exposure']} > {GOAL_EXPOSURE}:\n{result.stdout}"
    )


# -- the daemon inside the sandbox ---------------------------------------------------------


def mdwe_supported() -> bool:
    """Whether this kernel has PR_SET_MDWE (Linux 6.3), tried in a child to keep this process."""
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return (
        subprocess.run([sys.executable, "-c", probe], timeout=TIMEOUT_S, check=False).returncode
        == 0
    )


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path holds 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mnu", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_for_status(
    socket: Path, process: subprocess.Popen[bytes], timeout: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(socket, timeout=5) as client:
                return client.status()
        except ClientError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)
        raise


@pytest.mark.slow
def test_the_daemon_runs_with_memory_that_is_never_writable_and_executable(short_dir: Path) -> None:
    """MemoryDenyWriteExecute=yes: CPython, cryptography, PyNaCl, SQLite and trio map no
    writable code; a JIT or a W+X trampoline would fail here, as under the unit."""
    if not mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3) to apply the rule with")
    socket = short_dir / "control.sock"
    daemon = [sys.executable, "-m", "meshnode", "run", "--data-dir", str(short_dir / "data")]
    daemon += ["--socket", str(socket), "--no-mdns", "--listen", "127.0.0.1:0"]
    with open(short_dir / "log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", MDWE, *daemon], stdout=log, stderr=log)
    try:
        wait_for_status(socket, process, timeout=30)
        with Client(socket, timeout=10) as client:
            record = client.publish("sandbox/mdwe", "signed and stored")
            assert client.get("sandbox/mdwe")["id"] == record["id"]
    finally:
        code = stop(process)
    assert code == 0, (short_dir / "log").read_text(errors="replace")


STRACE = shutil.which("strace")
PROC_OF_ITS_OWN = re.compile(r"/proc(/(self|thread-self|\d+)(/.*)?)?/?")
# glibc's malloc reads this when it gives heap back to the kernel, and takes the default
# when it cannot (as under ProcSubset=pid): not the daemon's own read, and harmless.
GLIBC_PROC_READS = {"/proc/sys/vm/overcommit_memory"}
# What SQLite does only when it runs as root: hand its journal to the database's owner.
ROOT_ONLY_CALLS = {"fchown"} if os.geteuid() == 0 else set()


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``'s groups and their members (calls and groups)."""
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in analyze("syscall-filter").stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.split()[0])
        elif not line.strip():
            current = None
    return groups


def allowed_syscalls(unit: str) -> set[str]:
    """The calls SystemCallFilter= lets through: the allow list less each ``~`` list."""
    groups = syscall_groups()

    def expand(names: list[str]) -> set[str]:
        calls: set[str] = set()
        for name in names:
            calls |= expand(groups[name]) if name.startswith("@") else {name}
        return calls

    allowed: set[str] = set()
    for line in unit.splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.removeprefix("SystemCallFilter=")
            if value.startswith("~"):
                allowed -= expand(value[1:].split())
            else:
                allowed |= expand(value.split())
    return allowed


def restricted_families(unit: str) -> set[str]:
    [line] = [x for x in unit.splitlines() if x.startswith("RestrictAddressFamilies=")]
    return set(line.removeprefix("RestrictAddressFamilies=").split())


def what_it_did(trace: str) -> tuple[set[str], set[str], set[str], set[str]]:
    """From ``strace -f`` output: the calls, socket families, paths written, /proc paths."""
    calls, families, written, proc = set(), set(), set(), set()
    for line in trace.splitlines():
        call = re.match(r"\d+ +([a-z0-9_]+)\((.*)", line)
        if call is None:
            continue
        name, args = call.groups()
        calls.add(name)
        if name in ("socket", "socketpair"):
            families.add(args.split(",")[0])
        proc.update(re.findall(r'"(/proc[^"]*)"', args))
        paths = re.findall(r'"([^"]*)"', args)
        if name == "openat" and re.search(r"O_(WRONLY|RDWR|CREAT|TRUNC)", args):
            written.add(paths[0])
        elif name in ("mkdir", "unlink", "rename", "chmod", "rmdir", "truncate"):
            written.update(paths[:2] if name == "rename" else paths[:1])
        elif name == "bind" and "sun_path=" in args:
            written.update(re.findall(r'sun_path="([^"]*)"', args))
    return calls, families, written, proc


@pytest.mark.slow
@needs_analyze
def test_the_daemon_stays_within_the_system_units_sandbox(short_dir: Path) -> None:
    """With mDNS on (in a namespace), a peer found and records both ways, then a stop:

    every system call it makes is one SystemCallFilter= allows, every socket one of
    RestrictAddressFamilies=, it writes only to its data dir and its socket's dir
    (ProtectSystem=strict) and /dev, and of /proc it reads only its own entries
    (ProcSubset=pid hides the rest).
    """
    if STRACE is None:
        pytest.skip("strace is not installed (Debian: apt-get install strace)")
    require_netns()
    trace_path = short_dir / "trace"

    def argv(name: str) -> list[str]:
        return [sys.executable, "-m", "meshnode", "run", "--data-dir", str(short_dir / name),
                "--socket", str(short_dir / "run" / f"{name}.sock")]  # fmt: skip

    with Lan.create(hosts=2) as lan:
        a, b = lan.hosts
        with open(short_dir / "a.log", "wb") as log:
            traced = a.popen(
                [STRACE, "-f", "-qq", "-s", "512", "-o", str(trace_path), *argv("a")],
                stdout=log,
                stderr=log,
            )
        with open(short_dir / "b.log", "wb") as log:
            b.popen(argv("b"), stdout=log, stderr=log)
        a_socket, b_socket = short_dir / "run" / "a.sock", short_dir / "run" / "b.sock"
        wait_for_status(a_socket, traced, timeout=60)
        deadline = time.monotonic() + 60
        while not _call(a_socket, "peers"):
            assert time.monotonic() < deadline, (short_dir / "a.log").read_text(errors="replace")
            time.sleep(0.2)
        with Client(a_socket) as client:
            client.publish("sandbox/a", "from the traced node")
        with Client(b_socket) as client:
            client.publish("sandbox/b", "to the traced node")
        while len(_records(a_socket)) < 2 or len(_records(b_socket)) < 2:
            assert time.monotonic() < deadline, "the records did not cross"
            time.sleep(0.2)
        # SIGTERM to the daemon itself: strace, its parent, ends with it.
        os.kill(int(_call(a_socket, "status")["pid"]), signal.SIGTERM)  # type: ignore[index]
        assert traced.wait(30) == 0, (short_dir / "a.log").read_text(errors="replace")

    calls, families, written, proc = what_it_did(trace_path.read_text(errors="replace"))
    allowed = allowed_syscalls(service.SYSTEM_UNIT) | ROOT_ONLY_CALLS
    assert calls - allowed == set(), "calls SystemCallFilter= refuses (EPERM)"
    assert families - restricted_families(service.SYSTEM_UNIT) == set()
    assert "AF_NETLINK" in families and "AF_INET" in families  # what the test meant to reach
    own = (short_dir / "a", short_dir / "run", Path("/dev"))
    outside = {
        path
        for path in written
        if not any(Path(path).is_relative_to(d) for d in own) and "/__pycache__/" not in path
    }
    assert outside == set(), "writes ProtectSystem=strict refuses (EROFS)"
    hidden = {p for p in proc if not PROC_OF_ITS_OWN.fullmatch(p)} - GLIBC_PROC_READS
    assert hidden == set(), (
        "/proc entries ProcSubset=pid hides: read the same files under /proc/self/"
    )


def _call(socket: Path, method: str) -> object:
    with Client(socket, timeout=10) as client:
        return client.call(method)


def _records(socket: Path) -> list[object]:
    with Client(socket, timeout=10) as client:
        return list(client.query(prefix="sandbox/")["records"])
