"""How exposed the system unit is, as ``systemd-analyze security --offline=true`` rates it.

Goal (from the issue): an overall exposure of at most 2.0 for the system unit
(``exposure <= 2.0``; 0 is fully locked down, 10 is a unit with no hardening).

The unit is scored as ``meshnode service install`` writes it, with ExecStart=
pointing at this Python (``--offline`` looks at the program, and the default
``/usr/local/bin/meshnode`` may not exist here). The user unit is scored too, for
comparison: a user manager cannot apply most of the sandbox, so it rates higher.

Prints what still counts against the system unit (the settings rated ✗, with
their weight), then ``exposure``, ``user_exposure``, ``goal`` and the systemd
version as one JSON line, last on stdout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit, log

from meshnode.system.service import Target, render_unit

GOAL = 2.0
TIMEOUT_S = 60
_OVERALL = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def score(analyze: str, unit: Path, *, user: bool, env: dict[str, str]) -> tuple[float, list[str]]:
    """The overall exposure of ``unit`` and the lines of the settings that raise it."""
    argv = [analyze, *(["--user"] if user else []), "security", "--offline=true", str(unit)]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )
    found = _OVERALL.search(result.stdout)
    if found is None:
        sys.exit(f"systemd-analyze gave no score (exit {result.returncode}): {result.stderr}")
    exposed = [line.rstrip() for line in result.stdout.splitlines() if line.startswith("✗")]
    return float(found.group(1)), exposed


def main() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        sys.exit("systemd-analyze is not installed (Debian: apt-get install systemd)")
    version = subprocess.run(
        [analyze, "--version"], capture_output=True, text=True, timeout=TIMEOUT_S, check=True
    ).stdout.split()[1]
    command = (sys.executable, "-m", "meshnode")
    with tempfile.TemporaryDirectory(prefix="mnunit") as tmp:
        runtime = Path(tmp, "runtime")  # a user manager needs its runtime directory
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        scores = {}
        for user in (False, True):
            unit = Path(tmp, "user" if user else "system", "meshnode.service")
            unit.parent.mkdir()
            unit.write_text(render_unit(Target(command=command, user=user)))
            scores[user] = score(analyze, unit, user=user, env=env)
    exposure, exposed = scores[False]
    log(f"systemd {version}: systemd-analyze security --offline=true meshnode.service")
    print("what still counts against the system unit (exposure added by each):")
    for line in exposed:
        print(f"  {line}")
    print(f"system unit: {exposure:.1f}   user unit: {scores[True][0]:.1f}   goal: <= {GOAL:.1f}")
    emit(
        {
            "exposure": exposure,
            "user_exposure": scores[True][0],
            "goal": GOAL,
            "ok": exposure <= GOAL,
            "systemd": version,
        }
    )


if __name__ == "__main__":
    main()
