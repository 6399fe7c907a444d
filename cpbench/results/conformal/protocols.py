"""Turn a logits artifact into a result record (docs/design.md) under one of two protocols.

`default`: items put in canonical (id) order; R seeded random calibration/test splits (calibration ratio 0.5,
optionally stratified by label); float64 softmax; textbook quantile; empty sets allowed; scores LAC and standard
non-randomised APS (RAPS and the randomised variants on request). Means, std and 95% intervals across splits.

`ye2024`: Ye et al. 2024 (LLM-Uncertainty-Bench, uncertainty_quantification_via_cp.py) exactly: items with ids
1, 3, 5, 7, 9 dropped (their demonstrations), remaining items in stored order; one split identical to
`train_test_split(items, train_size=0.5, random_state=42)` with the train part as calibration; float32 softmax;
ye2024 quantile (np.quantile(..., method="higher")); empty sets -> top-1; their LAC comparison and APS variant;
accuracy and E/F rates on the test part from the argmax of the raw logits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pydantic import ValidationError

from cpbench.base.stamps import utc_now
from cpbench import __version__
from cpbench.results.artifact import LogitsArtifact
from cpbench.results.conformal import metrics as M
from cpbench.results.conformal.engine import default_chunk, evaluate
from cpbench.results.conformal.quantile import check_alpha
from cpbench.results.conformal.scores import RAPS_DEFAULTS, SCORES, build, softmax
from cpbench.results.conformal.splits import calibration_size, canonical_order, random_splits, sklearn_split, split_matrix
from cpbench.base.errors import CpbenchError
from cpbench.results.records import SCHEMA, build_record
from cpbench.base.runkey import AnalysisKey, ScoreKey

PROTOCOLS = ("default", "ye2024")
YE2024_EXCLUDED_IDS = ("1", "3", "5", "7", "9")
YE2024_SCORES = {"lac": "lac_ye2024", "aps": "aps_ye2024"}


def _one_line(exc: ValidationError) -> str:
    """config.first_error plus the offending value (these come from CLI options, where echoing it helps)."""
    from cpbench.base.config import first_error  # imported on the error path only: it pulls in yaml (~15 ms of start-up)

    return f"{first_error(exc)} (got {exc.errors()[0].get('input')!r})"


def preset(
    protocol: str = "default",
    *,
    alpha: float | None = None,
    splits: int | None = None,
    seed: int | None = None,
    cal_ratio: float | None = None,
    stratify: bool | None = None,
) -> AnalysisKey:
    """The AnalysisKey of a protocol preset; arguments left None take the preset's values.

    default: alpha 0.1, 100 splits, seed 0, cal_ratio 0.5, not stratified.
    ye2024: alpha 0.1, exactly one split, seed (sklearn random_state) 42, cal_ratio 0.5, not stratified.
    """
    if protocol not in PROTOCOLS:
        raise CpbenchError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    if alpha is not None:
        check_alpha(alpha)
    if protocol == "ye2024":
        if splits not in (None, 1):
            raise CpbenchError(f"the ye2024 protocol uses exactly one split (its sklearn split), got --splits {splits}")
        if stratify:
            raise CpbenchError("the ye2024 protocol does not stratify its split")
        values: dict[str, Any] = dict(alpha=0.1, splits=1, seed=42, cal_ratio=0.5, stratify=False)
    else:
        values = dict(alpha=0.1, splits=100, seed=0, cal_ratio=0.5, stratify=False)
    given = dict(alpha=alpha, splits=splits, seed=seed, cal_ratio=cal_ratio, stratify=stratify)
    values.update({k: v for k, v in given.items() if v is not None})
    if values["seed"] < 0:
        raise CpbenchError(f"seed must be >= 0, got {values['seed']}")
    try:
        return AnalysisKey(protocol=protocol, **values)
    except ValidationError as exc:
        raise CpbenchError(_one_line(exc)) from None


def score_key_of(artifact: LogitsArtifact) -> ScoreKey:
    """The artifact's ScoreKey from its provenance; a minimal one (model id or file name, task 'unknown') if absent."""
    raw = artifact.provenance.get("run_key")
    if raw:
        try:
            return ScoreKey(**raw)
        except (ValidationError, TypeError) as exc:
            detail = _one_line(exc) if isinstance(exc, ValidationError) else str(exc)
            raise CpbenchError(f"{artifact.source or 'artifact'}: invalid run_key in provenance: {detail}") from None
    model = str(artifact.provenance.get("model_id") or Path(artifact.source).stem or "unknown")
    return ScoreKey(model=model, task=str(artifact.provenance.get("task", "unknown")))


def _score_names(scores: Iterable[str], protocol: str) -> list[str]:
    names = [s.strip().lower() for s in scores if s.strip()]
    if not names:
        raise CpbenchError("no conformal score requested")
    allowed = tuple(YE2024_SCORES) if protocol == "ye2024" else SCORES
    for s in names:
        if s not in allowed:
            raise CpbenchError(
                f"score {s!r} is not available in the {protocol} protocol (choose from {', '.join(allowed)})"
            )
    return list(dict.fromkeys(names))


def _summary_fields(prefix: str, values: np.ndarray) -> dict[str, Any]:
    mean, std, ci = M.summary(values)
    return {prefix: mean, f"{prefix}_std": std, f"{prefix}_split_range95": ci}


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64)]


def analyze_artifact(
    artifact: LogitsArtifact,
    analysis_key: AnalysisKey,
    scores: Sequence[str] = ("lac", "aps"),
    *,
    chunk: int | None = None,
    input_path: str | None = None,
) -> dict:
    """The full result record (with `per_split`) of one artifact under one analysis key."""
    key = analysis_key
    alpha = check_alpha(key.alpha)
    names = _score_names(scores, key.protocol)
    score_key = score_key_of(artifact)
    letters = list(artifact.letters)
    K = artifact.k

    if key.protocol == "ye2024":
        if key.splits != 1 or key.stratify:
            raise CpbenchError(
                "the ye2024 protocol uses exactly one unstratified split; build its key with preset('ye2024')"
            )
        keep = np.array([i not in YE2024_EXCLUDED_IDS for i in artifact.ids], dtype=bool)
        excluded = [i for i in artifact.ids if i in YE2024_EXCLUDED_IDS]
        ids = [i for i, k_ in zip(artifact.ids, keep) if k_]
        logits, labels = artifact.logits[keep], artifact.labels[keep]
        n = len(ids)
        if n < 2:
            raise CpbenchError(
                f"{n} item(s) left after dropping the ye2024 demonstration ids; need a calibration and a test part"
            )
        cal_idx, _ = sklearn_split(n, key.cal_ratio, key.seed)
        is_cal = split_matrix(n, cal_idx)
        probs = softmax(logits, np.float32)
        quantile, empty = "ye2024", "top1"
        tables = {s: build(YE2024_SCORES[s], probs) for s in names}
        protocol_info: dict[str, Any] = {
            "name": "ye2024",
            "reference": "smartyfh/LLM-Uncertainty-Bench uncertainty_quantification_via_cp.py",
            "split": f"sklearn train_test_split(items, train_size={key.cal_ratio:g}, random_state={key.seed}); "
            "train = calibration",
            "excluded_ids": excluded,
            "softmax_dtype": "float32",
        }
    else:
        order = canonical_order(artifact.ids)
        ids = [artifact.ids[i] for i in order]
        logits, labels = artifact.logits[order], artifact.labels[order]
        n = len(ids)
        calibration_size(n, key.cal_ratio)
        is_cal = random_splits(n, key.splits, key.seed, key.cal_ratio, labels if key.stratify else None)
        probs = softmax(logits, np.float64)
        quantile, empty = "textbook", "allow"
        u = np.random.default_rng([key.seed, 1]).random(n) if any(s.endswith("_rand") for s in names) else None
        tables = {s: build(s, probs, u=u) for s in names}
        protocol_info = {
            "name": "default",
            "split": f"{key.splits} seeded random splits (numpy default_rng({key.seed})) of the items sorted by id"
            + (", stratified by label" if key.stratify else ""),
            "excluded_ids": [],
            "softmax_dtype": "float64",
        }
    protocol_info.update(
        {"quantile": quantile, "empty": empty, "scores": {s: tables[s].name for s in names}, "ece_bins": M.ECE_BINS}
    )
    if any(s.startswith("raps") for s in names):
        protocol_info["raps"] = dict(RAPS_DEFAULTS)

    chunk = chunk or default_chunk(n)
    n_cal = int(is_cal[0].sum())
    # Identity of the analysed items (ids and gold labels in analysis order): two records with the same items_hash
    # and analysis key saw the same calibration/test splits, so their per-split values are paired.
    items_hash = "sha256:" + hashlib.sha256(
        json.dumps([ids, [int(v) for v in labels]], separators=(",", ":")).encode()
    ).hexdigest()
    base = M.per_split_base(is_cal, logits, labels, letters, chunk)
    acc = base["acc"]

    record: dict[str, Any] = {
        "schema": SCHEMA,
        "run_key": {"score": score_key.model_dump(), "analysis": key.model_dump()},
        "provenance": {
            **artifact.provenance,
            # the file's verified hash when loaded (callers may add notes or a run key to the provenance in memory)
            "artifact_hash": artifact.file_hash or artifact.content_hash,
            "artifact_path": artifact.source,
            "cpbench_version": __version__,
            "analyzed_at": utc_now(),
        },
        "input": input_path if input_path is not None else artifact.source,
        "items_hash": items_hash,
        "n": n,
        "k": K,
        "n_cal": n_cal,
        "n_test": n - n_cal,
        "letters": letters,
        **_summary_fields("acc", acc),
        "calibration": {
            name: (None if base[name] is None else float(np.mean(base[name])))
            for name in ("ece", "brier", "nll", "entropy", "idk_rate", "nota_rate")
        },
    }
    per_split: dict[str, Any] = {"acc": _floats(acc)}
    for s in names:
        res = evaluate(tables[s], labels, is_cal, alpha, quantile, empty, chunk)
        ua = M.uacc(acc, res.set_size, K)
        total = res.size_counts.sum()
        record[s] = {
            **_summary_fields("coverage", res.coverage),
            **_summary_fields("set_size", res.set_size),
            **_summary_fields("uacc", ua),
            "qhat": float(np.mean(res.qhat.astype(np.float64))),
            "size_hist": _floats(res.size_counts / total),
            "coverage_by_size": M.ratio_map(res.size_covered, res.size_counts, [str(i) for i in range(K + 1)]),
            "coverage_by_class": M.ratio_map(res.class_covered, res.class_counts, letters),
        }
        per_split[s] = {
            "coverage": _floats(res.coverage),
            "set_size": _floats(res.set_size),
            "uacc": _floats(ua),
            "qhat": _floats(res.qhat),
        }
    record["per_split"] = per_split
    record["protocol"] = protocol_info
    try:
        return build_record(record)  # the typed record (cpbench.results.records): range and consistency checks
    except CpbenchError as exc:
        raise CpbenchError(f"{artifact.source or 'artifact'}: {exc}") from None


def summary_line(record: dict) -> dict:
    """The record without `per_split` (what `cpbench analyze --json` prints)."""
    return {k: v for k, v in record.items() if k != "per_split"}
