"""A toy cpbench backend: one file plus one registry line (docs/design.md, "Adding a backend").

It runs no model. An item's option logits are noise fixed by the weights it was asked to score and the prompt text,
plus `skill` on the correct option: enough to drive the whole pipeline (resumable chunks, artifact, record, gate)
exactly as the transformers and vLLM backends do. tests/test_backends.py runs it end to end.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from cpbench.backends.base import Backend, Prepared, WeightsRequest


class ToyBackend(Backend):
    name = "toy"

    def __init__(self, skill: float = 2.0):
        self.skill = float(skill)

    def load(self, weights: WeightsRequest) -> bytes:
        # A real backend loads weights here (weights.hf() gives transformers' model and tokenizer); the toy keeps a
        # seed that differs per recipe, so a "compressed" model answers differently from its base.
        name = weights.recipe.name if weights.recipe is not None else "candidate"
        return hashlib.sha256(name.encode()).digest()

    def prepare(self, seed: bytes, prompts: Sequence[Any], key: Any, *, batch_size: int | None = None) -> Prepared:
        def compute(positions: np.ndarray) -> np.ndarray:
            rows = []
            for i in positions:
                p = prompts[int(i)]
                digest = hashlib.sha256(seed + p.text.encode()).digest()
                rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
                row = rng.normal(size=len(p.letters))
                row[int(p.label)] += self.skill
                rows.append(row)
            return np.asarray(rows, dtype=np.float32)

        return Prepared(
            order=np.arange(len(prompts)),  # any fixed order; chunks of it are what a resumed run reloads
            compute=compute,
            job={"backend": self.name, "skill": self.skill, "seed": seed.hex()},  # all that fixes the numbers
            provenance={"backend": self.name, "dtype": "float32", "device": "cpu"},
        )
