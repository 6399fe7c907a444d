"""Synthetic result records in the documented format, with chosen per-split values.

Tests state the numbers they want per split (or a mean plus seeded noise) and get a record whose means, std and ci95
are computed from those splits exactly as docs/design.md defines them, so analyses have known answers. Records are
built through `cpbench.results.records.build_record`, the typed model the writer and the store use, so a factory record is
exactly what production would write (schema `cpbench.results.records.SCHEMA`, range and consistency checks included).
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from cpbench.results.records import SCHEMA, build_record

K = 6
LETTERS = ["A", "B", "C", "D", "E", "F"]


def _arr(value: float | Sequence[float], splits: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    if np.ndim(value) == 0:
        return float(value) + noise * rng.standard_normal(splits)
    a = np.asarray(value, dtype=float)
    assert a.shape == (splits,), f"per-split values must have length {splits}"
    return a


def _summary(a: np.ndarray) -> dict[str, Any]:
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "ci95": [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))],
    }


def _size_hist(mean_size: float) -> list[float]:
    """A set-size histogram over 0..K whose mean is `mean_size` (mass on the two sizes around it)."""
    s = min(max(float(mean_size), 0.0), float(K))
    lo = int(np.floor(s))
    hist = [0.0] * (K + 1)
    if lo >= K:
        hist[K] = 1.0
        return hist
    frac = s - lo
    hist[lo], hist[lo + 1] = 1.0 - frac, frac
    return hist


def items_hash(n: int, tag: str = "") -> str:
    return "sha256:" + hashlib.sha256(f"items-{n}-{tag}".encode()).hexdigest()


def make_record(
    model: str = "tiny",
    recipe: str = "base",
    task: str = "qa",
    *,
    acc: float | Sequence[float] = 0.6,
    set_size: float | Sequence[float] = 2.0,
    coverage: float | Sequence[float] = 0.9,
    aps_set_size: float | Sequence[float] | None = None,
    aps_coverage: float | Sequence[float] | None = None,
    splits: int = 20,
    noise: float = 0.0,
    seed: int = 0,
    prompt: str = "base",
    shots: int = 0,
    scoring: str = "letter",
    data: str = "",
    protocol: str = "default",
    alpha: float = 0.1,
    analysis_seed: int = 0,
    n: int = 1000,
    items_tag: str = "",
    with_items_hash: bool = True,
    with_per_split: bool = True,
    sample_data: bool = False,
    notes: Sequence[str] = (),
    params: float | None = None,
    recipe_spec: dict | None = None,
    scores: Sequence[str] = ("lac", "aps"),
) -> dict[str, Any]:
    """One result record. Scalars get `noise` * N(0,1) per split (seeded); sequences are used as given."""
    rng = np.random.default_rng(seed)
    ps_acc = _arr(acc, splits, noise, rng)
    blocks: dict[str, dict[str, Any]] = {}
    per_split: dict[str, Any] = {"acc": ps_acc.tolist()}
    for s in scores:
        ss_value = aps_set_size if (s == "aps" and aps_set_size is not None) else set_size
        cov_value = aps_coverage if (s == "aps" and aps_coverage is not None) else coverage
        ss = _arr(ss_value, splits, noise, rng)
        cov = _arr(cov_value, splits, noise * 0.1, rng)
        uacc = ps_acc * np.sqrt(K) / ss
        block: dict[str, Any] = {"qhat": 0.8, "size_hist": _size_hist(float(ss.mean())), "coverage_by_size": {},
                                 "coverage_by_class": {}}
        for name, a in (("coverage", cov), ("set_size", ss), ("uacc", uacc)):
            sm = _summary(a)
            block[name], block[f"{name}_std"], block[f"{name}_split_range95"] = sm["mean"], sm["std"], sm["ci95"]
        blocks[s] = block
        per_split[s] = {"coverage": cov.tolist(), "set_size": ss.tolist(), "uacc": uacc.tolist()}
    acc_sm = _summary(ps_acc)
    n_cal = n // 2
    prov: dict[str, Any] = {
        "model_id": f"org/{model}",
        "recipe": recipe_spec if recipe_spec is not None else {"name": recipe},
        "artifact_hash": "sha256:" + hashlib.sha256(f"{model}{recipe}{task}{seed}".encode()).hexdigest(),
        "artifact_path": f"artifacts/{model}/{recipe}/{task}.parquet",
        "cpbench_version": "0.1.0",
        "analyzed_at": "2026-11-22T14:00:00Z",
        "sample_data": sample_data,
        "notes": list(notes),
        "prompts_hash": "sha256:prompts-" + task + prompt + str(shots),
    }
    if params is not None:
        prov["n_params"] = float(params)
    score_key = {"model": model, "recipe": recipe, "task": task, "prompt": prompt, "shots": shots, "chat": "none",
                 "scoring": scoring, "data": data}
    prov["run_key"] = dict(score_key)  # the artifact's own key, as the scorer writes it
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "run_key": {
            "score": score_key,
            "analysis": {"protocol": protocol, "alpha": alpha, "splits": splits, "seed": analysis_seed,
                         "cal_ratio": 0.5, "stratify": False},
        },
        "provenance": prov,
        "input": prov["artifact_path"],
        "n": n, "k": K, "n_cal": n_cal, "n_test": n - n_cal, "letters": LETTERS,
        "acc": acc_sm["mean"], "acc_std": acc_sm["std"], "acc_split_range95": acc_sm["ci95"],
        "calibration": {"ece": 0.05, "brier": 0.5, "nll": 1.1, "entropy": 1.2, "idk_rate": 0.01, "nota_rate": 0.0},
        **blocks,
        "protocol": {"name": protocol, "quantile": "textbook", "empty": "allow", "softmax_dtype": "float64",
                     "split": f"{splits} synthetic splits (tests/result_factory.py)", "excluded_ids": [],
                     "scores": {s: s for s in scores}, "ece_bins": 15},
    }
    if with_items_hash:
        record["items_hash"] = items_hash(n, items_tag)
    if with_per_split:
        record["per_split"] = per_split
    return build_record(record)


def synthetic_tree(root, *, order: str = "forward") -> list[dict[str, Any]]:
    """A small results tree: two models, a GPTQ bit sweep bending at 4 bits, one recipe off the sweep, two tasks.

    `smol-135m` is flagged as sample data with a model note, so the leaderboard must label it. `order` writes the
    records forwards or backwards (the leaderboard must not care).
    """
    from cpbench.results.store import write_result

    records = []
    for m_i, (model, params) in enumerate((("smol-135m", 1.35e8), ("big-8b", 8e9))):
        small = model.startswith("smol")
        for t_i, task in enumerate(("qa", "rc")):
            for r_i, (recipe, bits) in enumerate(
                (("base", 16), ("gptq-8bit", 8), ("gptq-6bit", 6), ("gptq-4bit", 4), ("gptq-3bit", 3),
                 ("gptq-2bit", 2), ("w8a8", None))
            ):
                knob = bits if bits is not None else 8
                ss = 1.8 + 0.1 * t_i + (0.3 if small else 0.1) * max(0, 4 - knob) ** 1.5
                acc = 0.62 - 0.05 * t_i - (0.004 if small else 0.002) * max(0, 6 - knob) ** 2
                records.append(make_record(
                    model, recipe, task, acc=acc, set_size=ss, aps_set_size=ss + 0.3, noise=0.01,
                    seed=100 * m_i + 10 * t_i + r_i, splits=20, params=params, sample_data=small,
                    notes=["baseline weights were GGUF Q4_1 before compression"] if small else [],
                ))
    for rec in (records if order == "forward" else list(reversed(records))):
        write_result(rec, root)
    return records
