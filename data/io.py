"""Atomic file writes: the one home for "write a temporary file beside the target, then rename".

A reader never sees half a file: every output lymph writes (JSON, CSV, PNG, TIFF, checkpoints)
goes through :func:`atomic_path`, which yields a temporary path in the target's own folder (same
file system, so ``os.replace`` is atomic), fsyncs it and renames it over the target only when the
block ends without an exception. On failure the temporary file is removed and the old target, if
any, is left as it was.

Temporary names are ``.<name>.<pid>.tmp``; :func:`remove_stale_temps` clears those a killed
writer left behind.

:class:`OutputManifest` keeps ``.lymph-outputs.json`` in an output folder: what lymph wrote there
(size, sha256), so that a command never overwrites a file it did not write (an annotation, a
user's edit) unless told to (``--force``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lymph.data.errors import ConfigError, OutputError

__all__ = [
    "MANIFEST_NAME",
    "OutputManifest",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "ensure_dir",
    "explain_os_error",
    "as_paths",
    "file_lock",
    "remove_idle_locks",
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
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``. A path with non-UTF-8
    bytes inside ``text`` (decoded by Python with surrogate escapes) is written back as those
    bytes, not refused with a UnicodeEncodeError."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2,
                      sort_keys: bool = True, allow_nan: bool = True) -> Path:
    """Write ``data`` as JSON (one trailing newline) to ``path`` atomically; returns ``path``."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan)
    return atomic_write_text(path, text + "\n")


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.<pid>.tmp`` files a killed writer of ``path`` left behind (any pid but
    this process's own); returns what was removed."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    own = temp_name(path)
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        if p != own:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as an existing folder (made if missing); OutputError naming it when it cannot be
    made (read-only mount, permissions, a regular file in the way)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write into {path}: it is a regular file, not a folder; "
                          "choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise explain_os_error(path, exc) from exc
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock on the lock file ``path`` for the block (POSIX flock; no lock where
    fcntl is missing). OutputError when the lock file cannot be created (read-only folder)."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fh = open(path, "a")  # noqa: SIM115 - held for the block
    except OSError as exc:
        raise explain_os_error(path, exc) from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def as_paths(config: Any, names: Sequence[str]) -> None:
    """In a frozen dataclass's ``__post_init__``: turn the fields ``names`` that are set (str or
    PathLike) into ``Path`` (None stays None). The one coercion every config shares."""
    for name in names:
        value = getattr(config, name)
        if value is not None:
            object.__setattr__(config, name, Path(value))


def remove_idle_locks(folder: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Remove the per-file lock files ``names`` of ``folder`` once the run that used them is
    over: only while the caller holds the folder's writer lock (no other lymph process writes
    there), and only empty plain files (a symlink or a file with content is not lymph's: kept)."""
    for name in names:
        path = Path(folder) / name
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_nlink == 1:
            with contextlib.suppress(OSError):
                path.unlink()


# --- the output manifest ------------------------------------------------------------------------

MANIFEST_NAME = ".lymph-outputs.json"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_state(path: Path) -> dict[str, Any] | None:
    """{"size", "sha256"} of an existing file, None if there is none."""
    try:
        return {"size": path.stat().st_size, "sha256": _digest(path)} if path.exists() else None
    except OSError:
        return None


def _pending_owned(entry: dict[str, Any], path: Path) -> bool:
    """A pending claim owns ``path`` when the file was absent when it was claimed (lymph's
    atomic rename put it there), or still holds what the claim recorded. A claim without that
    record (not one lymph writes) owns nothing: a foreign file marked pending is kept."""
    if "before" not in entry:
        return False
    before = entry["before"]
    if before is None:
        return True
    return isinstance(before, dict) and before == file_state(path)


class OutputManifest:
    """What lymph wrote into one output folder, so that it never overwrites anything else.

    ``folder/.lymph-outputs.json`` maps each file's path relative to the folder to its
    ``size`` and ``sha256`` as lymph wrote it (``{"pending": true}`` while it is being written,
    so a writer killed mid-way still owns the file on the rerun). Before writing a file,
    :meth:`check` refuses (OutputError naming it) a file that exists and is not in the manifest,
    or whose content changed since lymph wrote it (an annotation, a file the user edited);
    ``force=True`` overwrites anyway. :meth:`writing` wraps one write: check, mark pending,
    write, record. Updates are merged under a lock, so several processes may share a folder.
    """

    def __init__(self, folder: str | os.PathLike[str], *, force: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.force = force
        self._digests: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime)

    def _digest(self, path: Path) -> str:
        """sha256 of ``path``, hashed once per version of the file (its inode, size and mtime)
        in this manifest's life: a rerun's check and its reuse test read a slide once."""
        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = _digest(path)
        return self._digests[key]

    def _key(self, path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            raise OutputError(f"{path} is outside the output folder {self.folder}") from None

    def entries(self) -> dict[str, dict[str, Any]]:
        """The manifest's entries ({} when there is none yet or it is unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return files if isinstance(files, dict) else {}

    def owns(self, path: Path, entries: dict[str, dict[str, Any]] | None = None) -> bool:
        """Whether lymph may overwrite ``path``: missing, pending, or unchanged since written."""
        path = Path(path)
        if not path.exists():
            return True
        entry = (self.entries() if entries is None else entries).get(self._key(path))
        if not isinstance(entry, dict):
            return False
        if entry.get("pending"):  # claimed by a write that may have been killed mid-way
            return _pending_owned(entry, path)
        try:
            return entry.get("size") == path.stat().st_size and entry.get(
                "sha256") == self._digest(path)
        except OSError:
            return False

    def recorded(self, path: str | os.PathLike[str],
                 entries: dict[str, dict[str, Any]] | None = None) -> bool:
        """Whether ``path`` is a file lymph finished writing and nobody changed since (not
        merely claimed as pending, nor absent)."""
        path = Path(path)
        entry = (self.entries() if entries is None else entries).get(self._key(path))
        return (path.is_file() and isinstance(entry, dict) and not entry.get("pending")
                and "sha256" in entry and self.owns(path, entries))

    def written(self, path: str | os.PathLike[str],
                entries: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """{"size", "sha256"} of ``path`` as lymph recorded it when it finished writing it, or
        None (never recorded, or still pending). Says nothing of the file as it is now."""
        entry = (self.entries() if entries is None else entries).get(self._key(Path(path)))
        if not isinstance(entry, dict) or entry.get("pending") or "sha256" not in entry:
            return None
        return {"size": entry.get("size"), "sha256": entry["sha256"]}

    def check(self, *paths: str | os.PathLike[str]) -> None:
        """OutputError naming the first of ``paths`` lymph did not write (or that changed since
        it did), unless ``force``."""
        if self.force:
            return
        entries = self.entries()
        for path in map(Path, paths):
            if not self.owns(path, entries):
                raise OutputError(
                    f"{path} exists and lymph did not write it (or it changed since; it is not "
                    f"in {MANIFEST_NAME}): refusing to overwrite it; choose another --out, or "
                    "pass --force to overwrite"
                )

    def ensure_writable(self) -> None:
        """Make the folder and take the manifest's lock once: OutputError now, before any work,
        when the folder is read-only."""
        with file_lock(self.folder / f"{MANIFEST_NAME}.lock"):
            pass

    def _update(self, changes: dict[str, dict[str, Any]]) -> None:
        with file_lock(self.folder / f"{MANIFEST_NAME}.lock"):
            files = self.entries()
            files.update(changes)
            atomic_write_json(self.path, {"format": "lymph-outputs", "version": 1,
                                          "files": dict(sorted(files.items()))})

    def mark_pending(self, *paths: str | os.PathLike[str]) -> None:
        """Claim ``paths`` before writing them, recording what each held then ("before": None
        when absent), so that a rerun after a kill knows the file it may overwrite."""
        self._update({self._key(Path(p)): {"pending": True, "before": file_state(Path(p))}
                      for p in paths})

    def record(self, *paths: str | os.PathLike[str]) -> None:
        """Record ``paths`` as lymph wrote them now (size and sha256)."""
        self._update({self._key(Path(p)): {"size": Path(p).stat().st_size,
                                           "sha256": self._digest(Path(p))} for p in paths})

    @contextlib.contextmanager
    def writing(self, path: str | os.PathLike[str]) -> Iterator[Path]:
        """Check ``path``, mark it pending, let the block write it, record what it wrote."""
        path = Path(path)
        self.check(path)
        self.mark_pending(path)
        yield path
        self.record(path)


def decode_text(
    data: bytes, path: str | os.PathLike[str], *, what: str, fix: str,
    error: type[Exception] = ConfigError,
) -> str:
    """``data`` (the bytes of ``path``) as UTF-8 text (a BOM is dropped): ``error``, one line
    naming the file, the problem and ``fix``, for UTF-16 text (BOM, or every other byte NUL in
    the first 4 KiB), NUL bytes (a binary file) or bytes that are not UTF-8. The one text check
    of every CSV lymph reads (labels, detections, scores)."""
    head = data[:4096]
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff") or (
        len(head) >= 2 and (head[1::2].count(0) > len(head) // 4
                            or head[0::2].count(0) > len(head) // 4))  # fmt: skip
    if utf16:
        raise error(f"{path}: the {what} is UTF-16 text; {fix}")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise error(f"{path}: the {what} holds NUL bytes (at offset {nul}: a binary file, not "
                    f"text); {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: the {what} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start}); {fix}") from None
