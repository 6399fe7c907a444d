"""Size effect: do larger models absorb compression better?

For each recipe (and task, prompt, shots, ..., conformal score), the delta set size against the model's baseline is
regressed on log10(parameters) across models: a negative slope means larger models lose less uncertainty quality.
The slope is per 10x parameters, with a t interval (n - 2 degrees of freedom, so at least 3 models). Parameter
counts come from the record's provenance, then the model registry, then the model name (`knobs.model_params`);
models whose size is unknown are left out and listed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cpbench.analysis.knobs import model_params
from cpbench.analysis.stats import fit_line
from cpbench.store import KEY_COLS, merge_notes

GROUP_COLS = [c for c in KEY_COLS if c != "model"]


def size_effect_table(
    decoupling: pd.DataFrame, params: pd.DataFrame | None = None, level: float = 0.95
) -> pd.DataFrame:
    """Fits over the paired cells of a decoupling table.

    `params` (optional) has columns model, params and model_name (the results frame's): recorded counts, and the
    registry name to look up when no count is recorded (`knobs.model_params`).
    """
    columns = [*GROUP_COLS, "n_models", "slope", "slope_lo", "slope_hi", "intercept", "r2", "models",
               "left_out", "sample_data", "notes"]
    ok = decoupling[decoupling["category"] != "unpaired"] if len(decoupling) else decoupling
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
        rows.append({
            **dict(zip(GROUP_COLS, key)),
            "n_models": int(mask.sum()),
            "slope": fit.slope,
            "slope_lo": fit.slope_lo,
            "slope_hi": fit.slope_hi,
            "intercept": fit.intercept,
            "r2": fit.r2,
            "models": " ".join(f"{m}({sizes[m][0]:.3g},{sizes[m][1]})" for m in g["model"][mask]),
            "left_out": " ".join(f"{m}(size unknown)" for m in g["model"][~mask]),
            "sample_data": bool(g["sample_data"].any()),
            "notes": merge_notes(g["notes"]),
        })
    return pd.DataFrame(rows, columns=columns)
