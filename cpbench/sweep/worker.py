"""What runs on a worker (Ray task, SLURM job, or in-process for `--executor local`): one WorkUnit.

The worker compresses (checkpoint cache local to the node, `$CPBENCH_CACHE`), scores the unit's cells into a private
temporary results folder, and returns the Parquet artifacts as bytes. It never writes the shared results tree: the
driver does, atomically, so no shared filesystem is needed for results and a worker killed mid-write leaves nothing
half-written there. Unfinished scoring chunks stay in the node's cache, so a retried unit on the same node resumes.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from cpbench.base.errors import CpbenchError

FAULT_ENV = "CPBENCH_SWEEP_FAULT_DIR"  # fault injection for tests: `<dir>/<uid>.die-once` kills the first attempt


class RetryableUnitError(RuntimeError):
    """A failure worth retrying elsewhere or later (CUDA out of memory, a lost device, I/O errors of a node).
    Bad input (CpbenchError) is never retried: it would fail the same way."""


def _maybe_die(uid: str) -> None:
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    marker = Path(folder) / f"{uid}.die-once"
    try:
        marker.unlink()
    except FileNotFoundError:
        return
    os._exit(1)  # like a segfault or an OOM kill: no exception, no cleanup


def _retryable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, OSError) or "out of memory" in text.lower() or "CUDA error" in text


def execute_unit(unit_json: str, *, shared_token: str | None = None) -> dict[str, Any]:
    """Run one unit (JSON of `cpbench.run.unit.WorkUnit`); returns {uid, artifacts: {relative path: bytes}, items,
    wall_s, device, log}. `shared_token` is a file path the driver wrote: a SLURM job checks that it sees it (the
    submitit folder must be on a filesystem shared by the driver and the nodes)."""
    from cpbench.run.unit import WorkUnit

    unit = WorkUnit.from_json(unit_json)
    if shared_token is not None and not Path(shared_token).is_file():
        raise CpbenchError(f"{shared_token}: not visible on {os.uname().nodename}; the submitit folder must be on a "
                           f"filesystem shared by the driver and the compute nodes (--slurm-folder)")  # fmt: skip
    _maybe_die(unit.uid)
    from cpbench.base.interrupts import terminate_as_interrupt

    try:
        # a worker process is ours: SIGTERM (SLURM time limit, preemption, Ray cancelling) unwinds like Ctrl-C, so
        # its cell locks and temp folders go and its finished chunks stay in the node's cache for the retry
        with terminate_as_interrupt():
            return _execute(unit)
    except CpbenchError:
        raise
    except Exception as exc:
        if _retryable(exc):
            raise RetryableUnitError(f"{type(exc).__name__}: {exc}") from exc
        raise


def _execute(unit: Any) -> dict[str, Any]:
    from cpbench.weights import models
    from cpbench.backends.registry import get_backend
    from cpbench.run.runner import run_work_unit
    from cpbench.run.preflight import device_problem
    from cpbench.run.unit import build_inputs

    models.configure_threads()  # a worker process is ours: pin threads like the CLI does
    device = models.resolve_device(unit.options.device)
    get_backend(unit.options.scorer).check(device, unit.options.scoring)  # e.g. vLLM: CUDA and the package
    problem = device_problem(unit.recipe, device)
    if problem:
        raise CpbenchError(f"{unit.name}: cannot run on {device}: {problem}")
    t0 = time.perf_counter()
    log: list[str] = []
    tokenizer = None
    if unit.options.chat == "v1" or unit.model.source == "hub":
        tokenizer = models.load_tokenizer(unit.model)
    inputs = build_inputs(unit.options, tokenizer, cells=unit.cells)
    with tempfile.TemporaryDirectory(prefix="cpbench-unit-") as tmp:
        root = Path(tmp)
        cells = run_work_unit(unit, inputs, device, root, echo=log.append, progress=False, analyze=False)
        artifacts = {c.artifact_path.relative_to(root).as_posix(): c.artifact_path.read_bytes() for c in cells}
    return {
        "uid": unit.uid,
        "artifacts": artifacts,
        "items": sum(len(inputs[(k.task, k.prompt)].prompts) for k in unit.cells),
        "wall_s": round(time.perf_counter() - t0, 3),
        "device": device,
        "host": os.uname().nodename,
        "log": log[-50:],
    }


def last_error_line(exc: BaseException) -> str:
    """The most useful single line of a (possibly remote, wrapped) failure: the last non-empty traceback line."""
    text = str(exc) or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        lines = [ln.strip() for ln in traceback.format_exception_only(type(exc), exc) if ln.strip()]
    for ln in reversed(lines):  # Ray / submitit wrap the remote traceback; its last line names the error
        if not ln.startswith(("File ", "^", "~")):
            return ln[:300]
    return lines[-1][:300]
