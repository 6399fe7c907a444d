"""Named suites (`benchmark/suites.yaml`): a model, recipes, tasks and scoring settings that `cpbench run` runs
together. `default` is the embedded offline run. Loading validates recipe names (sweeps and brace specs expanded)
and the model spec against the registries; it imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cpbench.weights.compress.calibration import CalibrationSpec
from cpbench.base.config import (
    did_you_mean,
    first_error,
    read_yaml_mapping,
    reject_unknown_keys,
    require_mapping_of_mappings,
)
from cpbench.base.errors import CpbenchError
from cpbench.base.paths import data_dir


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    model: str
    recipes: tuple[str, ...] = Field(description="expanded recipe names, baseline included")
    tasks: tuple[str, ...]
    data: str = "samples"
    prompts: tuple[str, ...] = ("base",)
    shots: int = Field(default=0, ge=0)
    chat: Literal["none", "v1", "v2"] = "none"
    scoring: Literal["letter", "cloze"] = "letter"
    device: str = "auto"
    dtype: str = "auto"
    calibration: CalibrationSpec = CalibrationSpec()
    limit: int | None = Field(default=None, ge=1)


def _path(path: str | Path | None) -> Path:
    return Path(path) if path is not None else data_dir("benchmark") / "suites.yaml"


def _raw(path: str | Path | None) -> dict:
    p = _path(path)
    raw = read_yaml_mapping(p, "suite file", ("suites",))
    return require_mapping_of_mappings(raw, "suites", p, "suite name -> mapping of settings")


def list_suites(path: str | Path | None = None) -> list[str]:
    return list(_raw(path))


def load_suite(name: str = "default", path: str | Path | None = None) -> Suite:
    from cpbench.weights import models
    from cpbench.specs import recipes

    suites = _raw(path)
    if name not in suites:
        hint = did_you_mean(name, suites) or f" (known: {', '.join(suites)})"
        raise CpbenchError(f"unknown suite {name!r}{hint}")
    fields = dict(suites[name] or {})
    allowed = [f for f in Suite.model_fields if f != "name"]
    reject_unknown_keys(fields, allowed, f"suite {name!r}")
    names: list[str] = []
    for spec in fields.get("recipes") or []:
        names.extend(r.name for r in recipes.expand_recipes(str(spec)))
    fields["recipes"] = tuple(dict.fromkeys(names))
    models.resolve(str(fields.get("model", "")))  # did-you-mean on a bad model name, now rather than mid-run
    try:
        return Suite(name=name, **fields)
    except ValidationError as exc:
        raise CpbenchError(f"suite {name!r}: {first_error(exc)}") from None
