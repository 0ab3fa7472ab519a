"""The data dir's files that are not the store: the lock and the identity key.

``identity.key`` holds the node's Ed25519 private key as PKCS#8 PEM (readable
by ``openssl pkey``). Like ssh, the daemon refuses a key file that group or
others may read: a leaked key lets anyone write as this node.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import IO

from meshnode.core.identity import Identity
from meshnode.system.keyfile import KeyFileError, decode_key, encode_key

KEY_FILE = "identity.key"
LOCK_FILE = "daemon.lock"
STORE_FILE = "store.sqlite3"


class DataDirError(Exception):
    """The data dir or one of its files cannot be used; the message says how to fix it."""


class AlreadyRunning(DataDirError):
    pass


def prepare(home: Path) -> None:
    """Create the data dir (mode 0700) if it does not exist."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the data dir {home}: {exc.strerror}") from exc
    if not home.is_dir():
        raise DataDirError(f"the data dir {home} is not a directory")


class DataDirLock:
    """An exclusive ``flock`` on the data dir: one daemon per data dir.

    The kernel drops the lock when the process dies, so a ``kill -9`` leaves no
    stale lock behind; the pid in the file is only there for the error message.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._file: IO[str] | None = None

    @staticmethod
    def holder(home: Path) -> str | None:
        """The pid of the daemon holding ``home``'s lock (``"unknown"`` if unsaid), or None.

        Looks without taking the lock or writing a byte.
        """
        try:
            handle = open(home / LOCK_FILE, encoding="ascii")  # noqa: SIM115 - closed below
        except OSError:
            return None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return handle.read().strip() or "unknown"
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 - held until release
        except OSError as exc:
            raise DataDirError(f"cannot open the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(
                    f"another meshnode daemon (pid {pid}) is already using {self.path.parent}"
                    f" (lock {self.path}); stop it first or use another --data-dir"
                ) from None
            raise DataDirError(f"cannot lock {self.path}: {exc.strerror}") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.write_text("")
            self._file.close()
            self._file = None


def load_or_create_identity(home: Path, new_seed: bytes) -> tuple[Identity, bool]:
    """The node's identity from ``identity.key``; created from ``new_seed`` if absent.

    Returns the identity and whether it was created now.
    """
    identity = load_identity(home)
    if identity is not None:
        return identity, False
    identity = Identity(new_seed)
    _write_key(home / KEY_FILE, identity)
    return identity, True


def load_identity(home: Path) -> Identity | None:
    """The node's identity from ``identity.key``; None if the node has never run."""
    path = home / KEY_FILE
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataDirError(f"cannot read the identity key {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise DataDirError(f"the identity key {path} is not a file; {_KEY_ADVICE}")
    if info.st_mode & 0o077:
        raise DataDirError(
            f"the identity key {path} is readable by others (mode"
            f" {stat.S_IMODE(info.st_mode):04o}); a leaked key lets anyone write as this"
            f" node. Fix it with: chmod 600 {path}"
        )
    try:
        seed = decode_key(path.read_bytes())
    except KeyFileError as exc:
        raise DataDirError(f"the identity key {path} is {exc}; {_KEY_ADVICE}") from exc
    except OSError as exc:
        raise DataDirError(f"cannot read the identity key {path}: {exc.strerror or exc}") from exc
    return Identity(seed)


# The key is the node's id: a new one makes a new node, whose records its peers hold apart.
_KEY_ADVICE = (
    "restore it from a backup, or move it away and the node starts again as a new node,"
    " with a new id"
)


def _write_key(path: Path, identity: Identity) -> None:
    """Write the key atomically, mode 0600 from the first byte."""
    pem = encode_key(identity.seed())
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DataDirError(f"cannot write the identity key {path}: {exc.strerror}") from exc
