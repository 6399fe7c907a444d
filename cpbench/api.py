"""The Python API: judge compressed models against their base in-process, e.g. right after `oneshot`.

```python
import cpbench

report = cpbench.evaluate(base="meta-llama/Llama-3.1-8B", candidates=["./llama-w4a16"], tasks=["qa", "rc"])
report.verdict.passed                   # the gate's decision (cpbench check's rules and limits)
report.comparison.to_frame()            # one decoupling row per candidate x task x conformal score
report.to_frame()                       # every result row (base and candidates)

# in memory, nothing written unless results= is given
report = cpbench.evaluate(base=(model, tokenizer), candidates={"w4a16": (qmodel, tokenizer)}, data="samples")

# two artifacts (or lm-eval samples files, or pickles with labels=) of the same items
report = cpbench.compare("base.parquet", "w4a16.parquet")
```

`base` and each candidate are a registry name, an HF id, a local directory / .gguf file, or a loaded
`(model, tokenizer)` pair. Results are written only when `results=` names a directory (then exactly as `cpbench run`
writes them, reused by later calls); otherwise artifacts and records stay in memory. Library calls leave process-wide
state alone: torch's thread count, matplotlib's backend and the umask are the caller's (the CLI sets threads).

The statistics are cpbench's own, not re-implemented here: records from `cpbench.results.conformal.protocols`, the decoupling
table from `cpbench.results.analysis.decoupling`, the verdict from `cpbench.results.gate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cpbench.base.errors import CpbenchError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from cpbench.results.gate import GateReport, Limits

log = logging.getLogger("cpbench")


@dataclass
class Comparison:
    """Candidate vs base per cell: accuracy and set-size deltas with paired intervals and a decoupling category."""

    table: pd.DataFrame
    config: Any  # cpbench.results.analysis.decoupling.DecouplingConfig

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def describe(self) -> str:
        return self.config.describe()


@dataclass
class Verdict:
    """The gate's decision (`cpbench check`'s rules): passed, and one row per compared cell."""

    report: GateReport

    @property
    def passed(self) -> bool:
        return not self.report.failed

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def to_frame(self) -> pd.DataFrame:
        return self.report.rows.copy()

    def markdown(self) -> str:
        from cpbench.results.gate import markdown_summary

        return markdown_summary(self.report)

    def junit(self) -> str:
        from cpbench.results.gate import junit_xml

        return junit_xml(self.report)

    def __str__(self) -> str:
        from cpbench.results.gate import text_table

        return text_table(self.report)


@dataclass
class Report:
    """What `evaluate` / `compare` return: the result records, their rows, the comparison and the verdict."""

    base: str  # the base model's key (results/<base>/...)
    records: list[dict[str, Any]]
    results: pd.DataFrame
    comparison: Comparison | None
    verdict: Verdict | None
    results_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """Every result row (one per record and conformal score), as `cpbench.results.store.load_results` gives them."""
        return self.results.copy()

    @property
    def passed(self) -> bool | None:
        return None if self.verdict is None else self.verdict.passed


def _limits(limits: Limits | Mapping[str, Any] | None) -> Limits:
    from cpbench.results.gate import Limits

    if limits is None:
        return Limits()
    if isinstance(limits, Limits):
        return limits
    return Limits(**dict(limits))


def _decision(decision: Any) -> Any:
    from cpbench.results.gate import Decision

    if decision is None:
        return Decision()
    if isinstance(decision, Decision):
        return decision
    if isinstance(decision, str):
        return Decision(mode=decision)
    return Decision(**dict(decision))


def _judge(records: list[dict], artifacts: Sequence[Any], base_recipe: str, limits: Any, decision: Any,
           epsilon: float | None, delta: float | None, results_dir: Path | None, notes: list[str]) -> Report:  # fmt: skip
    """Records (+ their artifacts, for item-level intervals) -> rows, decoupling table and the gate's verdict (base
    recipe vs every other recipe), with cpbench.results.analysis.decoupling and cpbench.results.gate's own rules."""
    from cpbench.results.analysis.compare import memory_index
    from cpbench.results.analysis.decoupling import DecouplingConfig, decoupling_table
    from cpbench.results.gate import GateReport, compare
    from cpbench.results.store import records_frame

    df = records_frame(records)
    index = memory_index(artifacts)
    base_rows, cand_rows = df[df["recipe"] == base_recipe], df[df["recipe"] != base_recipe]
    comparison = verdict = None
    if len(cand_rows):
        dec_rule = _decision(decision)
        lim = _limits(limits)
        # decoupling's tolerances default to the gate's limits: one decision configuration (cpbench.base.limits)
        if epsilon is None:
            epsilon = lim.max_accuracy_drop if lim.max_accuracy_drop is not None else DecouplingConfig.epsilon
        if delta is None:
            delta = lim.max_set_size_increase if lim.max_set_size_increase is not None else DecouplingConfig.delta
        cfg = DecouplingConfig(baseline=base_recipe, epsilon=epsilon, delta=delta, decision=dec_rule.mode)
        dec = decoupling_table(df, cfg, artifacts=index)
        comparison = Comparison(dec[dec["recipe"] != base_recipe].reset_index(drop=True), cfg)
        rows = compare(base_rows, cand_rows, lim, seed=dec_rule.seed, decision=dec_rule, base_artifacts=index,
                       cand_artifacts=index)  # fmt: skip
        verdict = Verdict(GateReport(
            rows=rows, limits=lim, baseline_records=int(base_rows["path"].nunique()),
            candidate_records=int(cand_rows["path"].nunique()), sample_data=bool(df["sample_data"].any()),
            decision=dec_rule,
        ))  # fmt: skip
    base = str(base_rows["model"].iloc[0]) if len(base_rows) else str(df["model"].iloc[0]) if len(df) else ""
    return Report(base, records, df, comparison, verdict, results_dir, notes)


def evaluate(
    base: Any,
    candidates: Sequence[Any] | Mapping[str, Any] = (),
    tasks: Sequence[str] | None = None,
    *,
    recipes: Sequence[str] = (),
    prompts: Sequence[str] | None = None,
    shots: int | None = None,
    scoring: str | None = None,
    data: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    alpha: float | None = None,
    results: str | Path | None = None,
    force: bool = False,
    limits: Limits | Mapping[str, Any] | None = None,
    decision: Any = None,
    epsilon: float | None = None,
    delta: float | None = None,
    progress: bool = False,
    until_decided: bool = False,
    max_items: int | None = None,
    spending: str = "pocock",
    first_look: int = 200,
    futility: float | None = None,
    backend: Any = None,
) -> Report:
    """Score `base`, cpbench `recipes` of it and `candidates` on `tasks`; analyse, compare and gate them.

    `candidates`: a list (names from the directory / repo / model) or a mapping name -> model. `data` defaults to the
    tasks' prepared benchmark data ("samples" = the offline smoke-test items). `limits` are the gate's (a
    cpbench.results.gate.Limits or its keyword arguments), `decision` the gate's rule (a cpbench.results.gate.Decision, its keyword
    arguments, or "interval" / "point"; default: item-level intervals, as `cpbench check`); `epsilon` / `delta` the
    decoupling tolerances (default: the accuracy and set-size limits, cpbench.base.limits). `backend` scores the
    prompts: a registry name (cpbench.backends.registry: "hf", the default, or "vllm") or any
    cpbench.backends.base.Backend object (docs/design.md shows a toy one).

    `until_decided=True` is `cpbench run --until-decided` (needs `results=`): items scored in stages of one fixed
    random order per task up to `max_items` (default: all), re-tested after each stage with `limits` and `decision`
    under `spending` (pocock | obf | linear) alpha spending with the first look at `first_look` items; a decided
    cell is not scored further. `futility` is the one-sided level of the futility stop (None: the default, 0.05;
    0: off): a cell whose set-size increase or accuracy drop shows a regression above none at that level stops as
    failed (it never passes a cell); values outside [0, 0.5) are refused. The verdict is the sequential gate's (the
    one `cpbench check --until-decided` gives on the written results), each record says in
    `provenance.extra.sequential` how many looks and items decided its cell, and the report's notes the design."""
    from cpbench.weights import models
    from cpbench.run import plan as run_plan
    from cpbench.run.execute import execute

    loaded = None
    model: Any = base
    if isinstance(base, tuple):
        loaded = base
        model = models.from_loaded(base[0], base[1])
    elif isinstance(base, Path):
        model = str(base)
    if isinstance(candidates, Mapping):
        specs, names = list(candidates.values()), [str(k) for k in candidates]
    else:
        specs, names = list(candidates), None
    if not specs and not recipes:
        log.info("cpbench.evaluate: no candidates or recipes; scoring the base model only")
    if until_decided and results is None:
        raise CpbenchError("until_decided=True needs results= (the stages are stored and resumed there)")
    if max_items is not None and not until_decided:
        raise CpbenchError("max_items= applies to until_decided=True (for the first N items use limit=)")
    if futility is not None and not until_decided:
        raise CpbenchError("futility= applies to until_decided=True")
    plan = run_plan.plan_from_options(
        model=model, quant=list(recipes) or None, tasks=list(tasks) if tasks else None,
        prompts=list(prompts) if prompts else None, shots=shots, scoring=scoring, data=data, limit=limit,
        device=device, batch_size=batch_size, alpha=alpha, force=force, candidates=specs or None,
        candidate_names=names, results=results, in_memory=results is None, loaded=loaded, backend=backend,
        until_decided=until_decided, max_items=max_items if until_decided else None, spending=spending,
        first_look=first_look, futility=futility if until_decided else None,
        gate_limits=_limits(limits) if until_decided else None,
        gate_decision=_decision(decision) if until_decided else None,
    )  # fmt: skip
    outcome = execute(plan, echo=log.info, progress=progress)
    records = [c.record for c in outcome.cells]
    artifacts = [c.artifact for c in outcome.cells]
    notes = list(outcome.notes)
    report = _judge(records, artifacts, plan.recipes[0], limits, decision, epsilon, delta, plan.results, notes)
    if until_decided and report.verdict is not None:
        from cpbench.run.seqrun import sequential_statuses

        base = plan.recipes[0]
        state = getattr(outcome, "sequential_state", None)
        items_of = {(c.recipe, c.task, c.prompt): int(c.artifact.n) for c in outcome.cells if c.recipe != base}
        design = state.design if state is not None else None
        if design is not None:
            sequential_statuses(report.verdict.report.rows, state, items_of, design)
            notes.append(design.describe())
    return report


def compare(
    base_artifact: Any,
    candidate_artifact: Any,
    *,
    labels: str | Path | None = None,
    model: str | None = None,
    recipe: str | None = None,
    protocol: str = "default",
    alpha: float | None = None,
    limits: Limits | Mapping[str, Any] | None = None,
    decision: Any = None,
    epsilon: float | None = None,
    delta: float | None = None,
) -> Report:
    """Compare two artifacts of the same items: LogitsArtifact objects or paths `cpbench analyze` takes (cpbench
    .parquet, lm-eval samples .jsonl, LLM-Uncertainty-Bench .pkl with `labels`). The candidate is named `recipe`
    (default: its own recipe, or "candidate") under the base's model name; the items must be the same (items_hash),
    else the comparison is refused with one line. Nothing is written."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.conformal.protocols import analyze_artifact, preset, score_key_of
    from cpbench.backends.lmeval import import_named

    def load(a: Any, name_model: str | None, name_recipe: str | None) -> Any:
        if isinstance(a, LogitsArtifact):
            art = LogitsArtifact(ids=a.ids, labels=a.labels, logits=a.logits, letters=a.letters,
                                 provenance=dict(a.provenance), prompt_hashes=a.prompt_hashes, source=a.source)
            key = score_key_of(art).model_dump()  # fmt: skip
            if name_model is not None:
                key["model"] = name_model
            if name_recipe is not None:
                key["recipe"] = name_recipe
            art.provenance["run_key"] = key
            return art
        return import_named(Path(a), labels, model=name_model, recipe=name_recipe)

    base = load(base_artifact, model, None)
    base_key = score_key_of(base)
    cand_recipe = recipe or score_key_of(load(candidate_artifact, None, None)).recipe
    if cand_recipe == base_key.recipe:
        cand_recipe = "candidate"
    cand = load(candidate_artifact, base_key.model, cand_recipe)
    key = preset(protocol, alpha=alpha)
    records = [analyze_artifact(a, key) for a in (base, cand)]
    if records[0]["items_hash"] != records[1]["items_hash"]:
        raise CpbenchError("the two artifacts hold different items (ids or gold labels differ): nothing to pair")
    return _judge(records, [base, cand], base_key.recipe, limits, decision, epsilon, delta, None, [])
