"""`cpbench run --until-decided`: score in stages, re-test after each with the gate's limits, stop decided cells.

Items: every task's evaluated items in one fixed random order (a hash of seed, task and item id: independent of the
file's order), the run key's data tag marked `~seq<seed>`. Stage k scores the first n_k items of that order (the
looks of `cpbench.results.analysis.sequential.Design`); a stage reuses the previous stage's artifact as a prefix and scores
only the new items (`prefix_artifact` / `assemble`, hooked into `cpbench.run.cells._score_cell`), so a resumed or
extended run never rescores an item. After each stage, `look_statistics` computes the gate's checks
(`cpbench.results.gate`'s own item-level estimates and one-sided tests) on the first n_k items of every open cell pair, and
`SequentialGate.look` decides. Decided cells are not scored further; the baseline goes on while any of its
candidates is open.

The results tree ends as a normal one: per candidate cell the record (and artifact) at the items that decided it,
and the baseline's records at the same item counts. The design (looks, spending, futility level, limits, level,
order seed: `design_block`) is stored in every record's `provenance.extra.sequential`, the candidates' with how
their cell ended (status, looks, items); `cpbench check --until-decided` reads it (`check_design`: command-line
flags must agree) and replays the looks from those artifacts (prefixes), giving the same verdict (`replay`). The run
summary carries the design and, per cell, status, looks and items at decision.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from cpbench.base.errors import CpbenchError

from cpbench.run.stages import SEQ_TAG, prefix


def parse_limits(text: str | None) -> Any:
    """`max_set_size_increase=0.25,max_accuracy_drop=0.02` -> cpbench.results.gate.Limits (`none` unsets a limit)."""
    from cpbench.results.gate import Limits

    if not text:
        return Limits()
    kw: dict[str, Any] = {}
    names = set(Limits.__dataclass_fields__) - {"allow_missing"}
    for part in (x.strip() for x in text.split(",") if x.strip()):
        k, _, v = part.partition("=")
        k = k.strip().replace("-", "_").lstrip("_")
        if k not in names or not v.strip():
            raise CpbenchError(f"--gate-limits: {part!r} is not LIMIT=VALUE with LIMIT one of {', '.join(sorted(names))}")
        kw[k] = None if v.strip().lower() == "none" else float(v)
    return Limits(**kw)


# ------------------------------------------------------------------------------------------------ item order
# ------------------------------------------------------------------------------------------------ one look
def look_statistics(pairs: Sequence[tuple[Hashable, Any, Any]], n: int, limits: Any, decision: Any, analysis: Any,
                    scores: Sequence[str], regress: dict | None = None) -> dict[tuple[Hashable, str], float]:  # fmt: skip
    """z_within of every gate check of every (cell, baseline artifact, candidate artifact) on their first n items:
    the records of both prefixes (`analyze_artifact`) and the gate's own item-level estimates and one-sided tests
    (`cpbench.results.gate._item_estimates`, `_cell_checks`: the same numbers `cpbench check` decides on)."""
    from cpbench.results import gate
    from cpbench.results.analysis.decisions import Directional
    from cpbench.results.analysis.sequential import z_within
    from cpbench.results.analysis.compare import memory_index
    from cpbench.results.conformal.protocols import analyze_artifact
    from cpbench.results.store import records_frame

    out: dict[tuple[Hashable, str], float] = {}
    for cell, base_art, cand_art in pairs:
        pb, pc = prefix(base_art, n), prefix(cand_art, n)
        recs = [analyze_artifact(a, analysis, scores) for a in (pb, pc)]
        df = records_frame(recs)
        index = memory_index([pb, pc])
        base_rows = df[df["path"] == "memory#0"]
        cand_rows = df[df["path"] == "memory#1"]
        for _, cand in cand_rows.iterrows():
            base = base_rows[base_rows["score"] == cand["score"]].iloc[0]
            est, _why = gate._item_estimates(base, cand, decision, index, index)
            for c in gate._cell_checks(0, base, cand, limits, est):
                out[(cell, f"{cand['score']} {c.name}")] = z_within(c.test.p, c.test.below, c.good_below)
                if regress is not None and c.name in ("set size", "accuracy drop") and c.test.estimate is not None:
                    # evidence of a regression above none (0), for the design's futility stop (`Design.futility`)
                    t0 = Directional.test(c.test.estimate, 0.0)
                    regress[(cell, f"{cand['score']} {c.name}")] = -z_within(t0.p, t0.below, True)
    return out


def run_looks(design: Any, pairs_at: Callable[[int, list[Hashable]], list[tuple[Hashable, Any, Any]]],
              limits: Any, decision: Any, analysis: Any, scores: Sequence[str],
              echo: Callable[[str], None] = lambda s: None) -> Any:  # fmt: skip
    """Every look of `design` in order; `pairs_at(n, open_cells)` gives the open cells' artifacts of at least n
    items (None for the first look's open cells means all). Returns the SequentialGate."""
    from cpbench.results.analysis.sequential import SequentialGate

    state = None
    for n in design.looks:
        open_cells = None if state is None else state.open_cells()
        if open_cells is not None and not open_cells:
            break
        pairs = pairs_at(n, open_cells)
        zr: dict = {}
        z = look_statistics(pairs, n, limits, decision, analysis, scores, zr)
        if state is None:
            state = SequentialGate.start(design, list(z))
        decided = state.look(n, z, zr)
        echo(f"sequential look {design.look_of(n) + 1}/{len(design.looks)} at {n:,} items: "
             f"{len({k[0] for k in decided})} cell(s) with new decisions, {len(state.open_cells())} open")
    return state


# ------------------------------------------------------------------------------------------------ cpbench run
def run_until_decided(plan: Any, echo: Callable[[str], None] = print, progress: bool = True) -> Any:
    """The staged run (see the module docstring). `plan.gate_limits`, `plan.gate_decision`, `plan.max_items`."""
    from cpbench.run import runner
    from cpbench.results.analysis.sequential import Design, futility_level
    from cpbench.results.gate import Decision, Limits

    plan = replace(plan, order_seed=0 if plan.order_seed is None else plan.order_seed)
    limits = plan.gate_limits or Limits()
    decision = plan.gate_decision or Decision()
    if decision.mode != "interval":
        raise CpbenchError("--until-decided decides from item-level intervals (--decision interval)")
    if plan.results is None:
        raise CpbenchError("--until-decided needs a results directory (stages are resumed from it)")
    available = _available_items(plan)
    max_items = min(available, plan.max_items) if plan.max_items else available
    design = Design.of(max_items, alpha=decision.alpha, spending=plan.spending, multiplicity=decision.multiplicity,
                       first=min(plan.first_look, max_items), futility=futility_level(plan.futility))  # fmt: skip
    echo(f"cpbench run --until-decided: {design.describe()}; limits: {limits.describe()}")
    block = design_block(design, plan.first_look, plan.order_seed, limits, decision)
    base = None
    latest: dict[tuple[str, str, str], Any] = {}  # (recipe, task, prompt) -> Cell of its latest stage
    stage_cells: dict[tuple[str, str, str, int], Any] = {}

    def pairs_at(n: int, open_cells: list[Hashable] | None) -> list[tuple[Hashable, Any, Any]]:
        nonlocal base
        want = None if open_cells is None else set(open_cells)
        only = None
        if want is not None:
            keep = {(t, p) for (_, t, p) in want}
            only = frozenset({(r, t, p) for (r, t, p) in want} | {("__base__", t, p) for (t, p) in keep})
        stage = replace(plan, until_decided=False, limit=n, analyze=False, only=only)
        outcome = runner.run(stage, echo=echo, progress=progress)
        base = outcome.plan.recipes[0]
        for c in outcome.cells:
            latest[(c.recipe, c.task, c.prompt)] = c
            stage_cells[(c.recipe, c.task, c.prompt, n)] = c
        cells = [k for k in latest if k[0] != base and (want is None or k in want)]
        return [(k, latest[(base, k[1], k[2])].artifact, latest[k].artifact) for k in cells]

    state = run_looks(design, pairs_at, limits, decision, plan.analysis, plan.scores, echo)
    return _publish(plan, design, state, base, latest, stage_cells, echo, block)


def design_block(design: Any, first_look: int, order_seed: int, limits: Any, decision: Any) -> dict:
    """The sequential design as stored in every record of the run (`provenance.extra.sequential`): what `cpbench
    check --until-decided` needs to replay the looks (no flags to repeat)."""
    from cpbench.results.analysis.sequential import DEFAULT_GROWTH

    return {"version": 1, "max_items": int(design.max_items), "first_look": int(first_look),
            "growth": DEFAULT_GROWTH, "looks": list(design.looks), "spending": design.spending,
            "futility": float(design.futility),
            "alpha": round(float(design.alpha), 12), "multiplicity": design.multiplicity, "order_seed": int(order_seed),
            "limits": {k: getattr(limits, k) for k in LIMIT_FIELDS},
            "decision": {"level": float(decision.level), "multiplicity": decision.multiplicity,
                         "n_boot": int(decision.n_boot), "seed": int(decision.seed)}}  # fmt: skip


LIMIT_FIELDS = ("max_set_size_increase", "min_coverage", "max_accuracy_drop", "max_flip_rate")


def _cell_block(design: Any, state: Any, cell: tuple, n: int) -> dict:
    """How the cell ended: status, looks and items that decided it (or, undecided, the looks it took part in)."""
    st = state.cell_status(cell) if state is not None else "continue"
    if st != "continue":
        looks, items = state.decided_at(cell)
        return {"status": st, "looks": int(looks), "items": int(items)}
    return {"status": "inconclusive", "looks": sum(1 for x in design.looks if x <= n), "items": int(n)}


def _with_block(record: dict, block: dict) -> dict:
    prov = record.setdefault("provenance", {})
    prov["extra"] = {**(prov.get("extra") or {}), "sequential": block}
    return record


def _available_items(plan: Any) -> int:
    from cpbench.run.unit import build_inputs, units_from_plan

    units = units_from_plan(plan)
    if plan.chat == "v1":
        if not plan.max_items:
            raise CpbenchError("--until-decided with --chat v1 needs --max-items")
        return int(plan.max_items)
    inputs = build_inputs(units[0].options, None)
    return min(len(c.prompts) for c in inputs.values())


def _publish(plan: Any, design: Any, state: Any, base: str, latest: dict, stage_cells: dict,
             echo: Callable[[str], None], block: dict | None = None) -> Any:  # fmt: skip
    """Records at the decision items: each candidate cell's, and the baseline's at the same item counts; stage
    artifacts no record uses are removed (each is a prefix of a kept one)."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.conformal.protocols import analyze_artifact
    from cpbench.run.outputs import publish_record
    from cpbench.run.cells import Cell, artifact_path
    from cpbench.run.runner import RunOutcome

    results = Path(plan.results)
    final: dict[tuple[str, str, str], int] = {}
    for k, c in latest.items():
        if k[0] == base:
            continue
        _, items = state.decided_at(k) if state is not None else (None, None)
        final[k] = int(items) if items is not None else int(c.artifact.n)
    needed = dict(final)
    for (r, t, p), n in final.items():
        needed.setdefault((base, t, p, n), n)
    cells = []
    keep_paths = set()
    for k, n in needed.items():
        r, t, p = k[:3]
        src = latest[(r, t, p)]
        key = src.key.model_copy(update={"limit": n})
        path = artifact_path(results, key)
        if not path.is_file():
            prefix(src.artifact, n).save(path)
        art = LogitsArtifact.load(path)
        keep_paths.add(path.resolve())
        record = analyze_artifact(art, plan.analysis, plan.scores, input_path=str(path))
        if block is not None:  # the design travels with the records; candidates also say how their cell ended
            cb = {**block, "role": "baseline"} if r == base else {
                **block, "role": "candidate", "cell": _cell_block(design, state, (r, t, p), n)}
            _with_block(record, cb)
        result_path, status = publish_record(record, results, plan.force)
        reused = all(sc.reused for (rr, tt, pp, _), sc in stage_cells.items() if (rr, tt, pp) == (r, t, p))
        cells.append(Cell(r, t, p, key, path, result_path, record, reused, None, art, status))
    for (r, t, p, n), c in stage_cells.items():  # stage artifacts no record uses: prefixes of kept ones
        if c.artifact_path is not None and Path(c.artifact_path).resolve() not in keep_paths:
            Path(c.artifact_path).unlink(missing_ok=True)
    outcome = RunOutcome(plan, cells[0].key.model if cells else "", cells, [], [], 0.0)
    outcome.sequential = {**(state.summary() if state is not None else {}), "max_items": design.max_items,
                          "order_seed": plan.order_seed, **({"stored": block} if block else {})}  # fmt: skip
    outcome.sequential_state = state  # cpbench.evaluate's verdict (sequential_statuses)
    for cell in outcome.sequential.get("cells", []):
        echo(f"sequential: {'/'.join(map(str, cell['cell']))}: {cell['status']}"
             + (f" after {cell['looks']} look(s), {cell['items']:,} items" if cell["items"] else
                f" after {design.max_items:,} items"))  # fmt: skip
    return outcome


# ------------------------------------------------------------------------------------------------ cpbench check
def replay(baseline: Any, candidate: Any, limits: Any, decision: Any, design: Any) -> tuple:
    """The sequential verdict of finished results: the looks replayed on prefixes of the stored artifacts under
    `design` (the run's: same --max-items, spending and first look). Returns (SequentialGate, GateReport of the
    final records with statuses replaced by the sequential ones)."""
    from cpbench.results.analysis.compare import ArtifactIndex
    from cpbench.results.gate import run_gate

    report = run_gate(baseline, candidate, limits, decision)
    from cpbench.results.gate import _load

    bdf, _ = _load(baseline, "baseline")
    cdf, _ = _load(candidate, "candidate")
    if not cdf["data"].astype(str).str.contains(SEQ_TAG, regex=False).any():
        raise CpbenchError("--until-decided: the candidate results were not produced by `cpbench run "
                           "--until-decided` (their data tag has no '~seq')")  # fmt: skip
    bidx, cidx = ArtifactIndex(baseline), ArtifactIndex(candidate)
    pairs: dict[Hashable, tuple[Any, Any, int]] = {}
    max_n = 0
    for _, cand in cdf.drop_duplicates("path").iterrows():
        m = bdf[(bdf["model"] == cand["model"]) & (bdf["task"] == cand["task"]) & (bdf["prompt"] == cand["prompt"])
                & (bdf["limit"] == cand["limit"]) & (bdf["data"] == cand["data"])]  # fmt: skip
        if m.empty:
            continue
        ab, why_b = bidx.for_row(m.iloc[0])
        ac, why_c = cidx.for_row(cand)
        if ab is None or ac is None:
            raise CpbenchError(f"--until-decided: {why_b or why_c}")
        cell = (str(cand["recipe"]), str(cand["task"]), str(cand["prompt"]))
        pairs[cell] = (ab, ac, int(ac.n))
        max_n = max(max_n, int(ac.n))
    if max_n > design.max_items:
        raise CpbenchError(f"--until-decided: results of {max_n:,} items, more than --max-items {design.max_items:,}"
                           " (use the run's design)")

    def pairs_at(n: int, open_cells: list[Hashable] | None) -> list[tuple[Hashable, Any, Any]]:
        cells = pairs if open_cells is None else [c for c in open_cells if c in pairs]
        return [(c, pairs[c][0], pairs[c][1]) for c in cells if pairs[c][2] >= n]

    state = run_looks(design, pairs_at, limits, decision, _analysis_of(cdf), _scores_of(cdf))
    sequential_statuses(report.rows, state, {c: v[2] for c, v in pairs.items()}, design)
    return state, report


def sequential_statuses(rows: Any, state: Any, items_of: dict, design: Any) -> None:
    """Replace the fixed gate's statuses and reasons of `rows` (cpbench.results.gate.compare's) by the sequential gate's
    (`state`) for the cells in `items_of` (cell -> items of its record)."""
    for i, r in rows.iterrows():
        cell = (str(r["recipe"]), str(r["task"]), str(r["prompt"]))
        if cell not in items_of or r["status"] in ("missing", "new"):
            continue
        st = state.cell_status(cell) if state is not None else "continue"
        looks, items = state.decided_at(cell) if state is not None else (None, None)
        if st == "continue":
            if items_of[cell] < design.max_items:
                st, why = "inconclusive", (f"sequential: stopped at {items_of[cell]:,} items before a decision "
                                           f"(the design runs to {design.max_items:,})")  # fmt: skip
            else:
                st, why = "inconclusive", (f"sequential: undecided after {len(design.looks)} looks, "
                                           f"{items or items_of[cell]:,} items")  # fmt: skip
        else:
            why = f"sequential: {st} at look {looks}, {items:,} items"
            bad = [h for h in state.hyps.values() if h.cell == cell and h.status == "beyond"]
            if bad:
                why += "; beyond: " + ", ".join(f"{h.check} (z {h.z:+.2f}, bound {h.bound:.2f})" for h in bad)
            fut = [h for h in state.hyps.values() if h.cell == cell and h.status == "futile"]
            if fut:
                why += "; futility: " + ", ".join(h.check for h in fut) + (
                    f" (a regression above none shown at one-sided {design.futility:g}: it would likely not be shown "
                    f"within its limit by {design.max_items:,} items)")
        rows.at[i, "status"] = st
        rows.at[i, "reasons"] = why


def stored_design(candidate: Any) -> dict | None:
    """The sequential design stored in the candidate records (`provenance.extra.sequential`, without the per-cell
    part), None for results written before it was stored; one line when the records disagree."""
    import json

    from cpbench.results.gate import _load

    cdf, _ = _load(candidate, "candidate")
    root = Path(candidate)
    found: dict[str, dict] = {}
    for rel in dict.fromkeys(str(x) for x in cdf["path"]):
        path = str(root if root.is_file() else root / rel)  # load_results' paths are relative to the root
        try:
            rec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        b = ((rec.get("provenance") or {}).get("extra") or {}).get("sequential")
        if isinstance(b, dict):
            found[path] = {k: v for k, v in b.items() if k not in ("role", "cell")}
    if not found:
        return None
    first = next(iter(found.values()))
    for path, b in found.items():
        if b != first:
            raise CpbenchError(f"--until-decided: {path} holds another sequential design than the other candidate "
                               "records (results of two runs mixed)")  # fmt: skip
    return first


_FLAG = {"max_items": "--max-items", "spending": "--spending", "first_look": "--first-look", "futility": "--futility",
         "max_set_size_increase": "--max-set-size-increase", "min_coverage": "--min-coverage",
         "max_accuracy_drop": "--max-accuracy-drop", "max_flip_rate": "--max-flip-rate", "level": "--level",
         "multiplicity": "--multiplicity", "n_boot": "--boot", "seed": "--seed"}  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)), abs(float(b)))
    return a == b


def check_design(candidate: Any, given: dict, limits: Any, decision: Any) -> tuple:
    """(Design, Limits, Decision) of `cpbench check --until-decided`: the run's, stored with the results; `given`
    (option name -> value, only the flags set on the command line) must agree with it (else one line, exit 2).
    Results without a stored design need the flags (--max-items at least)."""
    from cpbench.results.analysis.sequential import Design
    from cpbench.results.gate import Decision, Limits

    if decision.mode != "interval":
        raise CpbenchError("--until-decided decides from item-level intervals (--decision interval)")
    stored = stored_design(candidate)
    if stored is None:
        if given.get("max_items") is None:
            raise CpbenchError("--until-decided: these results carry no stored sequential design (written before it "
                               "was stored): give the run's --max-items (and --spending, --first-look)")  # fmt: skip
        design = design_from_options(given["max_items"], decision, given.get("spending") or "pocock",
                                     given.get("first_look"), given.get("futility") or 0.0)  # fmt: skip
        return design, limits, decision
    # a design stored before the futility stop has none (replayed without it)
    have = {"max_items": stored["max_items"], "spending": stored["spending"], "first_look": stored["first_look"],
            "futility": float(stored.get("futility", 0.0)), **stored["limits"], **stored["decision"]}  # fmt: skip
    for name, value in given.items():
        if name in have and not _same(value, have[name]):
            raise CpbenchError(f"--until-decided: {_FLAG.get(name, name)} {value} differs from the run's "
                               f"{have[name]} (its sequential design is stored with the results: drop the flag)")
    lim = Limits(**{k: stored["limits"].get(k) for k in LIMIT_FIELDS}, allow_missing=limits.allow_missing)
    d = stored["decision"]
    dec = Decision(mode="interval", on_inconclusive=decision.on_inconclusive, multiplicity=d["multiplicity"],
                   level=float(d["level"]), n_boot=int(d["n_boot"]), seed=int(d["seed"]))  # fmt: skip
    design = Design.of(int(stored["max_items"]), alpha=dec.alpha, spending=stored["spending"],
                       multiplicity=dec.multiplicity, first=min(int(stored["first_look"]), int(stored["max_items"])),
                       growth=float(stored["growth"]), futility=float(stored.get("futility", 0.0)))  # fmt: skip
    if list(design.looks) != list(stored["looks"]):
        raise CpbenchError(f"--until-decided: the stored looks {stored['looks']} are not this cpbench's schedule "
                           f"{list(design.looks)} for the stored design")  # fmt: skip
    return design, lim, dec


def _analysis_of(df: Any) -> Any:
    from cpbench.base.runkey import AnalysisKey

    r = df.iloc[0]
    return AnalysisKey(protocol=r["protocol"], alpha=float(r["alpha"]), splits=int(r["splits"]), seed=int(r["seed"]),
                       cal_ratio=float(r["cal_ratio"]), stratify=bool(r["stratify"]))  # fmt: skip


def _scores_of(df: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(s) for s in df["score"]))


def design_from_options(max_items: int, decision: Any, spending: str = "pocock", first: int | None = None,
                        futility: float = 0.0) -> Any:  # fmt: skip
    from cpbench.results.analysis.sequential import DEFAULT_FIRST, Design, futility_level

    # results written before the design was stored predate the futility stop: replayed without it unless
    # --futility says the run's level
    return Design.of(max_items, alpha=decision.alpha, spending=spending, multiplicity=decision.multiplicity,
                     first=min(first or DEFAULT_FIRST, max_items), futility=futility_level(futility))  # fmt: skip


