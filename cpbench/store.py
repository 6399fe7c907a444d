"""The results tree: one JSON record per run cell, written atomically, loaded into one pandas DataFrame.

Layout: `root/<model>/<recipe>/<RunKey.slug()>.json` (model and recipe made filesystem-safe as in `ScoreKey.slug`).
The loader walks the whole tree and reports every file it does not merge (half-written temporaries, foreign JSON,
other schemas, duplicates of a run key already loaded) in `skipped` as (path, reason): nothing is merged silently.
The one exception is logits artifacts (`*.parquet`, which `cpbench run` keeps in `<model>/<recipe>/artifacts/`): they
are the records' inputs, not records, and are passed over without a report.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from pydantic import ValidationError

from cpbench.atomic import write_json_atomic
from cpbench.errors import CpbenchError
from cpbench.runkey import RunKey

SCHEMA = "cpbench.result/1"
METRICS = ("coverage", "set_size", "uacc")  # per conformal score; accuracy is score-independent
CALIBRATION = ("ece", "brier", "nll", "entropy", "idk_rate", "nota_rate")
SCORE_KEY_COLS = ("model", "recipe", "task", "prompt", "shots", "chat", "scoring", "data", "limit", "dtype", "scorer")
ANALYSIS_KEY_COLS = ("protocol", "alpha", "splits", "seed", "cal_ratio", "stratify")
# One DataFrame row per (run key, conformal score). `score` is the conformal score (lac, aps, raps); `scoring` is the
# ScoreKey's option-scoring mode (letter, cloze).
KEY_COLS = SCORE_KEY_COLS + ANALYSIS_KEY_COLS + ("score",)
PER_SPLIT_COLS = ("ps_acc", "ps_coverage", "ps_set_size", "ps_uacc")


@dataclass(frozen=True)
class Skipped:
    """A file under the results root that was not merged, and why."""

    path: str
    reason: str


def result_path(run_key: RunKey, root: str | os.PathLike) -> Path:
    return run_key.score.cell_dir(root) / f"{run_key.slug()}.json"


LEGACY_BASELINE = "fp16"  # the baseline recipe's name before schema 2 ("base" now: it is not always fp16)


def migrate_run_key(run_key: Any) -> Any:
    """A stored run key in today's vocabulary: the old baseline name `fp16` reads as `base`."""
    score = run_key.get("score") if isinstance(run_key, dict) else None
    if isinstance(score, dict) and score.get("recipe") == LEGACY_BASELINE:
        return {**run_key, "score": {**score, "recipe": "base"}}
    return run_key


def _check_record(record: Any) -> tuple[RunKey, dict[str, np.ndarray | None]]:
    """Validate the parts of a record the store relies on; raise CpbenchError naming the first problem.

    Returns the run key and the per-split arrays (parsed once here, then reused for the DataFrame rows).
    """
    if not isinstance(record, dict):
        raise CpbenchError(f"not a cpbench result record (top level is {type(record).__name__}, not an object)")
    schema = record.get("schema")
    if schema is None:
        raise CpbenchError("not a cpbench result record (no 'schema' key)")
    if schema != SCHEMA:
        raise CpbenchError(f"schema {schema!r} is not {SCHEMA}")
    if "run_key" not in record:
        raise CpbenchError("result record has no 'run_key'")
    try:
        key = RunKey.model_validate(migrate_run_key(record["run_key"]))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise CpbenchError(f"bad run_key ({where}: {first.get('msg')})") from None
    if not _is_number(record.get("acc")):
        raise CpbenchError("result record has no numeric 'acc'")
    scores = score_names(record)
    if not scores:
        raise CpbenchError("result record has no conformal score block (e.g. 'lac' with coverage/set_size/uacc)")
    for name in scores:
        for m in METRICS:
            if not _is_number(record[name].get(m)):
                raise CpbenchError(f"'{name}.{m}' is missing or not a number")
    return key, _per_split(record, scores)  # raises on malformed per-split arrays


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def score_names(record: dict) -> list[str]:
    """Conformal score blocks in a record: top-level objects that carry coverage and set_size."""
    return sorted(
        k for k, v in record.items() if isinstance(v, dict) and "coverage" in v and "set_size" in v and k != "per_split"
    )


def _per_split(record: dict, scores: Iterable[str]) -> dict[str, np.ndarray | None]:
    """Per-split arrays keyed 'acc' and '<score>.<metric>'; None where the record has none. All must share a length."""
    ps = record.get("per_split")
    out: dict[str, np.ndarray | None] = {}
    if ps is None:
        return {"acc": None, **{f"{s}.{m}": None for s in scores for m in METRICS}}
    if not isinstance(ps, dict):
        raise CpbenchError("'per_split' is not an object")

    def arr(value: Any, name: str) -> np.ndarray | None:
        if value is None or (isinstance(value, list) and not value):
            return None
        try:
            a = np.asarray(value, dtype=np.float64) if isinstance(value, list) else None
        except (TypeError, ValueError):
            a = None
        if a is None or a.ndim != 1 or not np.isfinite(a).all():
            raise CpbenchError(f"per_split.{name} is not a list of finite numbers")
        return a

    out["acc"] = arr(ps.get("acc"), "acc")
    for s in scores:
        block = ps.get(s) or {}
        if not isinstance(block, dict):
            raise CpbenchError(f"per_split.{s} is not an object")
        for m in METRICS:
            out[f"{s}.{m}"] = arr(block.get(m), f"{s}.{m}")
    lengths = {name: len(a) for name, a in out.items() if a is not None}
    if len(set(lengths.values())) > 1:
        raise CpbenchError(f"per-split arrays have different lengths: {dict(sorted(lengths.items()))}")
    return out


def write_result(record: dict, root: str | os.PathLike) -> Path:
    """Write one result record to `root/<model>/<recipe>/<RunKey.slug()>.json` atomically and return the path."""
    try:
        key, _ = _check_record(record)
    except CpbenchError as exc:
        raise CpbenchError(f"refusing to store an invalid result record: {exc}") from None
    path = result_path(key, root)
    try:
        write_json_atomic(path, record)
    except ValueError as exc:  # NaN/inf: JSON has no such numbers and the loader would reject the file
        raise CpbenchError(f"result record for {key.slug()} is not valid JSON: {exc}") from None
    return path


def items_fingerprint(record: dict) -> str:
    """Identity of the item set a record was computed on, if the record states one ('' otherwise).

    The artifact content hash covers the logits, which differ between recipes, so it cannot say whether two records
    saw the same items. An `items_hash` (sha256 over ids and labels), top-level or in provenance, can.
    """
    prov = record.get("provenance") or {}
    for holder, key in ((record, "items_hash"), (prov, "items_hash"), (prov, "ids_hash")):
        value = holder.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


NOTE_SEP = " | "  # notes themselves may contain "; "


def split_notes(cell: Any) -> list[str]:
    """The individual notes of a `notes` cell."""
    return [n.strip() for n in str(cell or "").split(NOTE_SEP) if n.strip()]


def merge_notes(cells: Iterable[Any]) -> str:
    """Union of the notes of several cells, sorted, as one cell."""
    return NOTE_SEP.join(sorted({n for cell in cells for n in split_notes(cell)}))


def _notes(prov: dict) -> str:
    notes = prov.get("notes") or []
    if isinstance(notes, str):
        notes = [notes]
    return merge_notes([" ".join(str(n).split()) for n in notes])


def _rows(record: dict, key: RunKey, ps: dict[str, np.ndarray | None], rel: str) -> list[dict[str, Any]]:
    prov = record.get("provenance") or {}
    scores = score_names(record)
    calib = record.get("calibration") or {}
    recipe_prov = prov.get("recipe")
    base: dict[str, Any] = {
        **key.score.model_dump(),
        "limit": key.score.limit or 0,  # 0 = all items (None would make the column float and break grouping)
        **key.analysis.model_dump(),
        "n": record.get("n"),
        "n_cal": record.get("n_cal"),
        "n_test": record.get("n_test"),
        "k": record.get("k"),
        "acc": float(record["acc"]),
        "acc_std": record.get("acc_std"),
        "acc_lo": (record.get("acc_ci95") or [None, None])[0],
        "acc_hi": (record.get("acc_ci95") or [None, None])[1],
        **{c: calib.get(c) for c in CALIBRATION},
        "ps_acc": ps["acc"],
        "artifact_hash": prov.get("artifact_hash", ""),
        "items_hash": items_fingerprint(record),
        "prompts_hash": prov.get("prompts_hash", "") or "",
        "sample_data": bool(prov.get("sample_data", False)),
        "notes": _notes(prov),
        "model_id": prov.get("model_id", "") or "",
        "model_name": prov.get("model_name", "") or "",
        "params": _params(prov),
        "recipe_spec": json.dumps(recipe_prov, sort_keys=True) if isinstance(recipe_prov, dict) else "",
        "analyzed_at": prov.get("analyzed_at", "") or "",
        "path": rel,
    }
    rows = []
    for s in scores:
        block = record[s]
        row = dict(base, score=s)
        for m in METRICS:
            ci = block.get(f"{m}_ci95") or [None, None]
            row[m] = float(block[m])
            row[f"{m}_std"] = block.get(f"{m}_std")
            row[f"{m}_lo"], row[f"{m}_hi"] = ci[0], ci[1]
            row[f"ps_{m}"] = ps[f"{s}.{m}"]
        row["qhat"] = block.get("qhat")
        rows.append(row)
    return rows


def _params(prov: dict) -> float:
    for key in ("model_params", "n_params", "parameters", "params"):
        v = prov.get(key)
        if _is_number(v) and v > 0:
            return float(v)
    return float("nan")


def _columns() -> list[str]:
    cols = list(KEY_COLS) + ["n", "n_cal", "n_test", "k", "acc", "acc_std", "acc_lo", "acc_hi"]
    for m in METRICS:
        cols += [m, f"{m}_std", f"{m}_lo", f"{m}_hi"]
    cols += ["qhat", *CALIBRATION, *PER_SPLIT_COLS]
    cols += ["artifact_hash", "items_hash", "prompts_hash", "sample_data", "notes", "model_id", "model_name", "params",
             "recipe_spec", "analyzed_at", "path"]
    return cols


_NUMERIC = (
    ["acc", "acc_std", "acc_lo", "acc_hi", "qhat", *CALIBRATION, "params"]
    + [f"{m}{suffix}" for m in METRICS for suffix in ("", "_std", "_lo", "_hi")]
)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def load_results(root: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, list[Skipped]]:
    """Load every result record under `root` (a directory, one file, or several of either).

    Returns (DataFrame with one row per run key and conformal score, sorted by key; list of Skipped).
    Per-split values stay in the `ps_*` columns as float64 arrays (None when the record has none), so that two
    rows on the same splits can be paired. A run key seen twice keeps the first file in path order and reports the
    second, so that a copied or stale file cannot silently double a cell.
    """
    roots = [Path(root)] if isinstance(root, (str, os.PathLike)) else [Path(r) for r in root]
    rows: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    for r in roots:
        if not r.exists():
            raise CpbenchError(f"{r}: no such file or directory")
        for path in _files(r):
            rel = path.name if r.is_file() else path.relative_to(r).as_posix()
            shown = str(path)
            if path.suffix == ".parquet":  # logits artifacts beside their records (cpbench run): inputs, not records
                continue
            if path.suffix == ".tmp":
                skipped.append(Skipped(shown, "leftover temporary file of an interrupted write"))
                continue
            if path.suffix != ".json":
                skipped.append(Skipped(shown, "not a .json file"))
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                skipped.append(Skipped(shown, f"not valid JSON (half-written or foreign file): {exc}"))
                continue
            except OSError as exc:
                skipped.append(Skipped(shown, f"unreadable: {exc}"))
                continue
            # `cpbench analyze --out` writes a JSON list when given several inputs: each element is a record
            many = isinstance(record, list) and record and all(isinstance(x, dict) and "schema" in x for x in record)
            items = [(shown, rel, record)]
            if many:
                items = [(f"{shown}#{i}", f"{rel}#{i}", x) for i, x in enumerate(record)]
            for where, rel_where, rec in items:
                try:
                    key, ps = _check_record(rec)
                except CpbenchError as exc:
                    skipped.append(Skipped(where, str(exc)))
                    continue
                ident = key.model_dump_json()
                if ident in seen:
                    why = f"duplicate run key {key.slug()} (already loaded from {seen[ident]})"
                    skipped.append(Skipped(where, why))
                    continue
                seen[ident] = where
                rows.extend(_rows(rec, key, ps, rel_where))
    df = pd.DataFrame(rows, columns=_columns())
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    if len(df):
        df = df.sort_values(list(KEY_COLS), kind="mergesort").reset_index(drop=True)
    return df, skipped
