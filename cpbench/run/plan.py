"""What one `cpbench run` does: the run plan, built from a suite and/or command-line options and checked before
anything loads (unknown tasks, recipes, backends, prompt methods, data sources; impossible values).

One frozen plan is shared by `cpbench run`, `cpbench sweep` (its units' options are taken from it:
cpbench.run.unit.units_from_plan) and the Python API: it is built once by `plan_from_options` and never changed; a
sequential stage is another plan made with `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cpbench.base.errors import CpbenchError
from cpbench.base.paths import DEFAULT_RESULTS
from cpbench.base.runkey import AnalysisKey

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.backends.base import Backend
    from cpbench.results.gate import Decision, Limits
    from cpbench.weights.compress import CalibrationSpec
    from cpbench.weights.models import Candidate, ModelEntry

BASELINE = "base"


@dataclass(frozen=True)
class RunPlan:
    """Everything one `cpbench run` does (resolved from a suite and/or command-line options)."""

    model: str | ModelEntry  # what --model said, or a ModelEntry (local weights named, an in-memory base)
    recipes: tuple[str, ...]
    tasks: tuple[str, ...]
    prompts: tuple[str, ...] = ("base",)
    shots: int = 0
    chat: str = "none"
    scoring: str = "letter"
    data: str = "samples"
    limit: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    chunk_size: int = 256  # items per resumable chunk
    # ./runs by default; None: nothing written (the Python API without a results directory)
    results: Path | None = Path(DEFAULT_RESULTS)
    calibration: CalibrationSpec | None = None  # None = its defaults
    analysis: AnalysisKey = field(default_factory=AnalysisKey)
    suite: str | None = None
    strict_recipes: bool = True  # False for suites: skip recipes the device cannot run instead of failing
    force: bool = False  # rescore even when a matching artifact exists
    candidates: tuple[Candidate, ...] = ()  # others' weights judged against this base
    loaded: Any = None  # (model, tokenizer) of an in-memory base (Python API); None: load plan.model
    scorer: str = "hf"  # a cpbench.backends.registry name: hf (transformers, the reference) | vllm | ...
    backend: Backend | None = None  # a Backend object (Python API); None: the registry's `scorer`
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
    gate_limits: Limits | None = None  # None: its defaults
    gate_decision: Decision | None = None  # None: its defaults
    spending: str = "pocock"
    first_look: int = 200
    # one-sided level of the sequential futility stop (a cell showing a regression above none stops as FAIL; it
    # never passes one); 0: off; None: cpbench.results.analysis.sequential.DEFAULT_FUTILITY
    futility: float | None = None
    analyze: bool = True  # False: artifacts only (a sequential stage)
    only: frozenset[tuple[str, str, str]] | None = None  # (recipe, task, prompt) to score; "__base__" = the baseline
    model_note: str | None = None  # --model PATH recognised as registry weights: said in the run header

    def data_for(self, task: str) -> str:
        return self.task_data.get(task, self.data)


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
    in_memory: bool = False,
    loaded: Any = None,
    backend: Any = None,
    until_decided: bool = False,
    max_items: int | None = None,
    spending: str | None = None,
    first_look: int | None = None,
    gate_limits: Any = None,
    gate_decision: Any = None,
    futility: float | None = None,
) -> RunPlan:
    """Options -> RunPlan. With --suite, or with neither --model nor --suite, the suite (default: `default`) gives
    every value not given on the command line. With --model and no suite: all tasks, base prompts, 0 shots, letter
    scoring (Ye et al.'s protocol) on the `prepared` data, the baseline plus --quant.

    Python API only: `in_memory` writes nothing (no results directory), `loaded` is an in-memory (model, tokenizer)
    base, `backend` a cpbench.backends.base.Backend object. `until_decided` and the options after it are the
    sequential gate's (cpbench.run.seqrun)."""
    from cpbench.results.conformal.protocols import preset
    from cpbench.specs import recipes
    from cpbench.specs.tasks import list_tasks
    from cpbench.weights import models
    from cpbench.weights.compress import CalibrationSpec

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
        from cpbench.run.options import parse_task_data
        from cpbench.run.suites import load_suite

        s = load_suite(suite or "default")
        suite_data, suite_task_data = parse_task_data(s.data, list(s.tasks))  # "samples" or "drs=installed,..."
        v: dict[str, Any] = dict(
            model=s.model, recipes=list(s.recipes), tasks=list(s.tasks), prompts=list(s.prompts), shots=s.shots,
            chat=s.chat, scoring=s.scoring, data=suite_data or "samples", limit=s.limit, device=s.device,
            calibration=s.calibration, suite=s.name, strict_recipes=False, task_data=suite_task_data, dtype=s.dtype,
        )  # fmt: skip
        if quant_names is not None:  # --quant replaces the suite's recipes
            v.update(recipes=quant_names, strict_recipes=True)
    else:
        v = dict(model=str(model), recipes=quant_names or [], tasks=list_tasks(), data="prepared",
                 calibration=CalibrationSpec())  # fmt: skip
    if model is not None:
        v["model"] = model
    from cpbench.run import options as runopts

    data, task_data = runopts.parse_task_data(data)
    base_task_data = {} if data is not None and not task_data else v.get("task_data", {})  # one source for all
    v["task_data"] = {**base_task_data, **task_data}
    v["dtype"] = runopts.parse_dtype(dtype if dtype is not None else v.get("dtype", "auto"))
    v.update(revision=revision, model_args=runopts.parse_model_args(model_args),
             trust_remote_code=bool(trust_remote_code))  # fmt: skip
    v["scores"] = runopts.parse_scores(list(scores) if scores else None) or RunPlan.scores
    v["calibration"] = runopts.calibration_spec(v.get("calibration"), calibration_data, calibration_samples,
                                                calibration_seq_len)  # fmt: skip
    overrides = dict(tasks=tasks, prompts=prompts, shots=shots, chat=chat, scoring=scoring, data=data, limit=limit,
                     device=device, batch_size=batch_size, chunk_size=chunk_size, scorer=scorer)  # fmt: skip
    v.update({name: value for name, value in overrides.items() if value is not None})
    if in_memory:
        v["results"] = None
    elif results is not None:
        v["results"] = Path(results)
    v["force"] = force
    if candidates:
        if model is None:
            raise CpbenchError("--candidate needs --model BASE: the model the candidate was compressed from")
        v["candidates"] = resolve_candidates(candidates, candidate_names)
    elif candidate_names:
        raise CpbenchError("--candidate-name names a --candidate; none was given")
    v["analysis"] = preset("default", alpha=alpha, seed=seed, splits=splits)
    v["model_note"] = models.local_note(model, model_name)
    if backend is not None and not isinstance(backend, str):
        v.update(backend=backend, scorer=backend.name)
    elif backend is not None:
        v["scorer"] = backend
    v.update(loaded=loaded, until_decided=until_decided)
    if until_decided:
        from cpbench.results.analysis.sequential import futility_level

        v.update(max_items=max_items, gate_limits=gate_limits, gate_decision=gate_decision,
                 futility=futility_level(futility),  # None: the default level; bad values: one line, exit 2
                 **{k: x for k, x in (("spending", spending), ("first_look", first_look)) if x is not None})
    elif max_items is not None or gate_limits is not None or futility is not None:
        raise CpbenchError("--max-items, --gate-limits and --futility apply to --until-decided")
    return _normalised(v)


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


def _normalised(v: dict[str, Any]) -> RunPlan:
    """The plan, checked (one line naming the problem for each mistake) and frozen: unique tasks and prompt
    methods in their given order, the baseline recipe first."""
    from cpbench.backends.registry import backend_class
    from cpbench.base.config import did_you_mean
    from cpbench.specs import recipes
    from cpbench.specs.tasks import list_tasks

    plan = RunPlan(**{k: tuple(x) if k in ("recipes", "tasks", "prompts", "candidates", "scores") else x
                      for k, x in v.items()})  # fmt: skip

    known = list_tasks()
    for t in plan.tasks:
        if t not in known:
            hint = did_you_mean(t, known) or f" (known: {', '.join(known)})"
            raise CpbenchError(f"unknown task {t!r}{hint}")
    for p in plan.prompts:
        if p not in ("base", "shared", "task"):
            raise CpbenchError(f"unknown prompt method {p!r} (use base, shared or task)")
    if plan.scoring not in ("letter", "cloze"):
        raise CpbenchError(f"unknown scoring {plan.scoring!r} (use letter or cloze)")
    backend = plan.backend if plan.backend is not None else backend_class(plan.scorer)  # did-you-mean for a name
    backend.check_scoring(plan.scoring)
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
    ordered = (base, *(r.name for r in resolved if not r.is_baseline))
    taken = {r.lower() for r in ordered}
    for c in plan.candidates:  # a candidate's results take a recipe's place in the results tree
        if c.name.lower() in taken:
            raise CpbenchError(f"candidate name {c.name!r} is also a recipe of this run; give it a --candidate-name")
    if not backend.needs_weights and (len(ordered) > 1 or plan.candidates):
        raise CpbenchError(f"backend {plan.scorer!r} reads finished outputs from a file: nothing to compress or "
                           f"compare in one run (score the base and each candidate as separate runs)")  # fmt: skip
    return replace(plan, recipes=ordered, tasks=tuple(dict.fromkeys(plan.tasks)),
                   prompts=tuple(dict.fromkeys(plan.prompts)))
