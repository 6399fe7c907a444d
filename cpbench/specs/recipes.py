"""Compression recipes: the names users type (`gptq-4bit`, `sparsegpt-2:4`, `bnb-nf4`) and what they mean.

`benchmark/recipes.yaml` holds named recipes and sweeps. A recipe is a small declarative record of knobs (bits, group
size, sparsity, N:M mask, compressed-tensors scheme); `cpbench.weights.compress` turns it into llm-compressor modifiers, a
torch magnitude transform, or a bitsandbytes load-time config. Sweeps (e.g. `gptq-bits`: `gptq-{bits}bit` over
8/6/4/3/2) name the knob and level of each member so that threshold detection can order them.

This module imports no torch: listing and validating recipes must stay cheap.
"""

from __future__ import annotations

import math

import hashlib
import itertools
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cpbench.base.config import (
    did_you_mean,
    first_error,
    read_yaml_mapping,
    reject_unknown_keys,
    require_mapping_of_mappings,
)
from cpbench.base.errors import CpbenchError
from cpbench.base.paths import data_dir

Kind = Literal["baseline", "llmcompressor", "magnitude", "bitsandbytes"]
# compressed-tensors preset scheme names that recipes may use (checked against the installed library at compress time).
PRESET_SCHEMES = (
    "W2A16", "W3A16", "W4A16", "W4A16_ASYM", "W5A16", "W6A16", "W7A16", "W8A16",
    "W8A8", "W4A8", "W4A4", "INT8", "FP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4A16", "NVFP4", "MXFP4A16", "MXFP4",
)  # fmt: skip
# presets whose weights are quantized in groups along the input dimension (group_size can be overridden)
GROUPED_PRESETS = frozenset(
    {"W2A16", "W3A16", "W4A16", "W4A16_ASYM", "W5A16", "W6A16", "W7A16", "W8A16", "W4A8", "W4A4", "MXFP4A16", "MXFP4"}
)
BNB_SCHEMES = ("nf4", "fp4", "int8")


class Sweep(BaseModel):
    """Membership of a recipe in a sweep: which knob varies and at which level (for threshold detection)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="sweep name, e.g. gptq-bits")
    knob: Literal["bits", "sparsity"]
    level: float = Field(description="bits (e.g. 4) or sparsity in percent (e.g. 50)")


class Recipe(BaseModel):
    """One compression recipe. Field meaning by kind:

    - baseline: nothing is changed (the uncompressed reference).
    - llmcompressor: optional pruning (`prune` = sparsegpt | wanda, `sparsity`, `mask`), then optional quantization
      (`quantize` = gptq | awq | rtn with `bits`/`group_size`/`act_bits` or a preset `scheme`), optional SmoothQuant
      first (`smoothquant` = strength). Pruning followed by quantization uses plain rounding (RTN), because GPTQ
      refills pruned zeros and breaks N:M patterns.
    - magnitude: `prune` = magnitude with `sparsity` (unstructured, per layer) or `mask` (N:M), a torch transform.
    - bitsandbytes: `quantize` = bnb, `scheme` = nf4 | fp4 | int8, applied when the model is loaded (GPU).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind
    description: str = ""
    prune: Literal["sparsegpt", "wanda", "magnitude"] | None = None
    sparsity: float | None = Field(default=None, gt=0.0, lt=1.0, description="target fraction of zero weights")
    mask: str | None = Field(default=None, description="N:M structured mask, e.g. '2:4' (N zeros in every M weights)")
    quantize: Literal["gptq", "awq", "rtn", "bnb"] | None = None
    scheme: str | None = Field(default=None, description="compressed-tensors preset (W4A16, W8A8, FP8_DYNAMIC, ...)")
    bits: int | None = Field(default=None, ge=1, le=16, description="weight bits")
    group_size: int | None = Field(default=None, ge=1, description="weights per quantization group; None = per channel")
    symmetric: bool = True
    act_bits: int | None = Field(default=None, ge=1, le=16, description="activation bits (dynamic per token)")
    smoothquant: float | None = Field(default=None, gt=0.0, le=1.0, description="SmoothQuant strength before quantizing")
    ignore: tuple[str, ...] = ("lm_head",)
    sweep: Sweep | None = None
    requires: Literal["cpu", "cuda"] = Field(default="cpu", description="the least hardware the recipe runs on")
    requires_reason: str = ""
    modifiers: str | None = Field(
        default=None, description="an llm-compressor recipe (modifiers YAML, as oneshot(recipe=...) takes) from "
        "--quant-file, applied as written; the knobs above are read from it for verification (cpbench.specs.recipe_file)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        where = f"recipe {self.name!r}"
        if self.modifiers is not None:  # the file decides; its knobs were read from it, not chosen
            if self.kind != "llmcompressor":
                raise ValueError(f"{where}: a modifiers YAML is an llmcompressor recipe")
            return self
        knobs = {k: getattr(self, k) for k in ("prune", "sparsity", "mask", "quantize", "scheme", "bits", "act_bits")}
        set_knobs = {k for k, v in knobs.items() if v is not None}
        if self.mask is not None:
            m = re.fullmatch(r"(\d+):(\d+)", self.mask)
            if not m or not 0 < int(m.group(1)) < int(m.group(2)):
                raise ValueError(f"{where}: mask must be 'N:M' with 0 < N < M, got {self.mask!r}")
        if self.kind == "baseline":
            if set_knobs or self.smoothquant is not None:
                raise ValueError(f"{where}: a baseline takes no compression knobs, got {sorted(set_knobs)}")
        elif self.kind == "magnitude":
            if self.prune != "magnitude" or (self.sparsity is None) == (self.mask is None):
                raise ValueError(f"{where}: magnitude recipes need prune: magnitude and exactly one of sparsity, mask")
            if self.quantize is not None:
                raise ValueError(f"{where}: magnitude recipes do not quantize")
        elif self.kind == "bitsandbytes":
            if self.quantize != "bnb" or self.scheme not in BNB_SCHEMES or self.prune is not None:
                raise ValueError(f"{where}: bitsandbytes recipes need quantize: bnb and scheme in {BNB_SCHEMES}")
            if self.requires != "cuda":
                raise ValueError(f"{where}: bitsandbytes recipes run on CUDA; set requires: cuda")
        else:  # llmcompressor
            if self.prune is None and self.quantize is None:
                raise ValueError(f"{where}: an llmcompressor recipe needs prune and/or quantize")
            if self.prune == "magnitude":
                raise ValueError(f"{where}: magnitude pruning is kind: magnitude (llm-compressor's zeroes nothing)")
            if self.quantize == "bnb":
                raise ValueError(f"{where}: quantize: bnb belongs to kind: bitsandbytes")
            if self.prune is not None and self.sparsity is None and self.mask is None:
                raise ValueError(f"{where}: prune: {self.prune} needs sparsity or mask")
            if self.prune is None and (self.sparsity is not None or self.mask is not None):
                raise ValueError(f"{where}: sparsity/mask given without prune")
            if self.quantize is not None:
                if self.scheme is None and self.bits is None:
                    raise ValueError(f"{where}: quantize: {self.quantize} needs bits or a preset scheme")
                if self.scheme is not None and self.scheme not in PRESET_SCHEMES:
                    hint = did_you_mean(self.scheme, PRESET_SCHEMES) or f"; known: {', '.join(PRESET_SCHEMES)}"
                    raise ValueError(f"{where}: unknown scheme {self.scheme!r}{hint}")
                if self.prune is not None and self.quantize != "rtn":
                    raise ValueError(
                        f"{where}: pruning followed by {self.quantize} refills pruned zeros; use quantize: rtn"
                    )
            elif set_knobs & {"scheme", "bits", "act_bits"} or self.smoothquant is not None:
                raise ValueError(f"{where}: quantization knobs given without quantize")
        return self

    # --------------------------------------------------------------------------------------------- derived views
    @property
    def is_baseline(self) -> bool:
        return self.kind == "baseline"

    @property
    def load_time(self) -> bool:
        """True when the recipe is applied while loading (bitsandbytes): no checkpoint is written."""
        return self.kind == "bitsandbytes"

    @property
    def mask_nm(self) -> tuple[int, int] | None:
        if self.mask is None:
            return None
        n, m = self.mask.split(":")
        return int(n), int(m)

    @property
    def target_sparsity(self) -> float | None:
        """Fraction of zeros the recipe should produce in each pruned layer (N/M for N:M masks)."""
        if self.mask_nm is not None:
            n, m = self.mask_nm
            return n / m
        return self.sparsity

    def spec(self) -> dict[str, Any]:
        """Everything that determines the compressed weights (not the description): provenance and cache keys."""
        return self.model_dump(mode="json", exclude={"description", "requires_reason"})

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()


class SweepSpec(BaseModel):
    """A family of recipes that differ in one knob; members are named by `pattern` with `{level}` filled in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    pattern: str = Field(description="member name with a {level} placeholder, e.g. gptq-{level}bit")
    knob: Literal["bits", "sparsity"]
    levels: tuple[int, ...]
    description: str = ""
    base: dict[str, Any] = Field(description="recipe fields shared by all members (kind, quantize, group_size, ...)")

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if self.pattern.count("{level}") != 1:
            raise ValueError(f"sweep {self.name!r}: pattern must contain '{{level}}' once, got {self.pattern!r}")
        if not self.levels:
            raise ValueError(f"sweep {self.name!r}: no levels")
        return self

    def regex(self) -> re.Pattern[str]:
        head, tail = self.pattern.split("{level}")
        return re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + r"$")

    def member(self, level: int) -> Recipe:
        if self.knob == "bits":
            knobs: dict[str, Any] = {"bits": level}
        else:
            if not 0 < level < 100:
                raise CpbenchError(f"sweep {self.name}: sparsity level must be a percent in 1..99, got {level}")
            knobs = {"sparsity": level / 100}
        name = self.pattern.replace("{level}", str(level))
        desc = self.description.replace("{level}", str(level))
        fields = {**self.base, **knobs, "name": name, "description": desc}
        fields["sweep"] = Sweep(name=self.name, knob=self.knob, level=level)
        try:
            return Recipe(**fields)
        except ValidationError as exc:
            raise CpbenchError(f"sweep {self.name}: level {level}: {first_error(exc)}") from None


class RecipeRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipes: dict[str, Recipe]
    sweeps: dict[str, SweepSpec] = {}

    def names(self) -> list[str]:
        """Every name a user can type without a level outside the registered ones."""
        return list(self.recipes)


def load_registry(path: str | Path | None = None) -> RecipeRegistry:
    """Read and validate `benchmark/recipes.yaml` (or `path`); sweep members are added as named recipes."""
    p = Path(path) if path is not None else data_dir("benchmark") / "recipes.yaml"
    return _load_registry_cached(str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0)


@lru_cache(maxsize=8)
def _load_registry_cached(path: str, _mtime: int) -> RecipeRegistry:
    p = Path(path)
    raw = read_yaml_mapping(p, "recipe registry", ("recipes", "sweeps"))
    for section in ("recipes", "sweeps"):
        require_mapping_of_mappings(raw, section, p, "name -> mapping of fields")
    recipes: dict[str, Recipe] = {}
    for name, fields in (raw.get("recipes") or {}).items():
        fields = dict(fields or {})
        reject_unknown_keys(fields, [f for f in Recipe.model_fields if f != "name"], f"{p}: recipe {name!r}")
        try:
            recipes[str(name)] = Recipe(name=str(name), **fields)
        except ValidationError as exc:
            raise CpbenchError(f"{p}: recipe {name!r}: {first_error(exc)}") from None
    sweeps: dict[str, SweepSpec] = {}
    for name, fields in (raw.get("sweeps") or {}).items():
        fields = dict(fields or {})
        reject_unknown_keys(fields, [f for f in SweepSpec.model_fields if f != "name"], f"{p}: sweep {name!r}")
        try:
            sweep = SweepSpec(name=str(name), **fields)
        except ValidationError as exc:
            raise CpbenchError(f"{p}: sweep {name!r}: {first_error(exc)}") from None
        sweeps[sweep.name] = sweep
        for level in sweep.levels:
            member = sweep.member(level)
            if member.name in recipes:
                raise CpbenchError(f"{p}: recipe {member.name!r} is defined twice (explicitly and by sweep {name!r})")
            recipes[member.name] = member
    overlap = set(sweeps) & set(recipes)
    if overlap:
        raise CpbenchError(f"{p}: names used for both a sweep and a recipe: {sorted(overlap)}")
    return RecipeRegistry(recipes=recipes, sweeps=sweeps)


def list_recipes() -> list[Recipe]:
    return list(load_registry().recipes.values())


def list_sweeps() -> list[SweepSpec]:
    return list(load_registry().sweeps.values())


# Recipes read from llm-compressor recipe files (`--quant-file`), by name, so that plans can name them like registry
# recipes. Filled only by cpbench.specs.recipe_file.load_recipe_file; a WorkUnit carries the Recipe itself to workers.
FILE_RECIPES: dict[str, Recipe] = {}


def resolve(name: str | Recipe) -> Recipe:
    """A recipe by name: registered names, sweep members at any level (`sparsegpt-35`), or did-you-mean."""
    if isinstance(name, Recipe):
        return name
    key = name.strip()
    if key in FILE_RECIPES:  # loaded from --quant-file in this process (cpbench.specs.recipe_file)
        return FILE_RECIPES[key]
    reg = load_registry()
    if key == "fp16" and "fp16" not in reg.recipes:  # the baseline's name before it was renamed `base`
        key = "base"
    if key in reg.recipes:
        return reg.recipes[key]
    lowered = {n.lower(): r for n, r in reg.recipes.items()}
    if key.lower() in lowered:
        return lowered[key.lower()]
    for sweep in reg.sweeps.values():
        m = sweep.regex().fullmatch(key.lower())
        if m:
            return sweep.member(int(m.group(1)))
    g = re.fullmatch(r"(.+)-g(\d+)", key)
    if g:  # group-size variant of a grouped quantization recipe, e.g. gptq-4bit-g64 for models with 576 columns
        return with_group_size(resolve(g.group(1)), int(g.group(2)))
    if key in reg.sweeps:
        members = ", ".join(sweep_members(key))
        raise CpbenchError(f"{key!r} is a sweep, not a recipe: use one of {members} (or expand_recipes({key!r}))")
    candidates = list(reg.recipes) + list(reg.sweeps)
    hint = did_you_mean(key, candidates, n=3, cutoff=0.5)
    raise CpbenchError(f"unknown recipe {key!r}{hint} (see benchmark/recipes.yaml or docs/models-and-recipes.md)")


def with_group_size(recipe: Recipe, group_size: int) -> Recipe:
    """The same recipe quantizing in groups of `group_size` (named `<name>-g<size>`)."""
    if recipe.kind != "llmcompressor" or recipe.quantize is None:
        raise CpbenchError(f"recipe {recipe.name!r} does not quantize in groups; '-g{group_size}' does not apply")
    grouped = recipe.group_size is not None if recipe.scheme is None else recipe.scheme in GROUPED_PRESETS
    if not grouped:
        raise CpbenchError(f"recipe {recipe.name!r} does not quantize in groups; '-g{group_size}' does not apply")
    fields = recipe.model_dump()
    fields.update(name=f"{recipe.name}-g{group_size}", group_size=group_size,
                  description=f"{recipe.description} [group size {group_size}]")  # fmt: skip
    try:
        return Recipe(**fields)
    except ValidationError as exc:
        raise CpbenchError(f"recipe {recipe.name}-g{group_size}: {first_error(exc)}") from None


def sweep_members(sweep_name: str) -> list[str]:
    reg = load_registry()
    if sweep_name not in reg.sweeps:
        raise CpbenchError(f"unknown sweep {sweep_name!r}{did_you_mean(sweep_name, reg.sweeps)}")
    s = reg.sweeps[sweep_name]
    return [s.pattern.replace("{level}", str(level)) for level in s.levels]


_BRACE = re.compile(r"\{([^{}]*)\}")


def _brace_alternatives(body: str, head: str | None, tail: str | None) -> list[str]:
    """Alternatives of one `{...}` group. `{a,b}` is a list; `{a..b..s}` a range with step s. `{a..b}` without a
    step takes the levels of the sweep whose pattern the name matches (so `sparsegpt-{10..90}` is 10, 20, ..., 90),
    or every integer when no sweep matches."""
    rng = re.fullmatch(r"\s*(\d+)\.\.(\d+)(?:\.\.(\d+))?\s*", body)
    if not rng:
        return [part.strip() for part in body.split(",")]
    lo, hi = int(rng.group(1)), int(rng.group(2))
    sign = 1 if hi >= lo else -1
    if rng.group(3):
        step = int(rng.group(3))
        if step <= 0:
            raise CpbenchError(f"brace range step must be positive: {{{body}}}")
        return [str(v) for v in range(lo, hi + sign, sign * step)]
    for sweep in load_registry().sweeps.values() if head is not None else ():
        if sweep.pattern == f"{head}{{level}}{tail}":
            levels = [v for v in sweep.levels if min(lo, hi) <= v <= max(lo, hi)]
            return [str(v) for v in sorted(levels, reverse=sign < 0)]
    return [str(v) for v in range(lo, hi + sign, sign)]


def expand(spec: str) -> list[str]:
    """Recipe names from a spec: comma-separated names, sweep names (`gptq-bits`), brace groups
    (`gptq-{8,6,4,3,2}bit`, `sparsegpt-{10..90}`, `wanda-{20..80..20}`). Order kept, duplicates dropped."""
    names: list[str] = []
    for part in _split_top_level(spec):
        if not part:
            continue
        reg = load_registry()
        if part in reg.sweeps:
            names.extend(sweep_members(part))
            continue
        groups = list(_BRACE.finditer(part))
        if not groups:
            names.append(part)
            continue
        single = len(groups) == 1  # sweep-level ranges only make sense when one group fills the level
        choices = [
            _brace_alternatives(g.group(1), part[: g.start()] if single else None, part[g.end() :] if single else None)
            for g in groups
        ]
        for combo in itertools.product(*choices):
            out, last = [], 0
            for g, value in zip(groups, combo):
                out.append(part[last : g.start()])
                out.append(value)
                last = g.end()
            out.append(part[last:])
            names.append("".join(out))
    seen: set[str] = set()
    return [n for n in names if not (n in seen or seen.add(n))]  # type: ignore[func-returns-value]


def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside braces."""
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def expand_recipes(spec: str) -> list[Recipe]:
    """`expand` then `resolve` each name (did-you-mean on the first unknown one)."""
    return [resolve(n) for n in expand(spec)]


def group_size_hint(recipe_name: str, widths: Any) -> str:
    """'; use NAME-gN (...)' with the largest usual group size dividing every width, or '' when none does. Shared by
    the pre-flight check (cpbench.run.preflight) and the compressor's own check (cpbench.weights.compress.llmc)."""
    import re

    common = math.gcd(*widths)
    fits = [s for s in (256, 128, 64, 32, 16) if common % s == 0]
    stem = re.sub(r"-g\d+$", "", recipe_name)
    return f"; use {stem}-g{fits[0]} (group size {fits[0]} divides every width)" if fits else ""
