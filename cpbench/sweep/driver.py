"""The sweep driver: which units are done, claim the rest, submit them, write what comes back, show progress.

The driver is the only writer of the results tree. A worker returns a unit's Parquet artifacts as bytes; the driver
checks each one belongs to a cell of the unit (run key in its provenance), writes it atomically, then analyses it
(numpy only) and writes the result record atomically, so records name the driver's paths. A cell is done when its
artifact was produced for the same run key, prompts and weights id (the weights id is predicted before compressing,
`cpbench.run.unit.unit_identity`) and its record exists; an artifact without its record (driver killed between the
two writes) is finished on the driver without resubmitting. Rerunning the same command therefore resumes: done
units are not submitted again, dead ones are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cpbench.base.errors import CpbenchError
from cpbench.sweep.claims import Claims

QUEUED, WAITING, RUNNING, DONE, FAILED, SKIPPED = "queued", "waiting", "running", "done", "failed", "skipped"


@dataclass
class UnitState:
    unit: Any  # WorkUnit (all cells)
    todo: Any = None  # WorkUnit restricted to the cells not done yet (None: nothing to do)
    items: int = 0  # evaluated items of the todo cells
    estimate: Any = None  # cpbench.sweep.estimate.UnitEstimate
    status: str = QUEUED
    attempts: int = 0
    error: str = ""
    reason: str = ""  # why skipped
    handle: Any = None
    started: float = 0.0
    finished: float = 0.0
    cells_done: int = 0  # cells already done before this sweep
    recovered: int = 0  # cells whose record the driver wrote from an existing artifact

    @property
    def name(self) -> str:
        return self.unit.name


@dataclass
class SweepOutcome:
    states: list[UnitState]
    wall_s: float
    submitted: int
    items_done: int

    @property
    def failed(self) -> list[UnitState]:
        return [s for s in self.states if s.status == FAILED]


@dataclass
class DriverOptions:
    max_parallel: int = 1
    retries: int = 2  # resubmissions of a unit that died (Ray retries inside; other executors via the driver)
    unit_timeout_s: float = 7 * 24 * 3600.0
    poll_s: float = 2.0
    progress_every_s: float = 10.0
    device: str = "auto"


# ------------------------------------------------------------------------------------------------- done or not
def _artifact_ok(path: Path, key: Any, p_hash: str, unit: Any, device: str, wid_cache: dict) -> Any:
    """The stored artifact when `cpbench.run.outputs.reuse_check` reuses it for this cell, else None. The weights id
    is the one the unit predicts on the artifact's device type (any device type when the sweep's device is auto)."""
    from cpbench.run.outputs import reuse_check
    from cpbench.run.unit import unit_identity

    def wid(dev_type: str) -> str:
        wkey = (unit.uid, "cuda" if dev_type == "cuda" else "cpu")
        if wkey not in wid_cache:
            wid_cache[wkey] = unit_identity(unit, wkey[1]).weights_id
        return wid_cache[wkey]

    return reuse_check(path, key, p_hash, wid, device)[0]


def _write_record(art: Any, path: Path, unit: Any, results: Path) -> Path:
    from cpbench.results import store
    from cpbench.results.conformal.protocols import analyze_artifact

    record = analyze_artifact(art, unit.options.analysis, input_path=str(path))
    return store.write_result(record, results)


def survey(units: Sequence[Any], results: Path, device: str = "auto", echo: Callable[[str], None] = print
           ) -> list[UnitState]:  # fmt: skip
    """For each unit, the cells still to do (and how many items they hold). Builds prompts once per model."""
    from cpbench.weights import models
    from cpbench.results import store
    from cpbench.base.runkey import RunKey
    from cpbench.run.cells import artifact_path
    from cpbench.sweep.estimate import estimate_unit
    from cpbench.run.unit import build_inputs, check_enough_items

    states: list[UnitState] = []
    inputs_by_model: dict[tuple[str, str], Any] = {}
    wid_cache: dict = {}
    for unit in units:
        mkey = (unit.model.key, unit.options.model_dump_json())
        if mkey not in inputs_by_model:
            # the tokenizer only for chat templates: planning (and --dry-run) must work without the hub
            tok = models.load_tokenizer(unit.model) if unit.options.chat == "v1" else None
            inputs = build_inputs(unit.options, tok)
            check_enough_items(inputs, unit.options.analysis)
            inputs_by_model[mkey] = inputs
        inputs = inputs_by_model[mkey]
        todo, items, chars, done, recovered = [], 0, 0, 0, 0
        for key in unit.cells:
            cell = inputs[(key.task, key.prompt)]
            apath = artifact_path(results, key)
            art = _artifact_ok(apath, key, cell.prompts_hash, unit, device, wid_cache)
            if art is None:
                todo.append(key)
                items += len(cell.prompts)
                chars += sum(len(p.text) for p in cell.prompts)
                continue
            done += 1
            rpath = store.result_path(RunKey(score=key, analysis=unit.options.analysis), results)
            if not _record_matches(rpath, art):
                _write_record(art, apath, unit, results)
                recovered += 1
        st = UnitState(unit=unit, todo=unit.with_cells(todo) if todo else None, items=items, cells_done=done,
                       recovered=recovered, estimate=estimate_unit(unit.model, unit.recipe, items, chars))  # fmt: skip
        if not todo:
            st.status = DONE
        states.append(st)
    return states


def _record_matches(rpath: Path, art: Any) -> bool:
    import json

    try:
        record = json.loads(rpath.read_text())
    except (OSError, ValueError):
        return False
    stored = (record.get("provenance") or {}).get("artifact_hash")
    # a record names the hash of the file as loaded (format /1 files keep their old hash rule)
    return stored is None or stored == (art.file_hash or art.content_hash)


# ------------------------------------------------------------------------------------------------- writing
def write_unit_results(st: UnitState, payload: dict[str, Any], results: Path) -> int:
    """Write the artifacts a worker returned (atomically, after checking they are the unit's cells) and their
    records. Returns the number of cells written."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.base.atomic import atomic_path
    from cpbench.run.cells import artifact_path

    expected = {artifact_path(Path("."), k).as_posix().removeprefix("./"): k for k in st.todo.cells}
    got = payload.get("artifacts") or {}
    missing = sorted(set(expected) - set(got))
    if missing:
        raise CpbenchError(f"{st.name}: the worker returned no artifact for {len(missing)} cell(s), e.g. {missing[0]}")
    for rel, key in expected.items():
        final = results / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            Path(tmp).write_bytes(got[rel])
        art = LogitsArtifact.load(final)
        if art.provenance.get("run_key") != key.model_dump():
            final.unlink()
            raise CpbenchError(f"{final}: the worker's artifact is for another run key; removed")
        _write_record(art, final, st.unit, results)
    return len(expected)


# ------------------------------------------------------------------------------------------------- the loop
def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(states: Sequence[UnitState], t0: float, items_done: int) -> str:
    counts = {k: sum(1 for s in states if s.status == k) for k in (QUEUED, WAITING, RUNNING, DONE, FAILED)}
    elapsed = time.monotonic() - t0
    rate = items_done / elapsed if elapsed > 0 else 0.0
    left = sum(s.items for s in states if s.status in (QUEUED, WAITING, RUNNING))
    eta = _fmt_s(left / rate) if rate > 0 and left else ("0s" if not left else "?")
    waiting = f", {counts[WAITING]} claimed by another sweep" if counts[WAITING] else ""
    return (f"sweep: {counts[DONE]}/{len(states)} done, {counts[RUNNING]} running, {counts[QUEUED]} queued"
            f"{waiting}, {counts[FAILED]} failed | {items_done} items, {rate:.2f} items/s, ETA {eta}")  # fmt: skip


def _retry_worthy(exc: BaseException) -> bool:
    """A unit that died (worker killed, node lost, job timed out) or hit a RetryableUnitError; never bad input."""
    name = type(exc).__name__
    text = str(exc)
    if "CpbenchError" in name or "cpbench.base.errors.CpbenchError" in text:
        return False
    return name in ("UncompletedJobError", "RetryableUnitError", "WorkerCrashedError", "NodeDiedError") or (
        "RetryableUnitError" in text
    )


def run_sweep(
    states: list[UnitState], executor: Any, results: Path, opts: DriverOptions, echo: Callable[[str], None] = print
) -> SweepOutcome:
    """Submit every unit with work left (at most `opts.max_parallel` in flight), write what comes back, resubmit
    dead units, and report. Never raises for a failed unit: failures are in the outcome."""
    from cpbench.sweep.worker import last_error_line

    t0 = time.monotonic()
    claims = Claims(results)
    submitted = items_done = 0
    last_progress = 0.0
    pending = [s for s in states if s.status == QUEUED]
    executor.preflight(pending)
    try:
        while True:
            # claim and submit while there is room
            room = opts.max_parallel - sum(1 for s in states if s.status == RUNNING)
            batch = []
            for st in states:
                if room <= len(batch):
                    break
                if st.status not in (QUEUED, WAITING):
                    continue
                if not claims.take(st.unit.uid):
                    if st.status != WAITING:
                        who = claims.holder(st.unit.uid)
                        echo(f"[{st.name}] claimed by another sweep{f' ({who})' if who else ''}; waiting for it")
                    st.status = WAITING
                    continue
                if st.status == WAITING:  # the other sweep let go: maybe it finished the unit
                    again = survey([st.unit], results, opts.device, echo)[0]
                    if again.todo is None:
                        st.status, st.todo = DONE, None
                        claims.release(st.unit.uid)
                        echo(f"[{st.name}] done by another sweep")
                        continue
                    st.todo, st.items = again.todo, again.items
                st.status, st.started, st.attempts = RUNNING, time.monotonic(), st.attempts + 1
                batch.append(st)
            if batch:
                executor.submit(batch)
                submitted += len(batch)
                for st in batch:
                    echo(f"[{st.name}] submitted ({len(st.todo.cells)} cell(s), {st.items} items"
                         + (f", attempt {st.attempts}" if st.attempts > 1 else "") + ")")  # fmt: skip
            running = [s for s in states if s.status == RUNNING]
            if not running and not any(s.status in (QUEUED, WAITING) for s in states):
                break
            if not running:  # everything left is claimed by another sweep: wait for it
                time.sleep(opts.poll_s)
                continue
            for st, payload, exc in executor.poll(running, opts.poll_s, opts.unit_timeout_s):
                if exc is None:
                    try:
                        n = write_unit_results(st, payload, results)
                    except CpbenchError as werr:
                        exc = werr
                    else:
                        st.status, st.finished = DONE, time.monotonic()
                        items_done += st.items
                        echo(f"[{st.name}] done: {n} cell(s), {st.items} items in {payload.get('wall_s', 0):.1f} s "
                             f"on {payload.get('host', '?')} ({payload.get('device', '?')})")  # fmt: skip
                        claims.release(st.unit.uid)
                        continue
                line = last_error_line(exc)
                if executor.driver_retries and _retry_worthy(exc) and st.attempts <= opts.retries:
                    st.status, st.error = QUEUED, line
                    echo(f"[{st.name}] died ({line}); resubmitting")
                    claims.release(st.unit.uid)
                    continue
                st.status, st.error, st.finished = FAILED, line, time.monotonic()
                echo(f"[{st.name}] FAILED: {line}")
                claims.release(st.unit.uid)
            now = time.monotonic()
            if now - last_progress >= opts.progress_every_s:
                echo(progress_line(states, t0, items_done))
                last_progress = now
    finally:
        for st in states:
            if st.status == RUNNING:
                executor.cancel(st)
        claims.release_all()
        executor.close()
    echo(progress_line(states, t0, items_done))
    return SweepOutcome(states, time.monotonic() - t0, submitted, items_done)


def summary_lines(outcome: SweepOutcome) -> list[str]:
    states = outcome.states
    done = [s for s in states if s.status == DONE]
    lines = [f"sweep finished in {_fmt_s(outcome.wall_s)}: {len(done)}/{len(states)} unit(s) done, "
             f"{outcome.submitted} submitted, {len(outcome.failed)} failed, "
             f"{sum(1 for s in states if s.status == SKIPPED)} skipped"]  # fmt: skip
    for s in states:
        if s.status == FAILED:
            lines.append(f"  FAILED {s.name} (attempts {s.attempts}): {s.error}")
        elif s.status == SKIPPED:
            lines.append(f"  skipped {s.name}: {s.reason}")
    if outcome.failed:
        lines.append("rerun the same command to retry the failed units (finished ones are kept)")
    return lines
