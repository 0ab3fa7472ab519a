"""The ``meshnode`` command end to end, against a real daemon in a temp dir."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meshnode.client import Client, ClientError
from meshnode.system import datadir, paths
from tests.fake_daemon import FakeDaemon, refuse_as_busy
from tests.helpers import Daemon, env_without_xdg

pytestmark = pytest.mark.slow


def test_publish_get_query_delete_round_trip(daemon: Daemon) -> None:
    published = daemon.cli("publish", "profile/name", "Ada")
    assert published.returncode == 0, published.stderr
    record_id, _, seq = published.stdout.split()
    assert len(record_id) == 64 and seq.isdigit()

    got = daemon.cli("get", "profile/name")
    assert (got.returncode, got.stdout) == (0, "Ada\n")

    as_json = json.loads(daemon.cli("get", "profile/name", "--json").stdout)
    assert as_json["id"] == record_id and as_json["seq"] == int(seq)
    assert set(as_json) == {
        "id",
        "author",
        "seq",
        "key",
        "value",
        "created_ms",
        "expires_ms",
        "deleted",
    }

    assert (
        daemon.cli("publish", "offer/soldering", "--ttl", "3h", "Bring a board, table 4").returncode
        == 0
    )
    assert daemon.cli("publish", "offer/tea", "hot").returncode == 0
    offers = daemon.cli("query", "--prefix", "offer/", "--json")
    lines = [json.loads(line) for line in offers.stdout.splitlines()]
    assert [r["key"] for r in lines] == ["offer/soldering", "offer/tea"]
    soldering = lines[0]
    assert soldering["expires_ms"] - soldering["created_ms"] == 3 * 3600 * 1000
    assert (
        daemon.cli("query", "--prefix", "offer/", "--limit", "1", "--json").stdout.count("\n") == 1
    )

    deleted = daemon.cli("delete", "offer/soldering")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    gone = daemon.cli("get", "offer/soldering")
    assert gone.returncode == 1 and "deleted" in gone.stderr
    assert daemon.cli("query", "--prefix", "offer/").stdout.count("\n") == 1
    with_deleted = daemon.cli("query", "--prefix", "offer/", "--deleted", "--json").stdout
    assert json.loads(with_deleted.splitlines()[0])["deleted"] is True


def test_structured_values_and_values_from_stdin(daemon: Daemon) -> None:
    assert (
        daemon.cli("publish", "stats/load", "--json-value", '{"cpu": 0.4, "n": [1, 2]}').returncode
        == 0
    )
    assert json.loads(daemon.cli("get", "stats/load").stdout) == {"cpu": 0.4, "n": [1, 2]}
    assert daemon.cli("publish", "notes/long", "-", input="line one\nline two\n").returncode == 0
    assert daemon.cli("get", "notes/long").stdout == "line one\nline two\n"  # as stored


def test_id_and_status(daemon: Daemon) -> None:
    node_id = daemon.cli("id").stdout.strip()
    assert node_id.startswith("node1")
    daemon.cli("publish", "a", "1")
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["node_id"] == node_id
    assert status["records"] == status["own_records"] == 1
    assert status["socket"] == str(daemon.socket)
    assert status["data_dir"] == str(daemon.data_dir)
    assert status["store_bytes"] > 0 and status["uptime_s"] >= 0
    text = daemon.cli("status").stdout
    assert node_id in text and "uptime" in text


def test_another_nodes_records_by_author(daemon: Daemon) -> None:
    node_id = daemon.cli("id").stdout.strip()
    daemon.cli("publish", "profile/name", "Ada")
    assert daemon.cli("get", "profile/name", "--author", node_id).stdout == "Ada\n"
    assert daemon.cli("query", "--author", node_id, "--json").stdout.count("\n") == 1


def lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """``process``'s output lines as they come, read by a thread, so that a test can wait
    for one with a timeout instead of on a pipe for ever."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], daemon: Daemon, timeout: float = 10.0) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line within {timeout} s\n{daemon.log()}") from None


def kill_on_failure(process: subprocess.Popen[str]) -> None:
    """Leaving ``with Popen`` waits for the process: a failed test must not wait for ever."""
    if process.poll() is None:
        process.kill()


def test_watch_streams_new_and_changed_records_until_interrupted(daemon: Daemon) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshnode",
            "watch",
            *daemon.cli_args,
            "--prefix",
            "offer/",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a user's ^C finds it: a shell that ran the tests in the background left
        # SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    ) as watcher:
        try:
            deadline = time.monotonic() + 10
            while json.loads(daemon.cli("status", "--json").stdout)["watches"] < 1:
                assert time.monotonic() < deadline, "the watch never registered"
                time.sleep(0.05)
            daemon.cli("publish", "offer/a", "1")
            daemon.cli("publish", "other/b", "2")
            daemon.cli("publish", "offer/a", "3")
            daemon.cli("delete", "offer/a")
            lines = lines_of(watcher)
            events = [json.loads(next_line(lines, daemon)) for _ in range(3)]
            assert [(e["event"], e["record"]["value"]) for e in events] == [
                ("put", "1"),
                ("put", "3"),
                ("delete", None),
            ]
        except BaseException:
            kill_on_failure(watcher)
            raise
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        assert "Traceback" not in watcher.communicate()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "bad//key", "x"), "segments"),
        (("publish", "k", "x" * 20_000), "value is"),
        (("publish", "k", "--json-value", "{not json"), "not valid JSON"),
        (("publish", "k", "--ttl", "soon", "x"), "--ttl is a duration"),
        (("publish", "k", "--ttl", "-5m", "x"), "--ttl must be a positive duration"),
        (("publish", "k", "--ttl=0.0001s", "x"), "--ttl must be at least 1 ms"),
        (("publish", "k", "--ttl", "", "x"), "--ttl is a duration"),
        (("publish", "k", "--ttl", "3651d", "x"), "--ttl must be at most 10 years"),
        (("publish", "k", "--json-value", "18446744073709551616"), "beyond 64 bits"),
        (("publish", "k", "--json-value", "-9223372036854775809"), "beyond 64 bits"),
        (("publish", "k/\udcff", "x"), "not valid UTF-8"),
        (("publish", "k", "\udcff"), "not valid UTF-8"),
        (("query", "--prefix", "k/\udcff"), "not valid UTF-8"),
        (("publish", "k"), "needs a value"),
        (("get", "k", "--author", "node1nope"), "invalid node id"),
        (("query", "--author", "alice"), "invalid node id"),
        (("query", "--limit", "0"), "--limit"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_stores_nothing(
    daemon: Daemon, args: tuple[str, ...], message: str
) -> None:
    result = daemon.cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(daemon.cli("status", "--json").stdout)["records"] == 0


def test_a_missing_record_exits_1(daemon: Daemon) -> None:
    result = daemon.cli("get", "nothing/here")
    assert result.returncode == 1 and "not found" in result.stderr


def test_a_daemon_with_no_room_is_named_as_the_cause_not_a_broken_pipe() -> None:
    fake = FakeDaemon([refuse_as_busy])
    # The request is too large to be sent before the daemon has closed (a script's, through
    # the client: the CLI reads no more than a value may hold).
    with fake, Client(fake.socket, timeout=20) as client, pytest.raises(ClientError) as refused:
        client.publish("k", "x" * 1_000_000)
    assert str(refused.value).startswith("the daemon has too many control clients (65)")
    assert "Broken pipe" not in str(refused.value)


def status_of(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``meshnode status --data-dir DATA_DIR``, with no XDG directories of the test runner's."""
    return subprocess.run(
        [sys.executable, "-m", "meshnode", "status", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env_without_xdg(),
        check=False,
    )


def test_no_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    result = status_of(tmp_path / "none")
    assert result.returncode == 3
    assert "no meshnode daemon is running" in result.stderr and "meshnode run" in result.stderr


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from meshnode.system.datadir import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(30)
"""


def test_a_daemon_that_holds_the_data_dir_but_does_not_answer_yet_may_be_starting(
    tmp_path: Path,
) -> None:
    """``meshnode run &`` and at once ``meshnode status``: not "start one", not "--socket"."""
    home = tmp_path / "home"
    home.mkdir()
    starting = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(home)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert starting.stdout is not None and starting.stdout.readline() == "locked\n"
        result = status_of(home)
        assert result.returncode == 3
        assert f"(pid {starting.pid}) is running on {home} but does not answer" in result.stderr
        assert "it may still be starting (try again in a moment)" in result.stderr
    finally:
        starting.kill()
        starting.wait(10)
        assert starting.stdout is not None
        starting.stdout.close()


def test_id_with_no_daemon_reads_the_key_file_of_a_node_that_has_run(tmp_path: Path) -> None:
    home = tmp_path / "home"

    def id_of(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "meshnode", "--data-dir", str(home), "id", *extra]
        socket = ["--socket", str(tmp_path / "nothing.sock")]
        return subprocess.run(
            [*command, *socket], capture_output=True, text=True, check=False, timeout=30
        )

    assert id_of().returncode == 3  # never run: no id yet, and no daemon to start
    home.mkdir()
    identity, _ = datadir.load_or_create_identity(home, bytes(range(32)))
    assert (id_of().returncode, id_of().stdout) == (0, f"{identity.node_id}\n")
    assert json.loads(id_of("--json").stdout)["fingerprint"] == identity.fingerprint


@pytest.mark.parametrize(
    ("typed", "said"),
    [("publis", "did you mean 'publish'?"), ("frobnicate", "meshnode --help lists them")],
)
def test_an_unknown_command_is_answered_with_the_one_meant(typed: str, said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", typed, "x"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"meshnode: error: unknown command {typed!r}; {said}"


def test_a_data_dir_that_is_a_file_is_said_to_be_one(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("not a node")
    for command in (["status"], ["run", "--no-mdns", "--listen", "127.0.0.1:0"]):
        result = subprocess.run(
            [sys.executable, "-m", "meshnode", *command, "--data-dir", str(afile)],
            capture_output=True,
            text=True,
            env=env_without_xdg(),
            check=False,
            timeout=30,
        )
        assert result.returncode == 2
        assert f"the data dir {afile} is a file, not a directory" in result.stderr
    assert afile.read_text() == "not a node"


def test_a_daemon_on_another_socket_is_named_not_started_again(daemon: Daemon) -> None:
    result = status_of(daemon.data_dir)
    assert result.returncode == 3
    assert "is running on" in result.stderr and "give the --socket" in result.stderr


def test_the_data_dir_and_socket_follow_xdg(tmp_path: Path) -> None:
    env = {"HOME": "/home/ada", "XDG_DATA_HOME": str(tmp_path / "data")}
    home = paths.data_dir(None, env)
    assert home == tmp_path / "data" / "meshnode"
    assert paths.socket_path(home, None, env) == home / "control.sock"
    runtime = {**env, "XDG_RUNTIME_DIR": "/run/user/1000"}
    sock = paths.socket_path(home, None, runtime)
    assert sock.parent == Path("/run/user/1000/meshnode") and sock.name.startswith("meshnode-")
    other = paths.socket_path(tmp_path / "other", None, runtime)
    assert other != sock
    assert paths.data_dir(None, {"MESHNODE_HOME": "/srv/node", **env}) == Path("/srv/node")
    assert paths.data_dir("/x/y", {"MESHNODE_HOME": "/srv/node"}) == Path("/x/y")
    assert paths.data_dir(None, {"HOME": "/home/ada"}) == Path("/home/ada/.local/share/meshnode")


def test_a_client_with_no_node_of_its_own_talks_to_the_system_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "run" / "control.sock"
    monkeypatch.setattr(paths, "SYSTEM_SOCKET", system)
    env = {"HOME": str(tmp_path / "ada")}
    own = paths.socket_path(paths.data_dir(None, env), None, env)
    assert paths.client_socket(None, None, env) == own  # no system service: as before
    system.parent.mkdir()
    system.touch()
    assert paths.client_socket(None, None, env) == system
    # Whatever names a node wins, and so does a node of this user's own.
    assert paths.client_socket(None, "/tmp/x.sock", env) == Path("/tmp/x.sock")
    assert paths.client_socket(str(tmp_path / "n"), None, env) == tmp_path / "n" / "control.sock"
    named = {**env, "MESHNODE_HOME": str(tmp_path / "m")}
    assert paths.client_socket(None, None, named) == tmp_path / "m" / "control.sock"
    # A node of this user's own, even stopped (its data dir exists), is the one meant.
    paths.data_dir(None, env).mkdir(parents=True)
    assert paths.client_socket(None, None, env) == own


def test_meshnode_home_selects_the_node_without_flags(daemon: Daemon) -> None:
    env = {
        **env_without_xdg(),
        "MESHNODE_HOME": str(daemon.data_dir),
        "MESHNODE_SOCKET": str(daemon.socket),
    }
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", "id"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("node1")


def test_a_socket_path_that_is_too_long_is_refused_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", "id", "--socket", "/tmp/" + "x" * 200],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "longer than 107 bytes" in result.stderr


def test_stdin_that_is_not_utf8_is_stored_as_bytes_and_text_as_text(daemon: Daemon) -> None:
    command = [sys.executable, "-m", "meshnode", "publish", *daemon.cli_args]
    for key, data in (("bin/x", b"\xff\xfe\x00"), ("text/x", "caf\u00e9\n".encode())):
        done = subprocess.run(
            [*command, key, "-"], input=data, capture_output=True, timeout=20, check=False
        )
        assert done.returncode == 0, done.stderr
    with daemon.client() as client:
        assert client.get("bin/x")["value"] == b"\xff\xfe\x00"
        assert client.get("text/x")["value"] == "caf\u00e9\n"


def test_stdin_is_read_no_further_than_a_value_may_go(daemon: Daemon) -> None:
    from meshnode.client.cli import MAX_STDIN_VALUE
    from meshnode.core.record import MAX_VALUE_BYTES

    assert MAX_STDIN_VALUE == MAX_VALUE_BYTES
    command = [sys.executable, "-m", "meshnode", "publish", *daemon.cli_args]
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run(
            [*command, "big/x", "-"], stdin=endless, capture_output=True, timeout=20, check=False
        )
    assert done.returncode == 2 and b"over 16 KiB" in done.stderr
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *command, "closed/x", "-"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert closed.returncode == 2 and b"stdin is closed" in closed.stderr


def test_output_to_a_closed_pipe_is_not_an_error(daemon: Daemon) -> None:
    for n in range(30):
        daemon.cli("publish", f"k/{n}", "x" * 500)
    command = " ".join(
        [sys.executable, "-m", "meshnode", "query", *daemon.cli_args, "|", "head", "-1"]
    )
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, check=False
    )
    assert "Traceback" not in result.stderr
    assert os.path.exists(daemon.socket)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_output_to_a_full_disk_is_one_line_and_exit_1(daemon: Daemon, buffered: bool) -> None:
    """``meshnode peers --json > peers.json`` on a Pi whose SD card is full."""
    env = dict(os.environ)
    if buffered:  # the write fails at the flush, not in print
        env.pop("PYTHONUNBUFFERED", None)
    else:
        env["PYTHONUNBUFFERED"] = "1"
    for command in (("status",), ("config", "show"), ("get", "no/such/key")):
        with open("/dev/full", "w") as full:
            result = subprocess.run(
                [sys.executable, "-m", "meshnode", *command, *daemon.cli_args],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=20,
                check=False,
                env=env,
            )
        if command[0] == "get":  # it failed with nothing written: that is what it says
            assert result.returncode == 1 and "not found" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
            continue
        assert result.returncode == 1, result.stderr
        assert result.stderr == "meshnode: cannot write: No space left on device\n"


def test_a_command_started_with_stdout_closed_does_not_fail_for_it(daemon: Daemon) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", "status", *daemon.cli_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=20,
        check=False,
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_a_value_with_line_breaks_or_tabs_stays_on_its_own_line(daemon: Daemon) -> None:
    assert daemon.cli("publish", "notes/today", "-", input="a longer note\n").returncode == 0
    assert daemon.cli("publish", "notes/tab", "left\tright").returncode == 0
    got = daemon.cli("get", "notes/today")
    assert got.stdout == "a longer note\n"  # stored with its newline; printed once, not twice
    lines = daemon.cli("query", "--prefix", "notes/").stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        ["notes/tab", '"left\\tright"'],
        ["notes/today", '"a longer note\\n"'],
    ]
    assert all(len(line.split("\t")) == 3 for line in lines)


def test_query_since_a_seq(daemon: Daemon) -> None:
    first = json.loads(daemon.cli("publish", "a", "1", "--json").stdout)
    daemon.cli("publish", "b", "2")
    since = daemon.cli("query", "--since-seq", str(first["seq"] + 1), "--json").stdout
    assert [json.loads(line)["key"] for line in since.splitlines()] == ["b"]
    assert daemon.cli("query", "--since-seq", "-1").returncode == 2
