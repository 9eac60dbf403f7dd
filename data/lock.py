"""One writer per folder: the exclusive lock that the store, `train --out`, `study --out`,
`predict --out` and `suggest --out` all take (`FOLDER/.lymph-writer.lock`).

An `fcntl.flock` on the lock file, which records the holder's pid, host, command and start
time; the kernel releases it when the holder exits, however it exits. A second writer gets an
error naming the holder. The holder is checked against the kernel's lock table
(`/proc/locks`): a lock held by a process that is not the one the file names (a non-lymph
process, or a file left by an earlier, dead holder) is named by its real pid and command, never
by the stale record.

The lock file is opened without following symlinks (`O_NOFOLLOW`) and must be a plain file with
one link holding a lymph lock record (or nothing): a symlink, a hard link or a foreign file in
its place is refused, never truncated.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lymph.data.errors import LymphError, OutputError
from lymph.data.io import explain_os_error

LOCK_FILE = ".lymph-writer.lock"
_LOCK_KEYS = frozenset({"pid", "host", "command", "since"})


def _read_record(fd: int) -> dict | None:
    """The lock file's record; {} if empty, None if it is not a lymph lock record."""
    try:
        raw = os.pread(fd, 65536, 0)
    except OSError:
        return None
    if not raw.strip():
        return {}
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(info, dict) or not set(info) <= _LOCK_KEYS or "pid" not in info:
        return None
    return info


def kernel_holders(fd: int) -> list[int] | None:
    """Pids holding a flock on the file behind `fd` per /proc/locks (None: table unreadable)."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a blocked waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            with contextlib.suppress(ValueError):
                pids.append(int(parts[4]))
    return pids


def _command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command unknown"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip() or "command unknown"


def describe_holder(fd: int) -> tuple[str, bool]:
    """Who holds the lock on `fd` and whether it is a lymph writer: the lock file's record when
    the kernel agrees that its pid holds the lock (or the kernel's table is unreadable), else
    the kernel's holder."""
    info = _read_record(fd) or {}
    holders = kernel_holders(fd)
    same_host = info.get("host") == socket.gethostname()
    if "pid" in info and (holders is None or not same_host or info.get("pid") in holders):
        return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}: "
                f"{info.get('command')}"), True
    if holders:
        pid = holders[0]
        return f"pid {pid} on this host, not a lymph writer: {_command_of(pid)}", False
    return "holder unknown", False


def _open_lock(lock: Path, error: type[LymphError]) -> int:
    """Open the lock file without following a symlink; refuse anything but a plain, singly
    linked file holding a lymph lock record (or nothing), so a foreign file is never touched."""
    fix = f"delete {lock} (lymph makes a new one) if no lymph is running on this folder"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{lock}: the lock file is a symlink; lymph never writes through one. "
                        f"{fix}") from None
        raise explain_os_error(lock, exc) from exc
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_nlink != 1:
        why = f"has {st.st_nlink} hard links (it may be another file's name)"
    elif _read_record(fd) is None:
        why = "holds data lymph did not write"
    if why is not None:
        os.close(fd)
        raise error(f"{lock}: the lock file {why}; it was left untouched. {fix}")
    return fd


@contextlib.contextmanager
def folder_lock(path: str | Path, *, what: str, error: type[LymphError] = OutputError,
                command: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold `path`'s exclusive writer lock for the block (creating the folder if needed).

    `what` names the folder in the refusal ("this store", "this run folder"); `error` is the
    error class raised for a second writer or a foreign lock file. On leaving, the record is
    cleared (a later refusal never names a finished holder) and a folder this call created that
    holds only the lock file is removed."""
    path = Path(path)
    lock = path / LOCK_FILE
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise explain_os_error(path, exc) from exc
    fd = _open_lock(lock, error)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise explain_os_error(lock, exc) from exc
            holder, by_lymph = describe_holder(fd)
            who = "lymph" if by_lymph else "process"
            raise error(f"{path}: another {who} is writing {what} ({holder}); wait for it to "
                        "finish, or write to another --out") from None
        locked = True
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "command": command or " ".join(sys.argv),
                "since": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError as exc:
            raise explain_os_error(lock, exc) from exc
        yield info
    finally:
        if locked:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):  # a first run that wrote nothing leaves nothing
                if created and [p.name for p in path.iterdir()] == [LOCK_FILE]:
                    lock.unlink()
                    path.rmdir()
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def run_folder_lock(path: str | Path, *, main: bool = True,
                    what: str = "this run folder") -> Iterator[dict[str, Any] | None]:
    """`folder_lock` on a run's --out (train, study, predict), an OutputError for a second
    writer; a no-op where `main` is false (the other ranks of a torchrun group, whose rank 0
    holds the lock)."""
    if not main:
        yield None
        return
    with folder_lock(path, what=what, error=OutputError) as info:
        yield info
