"""Content-addressed checkpoint cache under `cache_dir()/checkpoints`.

Key = sha256 of (model id + resolved revision/source fingerprint, recipe spec, calibration identity (spec + text
digest: `calibration.spec_identity`, which with the model's tokenizer fixes the sample), compute dtype, cache format
version). It is computed without loading a model or a tokenizer, so a run can tell which checkpoints (and which
scored artifacts) it already has before doing any work. One process builds a key at a time (`cpbench.base.locks.staged_dir`: an flock on `.<dir>.lock`); a second
process asking for the same key waits and then reuses the first one's checkpoint, and never touches its staging
folder. The checkpoint is built in a private staging folder (`.tmp-<dir>.<pid>-<rand>`) and renamed into place only
after it was saved, reloaded and verified and a marker listing every file and its size was written last; `lookup`
trusts nothing without a valid marker. Staging folders of dead processes are removed by the next build of the same key
and by `sweep()` (called at the start of `cpbench run`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpbench.base.atomic import write_json_atomic
from cpbench.base.errors import CpbenchError
from cpbench.base.paths import cache_dir
from cpbench.base.runkey import safe_part

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.weights.compress.calibration import CalibrationSpec
    from cpbench.weights.models import ModelEntry
    from cpbench.specs.recipes import Recipe

CACHE_FORMAT = "2"  # bump when the checkpoint layout, the verification report or the key material changes
# 2: completion marker; calibration keyed by its spec identity instead of the sampled tokens' hash
REPORT_NAME = "cpbench-compression.json"


@dataclass(frozen=True)
class CacheKey:
    digest: str  # hex sha256
    label: str  # human-readable prefix of the directory name
    material: dict[str, Any]

    @property
    def dirname(self) -> str:
        return f"{self.label}--{self.digest[:16]}"


def root() -> Path:
    p = cache_dir() / "checkpoints"
    p.mkdir(parents=True, exist_ok=True)
    return p


def model_identity(entry: ModelEntry) -> dict[str, Any]:
    """What pins the base weights in a cache key (the rules live in cpbench.weights.identity, the one owner)."""
    return entry.weights().cache_material()


def cache_key(
    entry: ModelEntry, recipe: Recipe, calibration: CalibrationSpec | None, compute_dtype: str = "float32"
) -> CacheKey:
    """`calibration` is None for recipes that use no data. `compute_dtype` is the dtype the weights were compressed
    in (fp32 on CPU, bf16 on GPU): the results differ."""
    from cpbench.weights.compress.calibration import spec_identity

    material = {
        "format": CACHE_FORMAT,
        "model": model_identity(entry),
        "recipe": recipe.spec(),
        "calibration": spec_identity(calibration) if calibration is not None else None,
        "compute_dtype": compute_dtype,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    label = safe_part(f"{entry.key}--{recipe.name}")
    return CacheKey(digest=digest, label=label, material=material)


def lookup(key: CacheKey) -> Path | None:
    """The committed checkpoint of `key`, or None. A directory without a valid completion marker is not trusted."""
    from cpbench.base.locks import is_complete

    path = root() / key.dirname
    return path if is_complete(path) and (path / REPORT_NAME).is_file() else None


@contextmanager
def building(key: CacheKey, *, rebuild: bool = False, on_wait: Any = None) -> Iterator[Any]:
    """`cpbench.base.locks.Staged` for `key`, under its lock: `.done` when the checkpoint is there (maybe built by another
    process while this one waited; `rebuild` ignores it), else `.tmp` to build in and `.commit()` to publish."""
    from cpbench.base.locks import Staged, staged_dir

    with staged_dir(root() / key.dirname, what=f"compressing {key.label}", on_wait=on_wait) as st:
        if st.done and rebuild:
            import uuid

            from cpbench.base.locks import STAGING_PREFIX

            tmp = st.final.with_name(f"{STAGING_PREFIX}{st.final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.mkdir()
            st = Staged(st.final, tmp, False)
            try:
                yield st
            finally:
                if st.tmp is not None:
                    shutil.rmtree(st.tmp, ignore_errors=True)
            return
        yield st


def sweep() -> list[Path]:
    """Remove staging folders and lock files that dead processes left in the checkpoint cache."""
    from cpbench.base.locks import sweep as sweep_dir

    return sweep_dir(root())


def write_report(path: Path, report: dict[str, Any]) -> None:
    write_json_atomic(path / REPORT_NAME, report)


def read_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / REPORT_NAME).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CpbenchError(f"{path}: unreadable compression report ({exc})") from None


def list_checkpoints() -> list[Path]:
    from cpbench.base.locks import is_complete

    return sorted(p for p in root().iterdir() if is_complete(p) and (p / REPORT_NAME).is_file())
