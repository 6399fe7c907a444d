"""One set of weights, its cells: reuse a stored artifact or score it (resumable chunks), analyse it into a record,
publish both. One process works on a cell at a time (cpbench.run.outputs.cell_lock)."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cpbench.base.runkey import ScoreKey


@dataclass
class Cell:
    """One scored and analysed (recipe, task, prompt) cell."""

    recipe: str
    task: str
    prompt: str
    key: ScoreKey
    artifact_path: Path | None  # None: kept in memory (Python API without a results directory)
    result_path: Path | None
    record: dict[str, Any]
    reused: bool
    s_per_item: float | None
    artifact: Any = None  # the LogitsArtifact (item-level comparisons need the logits; the Python API keeps it)
    status: str = "written"  # record: written | unchanged (equal one kept untouched) | kept (different one kept)


def artifact_path(results: Path, key: ScoreKey) -> Path:
    return key.cell_dir(results) / "artifacts" / f"{key.slug()}.parquet"


def score_cells(
    label: str,
    keys: Sequence[ScoreKey],
    weights_id: str,
    load: Callable[[], tuple[Any, Any]],
    provenance: dict[str, Any],
    opts: Any,
    inputs: dict[tuple[str, str], Any],
    device: str,
    results: Path | None,
    *,
    backend: Any,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    force: bool = False,
    analyze: bool = True,
) -> list[Cell]:
    """Score (or reuse) every cell of one set of weights: `load()` is called only when some cell must be scored.
    `provenance` is read after loading (a loader may add what it measured). `results=None` keeps everything in
    memory (Python API without a results directory): nothing is written, nothing is reused or resumed.

    One process works on a cell at a time (`cpbench.run.outputs.cell_lock`, beside the artifact): cells another process
    holds are left for last, then waited for, and are reused when that process finished them."""
    import torch

    from cpbench.run.outputs import cell_lock

    held: dict[str, Any] = {}

    def weights() -> tuple[Any, str | None]:
        if "handle" not in held:
            held["handle"] = load()
            # once per model, not per cell; an engine's weights live in its workers: the weights id pins them
            held["hash"] = backend.fingerprint(held["handle"])
        return held["handle"], held["hash"]

    def one(key: ScoreKey, path: Path | None) -> Cell:
        return _score_cell(label, key, inputs[(key.task, key.prompt)], path, results, weights_id, weights, provenance,
                           opts, device, backend, force=force, analyze=analyze, echo=echo,
                           progress=progress)  # fmt: skip

    done: dict[ScoreKey, Cell] = {}
    try:
        if results is None:
            for key in keys:
                done[key] = one(key, None)
        pending = list(keys) if results is not None else []
        for blocking in (False, True):  # first the cells nobody else is on, then wait for the others
            later = []
            for key in pending:
                path = artifact_path(results, key)
                with cell_lock(path, blocking, on_wait=echo) as mine:
                    if mine:
                        done[key] = one(key, path)
                    else:
                        later.append(key)
            pending = later
    finally:
        if "handle" in held:
            backend.close(held["handle"])
        held.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [done[k] for k in keys]


def _score_cell(label: str, key: ScoreKey, cell_in: Any, path: Path | None, results: Path | None, weights_id: str,
                weights: Callable[[], tuple[Any, str | None]], provenance: dict[str, Any], opts: Any, device: str,
                backend: Any, *,
                force: bool, analyze: bool, echo: Callable[[str], None], progress: bool) -> Cell:  # fmt: skip
    """One cell (its lock held when `path` is set): reuse or score the artifact, analyse it, publish the record."""
    from cpbench.backends.pipeline import score_with
    from cpbench.base.runkey import RunKey
    from cpbench.results import store
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.conformal.protocols import analyze_artifact
    from cpbench.run.outputs import clean_cell_temps, publish_record, refuse_overwrite, remove_chunk_dir, reuse_check
    from cpbench.run.stages import assemble

    stored = None
    if path is not None:
        clean_cell_temps([path, store.result_path(RunKey(score=key, analysis=opts.analysis), results)])
        if not force:  # something else there: e.g. written meanwhile by a run with other settings
            stored, why = reuse_check(path, key, cell_in.prompts_hash, weights_id, device)
            if why is not None:
                raise refuse_overwrite(path, why)
    head = None  # a stored stage of this cell with another --limit (cpbench.run.seqrun): its items are not rescored
    if stored is None and path is not None and not force and key.limit is not None:
        from cpbench.run.stages import as_stage, prefix_artifact

        head = prefix_artifact(path, key, cell_in.prompts, weights_id, device)
        if head is not None and head.n == len(cell_in.prompts):
            as_stage(head, key, cell_in.prompts_hash).save(path)
            stored, head = LogitsArtifact.load(path), None
    reuse = stored is not None
    if reuse:
        echo(f"[{label}] {key.task}/{key.prompt}: artifact reused ({path})")
        remove_chunk_dir(stored.provenance)
        artifact = stored
    else:
        handle, model_hash = weights()
        cell_prov = {**provenance, "data_source": cell_in.data_source, "limit": opts.limit,
                     "sample_data": opts.data_for(key.task) == "samples"}  # fmt: skip
        # a stored artifact of the same cell with a smaller --limit whose items are a prefix of these (a sequential
        # gate's previous stage): only the new items are scored (cpbench.run.seqrun)
        todo = cell_in.prompts[head.n:] if head is not None else cell_in.prompts
        fresh = score_with(backend, handle, todo, key, batch_size=opts.batch_size, chunk_size=opts.chunk_size,
                           provenance=cell_prov, model_hash=model_hash, out_path=None if head is not None else path,
                           progress=progress, resume=path is not None)  # fmt: skip
        if head is not None:
            echo(f"[{label}] {key.task}/{key.prompt}: {head.n} items reused from a shorter stage, "
                 f"{len(todo)} scored")  # fmt: skip
            assemble(head, fresh, key, cell_in.prompts_hash).save(path)
            remove_chunk_dir(fresh.provenance)
        # a fresh artifact is reloaded: that verifies the content hash and sets the source path
        artifact = LogitsArtifact.load(path) if path is not None else fresh
    detail = artifact.provenance.get("scoring_detail") or {}
    s_per_item = None if reuse else detail.get("s_per_item")
    if not analyze:
        return Cell(label, key.task, key.prompt, key, path, path, {}, reuse, s_per_item, artifact)
    record = analyze_artifact(artifact, opts.analysis, opts.scores, input_path=str(path) if path is not None else None)
    result_path, status = publish_record(record, results, force) if results is not None else (None, "in-memory")
    if not reuse:
        echo(f"[{label}] {key.task}/{key.prompt}: {artifact.n} items, "
             f"{detail.get('wall_s', 0):.1f} s ({detail.get('s_per_item') or 0:.3f} s/item), "
             f"acc {record['acc']:.3f}")  # fmt: skip
    return Cell(label, key.task, key.prompt, key, path, result_path, record, reuse, s_per_item, artifact, status)
