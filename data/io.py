"""Atomic file writes: the one home for "write a temporary file beside the target, then rename".

A reader never sees half a file: every output lymph writes (JSON, CSV, PNG, TIFF, checkpoints)
goes through :func:`atomic_path`, which yields a temporary path in the target's own folder (same
file system, so ``os.replace`` is atomic), fsyncs it and renames it over the target only when the
block ends without an exception. On failure the temporary file is removed and the old target, if
any, is left as it was.

Temporary names are ``.<name>.<pid>.tmp``; :func:`remove_stale_temps` clears those a killed
writer left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lymph.data.errors import OutputError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "explain_os_error",
    "remove_stale_temps",
    "temp_name",
]


def temp_name(path: Path) -> Path:
    """The temporary path :func:`atomic_path` writes before renaming onto ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        os.fsync(fh.fileno())


def explain_os_error(path: Path, exc: OSError) -> OutputError:
    """An OutputError for ``exc`` raised while writing ``path``: why, in words, and the fix."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable (read-only mount or permissions)"
        fix = "choose another --out or fix its permissions"
    elif exc.errno == errno.ENOSPC:
        why = "the disk is full"
        fix = "free space or choose another --out; nothing already written was changed"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        why = "a parent of it is a regular file, not a folder"
        fix = "choose another --out"
    else:
        why = exc.strerror or str(exc)
        fix = "check the path"
    return OutputError(f"cannot write {path}: {why}; {fix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    OS errors (read-only folder, full disk, a file where a folder should be) become
    :class:`OutputError` naming ``path``; the old ``path`` is untouched and no temporary file is
    left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise explain_os_error(path, exc) from exc
    tmp = temp_name(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise explain_os_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2,
                      sort_keys: bool = True, allow_nan: bool = True) -> Path:
    """Write ``data`` as JSON (one trailing newline) to ``path`` atomically; returns ``path``."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan)
    return atomic_write_text(path, text + "\n")


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.<pid>.tmp`` files a killed writer of ``path`` left behind (any pid but
    this process's own); returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    own = temp_name(path)
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        if p != own:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
