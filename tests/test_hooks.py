"""Event hooks: what a hook is given, how a run is bounded, and both runners end to end.

The hooks here are small Python programs (``sys.executable -c``) that write what
they were given to files, so a test can compare it byte for byte.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
import trio.testing

from meshnode.client.hooks import HookRunner as CliRunner
from meshnode.client.hooks import hook_from_args, run_hook
from meshnode.core.nodeid import encode_node_id
from meshnode.runtime import hooks as hooks_runtime
from meshnode.runtime.api import record_view
from meshnode.runtime.hooks import HookRunner as DaemonRunner
from meshnode.runtime.watch import WatchHub
from meshnode.system.hookspec import (
    KILL_GRACE_S,
    MAX_ENV_VALUE_BYTES,
    Captured,
    DropTally,
    HookConfig,
    HookOutcome,
    HookSpecError,
    describe,
    hook_environment,
    hook_input,
    parse_command,
)
from tests.helpers import T0, Daemon, identity, record

AUTHOR = identity(1)
# Writes the hook's MESHNODE_* variables and its stdin to <dir>/<pid>.json; a key
# ending in /fail exits 3, one ending in /hang sleeps for a minute.
RECORDER = """
import json, os, sys, time
out = sys.argv[1]
data = sys.stdin.buffer.read()
env = {k: v for k, v in os.environ.items() if k.startswith("MESHNODE_")}
path = os.path.join(out, str(os.getpid()))
with open(path + ".tmp", "w") as f:
    json.dump({"env": env, "stdin": data.decode(), "pid": os.getpid()}, f)
os.rename(path + ".tmp", path + ".json")
key = env["MESHNODE_KEY"]
if key.endswith("/hang"):
    time.sleep(60)
sys.exit(3 if key.endswith("/fail") else 0)
"""
# Appends "+" when it starts and "-" when it ends, a moment later, to one file.
OVERLAP = """
import sys, time
with open(sys.argv[1], "a") as f: f.write("+\\n")
time.sleep(0.3)
with open(sys.argv[1], "a") as f: f.write("-\\n")
"""
HOSTILE_VALUE = (
    "$(touch {x}) `touch {x}` ; touch {x} | touch {x} && touch {x}\ntouch {x}\n"
    "' \" \\ $HOME ${{IFS}} > {x} < /dev/null & %s %n * ? ~ # !"
)


def view(value: Any = "hot", key: str = "offer/tea", deleted: bool = False) -> dict[str, Any]:
    """A record's view as ``watch`` carries it (``record_view`` of a signed record)."""
    return record_view(
        record(AUTHOR, key=key, value=None if deleted else value, seq=7, expires_ms=None)
    )


def event(value: Any = "hot", key: str = "offer/tea", deleted: bool = False) -> dict[str, Any]:
    return {"event": "delete" if deleted else "put", "record": view(value, key, deleted)}


def recorder(out: Path, timeout_s: float = 10.0) -> HookConfig:
    return HookConfig((sys.executable, "-c", RECORDER, str(out)), timeout_s=timeout_s)


def recorded(out: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """What ``count`` recorder runs wrote, waiting for them up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(files := sorted(out.glob("*.json"))) < count:
        assert time.monotonic() < deadline, f"{len(files)} of {count} hooks ran"
        time.sleep(0.02)
    return [json.loads(f.read_text()) for f in files]


def gone(pid: int, within: float = 2.0) -> bool:
    """Whether process ``pid`` has ended (an unreaped zombie counts), waiting up to ``within``:
    a killed process closes its pipes a moment before it is dead."""
    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def most_at_once(log: Path) -> int:
    running = most = 0
    for mark in log.read_text().split():
        running += 1 if mark == "+" else -1
        most = max(most, running)
    return most


# -- what a hook is given -------------------------------------------------------


def test_a_string_record_is_in_variables_and_its_watch_line_on_stdin() -> None:
    given = hook_input("put", view("Bring a board, table 4", key="offer/soldering"))
    r = view("Bring a board, table 4", key="offer/soldering")
    assert given.variables == {
        "MESHNODE_EVENT": "put",
        "MESHNODE_KEY": "offer/soldering",
        "MESHNODE_AUTHOR": encode_node_id(AUTHOR.public_key),
        "MESHNODE_SEQ": "7",
        "MESHNODE_ID": r["id"],
        "MESHNODE_CREATED_MS": str(T0),
        "MESHNODE_EXPIRES_MS": "",
        "MESHNODE_DELETED": "0",
        "MESHNODE_VALUE": "Bring a board, table 4",
        "MESHNODE_VALUE_OMITTED": "",
    }
    line = given.stdin.decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"event": "put", "record": r}


def test_an_expiring_record_gives_its_expiry() -> None:
    r = record_view(record(AUTHOR, key="k", value="v", expires_ms=T0 + 5000))
    assert hook_input("put", r).variables["MESHNODE_EXPIRES_MS"] == str(T0 + 5000)


@pytest.mark.parametrize(
    ("value", "as_json"),
    [
        ({"cpu": 0.4, "n": [1, 2]}, '{"cpu": 0.4, "n": [1, 2]}'),
        ([True, None, "é"], '[true, null, "é"]'),
        (42, "42"),
        (b"\x00\xffbin", '{"$bin": "AP9iaW4="}'),
        ({"blob": b"\x01"}, '{"blob": {"$bin": "AQ=="}}'),
    ],
)
def test_other_values_are_json_in_their_own_variable(value: Any, as_json: str) -> None:
    given = hook_input("put", view(value))
    assert given.variables["MESHNODE_VALUE_JSON"] == as_json
    assert "MESHNODE_VALUE" not in given.variables
    assert json.loads(given.stdin)["record"]["value"] == json.loads(as_json)


def test_a_deletion_is_an_event_too() -> None:
    given = hook_input("delete", view(deleted=True))
    assert given.variables["MESHNODE_EVENT"] == "delete"
    assert given.variables["MESHNODE_DELETED"] == "1"
    assert given.variables["MESHNODE_VALUE_JSON"] == "null"
    assert "MESHNODE_VALUE" not in given.variables
    assert json.loads(given.stdin)["record"]["deleted"] is True


def test_a_value_with_a_nul_is_left_out_of_the_environment_and_flagged() -> None:
    given = hook_input("put", view("a\0b"))
    assert given.variables["MESHNODE_VALUE_OMITTED"] == "nul"
    assert "MESHNODE_VALUE" not in given.variables
    assert "MESHNODE_VALUE_JSON" not in given.variables
    assert json.loads(given.stdin)["record"]["value"] == "a\0b"


def test_a_value_whose_json_is_too_large_goes_to_stdin_only() -> None:
    # 16,000 control characters fit in a record and are 96,000 bytes of JSON.
    value = ["\x01" * 16_000]
    assert len(hook_input("put", view(value)).stdin) > MAX_ENV_VALUE_BYTES
    given = hook_input("put", view(value))
    assert given.variables["MESHNODE_VALUE_OMITTED"] == "too-large"
    assert "MESHNODE_VALUE_JSON" not in given.variables
    assert json.loads(given.stdin)["record"]["value"] == value


def test_the_environment_is_the_callers_without_secrets_or_stale_record_variables() -> None:
    inherited = {
        "PATH": "/usr/bin",
        "HOME": "/home/ada",
        "MESHNODE_HOME": "/var/lib/meshnode",
        "MESHNODE_NETWORK_KEY": "mesh1secret",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "MESHNODE_VALUE_JSON": "left over from an outer hook",
    }
    env = hook_environment(inherited, {"MESHNODE_VALUE": "v"}, socket="/run/mn.sock")
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/ada",
        "MESHNODE_HOME": "/var/lib/meshnode",
        "MESHNODE_SOCKET": "/run/mn.sock",
        "MESHNODE_VALUE": "v",
    }


def test_a_command_of_plain_words_is_split_and_run_without_a_shell() -> None:
    assert parse_command("notify-send 'New offer' \"table 4\"") == (
        "notify-send",
        "New offer",
        "table 4",
    )
    assert parse_command(["notify-send", "$MESHNODE_KEY", ";"]) == (
        "notify-send",
        "$MESHNODE_KEY",
        ";",
    )


@pytest.mark.parametrize(
    "command",
    [
        'notify-send "$MESHNODE_KEY" "$MESHNODE_VALUE"',
        'logger "${MESHNODE_KEY}"',
        "date; true",
        "cat | logger",
        "echo hi > /dev/null",
    ],
)
def test_a_command_in_the_shells_own_syntax_asks_for_a_shell(command: str) -> None:
    assert parse_command(command) == ("/bin/sh", "-c", command)


@pytest.mark.parametrize(
    "command",
    [
        "curl $MESHNODE_VALUE",
        "logger ${MESHNODE_KEY}",
        "echo 'a' $MESHNODE_KEY",
        'x "$A" $MESHNODE_ID',
    ],
)
def test_a_record_variable_outside_double_quotes_is_refused(command: str) -> None:
    with pytest.raises(HookSpecError, match="in double quotes"):
        parse_command(command)


def test_quoted_record_variables_and_other_variables_are_fine() -> None:
    for command in ['notify-send "$MESHNODE_KEY" "${MESHNODE_VALUE}"', "echo $HOME; date"]:
        assert parse_command(command)[:2] == ("/bin/sh", "-c")
    assert parse_command("echo '$MESHNODE_KEY'")[0] == "/bin/sh"  # single quotes: literal text


@pytest.mark.parametrize(
    ("command", "message"),
    [("", "needs a command"), ("   ", "needs a command"), ([], "needs a command")],
)
def test_a_command_that_cannot_be_used_is_an_error(command: Any, message: str) -> None:
    with pytest.raises(HookSpecError, match=message):
        parse_command(command)


def test_unbalanced_quotes_and_nul_are_errors() -> None:
    with pytest.raises(HookSpecError, match="No closing quotation"):
        parse_command("echo 'oops")
    with pytest.raises(HookSpecError, match="NUL"):
        parse_command(["echo", "a\0b"])
    with pytest.raises(HookSpecError, match="list of strings"):
        parse_command(["echo", 3])  # type: ignore[list-item]


def test_a_hook_matches_by_prefix_and_author() -> None:
    other = encode_node_id(identity(2).public_key)
    assert HookConfig(("true",), prefix="offer/").matches(view(key="offer/tea"))
    assert not HookConfig(("true",), prefix="offer/").matches(view(key="need/tea"))
    assert not HookConfig(("true",), author=other).matches(view())
    mine = encode_node_id(AUTHOR.public_key)
    assert HookConfig(("true",), prefix="offer/", author=mine).matches(view())


def test_a_report_line_cannot_be_forged_by_a_key_or_the_output() -> None:
    outcome = HookOutcome(
        ("notify-send",),
        "put",
        'offer/x"\nhook',
        0.012,
        exit_code=1,
        stderr=Captured(b"bad\nnews \x1b[31m\xe2\x80\xa8 \xff"),
    )
    line = describe(outcome)
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.startswith("event=hook_failed exit=1 op=put key=")
    assert 'command=notify-send ms=12 stderr="bad\\nnews \\u001b[31m\\u2028 \\\\xff"' in line


def test_drops_are_told_at_once_then_at_most_once_an_interval_and_when_drained() -> None:
    tally = DropTally(interval_s=10)
    assert tally.dropped(0.0) == 1
    assert [tally.dropped(t) for t in (1.0, 2.0, 3.0)] == [None, None, None]
    assert tally.dropped(10.5) == 4
    assert tally.dropped(11.0) is None
    assert tally.drained(12.0) == 1
    assert tally.drained(13.0) is None
    assert tally.total == 6


def test_drops_left_untold_by_a_burst_are_due_an_interval_after_the_last_line() -> None:
    tally = DropTally(interval_s=10)
    assert tally.due() is None
    assert tally.dropped(0.0) == 1
    assert tally.due() is None  # nothing untold
    assert [tally.dropped(t) for t in (1.0, 2.0)] == [None, None]
    assert tally.due() == 10.0
    assert tally.tell_due(9.0) is None
    assert tally.tell_due(10.0) == 2
    assert tally.due() is None and tally.tell_due(30.0) is None


# -- one run, blocking (the CLI's) ---------------------------------------------


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def run_once(hook: HookConfig, ev: dict[str, Any], cap: int = 65536) -> HookOutcome:
    return run_hook(hook, ev, hook_environment(os.environ, {}), cap)


@pytest.mark.parametrize(
    "ev",
    [event("tea\nand cake ✓ "), event({"n": [1, b"\x00"]}), event(deleted=True)],
    ids=["string", "structured", "deleted"],
)
def test_a_run_gets_the_record_byte_for_byte(out: Path, ev: dict[str, Any]) -> None:
    assert run_once(recorder(out), ev).ok
    (run,) = recorded(out, 1)
    given = hook_input(ev["event"], ev["record"])
    record_variables = {k: v for k, v in run["env"].items() if k != "MESHNODE_SOCKET"}
    assert record_variables == given.variables
    assert run["stdin"].encode() == given.stdin


def test_a_hostile_value_and_key_execute_nothing(out: Path, tmp_path: Path) -> None:
    target = tmp_path / "X"
    value = HOSTILE_VALUE.format(x=target)
    key = f"offer/$(touch${{IFS}}{target})`touch${{IFS}}{target}`;touch${{IFS}}{target}"
    shell_copy = tmp_path / "through-sh"
    # A shell hook, written as the docs say: the record only in quoted variables.
    via_sh = HookConfig(("sh", "-c", f'printf %s "$MESHNODE_VALUE" > {shell_copy}; echo "$0 $1"'))
    # And as the example is written: a string in the shell's syntax, run by sh.
    as_written = HookConfig(parse_command(f'printf %s "$MESHNODE_VALUE" >> {shell_copy}'))
    for hook in (recorder(out), via_sh, as_written):
        assert run_once(hook, event(value, key=key)).ok
    (run,) = recorded(out, 1)
    assert run["env"]["MESHNODE_VALUE"] == value
    assert run["env"]["MESHNODE_KEY"] == key
    assert json.loads(run["stdin"])["record"]["value"] == value
    assert shell_copy.read_text() == value * 2
    assert not target.exists()


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = HookConfig(("sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"), timeout_s=0.5)
    started = time.monotonic()
    outcome = run_once(hook, event())
    assert outcome.timed_out and outcome.signal == signal.SIGTERM
    assert time.monotonic() - started < 0.5 + KILL_GRACE_S
    assert all(gone(int(pid)) for pid in pids.read_text().split())
    assert describe(outcome).startswith("event=hook_timeout signal=SIGTERM")


def test_a_run_that_closes_its_output_is_still_held_to_its_timeout() -> None:
    hook = HookConfig(("sh", "-c", "exec >/dev/null 2>&1; sleep 60"), timeout_s=0.5)
    started = time.monotonic()
    outcome = run_once(hook, event())
    assert outcome.timed_out
    assert time.monotonic() - started < 0.5 + KILL_GRACE_S


def test_a_run_that_ignores_sigterm_gets_sigkill_after_the_grace(tmp_path: Path) -> None:
    hook = HookConfig(("sh", "-c", "trap '' TERM; sleep 60 & wait; wait"), timeout_s=0.3)
    started = time.monotonic()
    outcome = run_once(hook, event())
    took = time.monotonic() - started
    assert outcome.timed_out and outcome.signal == signal.SIGKILL
    assert 0.3 + KILL_GRACE_S <= took < 0.3 + 2 * KILL_GRACE_S + 0.5


def test_output_is_kept_up_to_the_cap_and_the_rest_counted() -> None:
    hook = HookConfig((sys.executable, "-c", "import sys; sys.stdout.write('x' * 200_000)"))
    outcome = run_once(hook, event(), cap=65536)
    assert outcome.ok
    assert outcome.stdout.data == b"x" * 65536 and outcome.stdout.discarded == 200_000 - 65536
    assert "stdout_discarded=134464" in describe(outcome)


def test_a_hook_that_reads_no_stdin_and_exits_is_fine() -> None:
    # A value too large for the pipe's buffer, never read: the run must still end.
    outcome = run_once(HookConfig(("true",)), event(["\x01" * 16_000]))
    assert outcome.ok


def test_a_command_that_does_not_exist_is_said_clearly() -> None:
    outcome = run_once(HookConfig(("no-such-hook-command",)), event())
    assert outcome.start_error == "command not found" and not outcome.ok
    with pytest.raises(HookSpecError, match="'no-such-hook-command': command not found"):
        hook_from_args("no-such-hook-command --flag", None)


# -- the CLI's runner: backlog, concurrency, reports ---------------------------


def cli_runner(
    hook: HookConfig, concurrency: int = 4, **kwargs: Any
) -> tuple[CliRunner, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    return CliRunner(hook, concurrency, out=stdout, err=stderr, **kwargs), stdout, stderr


def test_a_failure_is_reported_and_the_next_record_still_runs(out: Path) -> None:
    runner, _, err = cli_runner(recorder(out), concurrency=1)
    runner.submit(event(key="offer/fail"))
    runner.submit(event(key="offer/ok"))
    recorded(out, 2)
    runner.close(wait_s=5)
    assert "event=hook_failed exit=3 op=put key=offer/fail" in err.getvalue()
    assert "offer/ok" not in err.getvalue()


def test_output_is_shown_prefixed_with_the_key() -> None:
    hook = HookConfig(
        (sys.executable, "-c", "print('one'); print('two'); import sys; sys.stderr.write('oops')")
    )
    runner, stdout, stderr = cli_runner(hook)
    runner.submit(event(key="offer/tea"))
    deadline = time.monotonic() + 10
    while not stderr.getvalue():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.close()
    assert stdout.getvalue() == "[offer/tea] one\n[offer/tea] two\n"
    assert stderr.getvalue() == "[offer/tea] oops\n"


def test_a_missing_command_is_said_once_then_counted() -> None:
    runner, _, err = cli_runner(HookConfig(("no-such-hook-command",)), concurrency=1)
    for _ in range(5):
        runner.submit(event())
    deadline = time.monotonic() + 10
    while runner._backlog:  # each run fails at once: wait for the five, however slow the machine
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.1)  # the last one taken is under way
    runner.close()
    lines = err.getvalue().splitlines()
    assert sum("command not found" in line for line in lines) == 2, lines
    assert 'event=hook_not_started error="command not found"' in lines[0]
    assert lines[-1] == "meshnode: 4 more run(s) did not start: command not found"


def test_no_more_than_n_hooks_run_at_once(tmp_path: Path) -> None:
    log = tmp_path / "overlap"
    runner, _, err = cli_runner(HookConfig((sys.executable, "-c", OVERLAP, str(log))), 2)
    for n in range(2 + 3):
        runner.submit(event(key=f"offer/{n}"))
    deadline = time.monotonic() + 10
    while not log.exists() or log.read_text().count("-") < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.close()
    assert most_at_once(log) == 2
    assert err.getvalue() == ""


def test_a_full_backlog_drops_records_and_says_how_many(tmp_path: Path, out: Path) -> None:
    started_file, release = tmp_path / "started", tmp_path / "release"
    wait_for_release = (
        f"import os, time\nopen({str(started_file)!r}, 'w').close()\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
    )
    hook = HookConfig((sys.executable, "-c", wait_for_release + RECORDER, str(out)))
    runner, _, err = cli_runner(hook, concurrency=1, queue_size=2)
    runner.submit(event(key="offer/first"))
    deadline = time.monotonic() + 10
    while not started_file.exists():  # the first run has its slot; the backlog is empty
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    for n in range(5):
        runner.submit(event(key=f"offer/{n}"))
    assert time.monotonic() - started < 0.1, "submitting waited for a hook"
    release.touch()
    assert len(recorded(out, 3)) == 3
    runner.close(wait_s=5)
    text = err.getvalue()
    assert "1 record(s) dropped" in text  # at once
    assert "(3 dropped in all)" in text  # the rest, once the backlog had drained
    assert len(text.splitlines()) == 2


def test_closing_stops_running_hooks_and_runs_no_queued_ones(tmp_path: Path, out: Path) -> None:
    runner, _, err = cli_runner(recorder(out), concurrency=1)
    runner.submit(event(key="offer/hang"))
    runner.submit(event(key="offer/never"))
    (run,) = recorded(out, 1)
    started = time.monotonic()
    runner.close(wait_s=0.2)
    assert time.monotonic() - started < 0.2 + KILL_GRACE_S + 0.5
    assert gone(run["pid"])
    assert len(list(out.glob("*.json"))) == 1
    assert "event=hook_stopped signal=SIGTERM op=put key=offer/hang" in err.getvalue()
    assert "1 record(s) not run: the watch ended" in err.getvalue()


# -- the daemon's runner -------------------------------------------------------


class Daemonside:
    """A ``DaemonRunner`` on a real ``WatchHub``, with the records it is shown."""

    def __init__(self, hub: WatchHub, runner: DaemonRunner) -> None:
        self.hub = hub
        self.runner = runner
        self.seq = 0

    def store(self, key: str = "offer/tea", value: Any = "hot", deleted: bool = False) -> None:
        self.seq += 1
        value = None if deleted else value
        self.hub.publish([record(AUTHOR, key=key, value=value, seq=self.seq)])


@pytest.fixture
async def daemonside(nursery: trio.Nursery) -> Callable[..., Any]:
    async def start(
        hooks: list[HookConfig], concurrency: int = 4, hub: WatchHub | None = None, **kwargs: Any
    ) -> Daemonside:
        hub = WatchHub() if hub is None else hub  # an empty hub is falsy
        runner = DaemonRunner(hooks, concurrency, hub, **kwargs)
        nursery.start_soon(runner.run)
        await trio.testing.wait_all_tasks_blocked()
        return Daemonside(hub, runner)

    return start


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


def files(out: Path) -> int:
    return len(list(out.glob("*.json")))


@pytest.fixture
def hook_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="meshnode.runtime.hooks"):
        yield caplog


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_the_daemon_runs_a_hook_for_puts_and_deletions(
    daemonside: Callable[..., Any], out: Path
) -> None:
    node = await daemonside([recorder(out)])
    node.store(value={"n": [1, b"\x00"]})
    node.store(deleted=True)
    await wait_for(lambda: files(out) == 2)
    runs = [json.loads(f.read_text()) for f in out.glob("*.json")]
    events = sorted(r["env"]["MESHNODE_EVENT"] for r in runs)
    assert events == ["delete", "put"]
    put = next(r for r in runs if r["env"]["MESHNODE_EVENT"] == "put")
    assert put["env"]["MESHNODE_VALUE_JSON"] == '{"n": [1, {"$bin": "AA=="}]}'
    assert json.loads(put["stdin"])["record"]["author"] == encode_node_id(AUTHOR.public_key)


async def test_only_matching_records_run_a_hook(daemonside: Callable[..., Any], out: Path) -> None:
    other = encode_node_id(identity(2).public_key)
    node = await daemonside(
        [HookConfig(recorder(out).command, prefix="offer/"), HookConfig(("true",), author=other)]
    )
    node.store(key="need/tea")
    node.store(key="offer/tea")
    await wait_for(lambda: files(out) == 1)
    await trio.sleep(0.2)
    (run,) = [json.loads(f.read_text()) for f in out.glob("*.json")]
    assert run["env"]["MESHNODE_KEY"] == "offer/tea"


async def test_the_daemon_runs_nothing_a_hostile_record_holds(
    daemonside: Callable[..., Any], out: Path, tmp_path: Path
) -> None:
    target = tmp_path / "X"
    value = HOSTILE_VALUE.format(x=target)
    key = f"offer/$(touch${{IFS}}{target});`touch${{IFS}}{target}`"
    node = await daemonside([recorder(out)])
    node.store(key=key, value=value)
    await wait_for(lambda: files(out) == 1)
    (run,) = [json.loads(f.read_text()) for f in out.glob("*.json")]
    assert (run["env"]["MESHNODE_KEY"], run["env"]["MESHNODE_VALUE"]) == (key, value)
    assert not target.exists()


async def test_a_failure_is_logged_and_the_next_record_still_runs(
    daemonside: Callable[..., Any], out: Path, hook_log: pytest.LogCaptureFixture
) -> None:
    node = await daemonside([recorder(out)], concurrency=1)
    node.store(key="offer/fail")
    node.store(key="offer/ok")
    await wait_for(lambda: files(out) == 2)
    await wait_for(lambda: len(warnings_of(hook_log)) == 1)
    (line,) = warnings_of(hook_log)
    assert line.startswith("event=hook_failed exit=3 op=put key=offer/fail command=")


async def test_a_hook_past_its_timeout_is_killed_with_its_children(
    daemonside: Callable[..., Any], tmp_path: Path, hook_log: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    hook = HookConfig(("sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"), timeout_s=0.5)
    node = await daemonside([hook])
    node.store()
    await wait_for(lambda: len(warnings_of(hook_log)) == 1)
    assert warnings_of(hook_log)[0].startswith("event=hook_timeout signal=SIGTERM op=put")
    assert all(gone(int(pid)) for pid in pids.read_text().split())


async def test_a_missing_command_is_said_once(
    daemonside: Callable[..., Any], hook_log: pytest.LogCaptureFixture
) -> None:
    node = await daemonside([HookConfig(("no-such-hook-command",))], concurrency=1)
    for _ in range(3):
        node.store()
    await wait_for(lambda: sum("hook_not_started" in r.getMessage() for r in hook_log.records) == 3)
    said = warnings_of(hook_log)
    assert len(said) == 2  # when the hook was configured, and at the first record
    assert said[0] == (
        'event=hook_command_missing command=no-such-hook-command prefix="": not found on the PATH'
    )
    assert said[1].startswith('event=hook_not_started error="command not found" op=put')


async def test_no_more_than_n_hooks_run_at_once_in_the_daemon(
    daemonside: Callable[..., Any], tmp_path: Path
) -> None:
    log = tmp_path / "overlap"
    node = await daemonside([HookConfig((sys.executable, "-c", OVERLAP, str(log)))], 2)
    for n in range(2 + 3):
        node.store(key=f"offer/{n}")
    await wait_for(lambda: log.exists() and log.read_text().count("-") == 5)
    assert most_at_once(log) == 2


async def test_a_hanging_hook_never_stalls_the_node(
    daemonside: Callable[..., Any], hook_log: pytest.LogCaptureFixture
) -> None:
    # The node's watch buffer, small, but more than the two batches that trio's scheduler
    # may let in before the runner's task runs: falling behind would show at once.
    hub = WatchHub(buffer=128)
    node = await daemonside([HookConfig(("sleep", "60"))], 1, hub=hub, queue_size=8)
    started = time.monotonic()
    for batch in range(50):  # the node stores in steps; other tasks run between them
        node.hub.publish(
            [record(AUTHOR, key=f"offer/{batch}/{n}", seq=batch * 40 + n + 1) for n in range(40)]
        )
        await trio.sleep(0)
    assert time.monotonic() - started < 1.0
    await trio.testing.wait_all_tasks_blocked()  # the runner has taken the last batch
    assert hub.listeners == 1, "the hooks stopped listening"
    # One run started, one waiting for its slot, eight queued: the rest were dropped.
    assert 2000 - 10 <= node.runner.dropped <= 2000 - 8
    dropped_lines = [m for m in warnings_of(hook_log) if "hooks_dropped" in m]
    assert dropped_lines == [
        "event=hooks_dropped dropped=1 total=1 queue=8: the queue of runs was full"
    ], "drops are counted, not logged one by one"


async def test_drops_of_a_burst_are_told_an_interval_later_though_the_backlog_stays(
    daemonside: Callable[..., Any], hook_log: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(hooks_runtime, "DROP_LOG_INTERVAL_S", 0.2)
    node = await daemonside([HookConfig(("sleep", "60"))], 1, queue_size=2)
    node.hub.publish([record(AUTHOR, key=f"offer/{n}", seq=n + 1) for n in range(50)])
    await trio.testing.wait_all_tasks_blocked()
    await wait_for(lambda: len([m for m in warnings_of(hook_log) if "hooks_dropped" in m]) == 2)
    first, rest = [m for m in warnings_of(hook_log) if "hooks_dropped" in m]
    assert first.startswith("event=hooks_dropped dropped=1 total=1 ")
    assert f"total={node.runner.dropped} " in rest, "the whole burst is told, the sleep hangs on"


async def test_one_step_storing_more_than_a_watch_holds_misses_no_hook(
    daemonside: Callable[..., Any], out: Path
) -> None:
    # A watcher's buffer of 4 would overflow at once (an import stores 10,000 in one step):
    # the hooks take each record as it is stored, into their own queue.
    node = await daemonside([recorder(out)], hub=WatchHub(buffer=4))
    node.hub.publish([record(AUTHOR, key=f"flood/{n}", seq=n + 1) for n in range(10)])
    await wait_for(lambda: files(out) == 10)
    assert node.runner.dropped == 0


async def test_replace_takes_new_hooks_and_no_hooks_means_no_watch(
    daemonside: Callable[..., Any], out: Path, tmp_path: Path
) -> None:
    node = await daemonside([])
    assert node.hub.listeners == 0, "a daemon with no hooks does not listen"
    node.runner.replace([recorder(out)])
    await trio.testing.wait_all_tasks_blocked()
    assert node.hub.listeners == 1
    node.store(key="offer/one")
    await wait_for(lambda: files(out) == 1)
    second = tmp_path / "second"
    second.mkdir()
    node.runner.replace([recorder(second)], concurrency=1)
    node.store(key="offer/two")
    await wait_for(lambda: files(second) == 1)
    assert files(out) == 1
    node.runner.replace([])
    await trio.testing.wait_all_tasks_blocked()
    assert node.hub.listeners == 0


async def test_no_hooks_no_watch_on_virtual_time(
    daemonside: Callable[..., Any], autojump_clock: trio.abc.Clock
) -> None:
    node = await daemonside([])
    await trio.sleep(3600)
    assert node.hub.listeners == 0
    node.store()  # nothing watches: nothing runs, nothing is queued
    node.runner.replace([HookConfig(("true",), prefix="never/")])
    await trio.testing.wait_all_tasks_blocked()
    assert node.hub.listeners == 1


async def test_stopping_the_daemon_stops_running_hooks(out: Path) -> None:
    hub = WatchHub()
    runner = DaemonRunner([recorder(out)], 4, hub)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run)
        await trio.testing.wait_all_tasks_blocked()
        hub.publish([record(AUTHOR, key="offer/hang")])
        await wait_for(lambda: files(out) == 1)
        started = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - started < KILL_GRACE_S + 0.5
    (run,) = [json.loads(f.read_text()) for f in out.glob("*.json")]
    assert gone(run["pid"])


# -- end to end: meshnode watch --exec against a real daemon --------------------


@pytest.mark.slow
def test_watch_exec_runs_the_command_for_each_record_until_interrupted(
    daemon: Daemon, out: Path, tmp_path: Path
) -> None:
    target = tmp_path / "X"
    command = f"{sys.executable} -c '{RECORDER}' {out}"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshnode",
            "watch",
            *daemon.cli_args,
            "--prefix",
            "offer/",
            "--exec",
            command,
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
            value = HOSTILE_VALUE.format(x=target)
            assert daemon.cli("publish", "offer/a", "-", input=value).returncode == 0
            daemon.cli("publish", "other/b", "2")
            daemon.cli("delete", "offer/a")
            daemon.cli("publish", "offer/fail", "x")
            daemon.cli("publish", "offer/hang", "x")
            runs = recorded(out, 4)
        except BaseException:
            if watcher.poll() is None:
                watcher.kill()
            raise
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        _, stderr = watcher.communicate()
    by_key = {}
    for run in runs:
        by_key.setdefault(run["env"]["MESHNODE_KEY"], []).append(run)
    assert sorted(by_key) == ["offer/a", "offer/fail", "offer/hang"]
    put, delete = sorted(by_key["offer/a"], key=lambda r: r["env"]["MESHNODE_EVENT"], reverse=True)
    assert put["env"]["MESHNODE_VALUE"] == value
    assert json.loads(put["stdin"])["record"]["value"] == value
    assert delete["env"]["MESHNODE_EVENT"] == "delete"
    assert put["env"]["MESHNODE_SOCKET"] == str(daemon.socket)
    assert not target.exists()
    assert gone(by_key["offer/hang"][0]["pid"])
    assert "event=hook_failed exit=3 op=put key=offer/fail" in stderr
    assert "event=hook_stopped" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--exec", ""), "needs a command"),
        (("--exec", "echo 'open"), "No closing quotation"),
        (("--exec", "no-such-hook-command"), "command not found"),
        (("--exec", "true", "--exec-timeout", "0"), "--exec-timeout must be a positive"),
        (("--exec", "true", "--exec-timeout", "soon"), "--exec-timeout is a duration"),
        (("--exec", "true", "--exec-timeout", "2d"), "--exec-timeout must be at most a day"),
        (("--exec", "true", "--exec-concurrency", "0"), "--exec-concurrency"),
        (("--exec", "true", "--json"), "--json"),
        (("--exec-timeout", "5"), "go with --exec"),
    ],
)
def test_bad_exec_options_are_one_line_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", "watch", "--socket", str(tmp_path / "none"), *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
