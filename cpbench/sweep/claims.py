"""Claims: which sweep driver is working on a unit right now, so that two sweeps on one results tree never run the
same unit twice.

A claim is an exclusive, non-blocking `flock` on `<results>/.cpbench/claims/<unit uid>.lock`, held by the driver
while the unit is queued or running and released (file removed) when its results are written or it failed. The
kernel drops the lock when the driver dies (SIGKILL included), so a killed sweep leaves no stale claim: a rerun, or
another sweep, simply takes it. The holder's pid/host/time are written inside for messages. On NFS, Linux emulates
flock with lockd byte-range locks, so claims hold across hosts that share the results tree (same mechanism as
cpbench.base.locks).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from cpbench.base.errors import CpbenchError
from cpbench.base.stamps import utc_now


class Claims:
    """The claims one driver holds under `root` (the results tree)."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / ".cpbench" / "claims"
        self._held: dict[str, int] = {}

    def path(self, uid: str) -> Path:
        return self.dir / f"{uid}.lock"

    def holder(self, uid: str) -> str:
        """Who holds the claim of `uid`, for messages ('' when unknown)."""
        try:
            raw = json.loads(self.path(uid).read_text())
            return f"pid {raw['pid']} on {raw['host']} since {raw['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def take(self, uid: str) -> bool:
        """Claim `uid`; False when another driver holds it."""
        if uid in self._held:
            return True
        p = self.path(uid)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        return False
                    raise
                try:  # the previous holder may have unlinked the file we opened: lock the one at `p`
                    same = os.fstat(fd).st_ino == os.stat(p).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
        except OSError as exc:
            raise CpbenchError(f"{p}: cannot claim unit ({exc.strerror or exc})") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass  # diagnostics only
        self._held[uid] = fd
        return True

    def release(self, uid: str) -> None:
        fd = self._held.pop(uid, None)
        if fd is None:
            return
        try:
            os.unlink(self.path(uid))  # while still held, so a waiter never locks a file that is about to vanish
        except OSError:
            pass
        os.close(fd)

    def release_all(self) -> None:
        for uid in list(self._held):
            self.release(uid)
