"""What a run may write, and when: one writer per cell, no silent overwrite, no rewrite of an identical record.

- `cell_lock`: one process scores and stores a cell (artifact + record) at a time; the lock sits beside the artifact
  (`cpbench.base.locks`), so two runs on one results tree, on one host or several, split the cells instead of both doing
  them. Temp files a dead writer left for this cell are removed under the lock (`clean_cell_temps`).
- `reuse_check`: the one rule deciding whether a stored logits artifact is reused for a cell (run, preflight and
  sweep); an existing artifact that this run would not reuse (other weights, items, device or a damaged file,
  `artifact_conflict`) is never replaced without `--force`; the run stops before any work and says which file.
- `publish_record`: a record equal to the stored one except for timestamps and paths is not rewritten (a rerun on a
  fresh clone leaves `git status` clean); a different stored record is kept unless `--force`.
- `check_writable`: a run finds out that its results tree or caches are read-only or full before compressing or
  scoring anything (one line, exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from cpbench.base.atomic import describe_os_error
from cpbench.base.errors import CpbenchError

# Provenance fields that change on every analysis or rescoring of the same data (times, paths, timings, the host,
# whether scoring resumed from chunks): not part of a record's content.
VOLATILE_PROVENANCE = ("analyzed_at", "created_at", "cpbench_version", "artifact_path", "scoring_detail", "host")
VOLATILE_NOTE_PREFIXES = ("resumed: ",)
VOLATILE_TOP = ("input",)
PROBE_BYTES = 1 << 16
MIN_FREE_BYTES = 64 << 20  # below this a run would fail on its first checkpoint or artifact


# ------------------------------------------------------------------------------------------------ cell locks
@contextmanager
def cell_lock(artifact: Path, blocking: bool, on_wait: Callable[[str], None] | None = None) -> Iterator[bool]:
    """Hold the lock of the cell whose artifact is `artifact`. Non-blocking: yields False when another process holds
    it. Blocking: waits (one `on_wait` line naming the holder), up to CPBENCH_LOCK_TIMEOUT."""
    from cpbench.base.locks import file_lock, lock_path, try_lock

    artifact.parent.mkdir(parents=True, exist_ok=True)
    if not blocking:
        with try_lock(lock_path(artifact)) as got:
            yield got
        return
    with file_lock(lock_path(artifact), what=f"scoring {artifact.stem}", on_wait=on_wait):
        yield True


def clean_cell_temps(paths: Iterable[Path]) -> list[Path]:
    """Remove temp files of interrupted atomic writes of these files (`.<name>.*.cpbtmp`, older `.<name>.*.tmp`,
    beside each). Call with the cell lock held: then no live process is writing them, on any host."""
    removed = []
    for p in paths:
        if not p.parent.is_dir():
            continue
        for tmp in p.parent.glob(f".{p.name}.*"):
            if not tmp.name.endswith((".cpbtmp", ".tmp")):
                continue
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def remove_chunk_dir(provenance: dict[str, Any]) -> None:
    """An artifact that exists no longer needs its chunk files (left when a run died between saving the artifact
    and removing them)."""
    from cpbench.base.paths import cache_dir

    job = (provenance.get("scoring_detail") or {}).get("chunk_job")
    if isinstance(job, str) and job.isalnum():
        d = cache_dir() / "scores" / job
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ artifacts
def same_device_type(scored_on: Any, device: str | None) -> bool:
    """The device rule of reuse: an artifact scored on `scored_on` (its provenance's device, e.g. "cuda:0") counts
    for a run on `device` when both are the same device type (cuda:0 ~ cuda:1 ~ cuda). `device` None or "auto"
    accepts any device type."""
    if device is None or device == "auto":
        return True
    return str(scored_on or "").split(":")[0] == device.split(":")[0]


def reuse_check(path: Path, key: Any, prompts_hash: str, weights_id: str | Callable[[str], str],
                device: str | None) -> tuple[Any, str | None]:  # fmt: skip
    """May the stored logits artifact at `path` be reused for this cell? The one reuse rule of run, preflight and
    sweep. Returns (artifact, None) when it may (loaded, so that the caller does not read it a second time),
    (None, None) when nothing is there, and (None, why) when something else is there: why is one line naming the
    first difference (a caller that would write `path` refuses to replace it without --force).

    The rule: the artifact loads, and its provenance was produced for exactly this cell (run key), these evaluated
    items (prompts hash) and these weights (weights id), on the same device type as `device` (`same_device_type`:
    the device type fixes the dtype, fp32 on CPU, the model's bf16/fp16 on GPU; `device` None or "auto" accepts any
    device type, the weights id already naming the compute dtype of a checkpoint). Differences are reported in that
    order. `weights_id` may be a function of the artifact's device type (cpu/cuda/...) when the id depends on it
    (the sweep predicts a unit's id per device type); it is called only once the device type is accepted."""
    from cpbench.results.artifact import LogitsArtifact

    if not path.exists():
        return None, None
    try:
        artifact = LogitsArtifact.load(path)
    except CpbenchError as exc:
        return None, f"unreadable ({str(exc)[:120]})"
    prov = artifact.provenance
    scored_on = prov.get("device")
    device_why = None
    if not same_device_type(scored_on, device):
        device_why = f"scored on {scored_on}, this run uses {device}"
    checks = [
        ("run key", prov.get("run_key"), key.model_dump()),
        ("evaluated items (prompts hash)", prov.get("prompts_hash"), prompts_hash),
    ]
    for what, have, want in checks:
        if have != want:
            return None, f"other {what}: {str(have)[:80]} instead of {str(want)[:80]}"
    if callable(weights_id):
        if device_why:
            return None, device_why
        weights_id = weights_id(str(scored_on or "").split(":")[0])
    have = prov.get("weights_id")
    if have != weights_id:
        return None, f"other weights: {str(have)[:80]} instead of {str(weights_id)[:80]}"
    if device_why:
        return None, device_why
    return artifact, None


def artifact_conflict(path: Path, key: Any, prompts_hash: str, weights_id: str, device: str | None) -> str | None:
    """Why the artifact at `path` is not the one this cell would produce (None: absent or reusable): `reuse_check`."""
    return reuse_check(path, key, prompts_hash, weights_id, device)[1]


def refuse_overwrite(path: Path, why: str) -> CpbenchError:
    return CpbenchError(f"{path} holds a different result ({why}); not replacing it: --force would replace it")


# ------------------------------------------------------------------------------------------------ records
def _normalised(record: Any) -> Any:
    """The record as the store writes it (validated, migrated to the current schema), or None when it is invalid."""
    from cpbench.results.records import load_record

    try:
        return load_record(record).to_json()
    except (CpbenchError, ValueError, TypeError):
        return None


def record_content(record: Any) -> Any:
    """The record as stored (normalised like the store writes it, JSON round trip) without the fields that differ
    between analyses of one artifact."""
    out = _normalised(record)
    out = json.loads(json.dumps(out if out is not None else record, sort_keys=True, allow_nan=False, default=str))
    if isinstance(out, dict):
        for k in VOLATILE_TOP:
            out.pop(k, None)
        prov = out.get("provenance")
        if isinstance(prov, dict):
            prov = {k: v for k, v in prov.items() if k not in VOLATILE_PROVENANCE}
            if isinstance(prov.get("notes"), list):
                prov["notes"] = [n for n in prov["notes"] if not str(n).startswith(VOLATILE_NOTE_PREFIXES)]
            out["provenance"] = prov
    return out


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Dotted path of the first place two JSON values differ (for the one-line message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}{k}"
            d = first_difference(a[k], b[k], f"{where}{k}.")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}{i}.")
            if d:
                return d
        return None
    return None if a == b else (where.rstrip(".") or "(top level)")


def publish_record(record: dict, root: Path, force: bool) -> tuple[Path, str]:
    """Store `record` under `root` unless an equal one is there. Returns (path, status): "written", "unchanged"
    (equal content kept, file untouched) or "kept" (a different record is there and `force` is off: not replaced;
    the caller reports it)."""
    from cpbench.results import store
    from cpbench.base.runkey import RunKey

    key = RunKey.model_validate(record["run_key"])
    path = store.result_path(key, root)
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old is not None and _normalised(old) is not None and record_content(old) == record_content(record):
            return path, "unchanged"
        if not force:
            return path, "kept"
    return store.write_result(record, root), "written"


def kept_message(path: Path, record: dict) -> str:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        where = first_difference(record_content(old), record_content(record)) or "?"
    except (OSError, ValueError):
        where = "the stored file is not valid JSON"
    return f"{path}: a different result is stored (first difference: {where}); kept it: --force would replace it"


# ------------------------------------------------------------------------------------------------ preflight



def check_writable(dirs: Iterable[tuple[Path, str]]) -> None:
    """Write, flush and delete a small probe file in each (directory, what) and check free space; raise one line
    naming the first that fails. Directories are created as needed."""
    for d, what in dirs:
        probe = d / f".cpbench-probe-{os.getpid()}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"\0" * PROBE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            free = shutil.disk_usage(d).free
        except OSError as exc:
            raise CpbenchError(f"{d}: cannot write {what} ({describe_os_error(exc)}); nothing was run") from None
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
        if free < MIN_FREE_BYTES:
            raise CpbenchError(f"{d}: only {free >> 20} MiB free for {what} (need at least {MIN_FREE_BYTES >> 20} "
                               f"MiB); nothing was run")  # fmt: skip


