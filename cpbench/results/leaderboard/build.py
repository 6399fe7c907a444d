"""From a results tree to every leaderboard artifact: tables (Markdown, CSV, LaTeX), HTML page and plots."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cpbench.results.analysis.aggregate import AVG, add_task_average, task_order
from cpbench.results.analysis.compare import ArtifactIndex
from cpbench.results.analysis.decoupling import (
    CATEGORIES,
    ITEMS_UNVERIFIED,
    DecouplingConfig,
    decoupling_table,
    rank_agreement,
)
from cpbench.results.analysis.size_effect import size_effect_table
from cpbench.results.analysis.thresholds import Criterion, threshold_table
from cpbench.base.atomic import write_text_atomic
from cpbench.base.errors import CpbenchError
from cpbench.results.leaderboard.tables import (
    CSV_FLOAT,
    Provenance,
    Table,
    interval,
    num,
    pct,
    signed,
    varying_settings,
)
from cpbench.results.store import KEY_COLS, Skipped, load_results, merge_notes

METRIC_LABELS = (("acc", "Acc"), ("coverage", "Cov"), ("set_size", "SS"), ("uacc", "UAcc"))


@dataclass(frozen=True)
class LeaderboardConfig:
    decoupling: DecouplingConfig = field(default_factory=DecouplingConfig)
    criterion: Criterion = "permutation"
    threshold_alpha: float = 0.05
    plots: bool = True
    html: bool = True


@dataclass
class Analysis:
    """Everything computed from one results tree (numbers, before formatting)."""

    results: pd.DataFrame  # load_results rows plus task averages
    skipped: list[Skipped]
    decoupling: pd.DataFrame
    rankings: pd.DataFrame
    thresholds: pd.DataFrame
    size_effect: pd.DataFrame
    root_label: str


def analyze_tree(root: str | os.PathLike, cfg: LeaderboardConfig = LeaderboardConfig()) -> Analysis:
    df, skipped = load_results(root)
    if df.empty:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise CpbenchError(f"{root}: no cpbench result records found" + (f" (skipped {reasons})" if reasons else ""))
    full = add_task_average(df)
    index = ArtifactIndex(root)
    dec = decoupling_table(full, cfg.decoupling, index)
    return Analysis(
        results=full,
        skipped=skipped,
        decoupling=dec,
        rankings=rank_agreement(full),
        thresholds=threshold_table(full, baseline=cfg.decoupling.baseline, criterion=cfg.criterion,
                                   alpha=cfg.threshold_alpha, seed=cfg.decoupling.seed, artifacts=index,
                                   n_boot=cfg.decoupling.item_boot, level=cfg.decoupling.level),
        size_effect=size_effect_table(dec, df[["model", "params", "model_name"]]),
        root_label=Path(root).name or str(root),
    )


def main_table(a: Analysis, score: str, prov: Provenance, baseline: str) -> Table:
    """Accuracy, coverage, set size and UAcc per task (and the task average) for one conformal score."""
    res = a.results[a.results["score"] == score]
    varying, settings = varying_settings(a.results)
    tasks = task_order(res)
    row_cols = ["model", "recipe", *varying]
    disp_rows, data_rows = [], []
    for key, g in res.groupby(row_cols, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        by_task = {r["task"]: r for _, r in g.iterrows()}
        d = dict(zip(row_cols, key))
        n = dict(d)
        for t in tasks:
            r = by_task.get(t)
            for m, label in METRIC_LABELS:
                value = float(r[m]) if r is not None else float("nan")
                d[f"{t} {label}"] = num(value) if m in ("set_size", "uacc") else pct(value)
                n[f"{t} {m}"] = value
        sample = bool(g["sample_data"].any())
        notes = merge_notes(g["notes"])
        d["Flags"] = prov.flags(sample, notes)
        n.update(sample_data=sample, notes=notes,
                 records=" ".join(sorted(p for p in g["path"] if p)))
        disp_rows.append(d)
        data_rows.append(n)
    disp, data = pd.DataFrame(disp_rows), pd.DataFrame(data_rows)
    if len(disp):
        order = sorted(range(len(disp)), key=lambda i: (
            disp.loc[i, "model"], disp.loc[i, "recipe"] != baseline, disp.loc[i, "recipe"],
            *(str(disp.loc[i, c]) for c in varying)))
        disp = disp.iloc[order].reset_index(drop=True).rename(columns={"model": "Model", "recipe": "Recipe"})
        data = data.iloc[order].reset_index(drop=True)
    upper = score.upper()
    return Table(
        name=f"leaderboard_{score}",
        title=f"{upper}: accuracy, coverage, set size and UAcc per task",
        display=disp,
        data=data,
        provenance=f"{prov.line(res)} {settings} Acc and Cov in %, SS = mean {upper} set size (options), "
        "UAcc = acc x sqrt(K) / SS as a ratio (not in %: it can exceed 1), the scale of `cpbench run` and the CSV.",
        legend=prov.legend(),
    )


def decoupling_display(a: Analysis, prov: Provenance, cfg: DecouplingConfig) -> Table:
    dec = a.decoupling
    varying, settings = varying_settings(a.results)
    rows = []
    ci = "95% split range" if cfg.decision == "point" else "95% CI"
    unverified = bool(dec["note"].astype(str).str.contains(ITEMS_UNVERIFIED, regex=False).any()) if len(dec) else False
    for _, r in dec.iterrows():
        note = "; ".join(p for p in str(r["note"] or "").split("; ") if p and p != ITEMS_UNVERIFIED)
        rows.append({
            "Model": r["model"], "Recipe": r["recipe"], "Task": r["task"], "Score": r["score"],
            **{c: r[c] for c in varying},
            "ΔAcc (pts)": signed(r["d_acc"], 2, 100), f"ΔAcc {ci}": interval(r["d_acc_lo"], r["d_acc_hi"], 2, 100),
            "ΔSS": signed(r["d_set_size"]), f"ΔSS {ci}": interval(r["d_set_size_lo"], r["d_set_size_hi"]),
            "ΔCov (pts)": signed(r["d_coverage"], 2, 100),
            f"ΔCov {ci}": interval(r["d_coverage_lo"], r["d_coverage_hi"], 2, 100),
            "ΔUAcc": signed(r["d_uacc"], 3),
            f"ΔUAcc {ci}": interval(r["d_uacc_lo"], r["d_uacc_hi"], 3),
            "Category": r["category"], "Note": note, "Flags": prov.flags(r["sample_data"], r["notes"]),
        })
    counts = dec["category"].value_counts() if len(dec) else pd.Series(dtype=int)
    summary = ", ".join(f"{c} {int(counts.get(c, 0))}" for c in CATEGORIES)
    point = cfg.decision == "point"
    return Table(
        name="decoupling",
        title=f"Decoupling against '{cfg.baseline}'",
        display=pd.DataFrame(rows),
        data=dec.drop(columns=[c for c in dec.columns if c.startswith(("ps_", "reps_"))]),
        provenance=f"{prov.line(dec)} {settings} {cfg.describe()}. Cells per category: {summary}."
        + (" Some records carry no items_hash: baseline and candidate were checked to have the same number of "
           "items and analysis key, not the same item ids." if unverified else ""),
        legend=[
            *(["95% CI: item-level paired interval for every Δ, coverage included (items resampled with calibration "
               "re-run, plus the split Monte Carlo error); it covers the population difference over item samples "
               "(docs/conformal.md, 'Estimand'). A note 'se at its floor' marks a cell where few items' sets differ "
               "and the interval is the floor's, not the bootstrap's. The CSV keeps the split-to-split percentile "
               "range as d_*_split_lo/hi: it only says how much a number moves with other random splits of the "
               "same items."] if not point else
              ["95% split range: the 2.5-97.5 percentiles of the paired difference over random splits of the same "
               "items (split noise only, not item sampling; --decision point). Not a confidence interval."]),
            "unaffected: accuracy kept (drop shown < epsilon) and set size holds (increase shown < delta)",
            "hidden-risk: accuracy kept but set size shown to grow beyond delta (uncertainty degrades unseen by "
            "accuracy)",
            "accuracy-only: accuracy shown to drop beyond epsilon while set size holds",
            "coupled: accuracy drops and set size grows",
            "inconclusive: the data cannot decide (the note says which part, and roughly how many items would)",
            "unpaired: not compared; the note says why",
            *prov.legend(),
        ],
    )


def diagnostics_display(a: Analysis, prov: Provenance, cfg: DecouplingConfig) -> Table:
    """Item-by-item comparisons with the baseline: flips, agreement, KL, set churn, Jaccard, newly confidently wrong,
    and the calibration deltas, each with its 95 % item-level interval."""
    dec = a.decoupling
    dec = dec[dec["category"] != "unpaired"] if len(dec) else dec
    varying, settings = varying_settings(a.results)
    cols = ["flip_cw", "flip_wc", "agreement", "kl", "churn", "jaccard", "newly_wrong"]

    def pct_iv(r, m) -> str:
        return interval(r[f"{m}_lo"], r[f"{m}_hi"], 2, 100).replace("+", "")

    rows = [{
        "Model": r["model"], "Recipe": r["recipe"], "Task": r["task"], "Score": r["score"],
        **{c: r[c] for c in varying},
        "Right→wrong (%)": pct(r["flip_cw"]), "CI ": pct_iv(r, "flip_cw"),
        "Wrong→right (%)": pct(r["flip_wc"]), "CI  ": pct_iv(r, "flip_wc"),
        "Top-1 agree (%)": pct(r["agreement"]),
        "KL (nats)": num(r["kl"], 4), "KL CI": interval(r["kl_lo"], r["kl_hi"], 4).replace("+", ""),
        "Set churn (%)": pct(r["churn"]), "Mean Jaccard": num(r["jaccard"]),
        "Newly conf. wrong (%)": pct(r["newly_wrong"]), "CI   ": pct_iv(r, "newly_wrong"),
        "ΔECE (pts)": signed(r["d_ece"], 2, 100), "ΔECE CI": interval(r["d_ece_lo"], r["d_ece_hi"], 2, 100),
        "ΔNLL": signed(r["d_nll"]), "ΔNLL CI": interval(r["d_nll_lo"], r["d_nll_hi"]),
        "Flags": prov.flags(r["sample_data"], r["notes"]),
    } for _, r in dec.iterrows()]
    keep = [c for c in dec.columns if not c.startswith("ps_") and (c in KEY_COLS or any(
        c.startswith(m) for m in (*cols, "d_ece", "d_brier", "d_nll", "d_entropy")) or c in ("sample_data", "notes"))]
    return Table(
        name="diagnostics",
        title=f"Item-level diagnostics against '{cfg.baseline}'",
        display=pd.DataFrame(rows),
        data=dec[keep].reset_index(drop=True) if len(dec) else pd.DataFrame(columns=keep),
        provenance=f"{prov.line(dec)} {settings} Each item compared with itself under the baseline: flips of the "
        "top-1 answer (right→wrong, Dutta et al. 2024), top-1 agreement, mean KL(baseline || candidate) of the option "
        "distribution, set churn (items whose prediction set changed) and mean Jaccard of the two sets, and newly "
        "confidently wrong (candidate singleton without the gold answer where the baseline's set held it); sets at "
        "the full-sample conformal quantile. 95% item-level intervals (paired item bootstrap; exact "
        "Clopper-Pearson intervals for shares of all items: flip rates, agreement); task averages: mean of tasks "
        "(counts over tasks of equal size pooled, so exact again).",
        legend=["empty: no item-level interval (the artifact was not found; see the decoupling note)",
                *prov.legend()],
    )


def rankings_display(a: Analysis, prov: Provenance) -> Table:
    rk = a.rankings
    varying, settings = varying_settings(a.results)
    rows = [{
        "Model": r["model"], "Task": r["task"], "Score": r["score"], **{c: r[c] for c in varying},
        "Recipes": int(r["n_recipes"]), "τ(acc, -SS)": num(r["tau_acc_size"]),
        "UAcc flips": int(r["uacc_flips"]), "Flipped pairs (acc order > UAcc order)": r["flips"],
        "Accuracy order": r["acc_order"],
    } for _, r in rk.iterrows()]
    return Table(
        name="rankings",
        title="Rank agreement across recipes: Kendall τ between accuracy and set size, UAcc flips",
        display=pd.DataFrame(rows),
        data=rk,
        provenance=f"{prov.line(a.results)} {settings} τ = +1: the more accurate recipe always has smaller sets; "
        "a flip is a pair of recipes that accuracy and UAcc order differently.",
    )


def thresholds_display(a: Analysis, prov: Provenance, cfg: LeaderboardConfig) -> Table:
    th = a.thresholds
    varying, settings = varying_settings(a.results)
    rows = []
    for _, r in th.iterrows():
        unit = "per bit removed" if r["kind"] == "bits" else "per sparsity point"
        crit = f"p={r['p_value']:.3f}" if r["criterion"] == "permutation" else (
            f"ΔBIC={r['bic_hinge'] - r['bic_linear']:+.2f}" if r["verdict"] != "too-few-levels" else "")
        rows.append({
            "Model": r["model"], "Sweep": r["family"], "Task": r["task"], "Score": r["score"],
            **{c: r[c] for c in varying},
            "Levels": r["levels"], "Verdict": r["verdict"],
            "Threshold": "" if pd.isna(r["threshold"]) else f"{r['threshold']:g}" + (
                " bits" if r["kind"] == "bits" else " %"),
            "Threshold 95% CI": "" if pd.isna(r["threshold_lo"]) else f"[{r['threshold_lo']:g}, "
            f"{r['threshold_hi']:g}]",
            "Slope before": num(r["slope_before"], 4), "Slope after": num(r["slope_after"], 4),
            "Jump (SS)": num(r["jump"]), "Jump 95% CI": interval(r["jump_lo"], r["jump_hi"]),
            "Units": unit, "Criterion": crit, "Item check": r["item_check"],
            "Knob from": r["knob_source"], "Note": r["note"],
            "Flags": prov.flags(r["sample_data"], r["notes"]),
        })
    crit = ("permutation test of the one-breakpoint fit against the linear fit at "
            f"{cfg.threshold_alpha:.0%}" if cfg.criterion == "permutation" else "BIC (lower wins)")
    return Table(
        name="thresholds",
        title="Thresholds: set size against bits / sparsity",
        display=pd.DataFrame(rows),
        data=th,
        provenance=f"{prov.line(th)} {settings} Criterion: {crit}; the baseline anchors each sweep at 16 bits / "
        "0 % sparsity; 'gradual' = no breakpoint wins, or its slope change is not distinguishable from item noise. "
        "A threshold is reported only when the slope change after the breakpoint is shown positive on joint item "
        "bootstrap resamples of every level (calibration re-run, hinge re-fitted per replicate); breakpoint and jump "
        "intervals are percentiles of those refits; 'inconclusive' = the artifacts needed for that check are "
        "missing. Knob from: record = the provenance written at scoring; name = parsed from the recipe name "
        "(fallback).",
    )


def size_effect_display(a: Analysis, prov: Provenance) -> Table:
    se = a.size_effect
    varying, settings = varying_settings(a.results)
    rows = [{
        "Recipe": r["recipe"], "Task": r["task"], "Score": r["score"], **{c: r[c] for c in varying},
        "Models": int(r["n_models"]), "Slope (ΔSS per 10x params)": signed(r["slope"]),
        "Item-level 95% CI": interval(r["slope_item_lo"], r["slope_item_hi"]),
        "Item-level basis": r.get("slope_item_basis", ""),
        "95% CI across models (t)": interval(r["slope_lo"], r["slope_hi"]), "R²": num(r["r2"]),
        "Sizes (source)": r["models"], "Left out": r["left_out"], "Flags": prov.flags(r["sample_data"], r["notes"]),
    } for _, r in se.iterrows()]
    return Table(
        name="size_effect",
        title="Size effect: Δ set size against log10(parameters)",
        display=pd.DataFrame(rows),
        data=se,
        provenance=f"{prov.line(se)} {settings} Negative slope: larger models lose less. Item-level CI: covers "
        "the slope through these models' population deltas (needs artifacts); basis 'shared replicates': the models "
        "answer the same items, so the slope is bootstrapped on the same item resamples for every model (their "
        "deltas are correlated); 'independent items': the models' items differ and the deltas' ses add. CI across "
        "models: t interval with n-2 degrees of freedom from the scatter around the line (treats the models as a "
        "sample; needs >= 3 models). Sizes from the records' provenance (n_params), else parsed from the name.",
    )


def provenance_display(a: Analysis, prov: Provenance) -> Table:
    real = a.results[(a.results["task"] != AVG)].drop_duplicates("path")
    rows = [{
        "Record": r["path"], "Model": r["model"], "Model id": r["model_id"], "Recipe": r["recipe"],
        "Task": r["task"], "n": "" if pd.isna(r["n"]) else int(r["n"]),
        "Artifact": str(r["artifact_hash"])[:19], "Analyzed at": r["analyzed_at"],
        "Flags": prov.flags(r["sample_data"], r["notes"]),
    } for _, r in real.sort_values("path").iterrows()]
    skipped = [f"skipped {Path(s.path).name}: {s.reason}" for s in sorted(a.skipped, key=lambda s: s.path)]
    cols = ["path", "model", "model_id", "recipe", "task", "prompt", "shots", "chat", "scoring", "data",
            "protocol", "alpha", "splits", "seed", "n", "artifact_hash", "items_hash", "analyzed_at", "sample_data",
            "notes"]
    return Table(
        name="provenance",
        title="Provenance: the result records behind every table",
        display=pd.DataFrame(rows),
        data=real.sort_values("path")[cols].reset_index(drop=True),
        provenance=prov.line(a.results) + f" {len(a.skipped)} file(s) under the root were not merged.",
        legend=[*prov.legend(), *skipped],
    )


def score_order(scores) -> list[str]:
    """LAC first (the primary score), then APS, then any other score alphabetically."""
    known = ("lac", "aps", "raps", "aps_rand", "raps_rand")
    return sorted(scores, key=lambda s: (known.index(s) if s in known else len(known), s))


def build_tables(a: Analysis, cfg: LeaderboardConfig) -> list[Table]:
    prov = Provenance(a.results, a.root_label)
    scores = score_order(a.results["score"].unique())
    tables = [main_table(a, s, prov, cfg.decoupling.baseline) for s in scores]
    tables += [decoupling_display(a, prov, cfg.decoupling), diagnostics_display(a, prov, cfg.decoupling),
               rankings_display(a, prov),
               thresholds_display(a, prov, cfg), size_effect_display(a, prov), provenance_display(a, prov)]
    return tables


def _markdown(tables: list[Table], a: Analysis) -> str:
    head = ["# cpbench leaderboard", ""]
    prov = Provenance(a.results, a.root_label)
    if prov.any_sample:
        head += [
            (
                "> ⚠ **Sample data.** Some results come from the offline smoke-test samples (flag `sample`); they "
                "check the pipeline and are not benchmark results."
            ),
            "",
        ]
    if prov.notes:
        head += ["> **Model notes.** " + " ".join(f"n{i + 1}: {n}." for i, n in enumerate(prov.notes)), ""]
    return "\n".join(head) + "\n" + "\n".join(t.markdown() for t in tables)


def _latex(tables: list[Table]) -> str:
    return ("% cpbench leaderboard tables; needs \\usepackage{booktabs}\n\n"
            + "\n".join(t.latex() for t in tables))


def write_leaderboard(
    root: str | os.PathLike, out: str | os.PathLike, cfg: LeaderboardConfig = LeaderboardConfig()
) -> tuple[Analysis, list[Path]]:
    """Write every leaderboard file under `out`; return the analysis and the paths written (sorted)."""
    a = analyze_tree(root, cfg)
    tables = build_tables(a, cfg)
    out = Path(out)
    written: list[Path] = []

    def put(rel: str, text: str) -> None:
        write_text_atomic(out / rel, text)
        written.append(out / rel)

    put("leaderboard.md", _markdown(tables, a))
    put("leaderboard.tex", _latex(tables))
    for t in tables:
        put(f"csv/{t.name}.csv", t.csv())
    long = a.results.drop(columns=[c for c in a.results.columns if c.startswith("ps_")])
    put("csv/results.csv", long.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n"))
    images: dict[str, bytes] = {}
    if cfg.plots:
        from cpbench.results.leaderboard.plots import write_plots

        images = write_plots(a, out / "plots", cfg.decoupling.baseline)
        written += [out / "plots" / name for name in images]
    if cfg.html:
        from cpbench.results.leaderboard.html import render_page

        put("index.html", render_page(tables, images, title="cpbench leaderboard", banner=_banner(a)))
    return a, sorted(written)


def _banner(a: Analysis) -> str:
    prov = Provenance(a.results, a.root_label)
    parts = []
    if prov.any_sample:
        parts.append("Sample data: rows flagged 'sample' come from the offline smoke-test samples and are not "
                     "benchmark results.")
    if prov.notes:
        parts.append("Model notes: " + " ".join(f"n{i + 1}: {n}." for i, n in enumerate(prov.notes)))
    return " ".join(parts)
