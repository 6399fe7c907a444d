"""From two result records (and their logits artifacts) to item-level paired estimates.

`RecordNumbers` is what a comparison needs from a record: the analysis key, the split-averaged means and the stored
per-split values. `compare_numbers` combines them with the paired item bootstrap of
`cpbench.results.analysis.bootstrap` and the estimates of `cpbench.results.analysis.paired`: record-backed deltas
(accuracy, coverage, set size, UAcc) take the record's mean over splits as the point and add the split Monte Carlo
term; the rest are plug-in values. When a record has fewer than two stored splits, the split term is estimated by
re-running the split engine on `SIM_SPLITS` fresh random splits of both artifacts (noted).

`locate_artifact` finds the artifact a record was computed from (its provenance `artifact_path`, its `input`, next to
the record, or in the record's `artifacts/` folder) and checks its content hash against the record's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpbench.results.analysis.bootstrap import N_BOOT, SCORE_METRICS, paired_draws
from cpbench.results.analysis.estimate import LEVEL, Estimate
from cpbench.results.analysis.item_views import cached_view
from cpbench.results.analysis.paired import estimates, split_se
from cpbench.base.errors import CpbenchError

SIM_SPLITS = 50
NO_ARTIFACT = "no item-level interval: artifact not found"


@dataclass
class RecordNumbers:
    """Means and per-split values of one record (keys `acc`, `<score>.coverage`, `<score>.set_size`, ...)."""

    protocol: str
    alpha: float
    cal_ratio: float
    seed: int
    splits: int
    means: dict[str, float] = field(default_factory=dict)
    per_split: dict[str, np.ndarray | None] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: dict) -> "RecordNumbers":
        a = record["run_key"]["analysis"]
        out = cls(a["protocol"], float(a["alpha"]), float(a["cal_ratio"]), int(a["seed"]), int(a["splits"]))
        ps = record.get("per_split") or {}
        out.means["acc"] = float(record["acc"])
        out.per_split["acc"] = _arr(ps.get("acc"))
        for s, block in record.items():
            if isinstance(block, dict) and "set_size" in block and "coverage" in block and s != "per_split":
                for m in SCORE_METRICS:
                    out.means[f"{s}.{m}"] = float(block[m])
                    out.per_split[f"{s}.{m}"] = _arr((ps.get(s) or {}).get(m))
        return out

    @classmethod
    def from_rows(cls, rows: Sequence[Any]) -> "RecordNumbers":
        """From `load_results` rows of one record (one row per conformal score)."""
        r0 = rows[0]
        out = cls(str(r0["protocol"]), float(r0["alpha"]), float(r0["cal_ratio"]), int(r0["seed"]),
                  int(r0["splits"]))
        out.means["acc"] = float(r0["acc"])
        out.per_split["acc"] = _arr(r0["ps_acc"])
        for r in rows:
            for m in SCORE_METRICS:
                out.means[f"{r['score']}.{m}"] = float(r[m])
                out.per_split[f"{r['score']}.{m}"] = _arr(r[f"ps_{m}"])
        return out


def _arr(v: Any) -> np.ndarray | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    a = np.asarray(v, dtype=np.float64)
    return a if a.ndim == 1 and len(a) else None


def _simulated_split_se(base_art, cand_art, nb: RecordNumbers, scores: Sequence[str]) -> dict[str, float]:
    """Split Monte Carlo se of a mean over `nb.splits` splits, from SIM_SPLITS fresh paired splits."""
    from cpbench.results.conformal.engine import default_chunk, evaluate
    from cpbench.results.conformal.metrics import per_split_base, uacc
    from cpbench.results.conformal.splits import random_splits

    vb = cached_view(base_art, nb.protocol, nb.alpha, nb.cal_ratio, nb.seed)
    vc = cached_view(cand_art, nb.protocol, nb.alpha, nb.cal_ratio, nb.seed)
    is_cal = random_splits(vb.n, SIM_SPLITS, nb.seed + 7919, nb.cal_ratio)
    chunk = default_chunk(vb.n)
    logits_b, logits_c = vb.logp, vc.logp  # log-softmax has the same argmax and softmax as the logits
    acc_b = per_split_base(is_cal, logits_b, vb.labels, vb.letters, chunk)["acc"]
    acc_c = per_split_base(is_cal, logits_c, vc.labels, vc.letters, chunk)["acc"]
    out = {"d_acc": float(np.std(acc_c - acc_b, ddof=1)) / math.sqrt(nb.splits)}
    for s in scores:
        rb = evaluate(vb.score(s).table, vb.labels, is_cal, nb.alpha, vb.quantile_rule, vb.empty, chunk)
        rc = evaluate(vc.score(s).table, vc.labels, is_cal, nb.alpha, vc.quantile_rule, vc.empty, chunk)
        per = {"coverage": (rb.coverage, rc.coverage), "set_size": (rb.set_size, rc.set_size),
               "uacc": (uacc(acc_b, rb.set_size, vb.k), uacc(acc_c, rc.set_size, vc.k))}
        for m, (b, c) in per.items():
            out[f"d_{s}.{m}"] = float(np.std(c - b, ddof=1)) / math.sqrt(nb.splits)
        out[f"cand.{s}.coverage"] = float(np.std(rc.coverage, ddof=1)) / math.sqrt(nb.splits)
    return out


def compare_numbers(base_art, cand_art, nb: RecordNumbers, nc: RecordNumbers, scores: Sequence[str], *,
                    n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL,
                    set_pairs: bool = True) -> dict[str, Estimate]:
    """Item-level estimates of every delta and pair metric between two records of the same items
    (`set_pairs=False`: without the set churn / Jaccard / newly-confidently-wrong diagnostics, which no gate limit
    reads)."""
    for attr in ("protocol", "alpha", "cal_ratio", "seed", "splits"):
        if getattr(nb, attr) != getattr(nc, attr):
            raise CpbenchError(f"analysis keys differ ({attr} {getattr(nb, attr)!r} vs {getattr(nc, attr)!r})")
    vb = cached_view(base_art, nb.protocol, nb.alpha, nb.cal_ratio, nb.seed)
    vc = cached_view(cand_art, nc.protocol, nc.alpha, nc.cal_ratio, nc.seed)
    draws = paired_draws(vb, vc, scores, n_boot=n_boot, seed=seed, set_pairs=set_pairs)
    keys = ["acc", *(f"{s}.{m}" for s in scores for m in SCORE_METRICS)]
    points, ses, split_iv = {}, {}, {}
    need_sim = False
    for k in keys:
        if k in nb.means and k in nc.means:
            points[f"d_{k}"] = nc.means[k] - nb.means[k]
            se, lo, hi = split_se(nc.per_split.get(k), nb.per_split.get(k))
            ses[f"d_{k}"] = se
            split_iv[f"d_{k}"] = (lo, hi)
            need_sim |= not math.isfinite(se)
    for s_ in scores:  # the candidate's own coverage (--min-coverage): record mean, split term of that mean
        k = f"{s_}.coverage"
        if k in nc.means:
            points[f"cand.{k}"] = nc.means[k]
            ps = nc.per_split.get(k)
            ses[f"cand.{k}"] = (float(np.std(ps, ddof=1)) / math.sqrt(len(ps)) if ps is not None and len(ps) >= 2
                                else math.nan)
            need_sim |= not math.isfinite(ses[f"cand.{k}"])
    note = ""
    if need_sim and points:
        sim = _simulated_split_se(base_art, cand_art, nb, scores)
        for k, v in sim.items():
            if k in points and not math.isfinite(ses.get(k, math.nan)):
                ses[k] = v
        note = f"split term estimated from {SIM_SPLITS} fresh splits (records hold < 2 per-split values)"
    est = estimates(draws, level=level, record_points=points, split_ses=ses, k_options=vb.k)
    for k, (lo, hi) in split_iv.items():
        e = est[k]
        est[k] = e.replace(note="; ".join(filter(None, [e.note, note])), split_lo=lo, split_hi=hi)
    return est


# --------------------------------------------------------------------------------------------- artifacts
def _candidates(record_file: Path | None, record: dict) -> list[Path]:
    prov = record.get("provenance") or {}
    named = [str(x) for x in (prov.get("artifact_path"), record.get("input")) if isinstance(x, str) and x]
    out: list[Path] = []
    for name in named:
        p = Path(name)
        out.append(p)
        if record_file is not None and not p.is_absolute():
            out.append(record_file.parent / p)
        if record_file is not None:
            out += [record_file.parent / p.name, record_file.parent / "artifacts" / p.name]
    return list(dict.fromkeys(out))


def locate_artifact(record_file: Path | None, record: dict):
    """(LogitsArtifact or None, reason when None). Never raises for a missing or mismatched artifact."""
    from cpbench.results.artifact import LogitsArtifact

    want = (record.get("provenance") or {}).get("artifact_hash") or ""
    tried = _candidates(record_file, record)
    for p in tried:
        if not p.is_file():
            continue
        try:
            art = LogitsArtifact.load(p)
        except CpbenchError as exc:
            return None, f"no item-level interval: artifact {p} unreadable ({exc})"
        # records state the loaded file's verified hash (format 1 files hash the arrays only)
        if want and want not in {getattr(art, "file_hash", None), art.content_hash}:
            continue  # another artifact of the same name (e.g. rescored later): keep looking
        return art, ""
    return None, NO_ARTIFACT + (f" (looked for {tried[0]})" if tried else " (the record names none)")


class ArtifactIndex:
    """Finds and caches the artifacts behind result rows of one results root."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._cache: dict[str, tuple[Any, str]] = {}

    def record_file(self, rel: str) -> Path | None:
        if self.root is None or not rel:
            return None
        rel = rel.split("#", 1)[0]
        return self.root if self.root.is_file() else self.root / rel

    def for_row(self, row: Any) -> tuple[Any, str]:
        rel = str(row["path"] or "")
        if rel in self._cache:
            return self._cache[rel]
        f = self.record_file(rel)
        result: tuple[Any, str]
        if f is None or not f.is_file():
            result = (None, NO_ARTIFACT + " (no record file)")
        else:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                result = (None, f"no item-level interval: record unreadable ({exc})")
            else:
                if isinstance(data, list):
                    idx = int(str(row["path"]).split("#", 1)[1]) if "#" in str(row["path"]) else 0
                    data = data[idx]
                result = locate_artifact(f, data)
        self._cache[rel] = result
        return result


def memory_index(artifacts: Sequence[Any]) -> Any:
    """cpbench.results.analysis.compare.ArtifactIndex over artifacts held in memory (row path `memory#i` -> artifacts[i])."""
    class MemoryArtifacts(ArtifactIndex):
        def for_row(self, row: Any) -> tuple[Any, str]:
            art = artifacts[int(str(row["path"]).rsplit("#", 1)[1])]
            return (art, "") if art is not None else (None, NO_ARTIFACT + " (not kept in memory)")

    return MemoryArtifacts(None)
