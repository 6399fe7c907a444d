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

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cpbench.base.errors import CpbenchError
from cpbench.base.paths import DEFAULT_RESULTS
from cpbench.base.runkey import AnalysisKey, ScoreKey

BASELINE = "base"


@dataclass
class RunPlan:
    """Everything one `cpbench run` does (resolved from a suite and/or command-line options)."""

    model: Any  # what --model said (str), or a ModelEntry (an in-memory base from the Python API)
    recipes: list[str]
    tasks: list[str]
    prompts: list[str] = field(default_factory=lambda: ["base"])
    shots: int = 0
    chat: str = "none"
    scoring: str = "letter"
    data: str = "samples"
    limit: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    chunk_size: int = 256  # items per resumable chunk
    results: Path | None = Path(DEFAULT_RESULTS)  # ./runs by default; None: nothing written (Python API without a results directory)
    calibration: Any = None  # cpbench.weights.compress.CalibrationSpec; None = its defaults
    analysis: AnalysisKey = field(default_factory=AnalysisKey)
    suite: str | None = None
    strict_recipes: bool = True  # False for suites: skip recipes the device cannot run instead of failing
    force: bool = False  # rescore even when a matching artifact exists
    candidates: list[Any] = field(default_factory=list)  # cpbench.weights.models.Candidate: others' weights vs this base
    loaded: Any = None  # (model, tokenizer) of an in-memory base (Python API); None: load plan.model
    scorer: str = "hf"  # hf (transformers, the reference) | vllm (GPU throughput; cpbench.backends.vllm)
    # lm-eval-style options (cpbench.run.options): compute dtype, hub revision, from_pretrained kwargs, conformal
    # scores, and per-task item sources (`--data drs=PATH,qa=samples`; tasks not named use `data`)
    dtype: str = "auto"
    revision: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False  # --trust-remote-code: run the model repository's own code (in provenance)
    scores: tuple[str, ...] = ("lac", "aps")
    task_data: dict[str, str] = field(default_factory=dict)
    # sequential gate (cpbench.run.seqrun): score in stages of one fixed random order per task until decided
    until_decided: bool = False
    max_items: int | None = None
    order_seed: int | None = None  # set: items in the sequential gate's order, data tag `<tag>~seq<seed>`
    gate_limits: Any = None  # cpbench.results.gate.Limits (None: its defaults)
    gate_decision: Any = None  # cpbench.results.gate.Decision (None: its defaults)
    spending: str = "pocock"
    first_look: int = 200
    analyze: bool = True  # False: artifacts only (a sequential stage)
    only: set | None = None  # {(recipe, task, prompt)} to score; recipe "__base__" = the baseline
    model_note: str | None = None  # --model PATH recognised as registry weights: said in the run header

    def data_for(self, task: str) -> str:
        return self.task_data.get(task, self.data)


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


@dataclass
class RunOutcome:
    plan: RunPlan
    model_key: str
    cells: list[Cell]
    skipped: list[tuple[str, str]]  # (recipe, reason)
    notes: list[str]
    wall_s: float
    sequential: dict | None = None  # cpbench run --until-decided: design and per-cell decisions (cpbench.run.seqrun)


# ------------------------------------------------------------------------------------------------- planning
def plan_from_options(
    *,
    suite: str | None = None,
    model: str | None = None,
    quant: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    shots: int | None = None,
    chat: str | None = None,
    scoring: str | None = None,
    data: str | None = None,
    limit: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    results: str | Path | None = None,
    alpha: float | None = None,
    force: bool = False,
    candidates: Sequence[Any] | None = None,
    candidate_names: Sequence[str] | None = None,
    scorer: str | None = None,
    quant_files: Sequence[str | Path] | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    model_args: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    seed: int | None = None,
    splits: int | None = None,
    scores: Sequence[str] | None = None,
    calibration_data: str | None = None,
    calibration_samples: int | None = None,
    calibration_seq_len: int | None = None,
    model_name: str | None = None,
) -> RunPlan:
    """Options -> RunPlan. With --suite, or with neither --model nor --suite, the suite (default: `default`) gives
    every value not given on the command line. With --model and no suite: all tasks, base prompts, 0 shots, letter
    scoring (Ye et al.'s protocol) on the `prepared` data, the baseline plus --quant."""
    from cpbench.weights import models
    from cpbench.specs import recipes
    from cpbench.results.conformal.protocols import preset
    from cpbench.weights.compress import CalibrationSpec
    from cpbench.specs.tasks import list_tasks

    if model_name is not None and model is None:
        raise CpbenchError("--model-name names the --model directory or .gguf file; no --model was given")
    if model is not None:
        resolved = models.resolve(model, model_name)  # did-you-mean now, before anything loads
        if model_name is not None and resolved.name == model_name:
            model = resolved  # local weights under --model-name (a ModelEntry plans like any --model)
    quant_names: list[str] | None = None
    if quant:
        quant_names = []
        for spec in quant:
            quant_names.extend(r.name for r in recipes.expand_recipes(spec))
    if quant_files:  # llm-compressor recipe files: validated now, named by their stem, run like --quant recipes
        from cpbench.specs.recipe_file import load_recipe_file

        quant_names = (quant_names or []) + [load_recipe_file(f).name for f in quant_files]
    use_suite = suite is not None or model is None
    if use_suite:
        from cpbench.run.suites import load_suite

        s = load_suite(suite or "default")
        from cpbench.run.options import parse_task_data

        suite_data, suite_task_data = parse_task_data(s.data, list(s.tasks))  # "samples" or "drs=installed,..."
        plan = RunPlan(
            model=s.model, recipes=list(s.recipes), tasks=list(s.tasks), prompts=list(s.prompts), shots=s.shots,
            chat=s.chat, scoring=s.scoring, data=suite_data or "samples", limit=s.limit, device=s.device,
            calibration=s.calibration, suite=s.name, strict_recipes=False, task_data=suite_task_data, dtype=s.dtype,
        )  # fmt: skip
        if quant_names is not None:  # --quant replaces the suite's recipes
            plan.recipes, plan.strict_recipes = quant_names, True
    else:
        plan = RunPlan(model=str(model), recipes=quant_names or [], tasks=list_tasks(), data="prepared",
                       calibration=CalibrationSpec())  # fmt: skip
    if model is not None:
        plan.model = model
    from cpbench.run import options as runopts

    data, task_data = runopts.parse_task_data(data)
    if data is not None and not task_data:  # one source for every task replaces the suite's per-task sources
        plan.task_data = {}
    plan.task_data = {**plan.task_data, **task_data}
    plan.dtype = runopts.parse_dtype(dtype if dtype is not None else plan.dtype)
    plan.revision = revision
    plan.model_args = runopts.parse_model_args(model_args)
    plan.trust_remote_code = bool(trust_remote_code)
    plan.scores = runopts.parse_scores(list(scores) if scores else None) or plan.scores
    plan.calibration = runopts.calibration_spec(plan.calibration, calibration_data, calibration_samples,
                                                calibration_seq_len)  # fmt: skip
    overrides = dict(tasks=tasks, prompts=prompts, shots=shots, chat=chat, scoring=scoring, data=data, limit=limit,
                     device=device, batch_size=batch_size, chunk_size=chunk_size, scorer=scorer)  # fmt: skip
    for name, value in overrides.items():
        if value is not None:
            setattr(plan, name, list(value) if isinstance(value, (list, tuple)) else value)
    if results is not None:
        plan.results = Path(results)
    plan.force = force
    if candidates:
        if model is None:
            raise CpbenchError("--candidate needs --model BASE: the model the candidate was compressed from")
        plan.candidates = resolve_candidates(candidates, candidate_names)
    elif candidate_names:
        raise CpbenchError("--candidate-name names a --candidate; none was given")
    plan.analysis = preset("default", alpha=alpha, seed=seed, splits=splits)
    plan.model_note = models.local_note(model, model_name)
    _normalise(plan)
    return plan


def resolve_candidates(specs: Sequence[Any], names: Sequence[str] | None = None) -> list[Any]:
    """--candidate values (+ --candidate-name, in the same order) -> Candidates with distinct names."""
    from cpbench.weights import models

    names = list(names or [])
    if len(names) > len(specs):
        raise CpbenchError(f"{len(names)} --candidate-name values for {len(specs)} --candidate values")
    out = [models.resolve_candidate(spec, names[i] if i < len(names) else None) for i, spec in enumerate(specs)]
    seen: set[str] = set()
    for c in out:
        if c.name.lower() in seen:
            raise CpbenchError(f"two candidates are named {c.name!r}; give each a --candidate-name")
        seen.add(c.name.lower())
    return out


def _normalise(plan: RunPlan) -> None:
    from cpbench.specs import recipes
    from cpbench.base.config import did_you_mean
    from cpbench.specs.tasks import list_tasks

    known = list_tasks()
    for t in plan.tasks:
        if t not in known:
            hint = did_you_mean(t, known) or f" (known: {', '.join(known)})"
            raise CpbenchError(f"unknown task {t!r}{hint}")
    for p in plan.prompts:
        if p not in ("base", "shared", "task"):
            raise CpbenchError(f"unknown prompt method {p!r} (use base, shared or task)")
    if plan.scorer not in ("hf", "vllm"):
        raise CpbenchError(f"unknown scorer {plan.scorer!r} (use hf or vllm)")
    if plan.scorer == "vllm" and plan.scoring != "letter":
        raise CpbenchError("--scorer vllm scores letters only (cloze needs per-token log-likelihoods: use --scorer hf)")
    if plan.scoring not in ("letter", "cloze"):
        raise CpbenchError(f"unknown scoring {plan.scoring!r} (use letter or cloze)")
    if plan.shots < 0:
        raise CpbenchError(f"--shots must be >= 0, got {plan.shots}")
    if plan.chat not in ("none", "v1", "v2"):
        raise CpbenchError(f"unknown chat mode {plan.chat!r} (use none, v1 or v2)")
    if plan.limit is not None and plan.limit < 1:  # 0 would mean "all items" and -1 "all but one" in a slice
        raise CpbenchError(f"--limit must be >= 1, got {plan.limit}")
    if plan.results is not None and plan.results.exists() and not plan.results.is_dir():
        raise CpbenchError(f"--results {plan.results}: is a file, expected a directory")
    from cpbench.specs.tasks import data_tag

    if plan.task_data:
        from cpbench.run.options import parse_task_data

        parse_task_data(",".join(f"{t}={s}" for t, s in plan.task_data.items()), plan.tasks)  # unknown task names
    for source in {plan.data, *plan.task_data.values()}:
        data_tag(source)  # a missing --data file fails now, not after the model is loaded
    if plan.batch_size is not None and plan.batch_size < 1:
        raise CpbenchError(f"--batch-size must be >= 1, got {plan.batch_size}")
    if plan.chunk_size < 1:
        raise CpbenchError(f"--chunk-size must be >= 1, got {plan.chunk_size}")
    # The baseline is always scored, first: every comparison needs it.
    resolved = [recipes.resolve(r) for r in plan.recipes]
    base = next((r.name for r in resolved if r.is_baseline), BASELINE)
    plan.recipes = [base] + [r.name for r in resolved if not r.is_baseline]
    taken = {r.lower() for r in plan.recipes}
    for c in plan.candidates:  # a candidate's results take a recipe's place in the results tree
        if c.name.lower() in taken:
            raise CpbenchError(f"candidate name {c.name!r} is also a recipe of this run; give it a --candidate-name")
    plan.tasks = list(dict.fromkeys(plan.tasks))
    plan.prompts = list(dict.fromkeys(plan.prompts))


# ------------------------------------------------------------------------------------------------- running
def artifact_path(results: Path, key: ScoreKey) -> Path:
    return key.cell_dir(results) / "artifacts" / f"{key.slug()}.parquet"


def _reusable(path: Path, key: ScoreKey, p_hash: str, weights_id: str, device: str | None) -> Any:
    """The stored artifact (a LogitsArtifact), or None. It is reused only when it was produced for exactly this cell,
    inputs and weights, on the same kind of device (which fixes the dtype: fp32 on CPU, the model's bf16/fp16 on
    GPU). `device=None` accepts any device type (the weights id already names the compute dtype of a checkpoint).
    Returned loaded, so that the caller does not read it a second time."""
    from cpbench.results.artifact import LogitsArtifact

    if not path.is_file():
        return None
    try:
        artifact = LogitsArtifact.load(path)
    except CpbenchError:
        return None
    prov = artifact.provenance
    ok = (
        prov.get("run_key") == key.model_dump()
        and prov.get("prompts_hash") == p_hash
        and prov.get("weights_id") == weights_id
        and (device is None or str(prov.get("device", "")).split(":")[0] == device.split(":")[0])
    )
    return artifact if ok else None


def _weights(entry: Any, recipe: Any, ckpt: Any) -> Any:
    """The WeightsIdentity of what a unit scores (cpbench.weights.identity owns the rules): the checkpoint's content
    address once one exists, or the base model's identity (+ recipe)."""
    from cpbench.weights import identity as weights

    return weights.of_recipe(entry, recipe, ckpt.report.get("cache_key") if ckpt.path is not None else None)


def run(plan: RunPlan, echo: Callable[[str], None] = print, progress: bool = True) -> RunOutcome:
    """Execute the plan; returns every cell's record and where it was written."""
    if plan.until_decided:
        from cpbench.run.seqrun import run_until_decided

        return run_until_decided(plan, echo, progress)
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
    from cpbench.weights.identity import fingerprint

    held: dict[str, Any] = {}

    def weights() -> tuple[Any, Any, str]:
        if "model" not in held:
            tl = time.perf_counter()
            held["model"], held["tok"] = load()
            # once per model, not per cell; a vLLM engine's weights live in its workers: the weights id pins them
            held["hash"] = fingerprint(held["model"]) if opts.scorer == "hf" else None
            echo(f"[{label}] model loaded ({time.perf_counter() - tl:.1f} s)")
        return held["model"], held["tok"], held["hash"]

    def one(key: ScoreKey, path: Path | None) -> Cell:
        return _score_cell(label, key, inputs[(key.task, key.prompt)], path, results, weights_id, weights, provenance,
                           opts, device, force=force, analyze=analyze, echo=echo, progress=progress)  # fmt: skip

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
        held.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [done[k] for k in keys]


def _score_cell(label: str, key: ScoreKey, cell_in: Any, path: Path | None, results: Path | None, weights_id: str,
                weights: Callable[[], tuple[Any, Any, str]], provenance: dict[str, Any], opts: Any, device: str, *,
                force: bool, analyze: bool, echo: Callable[[str], None], progress: bool) -> Cell:  # fmt: skip
    """One cell (its lock held when `path` is set): reuse or score the artifact, analyse it, publish the record."""
    from cpbench.results import store
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.conformal.protocols import analyze_artifact
    from cpbench.run.outputs import artifact_conflict, clean_cell_temps, publish_record, refuse_overwrite, remove_chunk_dir
    from cpbench.base.runkey import RunKey
    from cpbench.backends.pipeline import score_prompts

    stored = None
    if path is not None:
        clean_cell_temps([path, store.result_path(RunKey(score=key, analysis=opts.analysis), results)])
        stored = None if force else _reusable(path, key, cell_in.prompts_hash, weights_id, device)
        if stored is None and not force and path.exists():  # e.g. written meanwhile by a run with other settings
            why = artifact_conflict(path, key, cell_in.prompts_hash, weights_id, device) or "changed"
            raise refuse_overwrite(path, why)
    head = None  # a stored stage of this cell with another --limit (cpbench.run.seqrun): its items are not rescored
    if stored is None and path is not None and not force and key.limit is not None:
        from cpbench.run.seqrun import as_stage, prefix_artifact

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
        model, tok, model_hash = weights()
        cell_prov = {**provenance, "data_source": cell_in.data_source, "limit": opts.limit,
                     "sample_data": opts.data_for(key.task) == "samples"}  # fmt: skip
        if opts.scorer == "vllm":
            from cpbench.backends.vllm import score_prompts_vllm

            fresh = score_prompts_vllm(model, cell_in.prompts, key, chunk_size=opts.chunk_size,
                                       provenance=cell_prov, out_path=path, resume=path is not None)  # fmt: skip
        else:
            # a stored artifact of the same cell with a smaller --limit whose items are a prefix of these (a
            # sequential gate's previous stage): only the new items are scored (cpbench.run.seqrun)
            from cpbench.run.seqrun import assemble

            todo = cell_in.prompts[head.n:] if head is not None else cell_in.prompts
            fresh = score_prompts(model, tok, todo, key, batch_size=opts.batch_size,
                                  chunk_size=opts.chunk_size, provenance=cell_prov, model_hash=model_hash,
                                  out_path=None if head is not None else path, progress=progress,
                                  resume=path is not None)  # fmt: skip
            if head is not None:
                from cpbench.run.outputs import remove_chunk_dir as _rm

                echo(f"[{label}] {key.task}/{key.prompt}: {head.n} items reused from a shorter stage, "
                     f"{len(todo)} scored")  # fmt: skip
                assemble(head, fresh, key, cell_in.prompts_hash).save(path)
                _rm(fresh.provenance)
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


# ------------------------------------------------------------------------------------------------- reporting
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _delta(x: float | None, base: float | None, pct: bool = True) -> str:
    if x is None or base is None:
        return ""
    d = (x - base) * (100 if pct else 1)
    return f"{d:+.1f}" if pct else f"{d:+.2f}"


def summary_table(outcome: RunOutcome) -> Any:
    """rich Table: per task and prompt, the baseline row then each recipe with its change from the baseline."""
    from rich.table import Table

    a = outcome.plan.analysis
    table = Table(
        title=f"cpbench run: {outcome.model_key} ({outcome.plan.scoring} scoring), alpha {a.alpha:g}, "
        f"mean over {a.splits} calibration/test splits; acc/cov in %, size in options (Δ vs baseline)"
    )
    for name, justify in (("task", "left"), ("prompt", "left"), ("recipe", "left"), ("n", "right"), ("acc", "right"),
                          ("Δacc", "right"), ("LAC cov", "right"), ("LAC size", "right"), ("Δsize", "right"),
                          ("APS cov", "right"), ("APS size", "right"), ("Δsize", "right")):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)
    base = {(c.task, c.prompt): c.record for c in outcome.cells if c.recipe == outcome.plan.recipes[0]}
    order = list(outcome.plan.recipes) + [c.name for c in outcome.plan.candidates]
    for c in sorted(outcome.cells, key=lambda c: (outcome.plan.tasks.index(c.task), c.prompt,
                                                  order.index(c.recipe))):  # fmt: skip
        r, b = c.record, base.get((c.task, c.prompt))
        is_base = c.recipe == outcome.plan.recipes[0]
        ref = None if is_base else b
        table.add_row(
            c.task, c.prompt, c.recipe, str(r["n"]), _pct(r["acc"]), _delta(r["acc"], ref and ref["acc"]),
            _pct(r["lac"]["coverage"]), f"{r['lac']['set_size']:.2f}",
            _delta(r["lac"]["set_size"], ref and ref["lac"]["set_size"], pct=False),
            _pct(r["aps"]["coverage"]), f"{r['aps']['set_size']:.2f}",
            _delta(r["aps"]["set_size"], ref and ref["aps"]["set_size"], pct=False),
        )  # fmt: skip
    return table
