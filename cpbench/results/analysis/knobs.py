"""What a recipe turns (bits or sparsity) and how big a model is, read from records with name-based fallbacks.

A sweep is a family of recipes that differ only in one knob: `gptq-8bit`, `gptq-4bit`, ... share the family
`gptq-{bits}bit`; `magnitude-10` ... `magnitude-90` share `magnitude-{sparsity}`. The uncompressed baseline anchors
every sweep at 16 bits / 0 % sparsity.

Where the numbers come from (a registry edit must never change an old leaderboard): the scorer writes the model's
parameter count (`n_params`) and the recipe's knob (`knob`, {"bits": 4} or {"sparsity": 0.5}) into the artifact's
provenance (`provenance_fields`, at scoring time); the analysis reads them from the record. Records without them fall
back to the recipe spec stored in the record's provenance, then to the recipe or model name, and say so (source
"name"). The YAML registries are never consulted by the analysis.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal


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
    spec = spec or {}
    sweep = _find_dict(spec, "sweep")
    if sweep and sweep.get("knob") in ("bits", "sparsity"):
        # cpbench.specs.recipes writes {name, knob, level}; level is bits or sparsity in percent
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
    spec = spec or {}
    inner = spec.get("spec") if isinstance(spec.get("spec"), dict) else spec
    return {k: v for k, v in inner.items() if k not in _NOT_VARIANT}


def _find_dict(obj: Any, key: str) -> dict | None:
    """The first dict stored under `key` anywhere in a nested spec (provenance may wrap the recipe spec)."""
    return next((cur[key] for cur in _dicts(obj) if isinstance(cur.get(key), dict)), None)


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
    """(parameter count, where it came from): the record's provenance (`n_params`), else the model name (flagged
    "name": a fallback), else unknown. `registry_name` (the provenance's `model_name`) is parsed before the run key's
    model, which may carry a weight-source suffix."""
    if isinstance(recorded, (int, float)) and math.isfinite(recorded) and recorded > 0:
        return float(recorded), "record"
    for name in (registry_name, model):
        guess = params_from_name(name) if name else math.nan
        if math.isfinite(guess):
            return guess, "name"
    return math.nan, "unknown"


def recorded_knob(knob_json: str, name: str, spec: dict | None) -> tuple[Knob | None, str]:
    """(knob, source) of one record: its provenance `knob` ("record"), else its recorded recipe spec or name
    ("name", a flagged fallback)."""
    import json

    if knob_json:
        try:
            k = json.loads(knob_json)
        except ValueError:
            k = None
        if isinstance(k, dict):
            parsed = recipe_knob(name, spec)
            for kind, scale in (("bits", 1.0), ("sparsity", 100.0)):
                v = k.get(kind)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    value = float(v) * scale
                    family = parsed.family if parsed is not None and parsed.kind == kind else _family(name.lower(),
                                                                                                        kind)
                    return Knob(kind, value, family), "record"  # type: ignore[arg-type]
    k = recipe_knob(name, spec)
    return k, ("name" if k is not None else "none")


def provenance_fields(params_b: float | None, recipe_name: str, recipe_spec: dict | None) -> dict:
    """What the scorer writes into artifact provenance for the size-effect and threshold analyses: `n_params` (the
    registry's params_b at scoring time) and `knob` ({"bits": b} or {"sparsity": fraction})."""
    out: dict = {}
    if isinstance(params_b, (int, float)) and params_b > 0:
        out["n_params"] = float(params_b) * 1e9
    k = recipe_knob(recipe_name, recipe_spec)
    if k is not None:
        out["knob"] = {"bits": k.value} if k.kind == "bits" else {"sparsity": k.value / 100.0}
    return out
