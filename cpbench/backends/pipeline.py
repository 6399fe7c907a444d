"""The one scoring pipeline: a backend's prepared job -> `LogitsArtifact` with full provenance, for every backend.

`score_with` validates the prompts, asks the backend (cpbench.backends.base.Backend) to prepare the cell, runs its
computation in resumable chunks of one processing order (cpbench.backends.chunks), reports progress per batch, and
writes the provenance keys of docs/design.md: what the caller knows (model, recipe, weights id), what the backend
knows (tokenizer, option ids, dtype, device, versions), and what this pipeline measured. `score_prompts` is the
transformers backend through it (the reference scorer; the model arrives loaded by cpbench.weights and stays where
it is).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpbench.base.errors import CpbenchError
from cpbench.base.runkey import ScoreKey
from cpbench.base.stamps import utc_now
from cpbench.results.artifact import LogitsArtifact

DEFAULT_CHUNK_SIZE = 256





# ------------------------------------------------------------------------------------------------- fingerprints
def scoring_inputs_hash(prompts: Sequence[Any]) -> str:
    """sha256 over every prompt field that scoring reads, in order (the chunk cache key; `prompts_hash` in the
    provenance is cpbench.specs.tasks' hash of ids and texts)."""
    h = hashlib.sha256()
    for p in prompts:
        rec = [str(p.item_id), p.hash, int(p.label), list(p.letters), list(p.options), p.cloze_context, p.prefix]
        h.update(json.dumps(rec, ensure_ascii=False).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()








# ------------------------------------------------------------------------------------------------- scoring
def _validate(prompts: Sequence[Any], key: ScoreKey) -> list[str]:
    if not prompts:
        raise CpbenchError(f"no prompts to score for {key.slug()}")
    letters = list(prompts[0].letters)
    ids = [str(p.item_id) for p in prompts]
    if len(set(ids)) != len(ids):
        raise CpbenchError(f"duplicate item ids among the prompts of {key.slug()}")
    for p in prompts:
        if list(p.letters) != letters:
            raise CpbenchError(f"item {p.item_id}: letters {list(p.letters)} differ from {letters}")
        if not 0 <= int(p.label) < len(letters):
            raise CpbenchError(f"item {p.item_id}: label {p.label} outside the {len(letters)} options")
        if key.scoring == "cloze" and len(p.options) != len(letters):
            raise CpbenchError(f"item {p.item_id}: {len(p.options)} option texts for {len(letters)} letters")
    return letters


def score_with(
    backend: Any,
    handle: Any,
    prompts: Sequence[Any],
    key: ScoreKey,
    *,
    batch_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cache_root: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    model_hash: str | None = None,
    out_path: str | Path | None = None,
) -> LogitsArtifact:
    """Option logits for `prompts` as a LogitsArtifact; chunks are kept under `cache_root/scores` until done.

    `provenance` carries what only the caller knows (model_id, model_revision, model_source, recipe,
    compression_report, weights id, sample_data, notes); the backend and this pipeline add the rest. `model_hash`:
    the loaded weights' fingerprint when the caller has it already (else the backend's). With `out_path` the
    artifact is saved there (atomically) and the job's chunk files are deleted.
    """
    from cpbench.backends.chunks import ChunkStore, run_chunked
    from cpbench.base import progress as progress_mod
    from cpbench.specs.tasks.prompts import prompts_hash

    letters = _validate(prompts, key)
    prep = backend.prepare(handle, prompts, key, batch_size=batch_size)
    m_hash = model_hash if model_hash is not None else backend.fingerprint(handle)
    ids = [str(p.item_id) for p in prompts]
    job = {"score_key": key.model_dump(), "inputs_hash": scoring_inputs_hash(prompts), **prep.job,
           "chunk_size": int(chunk_size)}  # fmt: skip
    if m_hash is not None:  # the loaded weights' content names the job
        job["model_hash"] = m_hash
    else:  # weights the backend cannot hash (an engine's workers hold them): their id does
        job["weights_id"] = (provenance or {}).get("weights_id")
    detail: dict[str, Any] = {**prep.detail, "chunk_size": int(chunk_size)}
    notes = list(prep.notes)
    store = None
    if resume:
        from cpbench.base.paths import cache_dir

        root = Path(cache_root) if cache_root is not None else cache_dir()
        store = ChunkStore(root / "scores", job)
        detail["chunk_job"] = store.dir.name  # lets a later run remove chunks a kill left after the artifact was saved

    # cpbench's own progress (rich bar on a terminal, periodic lines in a log: whatever reporter the CLI installed)
    reporter = progress_mod.current() if progress else progress_mod.Reporter()
    desc = f"[{key.recipe}] score {key.task}/{key.prompt} ({key.scoring}, {prep.provenance.get('dtype')})"
    t0 = time.perf_counter()
    with reporter.task(desc, total=len(ids), unit="item") as bar, prep.context():
        # Progress per batch where the backend reports batches (a cell smaller than one chunk would otherwise sit at
        # 0% until done); chunks loaded from a resume, and backends without batches, count when a chunk ends.
        scored = {"items": 0}

        def batch_done(n: int) -> None:
            scored["items"] += n
            bar.advance(n)

        def chunk_done(n: int) -> None:
            bar.advance(max(0, n - scored["items"]))
            scored["items"] = 0

        if prep.on_batch is not None:
            prep.on_batch(batch_done)
        run = run_chunked(ids, prep.order, len(letters), prep.compute, store, chunk_size, on_progress=chunk_done)
    wall = time.perf_counter() - t0
    detail.update(
        chunks_loaded=len(run.loaded),
        chunks_computed=len(run.computed),
        items_computed=run.computed_items,
        wall_s=round(wall, 3),
        s_per_item=round(wall / run.computed_items, 5) if run.computed_items else None,
    )
    if run.loaded:
        notes.append(f"resumed: {len(run.loaded)} chunk(s) loaded from {store.dir if store else ''}")

    prov: dict[str, Any] = {
        "run_key": key.model_dump(),
        "model_id": prep.model_id or key.model,
        "model_revision": None,
        "model_source": "local",
        "recipe": {"name": key.recipe},
        "compression_report": None,
        "sample_data": key.data == "samples",
    }
    prov.update(provenance or {})
    prov["notes"] = list(prov.get("notes") or []) + notes
    prov.update(prep.provenance)
    prov.update(
        scoring=key.scoring,
        scoring_detail=detail,
        prompts_hash=prompts_hash(prompts),
        model_hash=m_hash,
        created_at=utc_now(),
    )
    artifact = LogitsArtifact(
        ids=ids,
        labels=np.array([int(p.label) for p in prompts], dtype=np.int64),
        logits=run.logits,
        letters=letters,
        provenance=prov,
        prompt_hashes=[p.hash for p in prompts],
    )
    if out_path is not None:
        artifact.save(out_path)
        if store is not None:
            store.remove()
    return artifact


def score_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    key: ScoreKey,
    *,
    batch_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cache_root: str | Path | None = None,
    resume: bool = True,
    use_prefix_cache: bool = True,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    model_hash: str | None = None,
    out_path: str | Path | None = None,
) -> LogitsArtifact:
    """The transformers backend (cpbench.backends.hf) through `score_with`, for a loaded model and tokenizer."""
    from cpbench.backends.hf import HFBackend

    return score_with(HFBackend(use_prefix_cache=use_prefix_cache), (model, tokenizer), prompts, key,
                      batch_size=batch_size, chunk_size=chunk_size, cache_root=cache_root, resume=resume,
                      progress=progress, provenance=provenance, model_hash=model_hash, out_path=out_path)  # fmt: skip
