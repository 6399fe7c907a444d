"""What a recipe turns (bits or sparsity) and how big a model is, read from records with name-based fallbacks.

A sweep is a family of recipes that differ only in one knob: `gptq-8bit`, `gptq-4bit`, ... share the family
`gptq-{bits}bit`; `magnitude-10` ... `magnitude-90` share `magnitude-{sparsity}`. The uncompressed baseline anchors
every sweep at 16 bits / 0 % sparsity. Explicit fields in the recipe spec stored in the record's provenance win over
the name; the name is parsed only when the spec does not say.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from cpbench.errors import CpbenchError

KnobKind = Literal["bits", "sparsity"]
BASELINE_BITS = 16.0
BASELINE_NAMES = frozenset({"base", "fp16", "bf16", "fp32", "none", "baseline", "uncompressed"})
_PRUNERS = ("sparsegpt", "wanda", "magnitude", "prune", "pruned", "sparse", "sparsity")


@dataclass(frozen=True)
class Knob:
    kind: KnobKind
    value: float  # bits, or sparsity in percent (0-100)
    family: str  # recipe name with the knob value replaced by {bits} / {sparsity}


def _dicts(obj: Any) -> Iterator[dict]:
    """Every dict nested in `obj` (dicts and lists), breadth-first: specs nest modifier configs."""
    queue = deque([obj])
    while queue:
        cur = queue.popleft()
        if isinstance(cur, dict):
            yield cur
            children = cur.values()
        elif isinstance(cur, list):
            children = cur
        else:
            continue
        queue.extend(v for v in children if isinstance(v, (dict, list)))


def _walk(obj: Any, keys: tuple[str, ...]) -> float | None:
    """First number under any of `keys`, searching nested dicts breadth-first."""
    for cur in _dicts(obj):
        for k in keys:
            if k in cur and isinstance(cur[k], (int, float)) and not isinstance(cur[k], bool):
                return float(cur[k])
    return None


def recipe_knob(name: str, spec: dict | None = None) -> Knob | None:
    """The knob of a compression recipe, or None when it has none we can sweep (e.g. `w8a8`, 2:4 patterns)."""
    low = name.lower()
    if low in BASELINE_NAMES:
        return None
    registry = _registry_spec(name)
    spec = spec or registry
    sweep = _find_dict(spec, "sweep") or _find_dict(registry, "sweep")
    if sweep and sweep.get("knob") in ("bits", "sparsity"):
        # cpbench.recipes writes {name, knob, level}; level is bits or sparsity in percent
        level = sweep.get("level", sweep.get("value"))
        if isinstance(level, (int, float)) and not isinstance(level, bool):
            family = sweep.get("name") or sweep.get("family") or _family(low, sweep["knob"])
            return Knob(sweep["knob"], float(level), str(family))
    m = re.search(r"(?<![a-z0-9])w(\d+)a(\d+)(?![0-9])", low)
    if m:  # WxAy schemes: a sweep over weight bits only when activations stay unquantized (a16)
        if int(m.group(2)) < 16:
            return None
        return Knob("bits", float(m.group(1)), low[: m.start()] + "w{bits}a" + m.group(2) + low[m.end():])
    if re.search(r"\d+:\d+", low):  # N:M structured sparsity is a pattern, not a level on a sweep
        return None
    m = re.search(r"(?<![a-z0-9])(\d+)\s*-?bits?(?![a-z])", low)
    if m:
        bits = _walk(spec, ("bits", "num_bits", "w_bits", "weight_bits")) or float(m.group(1))
        return Knob("bits", bits, low[: m.start()] + "{bits}bit" + low[m.end():])
    if any(p in low for p in _PRUNERS):
        sparsity = _walk(spec, ("sparsity", "target_sparsity"))
        m = re.search(r"(\d+(?:\.\d+)?)\s*%?$", low)
        if sparsity is None and m:
            sparsity = float(m.group(1))
        if sparsity is not None:
            if sparsity <= 1.0:
                sparsity *= 100.0
            family = low[: m.start()] + "{sparsity}" if m else low + "-{sparsity}"
            return Knob("sparsity", sparsity, family)
    bits = _walk(spec, ("bits", "num_bits", "w_bits", "weight_bits"))
    if bits is not None and not re.search(r"a\d", low):  # weight-only; activation schemes are their own family
        return Knob("bits", bits, _family(low, "bits"))
    return None


_NOT_VARIANT = frozenset({"name", "bits", "sparsity", "sweep", "description", "requires", "requires_reason"})


def recipe_variant(name: str, spec: dict | None = None) -> dict[str, Any]:
    """The recipe's settings other than its knob (group size, symmetry, ...), to split sweeps that mix variants.

    E.g. `rtn-4bit-g64` sits on the `rtn-bits` sweep at 4 bits but with group size 64 instead of 128: it is a
    different curve, not a second point at 4 bits.
    """
    spec = spec if spec and set(spec) - {"name"} else (_registry_spec(name) or spec or {})
    inner = spec.get("spec") if isinstance(spec.get("spec"), dict) else spec
    return {k: v for k, v in inner.items() if k not in _NOT_VARIANT}


def _find_dict(obj: Any, key: str) -> dict | None:
    """The first dict stored under `key` anywhere in a nested spec (provenance may wrap the recipe spec)."""
    return next((cur[key] for cur in _dicts(obj) if isinstance(cur.get(key), dict)), None)


def _registry_spec(name: str) -> dict:
    """The recipe registry's spec for `name` (cpbench.recipes, when built), or {} when it does not know it."""
    try:
        from cpbench import recipes  # type: ignore[attr-defined]

        return dict(recipes.resolve(name).spec())
    except (ImportError, CpbenchError):  # unknown recipe name or registry absent: parse the name
        return {}


def _family(name: str, kind: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "{" + kind + "}", name, count=1) if re.search(r"\d", name) else f"{name}-{{{kind}}}"


def compression_sign(kind: KnobKind) -> float:
    """+1 when a larger knob value means more compression (sparsity), -1 when smaller does (bits)."""
    return 1.0 if kind == "sparsity" else -1.0


def baseline_value(kind: KnobKind) -> float:
    return BASELINE_BITS if kind == "bits" else 0.0


_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([mb])(?![a-z0-9])")


def params_from_name(model: str) -> float:
    """Parameter count from names like `llama-3.1-8b`, `smollm2-135m`, `Qwen/Qwen2.5-0.5B` (NaN when absent)."""
    low = model.lower().split("/")[-1]
    hits = _SIZE.findall(low.replace("_", "-"))
    if not hits:
        return math.nan
    number, unit = hits[-1]
    return float(number) * (1e9 if unit == "b" else 1e6)


def model_params(model: str, recorded: float = math.nan, registry_name: str = "") -> tuple[float, str]:
    """(parameter count, where it came from): the record's provenance, the model registry, or the model name.

    `registry_name` is the registry entry named in the record's provenance (`model_name`); the run key's model may
    carry a weight-source suffix (e.g. `smollm2-135m-gguf-q4_1`) that the registry does not know.
    """
    if isinstance(recorded, (int, float)) and math.isfinite(recorded) and recorded > 0:
        return float(recorded), "record"
    registry = _registry_params(registry_name) if registry_name else math.nan
    if not math.isfinite(registry):
        registry = _registry_params(model)
    if math.isfinite(registry):
        return registry, "registry"
    guess = params_from_name(model)
    return guess, ("name" if math.isfinite(guess) else "unknown")


def _registry_params(model: str) -> float:
    """Ask the model registry (cpbench.models, when built) without letting its absence or errors stop an analysis."""
    try:
        from cpbench import models  # type: ignore[attr-defined]
    except ImportError:  # registry not built or not importable here: fall back to the name
        return math.nan
    try:
        entry = models.resolve(model)
    except (CpbenchError, OSError, ValueError):  # not a registry name (e.g. a weight-source suffix): use the name
        return math.nan
    billions = getattr(entry, "params_b", None)
    if isinstance(billions, (int, float)) and billions > 0:
        return float(billions) * 1e9
    return math.nan
