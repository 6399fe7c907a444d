"""Content-addressed checkpoint cache under `cache_dir()/checkpoints`.

Key = sha256 of (model id + resolved revision/source fingerprint, recipe spec, calibration content hash, cache
format version). A checkpoint is built in a temporary sibling directory and renamed into place only after it was
saved, reloaded and verified, so a directory with the final name is always complete; an interrupted compression
leaves a `.tmp-*` directory that the next `staging` of the same key removes.
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

from cpbench.atomic import write_json_atomic
from cpbench.errors import CpbenchError
from cpbench.paths import cache_dir
from cpbench.runkey import safe_part

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.compress.calibration import CalibrationSet
    from cpbench.models import ModelEntry
    from cpbench.recipes import Recipe

CACHE_FORMAT = "1"  # bump when the checkpoint layout or the verification report changes
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
    """What pins the base weights in a cache key (the rules live in cpbench.weights, the one owner)."""
    return entry.weights().cache_material()


def cache_key(
    entry: ModelEntry, recipe: Recipe, calib: CalibrationSet | None, compute_dtype: str = "float32"
) -> CacheKey:
    """`compute_dtype` is the dtype the weights were compressed in (fp32 on CPU, bf16 on GPU): the results differ."""
    material = {
        "format": CACHE_FORMAT,
        "model": model_identity(entry),
        "recipe": recipe.spec(),
        "calibration": calib.hash if calib is not None else None,
        "compute_dtype": compute_dtype,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    label = safe_part(f"{entry.key}--{recipe.name}")
    return CacheKey(digest=digest, label=label, material=material)


def lookup(key: CacheKey) -> Path | None:
    path = root() / key.dirname
    return path if (path / REPORT_NAME).is_file() else None


@contextmanager
def staging(key: CacheKey) -> Iterator[Path]:
    """A fresh temporary directory for building the checkpoint of `key`; removed unless committed."""
    base = root()
    for stale in base.glob(f".tmp-{key.dirname}-*"):
        # leftovers of an interrupted run of the same key (a concurrent run would use another pid suffix and is
        # only affected if it is still writing; compressions of one key are not meant to run concurrently)
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = base / f".tmp-{key.dirname}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit(key: CacheKey) -> Path:
    """Rename the staged directory into place (atomic on one filesystem) and return the final path."""
    base = root()
    tmp = base / f".tmp-{key.dirname}-{os.getpid()}"
    final = base / key.dirname
    if not (tmp / REPORT_NAME).is_file():
        raise CpbenchError(f"{tmp}: staged checkpoint has no {REPORT_NAME}; not committing")
    try:
        os.rename(tmp, final)
    except OSError:
        if (final / REPORT_NAME).is_file():  # someone else committed the same key first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    return final


def write_report(path: Path, report: dict[str, Any]) -> None:
    write_json_atomic(path / REPORT_NAME, report)


def read_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / REPORT_NAME).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CpbenchError(f"{path}: unreadable compression report ({exc})") from None


def list_checkpoints() -> list[Path]:
    return sorted(p for p in root().iterdir() if (p / REPORT_NAME).is_file())
