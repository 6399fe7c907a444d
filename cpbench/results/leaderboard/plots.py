"""PNG plots (matplotlib, Agg backend, imported only here so `cpbench check` and the tables never load it)."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cpbench.results.analysis.aggregate import AVG, task_order
from cpbench.base.atomic import atomic_path

if TYPE_CHECKING:
    from cpbench.results.leaderboard.build import Analysis


def _safe(name: str) -> str:
    name = name.replace("{bits}", "N").replace("{sparsity}", "N")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No Software/date metadata: the same input gives the same bytes with the same matplotlib.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


# Layout: every figure uses matplotlib's constrained layout (titles, tick labels, colour bars and legends get room and
# never overlap), is sized from its content (a minimum height per heatmap row, room for the longest label) and keeps
# its text inside the figure; axes that show a share (accuracy) stay within [0, 100] %.
CHAR_IN = 0.075  # inches per character of 8 pt text (DejaVu Sans averages ~0.07)
MIN_ROW_IN = 0.42  # heatmap: inches per row
MIN_MAP_IN = 1.9  # heatmap: smallest axes height (room for the colour bar's label)


def _wrap(text: str, width_in: float, points: float = 9) -> str:
    """`text` in lines that fit `width_in` inches at `points` pt (a long suptitle never runs past the figure)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, int(width_in / (CHAR_IN * points / 8)))))


def _panels(n: int, extra_h: float = 0.0):
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.6 * cols, 5.5), 3.8 * rows + extra_h), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def write_plots(a: "Analysis", out: Path, baseline: str) -> dict[str, bytes]:
    """Write every plot under `out`; return {file name: PNG bytes} for embedding."""
    # No matplotlib.use() here: the backend is process-wide state (a notebook's inline backend must survive a library
    # call). `cpbench leaderboard` selects Agg; figures are rendered with savefig, which works on any backend.
    import matplotlib.pyplot as plt

    images: dict[str, bytes] = {}
    with plt.rc_context({"font.size": 8, "axes.titlesize": 9, "svg.hashsalt": "cpbench"}):
        for score in sorted(a.results["score"].unique()):
            images.update(_acc_vs_size(a.results, score, baseline, a.decoupling))
            images.update(_heatmap(a.decoupling, score))
            images.update(_thresholds(a, score))
    out.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(data)
    plt.close("all")
    return images


def _acc_vs_size(results: pd.DataFrame, score: str, baseline: str, dec: pd.DataFrame | None = None
                 ) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    fig = acc_vs_size_figure(results, score, baseline, dec)
    if fig is None:
        return {}
    data = _png(fig)
    plt.close(fig)
    return {f"acc_vs_set_size_{score}.png": data}


def _clip_share(ax, top: float = 100.0) -> None:
    """An accuracy axis (percent) never shows below 0 or above 100 (intervals near the ends are cut at the edge)."""
    lo, hi = ax.get_ylim()
    lo, hi = max(lo, 0.0), min(hi, top)
    ax.set_ylim(lo, hi if hi > lo else min(lo + 1.0, top))


def acc_vs_size_figure(results: pd.DataFrame, score: str, baseline: str, dec: pd.DataFrame | None = None):
    """The accuracy-vs-set-size figure of one score (a matplotlib Figure; None when there is nothing to plot)."""
    import matplotlib.pyplot as plt

    res = results[results["score"] == score]
    tasks = task_order(res)
    if not tasks:
        return None
    recipes = sorted(r for r in res["recipe"].unique() if r != baseline)
    colors = {r: plt.get_cmap("tab10")(i % 10) for i, r in enumerate(recipes)}
    fig, axes = _panels(len(tasks), extra_h=0.25 * math.ceil((len(recipes) + 1) / 5))
    for ax, task in zip(axes, tasks):
        g = res[res["task"] == task]
        base = g[g["recipe"] == baseline].set_index("model")
        ax.scatter(base["set_size"], 100 * base["acc"], color="black", marker="o", s=22, zorder=3)
        for model, r in base.iterrows():
            ax.annotate(model, (r["set_size"], 100 * r["acc"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        for recipe in recipes:  # one scatter and one quiver per recipe: thousands of annotate() calls are slow
            c = g[g["recipe"] == recipe]
            x, y = c["set_size"].to_numpy(float), 100 * c["acc"].to_numpy(float)
            ax.scatter(x, y, color=colors[recipe], s=18, zorder=3)
            _error_bars(ax, dec, c, score, task, recipe, colors[recipe])
            has = c["model"].isin(base.index).to_numpy()
            if has.any():
                bx = base.loc[c["model"][has], "set_size"].to_numpy(float)
                by = 100 * base.loc[c["model"][has], "acc"].to_numpy(float)
                ax.quiver(bx, by, x[has] - bx, y[has] - by, angles="xy", scale_units="xy", scale=1,
                          color=colors[recipe], width=0.004, headwidth=4, headlength=5, zorder=2)
        ax.set_title(f"{task} ({score.upper()})")
        ax.set_xlabel("mean set size (options)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        _clip_share(ax)
        ax.set_xlim(left=max(ax.get_xlim()[0], 0.0))
    handles = [plt.Line2D([], [], marker="o", ls="", color="black", label=f"{baseline} (baseline)")]
    handles += [plt.Line2D([], [], marker="o", ls="", color=colors[r], label=r) for r in recipes]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
    fig.suptitle(_wrap("Accuracy vs set size: arrows go from each model's baseline to its compressed versions; "
                       "error bars: 95% item-level intervals of the change", fig.get_figwidth() - 0.3))
    return fig


def _error_bars(ax, dec: pd.DataFrame | None, c: pd.DataFrame, score: str, task: str, recipe: str, color) -> None:
    """95 % item-level intervals of (delta set size, delta accuracy), drawn around the compressed point."""
    if dec is None or dec.empty or c.empty:
        return
    d = dec[(dec["score"] == score) & (dec["task"] == task) & (dec["recipe"] == recipe)].set_index("model")
    d = d[[m in set(c["model"]) for m in d.index]]
    if d.empty:
        return
    pts = c.set_index("model").loc[d.index]
    x, y = pts["set_size"].to_numpy(float), 100 * pts["acc"].to_numpy(float)
    xerr = np.vstack([d["d_set_size"] - d["d_set_size_lo"], d["d_set_size_hi"] - d["d_set_size"]]).astype(float)
    yerr = 100 * np.vstack([d["d_acc"] - d["d_acc_lo"], d["d_acc_hi"] - d["d_acc"]]).astype(float)
    ok = np.isfinite(xerr).all(axis=0) & np.isfinite(yerr).all(axis=0)
    if ok.any():
        ax.errorbar(x[ok], y[ok], xerr=xerr[:, ok], yerr=yerr[:, ok], fmt="none", ecolor=color, elinewidth=0.7,
                    capsize=1.5, alpha=0.7, zorder=2)


def heatmap_marks(d: pd.DataFrame, level: float = 0.95) -> pd.Series:
    """Per decoupling row, whether delta set size differs from zero, Holm-adjusted across the heatmap's cells
    (two-sided, normal with the item-level se); NaN se counts as not significant."""
    from cpbench.results.analysis.decisions import adjust
    from cpbench.results.analysis.estimate import _NORMAL

    z = (d["d_set_size"] / d["d_set_size_se"]).to_numpy(dtype=float)
    p = np.array([2 * (1 - _NORMAL.cdf(abs(v))) if np.isfinite(v) else np.nan for v in z])
    adj = adjust(p, "holm")
    return pd.Series(np.isfinite(adj) & (adj <= 1 - level), index=d.index)


def _heatmap(dec: pd.DataFrame, score: str) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    fig = heatmap_figure(dec, score)
    if fig is None:
        return {}
    data = _png(fig)
    plt.close(fig)
    return {f"heatmap_delta_set_size_{score}.png": data}


def heatmap_figure(dec: pd.DataFrame, score: str):
    """The model x recipe heatmap of Δ set size for one score (a matplotlib Figure; None when nothing is paired).
    Its height grows with the rows (MIN_ROW_IN a row, at least MIN_MAP_IN), its width with the columns and the
    longest model name; constrained layout keeps the title, tick labels and colour bar apart."""
    import matplotlib.pyplot as plt

    d = dec[(dec["score"] == score) & (dec["category"] != "unpaired")]
    if d.empty:
        return None
    task = AVG if (d["task"] == AVG).any() else None
    d = d[d["task"] == task] if task else d
    label = "task average" if task else "mean over tasks"
    grid = d.pivot_table(index="model", columns="recipe", values="d_set_size", aggfunc="mean").sort_index()
    grid = grid[sorted(grid.columns)]
    d = d.assign(sig=heatmap_marks(d)) if "d_set_size_se" in d else d.assign(sig=False)
    sig = d.pivot_table(index="model", columns="recipe", values="sig", aggfunc="max").reindex_like(grid)
    values = grid.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    n_rows, n_cols = len(grid.index), len(grid.columns)
    y_labels = CHAR_IN * max(len(str(m)) for m in grid.index)
    x_labels = CHAR_IN * 0.72 * max(len(str(r)) for r in grid.columns)  # rotated 45 degrees
    map_w, map_h = max(0.75 * n_cols, 1.5), max(MIN_ROW_IN * n_rows, MIN_MAP_IN)
    width = max(y_labels + map_w + 1.3, 4.5)  # + colour bar and its label
    height = 0.75 + map_h + x_labels + 0.3  # title (two lines) + map + rotated recipe names
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    im = ax.imshow(values, cmap="RdBu_r", vmin=-lim or -1, vmax=lim or 1, aspect="auto")
    ax.set_xticks(range(n_cols), grid.columns, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n_rows), grid.index)
    marks = sig.to_numpy(dtype=object)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            star = marks[i, j] is True or marks[i, j] == 1
            ax.text(j, i, f"{v:+.2f}" + ("*" if star else ""), ha="center", va="center", fontsize=7,
                    fontweight="bold" if star else "normal", color="white" if abs(v) > 0.6 * (lim or 1) else "black")
    fig.colorbar(im, ax=ax, label="Δ set size vs baseline", fraction=0.08, pad=0.03)
    fig.suptitle(_wrap(f"Δ {score.upper()} set size ({label}), model x recipe; * bold: differs from 0 "
                       "(item-level, Holm over these cells, 5%)", width - 0.2, 8), fontsize=8)
    return fig


def _thresholds(a: "Analysis", score: str) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    th = a.thresholds[(a.thresholds["score"] == score) & (a.thresholds["verdict"] != "too-few-levels")]
    images = {}
    for family, gf in th.groupby("family", sort=True):
        task = AVG if (gf["task"] == AVG).any() else min(gf["task"].unique())
        gf = gf[gf["task"] == task]
        models = sorted(gf["model"].unique())
        fig, axes = _panels(len(models))  # constrained layout: no tight_layout
        for ax, model in zip(axes, models):
            for _, r in gf[gf["model"] == model].iterrows():
                x = np.array([float(v) for v in r["levels"].split()])
                y = np.array([float(v) for v in r["set_sizes"].split()])
                ax.plot(x, y, marker="o", lw=1, color="tab:blue")
                if r["verdict"] == "threshold":
                    if np.isfinite(r.get("threshold_lo", np.nan)) and np.isfinite(r.get("threshold_hi", np.nan)):
                        ax.axvspan(r["threshold_lo"], r["threshold_hi"], color="tab:red", alpha=0.15, lw=0,
                                   label="breakpoint 95% interval")
                    ax.axvline(r["threshold"], color="tab:red", ls="--", lw=1)
                    ax.annotate(f"threshold {r['threshold']:g}", (r["threshold"], float(np.max(y))), fontsize=7,
                                color="tab:red", xytext=(3, -10), textcoords="offset points")
                else:
                    ax.text(0.03, 0.92, "gradual", transform=ax.transAxes, fontsize=7, color="tab:gray")
                kind = r["kind"]
            ax.set_xlabel("bits" if kind == "bits" else "sparsity (%)")
            if kind == "bits":
                ax.invert_xaxis()  # compression grows to the right on both kinds of sweep
            ax.set_ylabel(f"mean {score.upper()} set size")
            ax.set_title(f"{model}: {family} ({task})")
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.0))  # a set size is never negative
            ax.grid(alpha=0.3)
        images[f"threshold_{_safe(family)}_{score}.png"] = _png(fig)
        plt.close(fig)
    return images
