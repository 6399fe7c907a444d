"""SIGTERM handled like Ctrl-C, for entry points only (the CLI's `main`, a sweep worker's `execute_unit`).

SLURM sends SIGTERM at a job's time limit and on preemption (then SIGKILL after its grace period); `kill` and
container runtimes do too. Python's default is to die on the spot: no line, exit 143, staging folders and lock files
left for the next run to sweep. Inside `terminate_as_interrupt()` SIGTERM raises `Terminated` (a KeyboardInterrupt)
in the main thread, so the run unwinds exactly as on Ctrl-C: locks released and removed, staging folders and temp
files removed, finished chunks and artifacts kept. A second SIGTERM while unwinding is ignored, so cleanup finishes.

Library code never installs signal handlers (a notebook's process is its own); the previous handler is restored
on exit, and outside the main thread nothing is changed (Python delivers signals to the main thread only).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_TERMINATED = 143  # 128 + SIGTERM: what a shell and SLURM report for a process ended by SIGTERM
EXIT_INTERRUPTED = 130  # 128 + SIGINT


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM inside `terminate_as_interrupt()`; caught wherever KeyboardInterrupt is."""


@contextmanager
def terminate_as_interrupt() -> Iterator[dict[str, bool]]:
    """Within the block SIGTERM raises Terminated; yields a dict whose `terminated` says whether it came."""
    state = {"terminated": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: object) -> None:
        if state["terminated"]:  # already unwinding: let the cleanup finish
            return
        state["terminated"] = True
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - not allowed here (embedded interpreter)
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)
