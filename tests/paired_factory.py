"""Real artifacts and records from the population model (cpbench.results.analysis.simulate), written as `cpbench run` does:
the artifact in <root>/<model>/<recipe>/artifacts/<task>.parquet, the record beside it naming it as its input."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from cpbench.results.analysis import simulate as S
from cpbench.results.artifact import LogitsArtifact
from cpbench.results.conformal.protocols import analyze_artifact, preset
from cpbench.base.runkey import ScoreKey
from cpbench.results.store import write_result


@lru_cache(maxsize=2)
def population(size: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    return S.population(size)


def write_cell(root: Path, model: str, recipe: str, task: str, labels: np.ndarray, logits: np.ndarray,
               *, splits: int = 20, scores: tuple[str, ...] = ("lac",), params: float | None = None,
               provenance: dict | None = None) -> dict:
    ids = [f"{task}-{j:06d}" for j in range(len(labels))]
    key = ScoreKey(model=model, recipe=recipe, task=task)
    prov = {"run_key": key.model_dump(), "model_id": f"org/{model}", "recipe": {"name": recipe},
            "sample_data": False, **(provenance or {})}
    if params is not None:
        prov["n_params"] = params
    art = LogitsArtifact(ids=ids, labels=labels, logits=logits.astype(np.float32), letters=list(S.LETTERS),
                         provenance=prov)
    path = root / model / recipe / "artifacts" / f"{task}.parquet"
    art.save(path)
    art = LogitsArtifact.load(path)
    record = analyze_artifact(art, preset("default", splits=splits), scores, input_path=str(path))
    write_result(record, root)
    return record


def write_pair(root: Path, n: int, sigma: float, *, model: str = "m", recipe: str = "noisy", task: str = "qa",
               seed: int = 0, splits: int = 20, scores: tuple[str, ...] = ("lac",)) -> tuple[dict, dict]:
    labels, base = population()
    cand = S.perturb(base, sigma)
    idx = np.random.default_rng([seed, n]).integers(0, len(labels), n)
    rb = write_cell(root, model, "base", task, labels[idx], base[idx], splits=splits, scores=scores)
    rc = write_cell(root, model, recipe, task, labels[idx], cand[idx], splits=splits, scores=scores)
    return rb, rc
