"""Backends over finished outputs: option logits someone else computed, read from their files and paired with the
run's items by item id. Nothing is loaded or compressed (`needs_weights = False`): the run's baseline slot holds the
file's model. Formats: lm-evaluation-harness `--log_samples` JSONL and LLM-Uncertainty-Bench logits pickles (the
readers are cpbench.backends.pickles; `cpbench analyze FILE` reads the same files without a run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpbench.backends.base import Backend, Prepared, WeightsRequest
from cpbench.base.errors import CpbenchError
from cpbench.base.versions import versions


class _FileBackend(Backend):
    needs_weights = False

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> Any:  # pragma: no cover - every subclass reads its format
        raise NotImplementedError

    def check(self, device: str, scoring: str) -> None:
        super().check(device, scoring)
        if not self.path.is_file():
            raise CpbenchError(f"backend {self.name!r}: {self.path} is not a file")

    def load(self, weights: WeightsRequest) -> Any:
        return self._read()

    def prepare(self, artifact: Any, prompts: Sequence[Any], key: Any, *,
                batch_size: int | None = None) -> Prepared:  # fmt: skip
        rows = {str(i): r for r, i in enumerate(artifact.ids)}
        missing = [str(p.item_id) for p in prompts if str(p.item_id) not in rows]
        if missing:
            raise CpbenchError(f"{self.path}: {len(missing)} of the {len(prompts)} items of {key.task} have no option "
                               f"logits in the file (first: {missing[0]}); items are paired by id")  # fmt: skip
        where = np.array([rows[str(p.item_id)] for p in prompts], dtype=np.int64)
        k = len(prompts[0].letters)
        if artifact.logits.shape[1] != k:
            raise CpbenchError(f"{self.path}: {artifact.logits.shape[1]} options per item, the task has {k}")
        labels = np.array([int(p.label) for p in prompts])
        if not np.array_equal(artifact.labels[where], labels):
            bad = int(np.flatnonzero(artifact.labels[where] != labels)[0])
            have = int(artifact.labels[where][bad])
            raise CpbenchError(f"{self.path}: item {prompts[bad].item_id} has answer {have} in the file and "
                               f"{labels[bad]} in the task")  # fmt: skip
        prov = artifact.provenance
        return Prepared(
            order=np.arange(len(prompts)),
            compute=lambda idx: np.asarray(artifact.logits[where[idx]], dtype=np.float32),
            job={"backend": self.name, "file": str(self.path.resolve()), "file_sha256": prov.get("source_sha256")},
            model_id=prov.get("model_id"),
            notes=[f"option logits read from {self.path.name} ({self.name}); scored outside cpbench"],
            provenance={
                "tokenizer": prov.get("tokenizer"), "option_token_ids": prov.get("option_token_ids"),
                "dtype": prov.get("dtype"), "device": prov.get("device"), "backend": self.name,
                "batch_size": None, "source_format": prov.get("source_format"),
                "source_files": prov.get("source_files") or {"file": str(self.path)}, "versions": versions(),
            },
        )  # fmt: skip


class LmEvalSamplesBackend(_FileBackend):
    """lm-evaluation-harness `samples_<task>_<date>.jsonl` of a multiple-choice task."""

    name = "lm-eval-samples"

    def _read(self) -> Any:
        from cpbench.backends.pickles import import_lm_eval_samples

        return import_lm_eval_samples(self.path)


class Ye2024PicklesBackend(_FileBackend):
    """LLM-Uncertainty-Bench (Ye et al. 2024) logits pickle plus the task's dataset JSON (`labels`)."""

    name = "ye2024-pickles"

    def __init__(self, path: str | Path, labels: str | Path):
        super().__init__(path)
        self.labels = Path(labels)

    def _read(self) -> Any:
        from cpbench.backends.pickles import import_ye2024

        return import_ye2024(self.path, self.labels)
