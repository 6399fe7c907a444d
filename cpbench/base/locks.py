"""Cross-process locks and staged directories: one writer per checkpoint, per converted model, per scored cell.

```python
with file_lock(path.with_name(path.name + ".lock"), what="scoring cell X"):   # waits; timeout names the holder
    ...                                                                        # only one process in here
held = try_acquire(path, what="unit U")                                          # no wait: None when taken
if held is not None:
    ...; held.release()                                                          # e.g. a sweep's claim on a unit
with staged_dir(final, what="checkpoint K") as st:                              # one builder per directory
    if not st.done:                       # another process committed it while we waited: reuse
        build(st.tmp); st.commit()        # marker written LAST, then renamed into place
```

Why flock: the kernel releases an flock when its holder dies (SIGKILL, OOM, power loss of the holder's host on NFS
with lock recovery), so "can I take the lock?" is the liveness test of whoever was writing. That is what makes
leftovers recoverable: a staging folder or temp file whose key's lock can be taken belongs to a dead process and is
removed. The owner (pid, host, process start time, what) is written inside the lock file while it is held, for the
one-line message of a waiter that times out; `owner_alive` tells whether such an owner still runs (same host).
Every lock here (file_lock, try_lock, try_acquire, and the sweep's claims, cpbench.sweep.claims) is taken by
`_try_acquire`: flock the file at the path, then check that the locked file is still the one at the path.
Lock files are removed on release (while still held; a waiter that locked the unlinked inode notices and retries), so
a finished run leaves none behind, and one left by a killed process is swept by the next run.

NFS: Linux emulates flock with POSIX byte-range locks over NFS (lockd), so the locks hold across hosts sharing a cache;
Lustre needs the `flock` mount option. The timeout defaults to `$CPBENCH_LOCK_TIMEOUT` seconds (24 h).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from cpbench.base.errors import CpbenchError
from cpbench.base.stamps import utc_now

DEFAULT_TIMEOUT_S = 24 * 3600.0
MARKER = ".cpbench-complete.json"  # written last into a staged directory; a directory without it is not trusted
STAGING_PREFIX = ".tmp-"


class LockTimeout(CpbenchError):
    """Waited longer than the timeout for a lock another process holds."""


# --------------------------------------------------------------------------------------------------- owners
@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    start: str | None  # process start time (Linux: /proc/<pid>/stat field 22), tells a reused pid apart
    since: str  # when it took the lock (UTC)
    what: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} ({self.what})"


def _process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its closing parenthesis
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def current_owner(what: str) -> Owner:
    return Owner(os.getpid(), socket.gethostname(), _process_start(os.getpid()), utc_now(), what)


def owner_alive(owner: Owner) -> bool | None:
    """True/False for an owner on this host; None when it ran on another host (liveness unknown from here)."""
    if owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    start = _process_start(owner.pid)
    return not (owner.start and start and start != owner.start)  # a different process reusing the pid is not it


def read_owner(path: Path) -> Owner | None:
    try:
        raw = json.loads(Path(path).read_text())
        return Owner(int(raw["pid"]), str(raw["host"]), raw.get("start"), str(raw.get("since", "?")),
                     str(raw.get("what", "?")))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------- locks
def lock_timeout() -> float:
    env = os.environ.get("CPBENCH_LOCK_TIMEOUT")
    if not env:
        return DEFAULT_TIMEOUT_S
    try:
        return max(0.0, float(env))
    except ValueError:
        raise CpbenchError(f"CPBENCH_LOCK_TIMEOUT must be a number of seconds, got {env!r}") from None


def _io_error(path: Path, exc: OSError) -> CpbenchError:
    return CpbenchError(f"{path}: cannot create lock file ({exc.strerror or exc})")


def _try_acquire(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path` (the file that is at `path` now), or None if another holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError as exc:  # parent directory not there (yet)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                raise _io_error(path, exc) from None
            continue
        except OSError as exc:
            raise _io_error(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise _io_error(path, exc) from None
        try:  # the holder before us may have unlinked the file we opened: lock the one at `path` instead
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    try:
        os.unlink(path)  # while still held: see the module docstring
    except OSError:
        pass
    os.close(fd)  # closing drops the flock


class HeldLock:
    """A lock this process holds (from `try_acquire`): the flock on the file at `path`, until `release()`."""

    def __init__(self, path: Path, fd: int, owner: Owner | None):
        self.path, self.owner, self._fd = path, owner, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (while still held) and drop the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _release(self.path, fd)


def _write_owner(fd: int, owner: Owner) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(owner)) + "\n").encode(), 0)
    except OSError:
        pass  # diagnostics only: a full disk must not break the lock itself


def try_acquire(path: str | os.PathLike, what: str | None = None) -> HeldLock | None:
    """Non-blocking: the lock on `path` as a `HeldLock` the caller releases, or None when another process holds it.
    With `what`, the owner (pid, host, start, since, what) is written inside for other processes' messages."""
    p = Path(path)
    fd = _try_acquire(p)
    if fd is None:
        return None
    owner = None
    if what is not None:
        owner = current_owner(what)
        _write_owner(fd, owner)
    return HeldLock(p, fd, owner)


@contextmanager
def file_lock(
    path: str | os.PathLike,
    what: str = "",
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    poll: float = 0.05,
) -> Iterator[Owner]:
    """Hold an exclusive lock on `path` for the block; wait for another holder up to `timeout` seconds (default
    `lock_timeout()`), then raise LockTimeout naming the holder. `on_wait` gets one line when waiting starts."""
    p = Path(path)
    limit = lock_timeout() if timeout is None else timeout
    t0 = time.monotonic()
    told = False
    while True:
        held = try_acquire(p, what)
        if held is not None:
            break
        if not told and on_wait is not None:
            holder = read_owner(p)
            on_wait(f"waiting for {what or p.name}: locked by {holder.describe() if holder else 'another process'}")
            told = True
        if time.monotonic() - t0 >= limit:
            holder = read_owner(p)
            raise LockTimeout(f"{p}: still locked after {limit:g} s by "
                              f"{holder.describe() if holder else 'another process'}; waiting for {what or p.name} "
                              f"(CPBENCH_LOCK_TIMEOUT sets the limit)")  # fmt: skip
        time.sleep(poll)
        poll = min(poll * 1.5, 1.0)
    try:
        yield held.owner
    finally:
        held.release()


@contextmanager
def try_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Non-blocking: yields True while holding the lock, False when another process holds it."""
    held = try_acquire(path)
    if held is None:
        yield False
        return
    try:
        yield True
    finally:
        held.release()


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file guarding `target` (a file or directory): `<parent>/.<name>.lock`."""
    t = Path(target)
    return t.with_name(f".{t.name}.lock")


# --------------------------------------------------------------------------------------------------- staging
def is_complete(directory: str | os.PathLike) -> bool:
    """A committed staged directory: its marker parses and lists every file with its size. Nothing else is trusted
    (a directory holding only some files, e.g. after a crash of an older version, is not complete)."""
    d = Path(directory)
    try:
        files = json.loads((d / MARKER).read_text())["files"]
        return isinstance(files, dict) and bool(files) and all(
            (d / rel).is_file() and (d / rel).stat().st_size == int(size) for rel, size in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_marker(directory: Path, extra: dict | None = None) -> None:
    """Flush every file of `directory` to disk, then write the marker listing them (the last write)."""
    files: dict[str, int] = {}
    for f in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MARKER):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        files[f.relative_to(directory).as_posix()] = f.stat().st_size
    if not files:
        raise CpbenchError(f"{directory}: nothing was written; not committing an empty directory")
    tmp = directory / f"{MARKER}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"files": files, "committed_at": utc_now(), **(extra or {})}, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / MARKER)
    _fsync_dir(directory)


@dataclass
class Staged:
    final: Path
    tmp: Path | None  # None when `done`
    done: bool  # the final directory is complete (maybe committed by another process while we waited)

    def commit(self, extra: dict | None = None) -> Path:
        """Marker last, then one rename into place. Call once every file is written and verified."""
        if self.tmp is None:
            raise CpbenchError(f"{self.final}: nothing staged to commit")
        write_marker(self.tmp, extra)
        if self.final.exists():  # an incomplete leftover (we hold the lock, so nobody is building it)
            shutil.rmtree(self.final)
        os.rename(self.tmp, self.final)
        _fsync_dir(self.final.parent)
        self.tmp, self.done = None, True
        return self.final


def staging_dirs(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f"{STAGING_PREFIX}{final.name}.*"))


@contextmanager
def staged_dir(
    final: str | os.PathLike,
    what: str = "",
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Staged]:
    """Build `final` in a private staging directory under its lock. Yields `done=True` (no staging) when `final` is
    already complete, e.g. because another process built it while this one waited. Stale staging folders of the same
    target (their builder is dead: we hold the lock) and an incomplete `final` are removed first. The staging folder
    is removed unless committed."""
    fin = Path(final)
    with file_lock(lock_path(fin), what=what or f"building {fin.name}", timeout=timeout, on_wait=on_wait):
        if is_complete(fin):
            yield Staged(fin, None, True)
            return
        for stale in staging_dirs(fin):
            shutil.rmtree(stale, ignore_errors=True)
        if fin.exists():
            shutil.rmtree(fin, ignore_errors=True)
        tmp = fin.with_name(f"{STAGING_PREFIX}{fin.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        st = Staged(fin, tmp, False)
        try:
            yield st
        finally:
            if st.tmp is not None:
                shutil.rmtree(st.tmp, ignore_errors=True)


def sweep(root: str | os.PathLike) -> list[Path]:
    """Remove what dead processes left directly under `root`: staging folders (`.tmp-<name>.*`) whose target's lock
    can be taken, and lock files nobody holds. Returns what was removed. Live work is never touched."""
    base = Path(root)
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    for p in sorted(base.iterdir()):
        name = p.name
        if name.startswith(STAGING_PREFIX) and p.is_dir() and "." in name[len(STAGING_PREFIX):]:
            target = base / name[len(STAGING_PREFIX):].rsplit(".", 1)[0]
            with try_lock(lock_path(target)) as free:
                if free and p.exists():
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        elif name.startswith(".") and name.endswith(".lock") and p.is_file():
            with try_lock(p) as free:  # releasing removes it
                if free:
                    removed.append(p)
    return removed
