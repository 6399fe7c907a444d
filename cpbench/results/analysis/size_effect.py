"""Size effect: do larger models absorb compression better?

For each recipe (and task, prompt, shots, ..., conformal score), the delta set size against the model's baseline is
regressed on log10(parameters) across models: a negative slope means larger models lose less uncertainty quality.
The slope is per 10x parameters, with two intervals that cover different things:

- `slope_item_lo/hi` (item-level): the slope through these models' population deltas. The OLS slope is a fixed
  linear combination sum c_m delta_m of the models' deltas, and every model answers the same items, so the deltas
  are correlated (an item sample that is hard for one model is hard for the others). The bootstrap draws the same
  resamples for every comparison of the same items (`bootstrap.boot_counts`), so each replicate gives a replicate of
  the slope: Var(slope) = c' D R D c with R the correlation of the models' delta replicates and D their item-level
  standard errors (floors included), plus sum c_m^2 se_split_m^2 for the split Monte Carlo terms (`slope_item_basis`
  = "shared replicates"). When the models' items differ (other items_hash) or replicates are missing, the deltas are
  independent samples and se = sqrt(sum c_m^2 se_m^2) ("independent items"). Needs 2 models with artifacts.
- `slope_lo/hi` (across models): the t interval with n - 2 degrees of freedom from the scatter around the line,
  which treats the models as a sample (needs at least 3 models).

Parameter counts come from the record's provenance (`n_params`, written at scoring time), else the model name (source
"name", a flagged fallback); never the YAML registry. Models whose size is unknown are left out and listed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cpbench.results.analysis.knobs import model_params
from cpbench.results.analysis.estimate import z_of
from cpbench.results.analysis.stats import fit_line
from cpbench.results.store import KEY_COLS, merge_notes

GROUP_COLS = [c for c in KEY_COLS if c != "model"]


def size_effect_table(
    decoupling: pd.DataFrame, params: pd.DataFrame | None = None, level: float = 0.95
) -> pd.DataFrame:
    """Fits over the paired cells of a decoupling table.

    `params` (optional) has columns model, params and model_name (the results frame's): recorded counts, and the
    registry name to look up when no count is recorded (`knobs.model_params`).
    """
    columns = [*GROUP_COLS, "n_models", "slope", "slope_lo", "slope_hi", "slope_item_se", "slope_item_lo",
               "slope_item_hi", "slope_item_basis", "intercept", "r2", "models", "left_out", "sample_data", "notes"]
    ok = decoupling[decoupling["category"] != "unpaired"] if len(decoupling) else decoupling
    ok = ok[np.isfinite(ok["d_set_size"].to_numpy(dtype=float))] if len(ok) else ok
    if ok.empty:
        return pd.DataFrame(columns=columns)
    recorded: dict[str, float] = {}
    names: dict[str, str] = {}
    if params is not None and len(params):
        for model, p, name in params[["model", "params", "model_name"]].itertuples(index=False):
            if isinstance(p, float) and math.isfinite(p):
                recorded.setdefault(model, p)
            if name:
                names.setdefault(model, name)
    sizes = {m: model_params(m, recorded.get(m, math.nan), names.get(m, "")) for m in sorted(ok["model"].unique())}
    rows = []
    for key, g in ok.groupby(GROUP_COLS, sort=True, dropna=False):
        g = g.sort_values("model")
        known = [sizes[m][0] for m in g["model"]]
        mask = np.isfinite(known)
        x = np.log10(np.asarray(known, dtype=float)[mask])
        y = g["d_set_size"].to_numpy(dtype=float)[mask]
        fit = fit_line(x, y, level)  # all NaN with fewer than 2 models, no interval with fewer than 3
        se_m = (g["d_set_size_se"].to_numpy(dtype=float)[mask] if "d_set_size_se" in g
                else np.full(len(x), math.nan))
        item_se, basis = math.nan, ""
        if len(x) >= 2 and np.ptp(x) > 0 and np.isfinite(se_m).all():
            c = (x - x.mean()) / float(((x - x.mean()) ** 2).sum())
            reps = list(g["reps_d_set_size"][mask]) if "reps_d_set_size" in g else []
            shared = _shared_se(c, reps)
            if shared is not None:
                item_se, basis = shared, "shared replicates"
            else:
                item_se, basis = float(math.sqrt(float((c**2 * se_m**2).sum()))), "independent items"
        z = z_of(0.5 + level / 2)
        rows.append({
            **dict(zip(GROUP_COLS, key)),
            "n_models": int(mask.sum()),
            "slope": fit.slope,
            "slope_lo": fit.slope_lo,
            "slope_hi": fit.slope_hi,
            "slope_item_se": item_se,
            "slope_item_lo": fit.slope - z * item_se,
            "slope_item_hi": fit.slope + z * item_se,
            "slope_item_basis": basis,
            "intercept": fit.intercept,
            "r2": fit.r2,
            "models": " ".join(f"{m}({sizes[m][0]:.3g},{sizes[m][1]})" for m in g["model"][mask]),
            "left_out": " ".join(f"{m}(size unknown)" for m in g["model"][~mask]),
            "sample_data": bool(g["sample_data"].any()),
            "notes": merge_notes(g["notes"]),
        })
    return pd.DataFrame(rows, columns=columns)


def _shared_se(c: np.ndarray, reps: list) -> float | None:
    """se of sum c_m delta_m from the models' joint bootstrap replicates (None unless every model has replicates of
    the same items: the same items_hash, n and number of replicates)."""
    if not reps or any(not isinstance(r, dict) for r in reps):
        return None
    items = {r["items"] for r in reps}
    if len(items) != 1 or "" in items or len({r["n"] for r in reps}) != 1:
        return None
    mats = [np.asarray(r["reps"], dtype=float) for r in reps]
    if len({len(m) for m in mats}) != 1 or len(mats[0]) < 3:
        return None
    R = np.corrcoef(np.vstack(mats)) if all(np.std(m) > 0 for m in mats) else None
    se_item = np.array([float(r["se_item"]) for r in reps])
    se_split = np.array([float(r["se_split"] or 0.0) for r in reps])
    if R is None or not np.isfinite(R).all() or not np.isfinite(se_item).all():
        return None
    cov = R * np.outer(se_item, se_item)  # correlations from the shared replicates, spreads with their floors
    var = float(c @ cov @ c) + float((c**2 * se_split**2).sum())
    return math.sqrt(max(var, 0.0))
