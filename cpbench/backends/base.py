"""The one interface every backend implements: weights (or a file of someone's outputs) + prompts + a score key ->
option logits with provenance.

The runner (cpbench.run) receives a Backend and never asks which one it is. It calls, in this order:

    backend.check(device, scoring)      before anything expensive: can this backend run here, this scoring?
    handle = backend.load(weights)      the scorable thing (HF: model and tokenizer; vLLM: an engine; files: rows)
    backend.fingerprint(handle)         the loaded weights' content hash, or None when the weights id pins them
    backend.prepare(handle, prompts, key, batch_size=...)  -> Prepared: how to score any subset of the prompts
    backend.close(handle)               free it before the next set of weights loads

and cpbench.backends.pipeline turns a Prepared into a LogitsArtifact the same way for every backend: resumable chunks
of one processing order, progress, the provenance keys of docs/design.md. A backend owns only what differs: how to
load, how to compute a batch of option logits, and the provenance fields that describe that (tokenizer, option ids,
dtype, device, versions). A new backend is one module and one line in cpbench.backends.registry (docs/design.md
shows a toy one, run end to end by tests/test_backends.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Sequence

import numpy as np


@dataclass
class WeightsRequest:
    """What the run asks a backend to load: a model entry, under a recipe (its checkpoint once compressed), or a
    candidate's weights; `loaded` is an in-memory (model, tokenizer) that the Python API hands over as is."""

    entry: Any  # cpbench.weights.models.ModelEntry (for a candidate: the base it is judged against)
    device: str
    dtype: str = "auto"
    recipe: Any = None  # cpbench.specs.recipes.Recipe
    checkpoint: Any = None  # cpbench.weights.compress.Checkpoint (compressed weights, cached) or None
    candidate: Any = None  # cpbench.weights.models.Candidate (someone else's weights)
    loaded: Any = None

    def hf(self) -> tuple[Any, Any]:
        """(model, tokenizer) through transformers: the in-memory pair, the candidate's, or the checkpoint's."""
        if self.loaded is not None:
            return self.loaded
        if self.candidate is not None:
            return self.candidate.load(self.device)
        return self.checkpoint.load(self.device, None if self.dtype == "auto" else self.dtype)


@dataclass
class Prepared:
    """One cell's scoring job as a backend prepared it."""

    order: np.ndarray  # processing order of the prompts (a pure function of prompts and tokenizer: chunks resume)
    compute: Callable[[np.ndarray], np.ndarray]  # prompt positions -> option logits [len, K] (float32)
    job: dict[str, Any]  # everything that fixes the numbers: names the resumable chunk folder
    provenance: dict[str, Any]  # backend fields of the artifact's provenance (tokenizer, dtype, device, backend, ...)
    detail: dict[str, Any] = field(default_factory=dict)  # backend part of provenance.scoring_detail
    notes: list[str] = field(default_factory=list)
    model_id: str | None = None  # what the backend knows the model as (the caller's provenance wins)
    on_batch: Callable[[Callable[[int], None]], None] | None = None  # installs a per-batch progress callback
    context: Callable[[], ContextManager[Any]] = nullcontext  # around the whole computation (HF: inference mode)


class Backend(ABC):
    """Turns prompts and a score key into option logits plus provenance (see the module docstring)."""

    name: ClassVar[str]  # the registry name (`--scorer NAME`), recorded as provenance.backend by convention
    needs_weights: ClassVar[bool] = True  # False: a file of finished outputs (nothing to compress or load)

    @classmethod
    def check_scoring(cls, scoring: str) -> None:
        """Raise CpbenchError with one line when this backend cannot score `scoring` at all (checked while planning)."""

    def check(self, device: str, scoring: str) -> None:
        """Raise CpbenchError with one line when this backend cannot score `scoring` on `device` (checked before
        anything loads)."""
        self.check_scoring(scoring)

    @abstractmethod
    def load(self, weights: WeightsRequest) -> Any:
        """The scorable handle for `weights` (kept while the unit's cells are scored)."""

    def fingerprint(self, handle: Any) -> str | None:
        """Content hash of the loaded weights (provenance.model_hash), or None when the weights id pins them."""
        return None

    @abstractmethod
    def prepare(self, handle: Any, prompts: Sequence[Any], key: Any, *, batch_size: int | None = None) -> Prepared:
        """How to score `prompts` (cpbench.specs.tasks.prompts.Prompt) for `key` (cpbench.base.runkey.ScoreKey)."""

    def close(self, handle: Any) -> None:
        """Free what `load` built (the runner drops its reference and collects garbage afterwards)."""

