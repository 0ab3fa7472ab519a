"""Where a node keeps its files, and where its control socket lives.

Shared by the daemon and the CLI so both derive the same paths from the same
``--data-dir``. Precedence: explicit argument, then environment
(``MESHNODE_HOME``, ``MESHNODE_SOCKET``), then the XDG base directories.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# sockaddr_un.sun_path holds 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH_BYTES = 107
# The system service's socket (systemd/meshnode.service: RuntimeDirectory=meshnode).
SYSTEM_SOCKET = Path("/run/meshnode/control.sock")


class PathError(Exception):
    """A path that cannot be used (for example a socket path that is too long)."""


def data_dir(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """The node's home: ``--data-dir``, ``$MESHNODE_HOME``, ``$XDG_DATA_HOME/meshnode``."""
    if explicit:
        chosen = Path(explicit)
    elif env.get("MESHNODE_HOME"):
        chosen = Path(env["MESHNODE_HOME"])
    elif env.get("XDG_DATA_HOME"):
        chosen = Path(env["XDG_DATA_HOME"]) / "meshnode"
    else:
        chosen = Path(env.get("HOME", "~")) / ".local" / "share" / "meshnode"
    return Path(os.path.abspath(chosen.expanduser()))


def socket_path(
    home: Path, explicit: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Path:
    """The control socket for the node living in ``home``.

    Under ``$XDG_RUNTIME_DIR/meshnode/`` when that is set (a tmpfs owned by the
    user), named after the data dir so several nodes can share one machine;
    otherwise ``control.sock`` inside the data dir.
    """
    if explicit:
        chosen = Path(os.path.abspath(Path(explicit).expanduser()))
    elif env.get("MESHNODE_SOCKET"):
        chosen = Path(os.path.abspath(Path(env["MESHNODE_SOCKET"]).expanduser()))
    elif env.get("XDG_RUNTIME_DIR"):
        import hashlib  # here, not at the top: the CLI's start-up time counts

        tag = hashlib.sha256(str(home).encode()).hexdigest()[:8]
        chosen = Path(env["XDG_RUNTIME_DIR"]) / "meshnode" / f"{home.name}-{tag}.sock"
    else:
        chosen = home / "control.sock"
    if len(os.fsencode(chosen)) > MAX_SOCKET_PATH_BYTES:
        raise PathError(
            f"the control socket path {chosen} is longer than {MAX_SOCKET_PATH_BYTES} bytes;"
            " choose a shorter one with --socket or $MESHNODE_SOCKET"
        )
    return chosen


def client_socket(
    data_dir_arg: str | os.PathLike[str] | None,
    socket_arg: str | os.PathLike[str] | None,
    env: Mapping[str, str],
) -> Path:
    """The socket a client talks to: this user's node's, else the system service's.

    When nothing names a node (no ``--data-dir`` or ``--socket``, no
    ``$MESHNODE_HOME`` or ``$MESHNODE_SOCKET``) and this user has no node of its
    own (no data dir), ``meshnode status`` on a Pi means the node the system service runs, as
    ``systemctl status`` would: so a member of the ``meshnode`` group, or root,
    needs no ``--socket`` for it.
    """
    home = data_dir(data_dir_arg, env)
    chosen = socket_path(home, socket_arg, env)
    named = data_dir_arg or socket_arg or env.get("MESHNODE_HOME") or env.get("MESHNODE_SOCKET")
    # A user who has a node, running or not, means that one: a publish while it is down
    # must fail, not land on the system node.
    own = os.path.exists(chosen) or os.path.exists(home)
    if not named and not own and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return chosen
