"""`cpbench run` orchestration: compress (cached) -> score (cached) -> analyze -> store, baseline and recipes.

For one model and a list of recipes (the uncompressed baseline always first), every (task, prompt method) cell is
scored into a logits artifact and analysed into a result record:

    results/<model>/<recipe>/artifacts/<ScoreKey.slug()>.parquet    the logits artifact (input of `cpbench analyze`)
    results/<model>/<recipe>/<RunKey.slug()>.json                   the result record (cpbench.results.store.write_result)

The artifacts live in the results tree, next to the records they produced, so a results directory is self-contained
(ship it, re-analyse it with another protocol, without a GPU). They double as the score cache: a rerun reuses an
artifact when its provenance matches the cell exactly (ScoreKey, prompts hash, weights id, device type); anything
else is rescored. Unfinished scoring lives in chunk files under `cache_dir()/scores` until the artifact is written,
so an interrupted run resumes where it stopped. Compressed checkpoints are cached by cpbench.weights.compress.

Nothing is lost or silently replaced (cpbench.run.outputs, cpbench.base.locks): reuse is decided before compressing (the
weights id is known without compressing), so a rerun whose cells all exist loads and compresses nothing; a stored
artifact or record of different content is never replaced without --force; an equal record is not rewritten; one
process works on a cell at a time, so concurrent runs on one results tree and cache split the work.

Models are loaded one at a time (baseline, then each recipe) and freed before the next. Recipes that cannot run on
the device (bitsandbytes, or `requires: cuda`) are skipped with the reason printed when they come from a suite, and
are an error when asked for by name with --quant.
"""


import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cpbench.base.errors import CpbenchError
from cpbench.run.cells import Cell, artifact_path, score_cells
from cpbench.run.plan import RunPlan


@dataclass
class RunOutcome:
    plan: RunPlan
    model_key: str
    cells: list[Cell]
    skipped: list[tuple[str, str]]  # (recipe, reason)
    notes: list[str]
    wall_s: float
    sequential: dict | None = None  # cpbench run --until-decided: design and per-cell decisions (cpbench.run.seqrun)


def _weights(entry: Any, recipe: Any, ckpt: Any) -> Any:
    """The WeightsIdentity of what a unit scores (cpbench.weights.identity owns the rules): the checkpoint's content
    address once one exists, or the base model's identity (+ recipe)."""
    from cpbench.weights import identity as weights

    return weights.of_recipe(entry, recipe, ckpt.report.get("cache_key") if ckpt.path is not None else None)


def run(plan: RunPlan, echo: Callable[[str], None] = print, progress: bool = True) -> RunOutcome:
    """One pass over the plan (a sequential stage is one such pass; `cpbench.run.execute` chooses); returns every
    cell's record and where it was written."""
    from cpbench.run import preflight as failfast
    from cpbench.weights import models
    from cpbench.specs.tasks.sources import describe_source
    from cpbench.run.unit import build_inputs, check_enough_items, units_from_plan

    t0 = time.perf_counter()
    units = units_from_plan(plan)  # model, recipes and cells resolved once
    if plan.only is not None:  # a sequential stage: only the open cells (and their baseline cells)
        units = [u.model_copy(update={"cells": tuple(k for k in u.cells if (
            "__base__" if i == 0 else k.recipe, k.task, k.prompt) in plan.only or (k.recipe, k.task, k.prompt)
            in plan.only)}) for i, u in enumerate(units)]  # fmt: skip
    entry = units[0].model
    device = models.resolve_device(plan.device)
    dtype = str(models.resolve_dtype(None if plan.dtype == "auto" else plan.dtype, device, entry))
    dtype = dtype.removeprefix("torch.")
    # Every cheap check (writable outputs, offline state, recipe x model, GPU-only recipes) before the first
    # expensive step: tokenizer download, GGUF conversion, compression, scoring.
    ok, skipped, warnings = failfast.preflight(
        entry, [u.recipe for u in units], device, results=plan.results, strict_recipes=plan.strict_recipes,
        calibration=plan.calibration,
    )  # fmt: skip
    threads = models.current_threads()
    if plan.scorer == "vllm":  # before compressing anything: CUDA and the vllm package must be there
        from cpbench.backends.vllm import require_vllm

        require_vllm(device)
    notes = list(units[0].notes)
    echo(f"cpbench run: model {entry.name} ({entry.source}), device {device} ({dtype}, {threads} thread(s)), "
         f"recipes {', '.join(plan.recipes)}, tasks {', '.join(plan.tasks)}, {plan.scoring} scoring, "
         f"data {describe_source(plan.data)}" + "".join(f", {t}={s}" for t, s in plan.task_data.items())
         + (f", candidates {', '.join(c.name for c in plan.candidates)}" if plan.candidates else "")
         + (f", limit {plan.limit}" if plan.limit else ""))  # fmt: skip
    if plan.model_note:
        echo(f"note: {plan.model_note}")
    for w in warnings:
        echo(f"warning: {w}")

    # Items and prompts are built once (with the base model's tokenizer, needed for chat templates only). A hub
    # model's tokenizer is loaded up front as well: it fetches config.json, so weights ids pin the resolved commit
    # (not "main") from the first run on, and a gated or offline model fails here with one line.
    tokenizer = plan.loaded[1] if plan.loaded is not None else None  # an in-memory base brings its own
    if tokenizer is None and (plan.chat == "v1" or entry.source == "hub"):
        tokenizer = models.load_tokenizer(entry)  # revision, trust_remote_code and gguf_file passed through
    inputs = build_inputs(units[0].options, tokenizer)
    check_enough_items(inputs, plan.analysis)
    # every prompt fits the model's context, before any compression or scoring (tokenizes only long prompts)
    failfast.check_context(
        inputs, plan.loaded[0].config.to_dict() if plan.loaded is not None else failfast.model_config(entry),
        lambda: tokenizer if tokenizer is not None else models.load_tokenizer(entry), entry.name, plan.scoring,
    )  # fmt: skip
    if plan.candidates:  # refused before any weights load: other token ids make option logits incomparable
        from cpbench.weights.candidates import require_pairable

        base_tok = plan.loaded[1] if plan.loaded is not None else (tokenizer or models.load_tokenizer(entry))
        base_cfg = plan.loaded[0].config.to_dict() if plan.loaded is not None else models.model_config(entry)
        for cand in plan.candidates:
            require_pairable(base_tok, base_cfg, cand, entry.name)

    cells: list[Cell] = []
    runnable = [u for u in units if u.recipe.name in {r.name for r in ok}]  # the preflight decided
    for name, problem in skipped:
        echo(f"[{name}] skipped on {device}: {problem}")
    if plan.loaded is not None and len(runnable) > 1:
        raise CpbenchError("an in-memory base model cannot be compressed by cpbench recipes (it has no files to "
                           "reload); pass compressed models as candidates")  # fmt: skip
    if plan.results is not None:
        _preflight(runnable, units[0], inputs, device, plan, echo)
    for unit in runnable:
        if not unit.cells:
            continue
        cells.extend(run_unit(unit, inputs, device, plan.results, echo=echo, progress=progress, force=plan.force,
                              loaded=plan.loaded if unit.recipe.is_baseline else None,
                              analyze=plan.analyze))  # fmt: skip
    base_unit = units[0]
    for cand in plan.candidates:
        cu = base_unit
        if plan.only is not None:
            cu = base_unit.model_copy(update={"cells": tuple(k for k in units_from_plan(plan)[0].cells
                                                             if (cand.name, k.task, k.prompt) in plan.only)})
            if not cu.cells:
                continue
        cells.extend(run_candidate(cand, cu, inputs, device, plan.results, echo=echo, progress=progress,
                                   force=plan.force, analyze=plan.analyze))  # fmt: skip
    kept = [c for c in cells if c.status == "kept"]
    if kept:
        from cpbench.run.outputs import kept_message

        more = f" ({len(kept) - 1} more record(s) kept likewise)" if len(kept) > 1 else ""
        raise CpbenchError(kept_message(kept[0].result_path, kept[0].record) + more)
    return RunOutcome(plan, entry.key, cells, skipped, notes, time.perf_counter() - t0)


def _preflight(units: Sequence[Any], base_unit: Any, inputs: dict[tuple[str, str], Any], device: str,
               plan: RunPlan, echo: Callable[[str], None]) -> None:  # fmt: skip
    """Before any compression or scoring: every stored artifact checked against what this run would produce, with
    weights ids known without compressing (a different artifact is never replaced without --force); the outputs
    and, when there is work, the caches checked writable; leftovers of dead runs swept."""
    from cpbench.base import locks
    from cpbench.weights.compress import cache
    from cpbench.run.outputs import artifact_conflict, check_writable, refuse_overwrite
    from cpbench.base.paths import cache_dir

    results = Path(plan.results)
    groups = [(unit.cells, _unit_identity(unit, device).weights_id) for unit in units]
    groups += [([k.model_copy(update={"recipe": c.name}) for k in base_unit.cells], c.weights().weights_id)
               for c in plan.candidates]  # fmt: skip
    work = False
    for keys, wid in groups:
        for key in keys:
            path = artifact_path(results, key)
            if plan.force or not path.exists():
                work = True
                continue
            why = artifact_conflict(path, key, inputs[(key.task, key.prompt)].prompts_hash, wid, device)
            if why:
                raise refuse_overwrite(path, why)
    targets = [(results, "results")]
    if work:
        root = cache_dir()
        targets += [(root / "checkpoints", "compressed checkpoints"), (root / "scores", "score chunks"),
                    (root / "models", "converted models")]  # fmt: skip
    check_writable(targets)
    swept = cache.sweep() + locks.sweep(cache_dir() / "models")
    for d in sorted({p.parent for p in results.rglob(".*.lock")}):
        swept += locks.sweep(d)
    if swept:
        echo(f"removed {len(swept)} leftover(s) of interrupted runs: {', '.join(p.name for p in swept[:3])}"
             + (" ..." if len(swept) > 3 else ""))  # fmt: skip


def _unit_identity(unit: Any, device: str) -> Any:
    """The WeightsIdentity a unit's artifacts carry, known before compressing (the checkpoint cache key needs no
    weights and no calibration sample: cpbench.weights.compress.checkpoint_key)."""
    from cpbench.weights import identity as weights
    from cpbench.weights.compress import checkpoint_key

    key = checkpoint_key(unit.model, unit.recipe, unit.options.calibration, device)
    return weights.of_recipe(unit.model, unit.recipe, key.digest if key is not None else None)


def run_unit(
    unit: Any,
    inputs: dict[tuple[str, str], Any],
    device: str,
    results: Path,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    force: bool = False,
    analyze: bool = True,
    loaded: Any = None,
) -> list[Cell]:
    """Score every cell of one WorkUnit on `device`, compressing (cached) and loading the weights only when a cell
    must be scored, writing artifacts (and, with `analyze`, result records) under `results`. `inputs` are the cells'
    prompts (`cpbench.run.unit.build_inputs`). Shared by `cpbench run` and every `cpbench sweep` executor. `loaded`: the
    (model, tokenizer) of an in-memory base."""
    from cpbench.base import progress as progress_mod
    from cpbench.weights.compress import compress

    entry, recipe, opts = unit.model, unit.recipe, unit.options
    identity = _unit_identity(unit, device)  # before compressing: reuse is decided first
    from cpbench.results.analysis.knobs import provenance_fields

    provenance = {
        **entry.provenance(),
        "recipe": {"name": recipe.name, "spec": recipe.spec(), "description": recipe.description},
        "compression_report": None,  # filled when the weights are needed (below)
        "checkpoint_path": None,
        **identity.provenance(),
        **provenance_fields(entry.params_b, recipe.name, recipe.spec()),  # n_params, knob: analyses read these
        "sample_data": opts.data == "samples",
        "suite": opts.suite,
    }
    provenance["notes"] = list(dict.fromkeys(list(provenance.get("notes") or []) + list(unit.notes)))

    def load() -> tuple[Any, Any]:
        tr = time.perf_counter()
        if recipe.is_baseline or recipe.load_time:
            ckpt = compress(entry, recipe, opts.calibration, device, on_wait=echo)
        else:  # minutes when not cached: cpbench's own progress (llm-compressor's per-layer steps nest in it)
            reporter = progress_mod.current() if progress else progress_mod.Reporter()
            with reporter.task(f"[{recipe.name}] compress {entry.name}") as step:
                ckpt = compress(entry, recipe, opts.calibration, device, on_wait=echo)
                step.note("cached checkpoint" if ckpt.cached else "written and verified")
        if ckpt.path is not None:
            echo(f"[{recipe.name}] checkpoint {'cached' if ckpt.cached else 'written'}: {ckpt.path} "
                 f"({time.perf_counter() - tr:.1f} s)")  # fmt: skip
        actual = _weights(entry, recipe, ckpt)
        if actual.weights_id != identity.weights_id:  # the reuse check and the provenance must agree
            raise CpbenchError(f"internal: weights id {actual.weights_id} after compressing differs from "
                               f"{identity.weights_id} predicted before it")  # fmt: skip
        provenance["compression_report"] = ckpt.report
        provenance["checkpoint_path"] = str(ckpt.path) if ckpt.path is not None else None
        # an in-memory base (Python API) is scored as given; its identity is its content fingerprint
        if loaded is not None:
            return loaded
        if opts.scorer == "vllm":  # the same checkpoint, served by vLLM (cpbench.backends.vllm)
            return _vllm_engine(entry, recipe, ckpt, device)
        return ckpt.load(device, None if opts.dtype == "auto" else opts.dtype)

    return score_cells(recipe.name, unit.cells, identity.weights_id, load, provenance, opts, inputs, device, results,
                       echo=echo, progress=progress, force=force, analyze=analyze)


def _vllm_engine(entry: Any, recipe: Any, ckpt: Any, device: str) -> tuple[Any, Any]:
    from cpbench.weights import models
    from cpbench.backends.vllm import VllmModel

    if recipe.load_time:
        raise CpbenchError(f"recipe {recipe.name!r} quantizes while loading with bitsandbytes; use --scorer hf")
    tok = models.load_tokenizer(ckpt.path if ckpt.path is not None else entry)
    where = str(ckpt.path) if ckpt.path is not None else models.model_dir(entry)
    revision = entry.revision if ckpt.path is None and entry.source == "hub" else None
    # the dtype the HF scorer would use on this GPU (vLLM's "auto" turns a float32 config into float16)
    dtype = str(models.resolve_dtype(None, device, entry)).removeprefix("torch.")
    return VllmModel(where, tok, device, revision=revision, trust_remote_code=entry.trust_remote_code,
                     dtype=dtype), tok  # fmt: skip


def run_candidate(
    candidate: Any,
    base_unit: Any,
    inputs: dict[tuple[str, str], Any],
    device: str,
    results: Path,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    force: bool = False,
    analyze: bool = True,
) -> list[Cell]:
    """Score a candidate (cpbench.weights.models.Candidate) on the base unit's cells, its name in the recipe slot: the
    results land beside the base's and pair with them by items. Its recipe spec is what cpbench reads of it without
    loading; what it measures on the loaded weights goes into `compression_report`."""
    from cpbench.weights import candidates

    identity = candidate.weights()
    spec = candidates.describe(candidate)
    cells = [key.model_copy(update={"recipe": candidate.name}) for key in base_unit.cells]
    base = base_unit.model
    from cpbench.results.analysis.knobs import provenance_fields

    provenance = {
        **base.provenance(),  # the model the candidate is judged against (model_id, model_name, model_key, ...)
        "recipe": {"name": candidate.name, "kind": "candidate", "spec": spec,
                   "description": f"candidate {identity.id} judged against {base.name}"},
        "candidate": candidate.entry.provenance(),
        "compression_report": None,  # filled from the loaded weights below
        "checkpoint_path": str(candidates.local_path(candidate) or "") or None,
        **identity.provenance(),
        **provenance_fields(base.params_b, candidate.name, spec),  # n_params (of the base), knob when it has one
        "sample_data": base_unit.options.data == "samples",
        "suite": base_unit.options.suite,
    }
    provenance.pop("model_commit", None)
    if base.source == "hub":
        provenance["model_commit"] = base.weights().commit
    provenance["notes"] = list(dict.fromkeys(list(provenance.get("notes") or []) + list(base_unit.notes)))

    def load() -> tuple[Any, Any]:
        model, tok = candidate.load(device)
        provenance["compression_report"] = candidates.measure(model, candidate)
        return model, tok

    return score_cells(candidate.name, cells, identity.weights_id, load, provenance, base_unit.options, inputs,
                       device, results, echo=echo, progress=progress, force=force, analyze=analyze)
