"""CLI latency: wall time of ``meshnode get KEY`` against a running daemon.

Goals (from the issue): the median ``meshnode get`` takes at most 150 ms, and
at most 60 ms more than the median ``python -c pass`` on the same machine
(``cli_get_median_ms <= 150`` and ``overhead_ms <= 60``).

A daemon is started on a new data dir and a key is published through the
control socket. Then the installed ``meshnode`` console script (the one beside
this interpreter) runs ``get KEY`` as a subprocess, alternating with
``python -c pass`` (this interpreter), 30 timed runs of each after 3 untimed
warm-up runs of each. The output of every ``get`` is checked. Both commands run
with bytecode caching on (``_common.child_env``): the warm-up runs fill the
cache, as ``pip install`` would, even where ``PYTHONDONTWRITEBYTECODE`` is set.

Prints ``cli_get_median_ms``, ``python_pass_median_ms`` and ``overhead_ms``
(plus details) as one JSON line, last on stdout.
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import child_env, emit, log, median_ms, meshnode_executable, running_daemon, temp_dir

RUNS = 30
WARMUP = 3
GOAL_MEDIAN_MS = 150.0
GOAL_OVERHEAD_MS = 60.0
KEY = "bench/cli-latency"
VALUE = "hello from the latency bench"


def timed_run(argv: list[str], env: dict[str, str], expect: str | None = None) -> float:
    """Run ``argv`` to completion; return its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or (expect is not None and done.stdout.strip() != expect):
        raise SystemExit(f"{argv} exited with {done.returncode}: {done.stdout!r} {done.stderr!r}")
    return elapsed


def main() -> None:
    with temp_dir() as tmp:
        home, socket_path = tmp / "node", tmp / "s.sock"
        env = child_env(tmp)
        with running_daemon(home, socket_path, env) as daemon:
            with daemon.client() as client:
                client.publish(KEY, VALUE)
            get = [
                meshnode_executable(),
                "get",
                KEY,
                "--data-dir",
                str(home),
                "--socket",
                str(socket_path),
            ]
            python_pass = [sys.executable, "-c", "pass"]
            log(
                f"{WARMUP} warm-up runs, then {RUNS} timed runs each of: {' '.join(get)}"
                f" / {' '.join(python_pass)}"
            )
            for _ in range(WARMUP):
                timed_run(get, env, VALUE)
                timed_run(python_pass, env)
            get_s: list[float] = []
            pass_s: list[float] = []
            for _ in range(RUNS):
                get_s.append(timed_run(get, env, VALUE))
                pass_s.append(timed_run(python_pass, env))
    get_ms, pass_ms = median_ms(get_s), median_ms(pass_s)
    overhead = round(get_ms - pass_ms, 2)
    log(
        f"meshnode get: median {get_ms:.1f} ms (min {min(get_s) * 1000:.1f},"
        f" max {max(get_s) * 1000:.1f}); goal <= {GOAL_MEDIAN_MS:.0f} ms:"
        f" {'met' if get_ms <= GOAL_MEDIAN_MS else 'MISSED'}"
    )
    log(
        f"python -c pass: median {pass_ms:.1f} ms (min {min(pass_s) * 1000:.1f},"
        f" max {max(pass_s) * 1000:.1f})"
    )
    log(
        f"overhead {overhead:.1f} ms; goal <= {GOAL_OVERHEAD_MS:.0f} ms:"
        f" {'met' if overhead <= GOAL_OVERHEAD_MS else 'MISSED'}"
    )
    emit(
        {
            "cli_get_median_ms": get_ms,
            "python_pass_median_ms": pass_ms,
            "overhead_ms": overhead,
            "cli_get_max_ms": round(max(get_s) * 1000, 2),
            "runs": RUNS,
        }
    )


if __name__ == "__main__":
    main()
