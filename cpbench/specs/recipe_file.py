"""`--quant-file recipe.yaml`: an llm-compressor recipe (the modifiers YAML `oneshot(recipe=...)` takes) as a cpbench
recipe: compressed with cpbench's calibration data, verified, cached by the file's content, its full text in
provenance.

The file is validated by llm-compressor itself (`llmcompressor.recipe.Recipe.create_instance`) before any model
loads, so a typo fails with one line. What verification should check is read from the instantiated modifiers:
quantization method (GPTQ / AWQ / round-to-nearest), preset scheme or bits and group size, pruning method, sparsity
and N:M mask, SmoothQuant strength, and the ignore lists; a knob the file does not state is not checked. The recipe is
named by the file's stem (`my-w4a16.yaml` -> `my-w4a16`); a name that a registered recipe already has is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cpbench.base.errors import CpbenchError

MAX_RECIPE_BYTES = 1 * 2**20  # recipe files are a few hundred bytes to a few kB
_DATA_MODIFIERS = ("GPTQModifier", "AWQModifier", "SparseGPTModifier", "WandaPruningModifier", "SmoothQuantModifier")


def _read(path: Path) -> str:
    if not path.is_file():
        raise CpbenchError(f"--quant-file {path}: no such file")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise CpbenchError(f"--quant-file {path}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CpbenchError(f"--quant-file {path}: not UTF-8 text") from None


def parse_modifiers(text: str, where: str = "recipe") -> list[Any]:
    """The llm-compressor modifiers a recipe YAML instantiates (one line naming the problem when it does not)."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CpbenchError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise CpbenchError(f"{where}: an llm-compressor recipe is a YAML mapping of stages and modifiers")
    try:
        from llmcompressor.recipe import Recipe as LlmcRecipe
    except ImportError:
        raise CpbenchError("--quant-file needs llm-compressor: pip install 'cpbench[compress]'") from None
    try:
        mods = list(LlmcRecipe.create_instance(text).modifiers)
    except Exception as exc:  # pydantic / KeyError / ValueError from llm-compressor: keep it to one line
        msg = " ".join(str(exc).split())[:300]
        raise CpbenchError(f"{where}: llm-compressor cannot read this recipe ({type(exc).__name__}: {msg})") from None
    if not mods:
        raise CpbenchError(f"{where}: the recipe has no modifiers")
    return mods


def file_needs_calibration(text: str) -> bool:
    """Whether the recipe's result depends on calibration data (GPTQ, AWQ, SparseGPT, Wanda, SmoothQuant, or a
    quantization modifier with static activation ranges)."""
    for m in parse_modifiers(text):
        if type(m).__name__ in _DATA_MODIFIERS:
            return True
        flag = getattr(m, "requires_calibration_data", False)
        if (flag() if callable(flag) else flag) is True:
            return True
    return False


def _scheme_knobs(m: Any) -> dict[str, Any]:
    from cpbench.specs.recipes import PRESET_SCHEMES

    scheme = getattr(m, "scheme", None)
    if isinstance(scheme, str) and scheme.upper() in PRESET_SCHEMES:
        return {"scheme": scheme.upper()}
    groups = getattr(m, "config_groups", None) or (scheme if isinstance(scheme, dict) else None) or {}
    for group in groups.values():
        w = group.get("weights") if isinstance(group, dict) else getattr(group, "weights", None)
        if w is None:
            continue
        get = w.get if isinstance(w, dict) else (lambda k, _w=w: getattr(_w, k, None))
        if get("num_bits"):
            return {"bits": int(get("num_bits")), "group_size": get("group_size")}
    return {}


def knobs_of(mods: list[Any]) -> dict[str, Any]:
    """What verification checks, read from the modifiers (only what they state)."""
    knobs: dict[str, Any] = {}
    ignore: list[str] = []
    names = [type(m).__name__ for m in mods]
    for m in mods:
        name = type(m).__name__
        ignore += [str(x) for x in (getattr(m, "ignore", None) or []) if isinstance(x, str)]
        if name in ("SparseGPTModifier", "WandaPruningModifier"):
            knobs["prune"] = "sparsegpt" if name == "SparseGPTModifier" else "wanda"
            mask = str(getattr(m, "mask_structure", "") or "")
            if re.fullmatch(r"\d+:\d+", mask) and mask != "0:0":
                knobs["mask"] = mask
            elif isinstance(getattr(m, "sparsity", None), (int, float)):
                knobs["sparsity"] = float(m.sparsity)
        elif name == "SmoothQuantModifier" and isinstance(getattr(m, "smoothing_strength", None), (int, float)):
            knobs["smoothquant"] = float(m.smoothing_strength)
        elif name in ("GPTQModifier", "QuantizationModifier"):
            scheme = _scheme_knobs(m)
            if scheme:
                knobs.update(scheme)
                knobs["quantize"] = "gptq" if name == "GPTQModifier" else knobs.get("quantize", "rtn")
    if "AWQModifier" in names and knobs.get("quantize"):
        knobs["quantize"] = "awq"
    knobs["ignore"] = tuple(dict.fromkeys(ignore))
    return knobs


def load_recipe_file(path: str | Path) -> Any:
    """Read, validate and register an llm-compressor recipe file; returns the cpbench Recipe (named by the stem)."""
    from cpbench.specs import recipes

    p = Path(path).expanduser()
    text = _read(p)
    mods = parse_modifiers(text, f"--quant-file {p}")
    name = re.sub(r"[^A-Za-z0-9_.+\-]+", "-", p.stem).strip("-.") or "recipe-file"
    try:
        registered = None if name in recipes.FILE_RECIPES else recipes.resolve(name)  # a file may be edited and rerun
    except CpbenchError:
        registered = None
    if registered is not None:
        raise CpbenchError(f"--quant-file {p}: recipe name {name!r} (the file's stem) is already a recipe; "
                           "rename the file")  # fmt: skip
    knobs = knobs_of(mods)
    try:
        recipe = recipes.Recipe(name=name, kind="llmcompressor", modifiers=text, **knobs,
                                description=f"llm-compressor recipe file {p.name} "
                                f"({', '.join(type(m).__name__ for m in mods)})")  # fmt: skip
    except Exception as exc:  # pydantic ValidationError
        raise CpbenchError(f"--quant-file {p}: {' '.join(str(exc).split())[:300]}") from None
    recipes.FILE_RECIPES[name] = recipe
    return recipe
