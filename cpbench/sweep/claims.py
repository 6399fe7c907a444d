"""Claims: which sweep driver is working on a unit right now, so that two sweeps on one results tree never run the
same unit twice.

A claim is an exclusive, non-blocking lock on `<results>/.cpbench/claims/<unit uid>.lock`
(`cpbench.base.locks.try_acquire`: the flock-then-inode protocol lives there only), held by the driver while the
unit is queued or running and released (file removed) when its results are written or it failed. The kernel drops
the lock when the driver dies (SIGKILL included), so a killed sweep leaves no stale claim: a rerun, or another sweep,
simply takes it. The holder's pid/host/time are written inside for messages. On NFS, Linux emulates flock with lockd
byte-range locks, so claims hold across hosts that share the results tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from cpbench.base.errors import CpbenchError
from cpbench.base.locks import HeldLock, read_owner, try_acquire


class Claims:
    """The claims one driver holds under `root` (the results tree)."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / ".cpbench" / "claims"
        self._held: dict[str, HeldLock] = {}

    def path(self, uid: str) -> Path:
        return self.dir / f"{uid}.lock"

    def holder(self, uid: str) -> str:
        """Who holds the claim of `uid`, for messages ('' when unknown)."""
        owner = read_owner(self.path(uid))
        return f"pid {owner.pid} on {owner.host} since {owner.since}" if owner is not None else ""

    def take(self, uid: str) -> bool:
        """Claim `uid`; False when another driver holds it."""
        if uid in self._held:
            return True
        try:
            held = try_acquire(self.path(uid), what=f"sweep claim on unit {uid}")
        except CpbenchError as exc:
            raise CpbenchError(f"cannot claim unit {uid}: {exc}") from None
        if held is None:
            return False
        self._held[uid] = held
        return True

    def release(self, uid: str) -> None:
        held = self._held.pop(uid, None)
        if held is not None:
            held.release()  # removes the file while still held, so a waiter never locks a file about to vanish

    def release_all(self) -> None:
        for uid in list(self._held):
            self.release(uid)
