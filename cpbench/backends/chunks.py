"""Resumable scoring: finished chunks of option logits are flushed to disk atomically.

A scoring job is named by everything that determines its numbers: the artifact's ScoreKey, the prompts hash, the model
fingerprint, the tokenizer and option ids, dtype, device type, batch size, chunk size and whether the prefix cache is
used. Its chunks live in `<cache>/scores/<job hash>/chunk-00000.npz ...` with the job description beside them
(`job.json`). Chunks are fixed slices of the job's processing order (a pure function of the prompts and tokenizer), so
a rerun after an interruption finds the same chunks, loads the finished ones (checking their item ids) and computes
only the rest. A chunk file is either complete or absent (`atomic_path`): a kill mid-write loses only that chunk.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cpbench.base.atomic import atomic_path, write_json_atomic
from cpbench.base.errors import CpbenchError


def job_hash(job: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


class ChunkStore:
    """The chunk directory of one scoring job."""

    def __init__(self, root: str | Path, job: dict[str, Any]):
        self.job = job
        self.key = job_hash(job)
        self.dir = Path(root) / self.key[:32]
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "job.json"
        if not manifest.exists():
            write_json_atomic(manifest, json.loads(json.dumps(job, default=str)))

    def path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:05d}.npz"

    def load(self, index: int, ids: Sequence[str]) -> np.ndarray | None:
        """The chunk's logits if present and for exactly these item ids; None means compute it."""
        p = self.path(index)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                stored_ids, logits = z["ids"].tolist(), z["logits"]
        except (OSError, ValueError, KeyError):
            return None  # unreadable: recompute rather than trust it
        if stored_ids != list(ids) or logits.shape[0] != len(ids) or not np.isfinite(logits).all():
            return None
        return logits.astype(np.float32)

    def save(self, index: int, ids: Sequence[str], logits: np.ndarray) -> None:
        with atomic_path(self.path(index)) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
                np.savez(fh, ids=np.array(list(ids), dtype=str), logits=np.asarray(logits, dtype=np.float32))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class ChunkRun:
    logits: np.ndarray  # [n, K] in input order
    loaded: list[int] = field(default_factory=list)  # chunk indices found on disk
    computed: list[int] = field(default_factory=list)  # chunk indices computed in this call
    computed_items: int = 0


def run_chunked(
    ids: Sequence[str],
    order: np.ndarray,
    k: int,
    compute: Callable[[np.ndarray], np.ndarray],
    store: ChunkStore | None,
    chunk_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> ChunkRun:
    """Score items chunk by chunk in `order`, reusing and writing chunk files when a store is given."""
    n = len(ids)
    if sorted(order.tolist()) != list(range(n)):
        raise CpbenchError("internal: scoring order is not a permutation of the items")
    chunk_size = max(1, int(chunk_size))
    out = np.full((n, k), np.nan, dtype=np.float32)
    run = ChunkRun(logits=out)
    for c, start in enumerate(range(0, n, chunk_size)):
        idx = order[start : start + chunk_size]
        chunk_ids = [ids[i] for i in idx]
        cached = store.load(c, chunk_ids) if store is not None else None
        if cached is not None and cached.shape[1] == k:
            out[idx] = cached
            run.loaded.append(c)
        else:
            values = compute(idx)
            out[idx] = values
            if store is not None:
                store.save(c, chunk_ids, values)
            run.computed.append(c)
            run.computed_items += len(idx)
        if on_progress is not None:
            on_progress(len(idx))
    return run
