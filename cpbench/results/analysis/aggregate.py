"""Task averages: one extra row per cell whose tasks are complete, so every table can show an 'avg' column."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from cpbench.results.store import KEY_COLS, METRICS, merge_notes

AVG = "avg"


TASK_ORDER = ("qa", "rc", "ci", "drs", "ds")  # Ye et al. 2024's order; other tasks follow alphabetically


def task_order(results: pd.DataFrame) -> list[str]:
    """The frame's tasks in the benchmark's order (qa, rc, ci, drs, ds, then others sorted), the average last."""
    real = sorted((t for t in results["task"].unique() if t != AVG),
                  key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER), t))  # fmt: skip
    return real + ([AVG] if (results["task"] == AVG).any() else [])


def _mean_arrays(arrays: pd.Series) -> np.ndarray | None:
    # Split r of every task comes from the same analysis key, so averaging split-by-split keeps the pairing.
    if any(a is None for a in arrays) or len({len(a) for a in arrays}) != 1:
        return None
    return np.mean(np.stack(list(arrays)), axis=0)


def add_task_average(df: pd.DataFrame) -> pd.DataFrame:
    """Append rows with task 'avg' (unweighted mean over tasks) where a cell has every task of the frame.

    Cells are (everything in the key but the task). A cell missing a task gets no average: an average over other
    tasks would not be comparable with its neighbours'. Returns a new frame; per-split arrays are averaged per split.
    """
    if df.empty:
        return df.copy()
    real = df[df["task"] != AVG]
    all_tasks = sorted(real["task"].unique())
    group_cols = [c for c in KEY_COLS if c != "task"]
    rows = []
    for key, g in real.groupby(group_cols, sort=True, dropna=False):
        if sorted(g["task"]) != all_tasks or len(all_tasks) < 2:
            continue
        row = dict(zip(group_cols, key))
        row["task"] = AVG
        for col in ["acc", *METRICS]:
            row[col] = float(g[col].mean())
        for col in ["ps_acc", *(f"ps_{m}" for m in METRICS)]:
            row[col] = _mean_arrays(g[col])
        for col in ("n", "n_cal", "n_test"):
            row[col] = int(g[col].sum()) if g[col].notna().all() else None
        hashes = list(g.sort_values("task")["items_hash"])
        row["items_hash"] = (
            "avg:" + hashlib.sha256("|".join(hashes).encode()).hexdigest()[:16] if all(hashes) else ""
        )
        row["prompts_hash"] = ""
        row["sample_data"] = bool(g["sample_data"].any())
        row["notes"] = merge_notes(g["notes"])
        row["params"] = float(g["params"].iloc[0])
        row["model_id"] = g["model_id"].iloc[0]
        row["model_name"] = g["model_name"].iloc[0]
        row["recipe_spec"] = g["recipe_spec"].iloc[0]
        row["path"] = ""
        rows.append(row)
    if not rows:
        return df.copy()
    out = pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
    return out.sort_values(list(KEY_COLS), kind="mergesort").reset_index(drop=True)
