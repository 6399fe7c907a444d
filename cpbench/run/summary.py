"""The end of `cpbench run`: one summary (printed, and written as `results/<model>/run-<timestamp>.json`).

It holds, per cell, the baseline's and each recipe's accuracy, coverage, set size and UAcc with their intervals, the
change from the baseline with its paired interval and the decoupling category (from `cpbench.results.analysis.decoupling`,
the same numbers `cpbench leaderboard` shows), where every file is, and the command to run next. Numbers only: no
torch, no model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cpbench.base.stamps import utc_now

SCHEMA = "cpbench.run/1"
SCORES = ("lac", "aps")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _interval(x: Any) -> list[float] | None:
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        return None
    lo, hi = _num(x[0]), _num(x[1])
    return None if lo is None or hi is None else [lo, hi]


def _cell_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """A cell's numbers. Split ranges (2.5-97.5 percentiles over calibration/test splits of the same items) keep
    their name: they say how much a number moves with the split, not where the population value lies. Accuracy also
    gets its item-level 95% Wilson interval (the n items as a sample), which is what the terminal shows."""
    from cpbench.results.analysis.estimate import wilson

    acc, n = _num(record.get("acc")), _num(record.get("n"))
    out: dict[str, Any] = {"n": record.get("n"), "acc": acc,
                           "acc_wilson95": list(wilson(acc, n, 1.959964)) if acc is not None and n else None,
                           "acc_split_range95": _interval(record.get("acc_split_range95", record.get("acc_ci95")))}
    for s in SCORES:
        r = record.get(s)
        if not isinstance(r, dict):
            continue
        out[s] = {m: _num(r.get(m)) for m in ("coverage", "set_size", "uacc")}
        out[s].update({f"{m}_split_range95": _interval(r.get(f"{m}_split_range95", r.get(f"{m}_ci95")))
                       for m in ("coverage", "set_size", "uacc")})  # records /3 renamed the split ranges
    return out


def comparisons(result_paths: list[Path], baseline: str, root: Path) -> list[dict[str, Any]]:
    """Deltas vs the baseline with their intervals and the decoupling category, per (recipe, task, prompt, score):
    `cpbench.results.analysis.decoupling` on this run's records (under `root`, the model's results directory), with the
    records' logits artifacts for item-level intervals, exactly as `cpbench leaderboard` computes them."""
    from cpbench.results.analysis.compare import ArtifactIndex
    from cpbench.results.analysis.decoupling import DecouplingConfig, decoupling_table

    df = _run_frame(result_paths, root)
    if df is None:
        return []
    table = decoupling_table(df, DecouplingConfig(baseline=baseline), ArtifactIndex(root))
    out = []
    for _, row in table.iterrows():
        item: dict[str, Any] = {k: row.get(k) for k in ("recipe", "task", "prompt", "score")}
        for m in ("acc", "coverage", "set_size", "uacc"):
            d = _num(row.get(f"d_{m}"))
            lo, hi = _num(row.get(f"d_{m}_lo")), _num(row.get(f"d_{m}_hi"))
            item[f"d_{m}"] = d
            item[f"d_{m}_ci"] = [lo, hi] if lo is not None and hi is not None else None
        item["category"] = row.get("category")
        item["note"] = str(row.get("note") or "")
        out.append(item)
    return out


def _run_frame(result_paths: list[Path], root: Path) -> Any:
    """This run's records under `root` (the model's results directory) as a frame, or None."""
    from cpbench.results.store import load_results

    mine = {Path(p).resolve() for p in result_paths if p is not None}
    if not mine or not root.is_dir():
        return None
    df, _ = load_results(root)
    return df[[(root / str(p).split("#", 1)[0]).resolve() in mine for p in df["path"]]]


def gate_verdicts(result_paths: list[Path], baseline: str, root: Path) -> list[dict[str, Any]]:
    """Per recipe, `cpbench check --baseline <root>/<baseline> --candidate <root>/<recipe>` with the default limits
    and decision rule (cpbench.base.limits, cpbench.results.gate.Decision()): the same rows and verdict that command gives."""
    from cpbench.results.analysis.compare import ArtifactIndex
    from cpbench.results.gate import Decision, GateReport, Limits, compare

    df = _run_frame(result_paths, root)
    if df is None or df.empty:
        return []
    base_rows = df[df["recipe"] == baseline]
    if base_rows.empty:
        return []
    limits, decision, index = Limits(), Decision(), ArtifactIndex(root)
    out = []
    for recipe, cand in df[df["recipe"] != baseline].groupby("recipe", sort=False):
        rows = compare(base_rows, cand, limits, seed=decision.seed, decision=decision, base_artifacts=index,
                       cand_artifacts=index)  # fmt: skip
        report = GateReport(rows=rows, limits=limits, decision=decision)
        counts = rows["status"].value_counts()
        verdict = ("FAIL" if counts.get("fail", 0) or counts.get("missing", 0) else
                   "INCONCLUSIVE" if counts.get("inconclusive", 0) else "PASS")  # fmt: skip
        cells = [{"task": r["task"], "prompt": r["prompt"], "score": r["score"], "status": r["status"],
                  "reasons": r["reasons"] if isinstance(r["reasons"], str) else ""}
                 for _, r in rows.iterrows()]  # fmt: skip
        out.append({"recipe": str(recipe), "verdict": verdict, "exit_code": report.exit_code,
                    "counts": {k: int(v) for k, v in counts.items()}, "cells": cells,
                    "limits": limits.describe(), "decision": decision.describe(),
                    "command": f"cpbench check --baseline {root / baseline} --candidate {root / str(recipe)}"})
    return out


def summarize(outcome: Any, log_path: Path | None = None) -> dict[str, Any]:
    from cpbench.base import memory

    plan = outcome.plan
    baseline = plan.recipes[0]
    cells = [
        {"recipe": c.recipe, "task": c.task, "prompt": c.prompt, "reused": c.reused, "s_per_item": c.s_per_item,
         "artifact": str(c.artifact_path), "result": str(c.result_path), **_cell_metrics(c.record)}
        for c in outcome.cells
    ]  # fmt: skip
    from cpbench.base.runkey import safe_part

    model_dir = Path(plan.results) / safe_part(outcome.model_key)
    paths = [c.result_path for c in outcome.cells]
    comps = comparisons(paths, baseline, model_dir)
    gate = gate_verdicts(paths, baseline, model_dir)
    lb_out = Path(plan.results) / "leaderboards"  # beside the run's results, never the published leaderboards/
    return {
        "schema": SCHEMA,
        "created_at": utc_now(),
        "model": outcome.model_key,
        "baseline": baseline,
        "plan": {
            "recipes": list(plan.recipes), "tasks": list(plan.tasks), "prompts": list(plan.prompts),
            "shots": plan.shots, "chat": plan.chat, "scoring": plan.scoring, "data": plan.data, "limit": plan.limit,
            "device": plan.device, "suite": plan.suite, "analysis": plan.analysis.model_dump(),
            **{k: getattr(plan, k) for k in ("dtype", "revision", "model_args", "trust_remote_code") if hasattr(plan, k)},
        },  # fmt: skip
        "intervals": "*_split_range95 of one model: 2.5-97.5 percentiles over the calibration/test splits (how much "
        "the number moves with other random splits of the same items; not a confidence interval); acc_wilson95: "
        "item-level 95% Wilson interval of the model's accuracy; deltas vs the baseline: item-level paired 95% "
        "intervals of cpbench.results.analysis.decoupling (cover the population difference; docs/conformal.md)",
        "cells": cells,
        "comparisons": comps,
        "gate": gate,
        "skipped": [{"recipe": r, "reason": why} for r, why in outcome.skipped],
        "notes": list(outcome.notes),
        **({"sequential": outcome.sequential} if getattr(outcome, "sequential", None) else {}),
        "wall_s": round(float(outcome.wall_s), 2),
        # wall seconds and peak RSS of each stage this process ran (conversion, calibration, load, compress, save,
        # verify, scoring load; cpbench.base.memory), each with its recipe: the run's time per stage, labelled
        "stages": memory.stages(),
        "files": {"results": str(plan.results), "model_dir": str(model_dir),
                  "third_party_log": str(log_path) if log_path else None},  # fmt: skip
        "next": [
            f"cpbench leaderboard {plan.results} --out {lb_out}",
            f"cpbench check --baseline {model_dir / baseline} --candidate {model_dir / '<recipe>'}",
        ],
    }


def write(summary: dict[str, Any]) -> Path:
    """results/<model>/run-<UTC timestamp>.json (atomic; a second run in the same second gets a suffix)."""
    from cpbench.base.atomic import write_json_atomic

    stamp = summary["created_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    d = Path(summary["files"]["model_dir"])
    path = d / f"run-{stamp}.json"
    i = 1
    while path.exists():
        path = d / f"run-{stamp}-{i}.json"
        i += 1
    summary["files"]["summary"] = str(path)
    write_json_atomic(path, summary)
    return path


# ------------------------------------------------------------------------------------------------- printing
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(ci: list[float] | None, pct: bool = True) -> str:
    if not ci:
        return ""
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.2f}")
    return f"[{f(ci[0])}, {f(ci[1])}]"


def _d(d: float | None, ci: list[float] | None, pct: bool) -> str:
    if d is None:
        return ""
    f = (lambda v: f"{100 * v:+.1f}") if pct else (lambda v: f"{v:+.2f}")
    return f(d) + (f" [{f(ci[0])}, {f(ci[1])}]" if ci else "")


def render(summary: dict[str, Any], console: Any) -> None:
    """Print the summary: one table per conformal score, the verdicts, the files and the next command."""
    from rich import box
    from rich.table import Table

    def line(text: str = "") -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    a = summary["plan"]["analysis"]
    base = summary["baseline"]
    comps = {(c["recipe"], c["task"], c["prompt"], c["score"]): c for c in summary["comparisons"]}
    order_t = {t: i for i, t in enumerate(summary["plan"]["tasks"])}
    order_r = {r: i for i, r in enumerate(summary["plan"]["recipes"])}
    cells = sorted(summary["cells"], key=lambda c: (order_t.get(c["task"], 99), c["prompt"],
                                                    order_r.get(c["recipe"], 99)))  # fmt: skip
    for score in SCORES:
        if not any(score in c for c in cells):
            continue
        table = Table(
            box=box.SIMPLE_HEAD,
            title=f"{summary['model']} ({summary['plan']['scoring']} scoring), {score.upper()}, alpha {a['alpha']:g}, "
            f"{a['splits']} splits; acc/coverage in %, set size in options (mean over splits); acc [item-level 95% "
            f"Wilson interval]; Δ vs '{base}' [item-level 95% interval]",
            title_justify="left",
        )
        for name in ("task", "prompt", "recipe", "n", "acc", "Δacc", "coverage", "set size", "Δsize", "UAcc",
                     "verdict"):  # fmt: skip
            table.add_column(name, no_wrap=True, justify="left" if name in ("task", "prompt", "recipe") else "right")
        for c in cells:
            m = c.get(score) or {}
            comp = comps.get((c["recipe"], c["task"], c["prompt"], score))
            table.add_row(
                c["task"], c["prompt"], c["recipe"], str(c["n"]),
                f"{_pct(c['acc'])} {_ci(c.get('acc_wilson95'))}".strip(),
                _d(comp["d_acc"], comp["d_acc_ci"], True) if comp else "",
                _pct(m.get("coverage")),
                f"{m.get('set_size', float('nan')):.2f}",
                _d(comp["d_set_size"], comp["d_set_size_ci"], False) if comp else "",
                "-" if m.get("uacc") is None else f"{m['uacc']:.2f}",
                (comp["category"] if comp else ("baseline" if c["recipe"] == base else "")),
            )  # fmt: skip
        console.print(table)
    if summary["comparisons"]:
        from cpbench.base import limits as defaults

        line(f"decoupling verdict per recipe (accuracy kept: drop <= {defaults.MAX_ACCURACY_DROP:g}; set size holds: "
             f"increase <= {defaults.MAX_SET_SIZE_INCREASE:g} options, the gate's limits; categories in "
             "docs/leaderboards.md):")  # fmt: skip
        by_recipe: dict[str, dict[str, list[str]]] = {}
        for c in summary["comparisons"]:
            by_recipe.setdefault(c["recipe"], {}).setdefault(str(c["category"]), []).append(
                f"{c['task']}/{c['prompt']}/{c['score']}"
            )
        for recipe, cats in by_recipe.items():
            line(f"  {recipe}: " + "; ".join(f"{k} {len(v)} ({', '.join(v)})" for k, v in cats.items()))
        undecided = next((c for c in summary["comparisons"] if c["category"] == "inconclusive" and c["note"]), None)
        if undecided is not None:
            line(f"  inconclusive means the data cannot tell; e.g. {undecided['recipe']} {undecided['task']}: "
                 f"{undecided['note']}")  # fmt: skip
    _render_gate(summary.get("gate") or [], line)
    for s in summary["skipped"]:
        line(f"skipped {s['recipe']}: {s['reason']}")
    for n in summary["notes"]:
        line(f"note: {n}")
    timed = [c["s_per_item"] for c in summary["cells"] if c.get("s_per_item")]
    speed = f", scoring {sum(timed) / len(timed):.3f} s/item on average" if timed else ""
    line(f"{len(summary['cells'])} result(s) in {summary['files']['model_dir']}/<recipe>/ (logits artifacts in "
         f"<recipe>/artifacts/); wall time {summary['wall_s']:.1f} s{speed}")  # fmt: skip
    if summary["files"].get("summary"):
        line(f"run summary: {summary['files']['summary']}")
    if summary["files"].get("third_party_log"):
        line(f"third-party log (llm-compressor, transformers, ...; -v shows it live): "
             f"{summary['files']['third_party_log']}")  # fmt: skip
    line(f"next: {summary['next'][0]}")


def _render_gate(gate: list[dict[str, Any]], line: Any) -> None:
    """The gate's verdict per recipe, as `cpbench check` with the default limits would print it."""
    if not gate:
        return
    line(f"gate per recipe (cpbench check, default limits: {gate[0]['limits']}; {gate[0]['decision']}):")
    for g in gate:
        c = g["counts"]
        counts = ", ".join(f"{k} {c[k]}" for k in ("pass", "fail", "inconclusive", "missing") if c.get(k))
        line(f"  {g['recipe']}: {g['verdict']} ({counts})")
        for cell in g["cells"]:
            if cell["status"] != "pass" and cell["reasons"]:
                line(f"    {cell['task']}/{cell['prompt']}/{cell['score']} {cell['status']}: {cell['reasons']}")
    line(f"  the same verdicts: {gate[0]['command'].rsplit('/', 1)[0]}/<recipe>")
