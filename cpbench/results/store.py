"""The results tree: one JSON record per run cell, written atomically, loaded into one pandas DataFrame.

Layout: `root/<model>/<recipe>/<RunKey.slug()>.json` (model and recipe made filesystem-safe as in `ScoreKey.slug`).
Records are validated through the typed model of `cpbench.results.records` when written and when loaded (schema 1 records
are migrated on load). The loader walks the whole tree and reports every file it does not merge (foreign JSON,
unknown schemas, invalid or impossible records) in `skipped` as (path, reason): nothing is merged silently. Two
files with one run key are an error naming both.
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

from cpbench.base import jsonsafe
from cpbench.base.atomic import clean_stale_temporaries, is_temporary, write_json_atomic
from cpbench.base.errors import CpbenchError
from cpbench.results.records import SCHEMA, SCORE_FIELDS, load_record
from cpbench.base.runkey import RunKey

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


def _check_record(record: Any) -> tuple[RunKey, dict[str, Any], dict[str, np.ndarray | None]]:
    """Validate a parsed record through the typed model (cpbench.results.records; schema 1 is migrated); raise CpbenchError
    naming the first problem. Returns the run key, the record as a schema-2 JSON object, and the per-split arrays."""
    rec = load_record(record)
    data = rec.to_json()
    return rec.run_key, data, _per_split(data, score_names(data))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def score_names(record: dict) -> list[str]:
    """Conformal score blocks in a record (lac, aps, ...)."""
    return sorted(s for s in SCORE_FIELDS if isinstance(record.get(s), dict))


def _per_split(record: dict, scores: Iterable[str]) -> dict[str, np.ndarray | None]:
    """Per-split arrays keyed 'acc' and '<score>.<metric>'; None where the record has none (validated upstream)."""
    ps = record.get("per_split") or {}

    def arr(value: Any) -> np.ndarray | None:
        return np.asarray(value, dtype=np.float64) if value else None

    out: dict[str, np.ndarray | None] = {"acc": arr(ps.get("acc"))}
    for s in scores:
        block = ps.get(s) or {}
        for m in METRICS:
            out[f"{s}.{m}"] = arr(block.get(m))
    return out


def write_result(record: dict, root: str | os.PathLike) -> Path:
    """Write one result record to `root/<model>/<recipe>/<RunKey.slug()>.json` atomically and return the path.

    The record is validated through `cpbench.results.records.ResultRecord` first (range and consistency checks), so the
    store never holds a record its own loader would refuse."""
    if isinstance(record, dict) and record.get("schema") not in (None, SCHEMA):
        raise CpbenchError(f"refusing to store a record of schema {record.get('schema')!r}: this cpbench writes "
                           f"{SCHEMA}")
    try:
        key, data, _ = _check_record(record)
    except CpbenchError as exc:
        raise CpbenchError(f"refusing to store an invalid result record: {exc}") from None
    path = result_path(key, root)
    try:
        write_json_atomic(path, data)
    except ValueError as exc:  # NaN/inf inside a free-form field: JSON has no such numbers
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
        "acc_lo": (record.get("acc_split_range95") or [None, None])[0],
        "acc_hi": (record.get("acc_split_range95") or [None, None])[1],
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
        "knob": json.dumps(prov["knob"], sort_keys=True) if isinstance(prov.get("knob"), dict) else "",
        "recipe_spec": json.dumps(recipe_prov, sort_keys=True) if isinstance(recipe_prov, dict) else "",
        "analyzed_at": prov.get("analyzed_at", "") or "",
        "path": rel,
    }
    rows = []
    for s in scores:
        block = record[s]
        row = dict(base, score=s)
        for m in METRICS:
            ci = block.get(f"{m}_split_range95") or [None, None]
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
             "knob", "recipe_spec", "analyzed_at", "path"]
    return cols


_NUMERIC = (
    ["acc", "acc_std", "acc_lo", "acc_hi", "qhat", *CALIBRATION, "params"]
    + [f"{m}{suffix}" for m in METRICS for suffix in ("", "_std", "_lo", "_hi")]
)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def load_results(
    root: str | os.PathLike | Iterable[str | os.PathLike], *, strict: bool = False
) -> tuple[pd.DataFrame, list[Skipped]]:
    """Load every result record under `root` (a directory, one file, or several of either).

    Returns (DataFrame with one row per run key and conformal score, sorted by key; list of Skipped).
    Per-split values stay in the `ps_*` columns as float64 arrays (None when the record has none), so that two
    rows on the same splits can be paired. Files that are not valid records (foreign JSON, damaged or impossible
    records, invalid UTF-8, JSON nested too deep) are reported in `skipped` and never merged; with `strict=True`
    (the CI gate, `leaderboard --strict`) a .json file that does not parse, or one that claims to be a cpbench result
    record but is invalid, raises CpbenchError instead: a corrupted record is an error, never a "missing" cell.
    A run key stored in two files is always an error naming both (which one is right cannot be guessed).
    Temporary files of interrupted writes are removed when their writer process is gone (cpbench.base.atomic).
    """
    roots = [Path(root)] if isinstance(root, (str, os.PathLike)) else [Path(r) for r in root]
    rows: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    for r in roots:
        if not r.exists():
            raise CpbenchError(f"{r}: no such file or directory")
        if r.is_dir():
            clean_stale_temporaries(r)
        for path in _files(r):
            rel = path.name if r.is_file() else path.relative_to(r).as_posix()
            shown = str(path)
            if path.suffix == ".parquet":  # logits artifacts beside their records (cpbench run): inputs, not records
                continue
            if is_temporary(path):  # a write in progress in another process (stale ones were removed above)
                continue
            if path.name.startswith(".") and path.suffix == ".lock":  # a running `cpbench run`'s cell lock
                continue
            if path.suffix != ".json":
                skipped.append(Skipped(shown, "not a .json file"))
                continue
            try:
                record = jsonsafe.load_file(path)
            except CpbenchError as exc:  # not JSON at all (e.g. a truncated record)
                if strict:
                    raise CpbenchError(f"{shown}: corrupted, not a readable JSON file "
                                       f"({str(exc).removeprefix(f'{path}: ')})") from None
                skipped.append(Skipped(shown, str(exc).removeprefix(f"{path}: ")))
                continue
            if isinstance(record, dict) and record.get("schema") == "cpbench.run/1":
                continue  # a `cpbench run` summary (run-<timestamp>.json) beside the records: not a record
            # `cpbench analyze --out` writes a JSON list when given several inputs: each element is a record
            many = isinstance(record, list) and record and all(isinstance(x, dict) and "schema" in x for x in record)
            items = [(shown, rel, record)]
            if many:
                items = [(f"{shown}#{i}", f"{rel}#{i}", x) for i, x in enumerate(record)]
            for where, rel_where, rec in items:
                try:
                    key, data, ps = _check_record(rec)
                except CpbenchError as exc:
                    claims = isinstance(rec, dict) and str(rec.get("schema", "")).startswith("cpbench.result/")
                    if strict and claims:
                        raise CpbenchError(f"{where}: {exc}") from None
                    skipped.append(Skipped(where, str(exc)))
                    continue
                ident = key.model_dump_json()
                if ident in seen:
                    raise CpbenchError(
                        f"duplicate run key {key.slug()} in {seen[ident]} and {where}: remove the stale copy"
                    )
                seen[ident] = where
                rows.extend(_rows(data, key, ps, rel_where))
    df = pd.DataFrame(rows, columns=_columns())
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    if len(df):
        df = df.sort_values(list(KEY_COLS), kind="mergesort").reset_index(drop=True)
    return df, skipped


def records_frame(records: Iterable[dict], where: str = "memory") -> pd.DataFrame:
    """The DataFrame `load_results` gives, for records held in memory (the Python API without a results directory).
    Invalid records raise CpbenchError (nothing is skipped silently); a repeated run key is an error too."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        key, data, ps = _check_record(rec)
        ident = key.model_dump_json()
        if ident in seen:
            raise CpbenchError(f"{where}#{i}: duplicate run key {key.slug()}")
        seen.add(ident)
        rows.extend(_rows(data, key, ps, f"{where}#{i}"))
    df = pd.DataFrame(rows, columns=_columns())
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    if len(df):
        df = df.sort_values(list(KEY_COLS), kind="mergesort").reset_index(drop=True)
    return df
