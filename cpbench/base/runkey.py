"""HELM-style run keys: one object names every parameter of a run cell, and every artifact and result carries it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def safe_part(part: str) -> str:
    """A model / recipe / slug component made filesystem-safe (HF ids contain '/', recipes like '2:4' contain ':')."""
    return str(part).replace("/", "--").replace(":", "-")


class ScoreKey(BaseModel):
    """Parameters that determine an option-logits artifact (the expensive, GPU half)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="registry alias, HF id or local path as resolved")
    recipe: str = Field(default="base", description="compression recipe name; 'base' is the reference weights")
    task: str = Field(description="task name, e.g. qa, rc, ci, drs, ds")
    prompt: str = Field(default="base", description="prompt method: base, shared or task")
    shots: int = Field(default=0, ge=0)
    chat: Literal["none", "v1", "v2"] = "none"
    scoring: Literal["letter", "cloze"] = "letter"
    data: str = Field(default="", description="data source tag (prepared, original, samples, file:<sha>)")
    limit: int | None = Field(default=None, ge=1, description="first N evaluated items only (None = all)")
    dtype: str = Field(default="auto", description="requested compute dtype (auto = fp32 on CPU, the model's on GPU)")
    scorer: str = Field(default="hf", pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$",
                        description="backend that produced the option logits (a cpbench.backends.registry name)")

    def slug(self) -> str:
        """Filesystem-safe, human-readable name of the cell. Defaults are left out, so that adding a field to the key
        does not rename existing cells."""
        parts = [self.model, self.recipe, self.task, self.prompt, f"{self.shots}shot"]
        if self.chat != "none":
            parts.append(f"chat-{self.chat}")
        if self.scoring != "letter":
            parts.append(self.scoring)
        if self.data:
            parts.append(self.data)
        if self.limit is not None:
            parts.append(f"limit{self.limit}")
        if self.dtype != "auto":
            parts.append(self.dtype)
        if self.scorer != "hf":
            parts.append(self.scorer)
        return "__".join(safe_part(p) for p in parts)

    def cell_dir(self, root: str | Path) -> Path:
        """`root/<model>/<recipe>`: where this cell's result records (and `artifacts/`) live."""
        return Path(root) / safe_part(self.model) / safe_part(self.recipe)


class AnalysisKey(BaseModel):
    """Parameters of the conformal analysis applied to one artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Literal["default", "ye2024"] = "default"
    alpha: float = Field(default=0.1, gt=0.0, lt=1.0)
    splits: int = Field(default=100, ge=1)
    seed: int = 0
    cal_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)
    stratify: bool = False


class RunKey(BaseModel):
    """Everything that names one result record: the score key plus the analysis key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    score: ScoreKey
    analysis: AnalysisKey = AnalysisKey()

    def slug(self) -> str:
        a = self.analysis
        return f"{self.score.slug()}__{a.protocol}-a{a.alpha:g}"
