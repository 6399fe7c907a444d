"""Atomic file writes: a result is either fully there or not there at all.

The temporary file sits beside the target as `.<name>.<host>.<pid>-<random>.cpbtmp` (the writer's host and process
id in the name), so that a later write or load in the same directory can tell a temporary of a killed writer
(removed) from one that a live process is still writing (left alone). Temporaries written on another host (a shared
file system) and those of the older `.<name>.<random>.tmp` form (no pid; cleaned only by the results loader) are
removed once they are a day / an hour old (no atomic write takes that long).

Disk problems (no space, read-only file system, permission denied, quota) become one CpbenchError line naming the
path and the problem, and the temporary is removed: a failed write leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cpbench.base.errors import CpbenchError

TMP_SUFFIX = ".cpbtmp"
_TMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]{1,32})\.(?P<pid>\d+)-[0-9a-f]+\.cpbtmp$")
_LEGACY_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # tempfile.mkstemp names of cpbench < 0.2
LEGACY_TMP_AGE_S = 3600.0
FOREIGN_TMP_AGE_S = 86400.0

# errno values that mean "this location cannot take the file" rather than a bug
_DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]|errno[ =:]+(\d+)", re.IGNORECASE)


def disk_error(exc: BaseException) -> str | None:
    """'no space left on device' etc. when `exc` is a disk/permission problem (also pyarrow's errors, which carry
    the errno only in their text); None otherwise."""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc, OSError | RuntimeError):
        m = _ERRNO_IN_TEXT.search(str(exc))
        code = int(m.group(1) or m.group(2)) if m else None
        if code is None and "No space left on device" in str(exc):
            code = errno.ENOSPC
    return _DISK_ERRORS.get(code) if code is not None else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def is_temporary(path: Path) -> bool:
    """A temporary file of an atomic write (this form or the older one)."""
    return bool(_TMP.match(path.name) or _LEGACY_TMP.match(path.name))


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", os.uname().nodename if hasattr(os, "uname") else "host")[:32] or "host"


def _older_than(path: Path, seconds: float, now: float | None) -> bool:
    try:
        return (now or time.time()) - path.stat().st_mtime > seconds
    except OSError:
        return False


def stale(path: Path, now: float | None = None, legacy: bool = True) -> bool:
    """A temporary whose writer is gone: on this host, its pid is not running; written on another host, a day old;
    older names without a pid (only when `legacy`), an hour old."""
    m = _TMP.match(path.name)
    if m:
        if m["host"] != _host():
            return _older_than(path, FOREIGN_TMP_AGE_S, now)
        return int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    if legacy and _LEGACY_TMP.match(path.name):
        return _older_than(path, LEGACY_TMP_AGE_S, now)
    return False


def clean_stale_temporaries(
    directory: str | os.PathLike, recursive: bool = True, legacy: bool = True
) -> list[Path]:
    """Remove temporaries of interrupted writes under `directory` whose writer process is gone; return them.
    Files that cannot be removed (read-only tree) are left, silently: they are never merged as records anyway."""
    d = Path(directory)
    removed: list[Path] = []
    if not d.is_dir():
        return removed
    pattern = "**/.*" if recursive else ".*"
    now = time.time()
    for p in d.glob(pattern):
        if p.is_file() and is_temporary(p) and stale(p, now, legacy):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_host()}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it over `path` only if the block succeeds."""
    target = Path(path)
    if target.is_dir():  # os.replace would fail only after the work is done
        raise CpbenchError(f"{target}: is a directory, expected a file path to write")
    tmp = _temp_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(target.parent, recursive=False, legacy=False)  # only names this module wrote
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:  # parent is a file, read-only directory, ...: the user's output path is unusable
        raise CpbenchError(f"{target}: cannot write here ({disk_error(exc) or exc.strerror or exc})") from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        # created 0600; published results get the usual permissions (0666 minus the umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:
        problem = disk_error(exc)
        if problem is None:
            raise
        raise CpbenchError(f"{target}: cannot write ({problem}); nothing was written") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc): os.umask can only be read by
    setting it, which would briefly change process-wide state under other threads of a library caller."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, restored at once
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"  # serialised before any file exists
    write_text_atomic(path, text)


_WHY = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EDQUOT: "disk quota exceeded"}  # fmt: skip


def describe_os_error(exc: OSError) -> str:
    return _WHY.get(exc.errno or 0, exc.strerror or str(exc))


def os_error_to_cpbench(exc: OSError, where: Path | str, what: str) -> CpbenchError | None:
    """A one-line CpbenchError for disk-full / read-only / permission errors (None for other OSErrors)."""
    if exc.errno in _WHY:
        return CpbenchError(f"{where}: cannot write {what} ({describe_os_error(exc)})")
    return None
