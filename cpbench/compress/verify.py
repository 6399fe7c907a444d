"""Verify a saved checkpoint: measure what the recipe did instead of trusting that it did it.

`verify_checkpoint(path, recipe)` reloads the checkpoint with `AutoModelForCausalLM` on CPU (quantized weights
dequantized once, so every Linear has a dense `weight`), runs a forward pass, and measures per Linear layer:
the fraction of exactly-zero weights, the fraction of M-blocks (along the input dimension) with at least N zeros
when an N:M mask was asked for, and the largest number of distinct values in any quantization group (at most 2^bits
if the weights really are `bits`-bit; counted on up to 256 evenly spaced rows per layer). It also reads bits, group size, strategy and format from config.json's
`quantization_config`, and the checkpoint's size on disk. `require_ok` turns a failed check into a CpbenchError.

A group of g values has at most g distinct values, so the distinct-value check says nothing when g <= 2^bits
(e.g. NVFP4's groups of 16 at 4 bits); the report gives `group_size` so readers can tell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cpbench.errors import CpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.recipes import Recipe

SPARSITY_TOL = 0.02  # per-layer |measured - target| allowed for unstructured pruning (rounding, pre-existing zeros)
IGNORED_TOL = 0.002  # zeros an ignored layer may gain (none are expected; this absorbs dtype round-trips)


def checkpoint_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def config_quantization(path: Path) -> dict[str, Any] | None:
    """bits / group size / strategy / format as saved in config.json (None when the checkpoint is not quantized)."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    return quantization_summary(cfg.get("quantization_config"))


def quantization_summary(qc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A compressed-tensors `quantization_config` (as in config.json) -> method, format, ignore list and, per config
    group, bits / type / group size / strategy / symmetry / activation bits. None when there is none."""
    if not qc:
        return None
    groups = qc.get("config_groups") or {}
    found = []
    for gname, group in groups.items():
        w = (group or {}).get("weights") or {}
        a = (group or {}).get("input_activations") or {}
        found.append({
            "group": gname, "targets": group.get("targets"), "bits": w.get("num_bits"), "type": w.get("type"),
            "group_size": w.get("group_size"), "strategy": w.get("strategy"), "symmetric": w.get("symmetric"),
            "act_bits": a.get("num_bits") if a else None, "act_dynamic": a.get("dynamic") if a else None,
        })  # fmt: skip
    return {"quant_method": qc.get("quant_method"), "format": qc.get("format"), "ignore": qc.get("ignore"),
            "groups": found}  # fmt: skip


MAX_ROWS = 256  # rows per layer checked for distinct values (evenly spaced; keeps 70B verification affordable)


def row_sample(rows: int, limit: int = MAX_ROWS) -> torch.Tensor:
    """Evenly spaced row indices (first and last included), all rows when there are at most `limit`."""
    if rows <= limit:
        return torch.arange(rows)
    return torch.linspace(0, rows - 1, limit).round().long().unique()


def max_distinct_per_group(
    weight: torch.Tensor, group_size: int | None, strategy: str | None, max_rows: int | None = None
) -> int:
    """Largest number of distinct values in one quantization group (groups along the input dimension), over all
    rows or `max_rows` evenly spaced ones."""
    w = weight.detach().float()
    if max_rows is not None and strategy != "tensor":
        w = w[row_sample(w.shape[0], max_rows)]
    if strategy == "tensor":
        return int(torch.unique(w).numel())
    rows, cols = w.shape
    g = cols if (strategy in ("channel", None) or not group_size) else int(group_size)
    if cols % g:
        g = cols  # non-divisible layers were quantized per channel or skipped; measure per row
    s, _ = torch.sort(w.reshape(rows, cols // g, g), dim=-1)
    distinct = (s[..., 1:] != s[..., :-1]).sum(dim=-1) + 1
    return int(distinct.max())


def nm_fraction(weight: torch.Tensor, n: int, m: int) -> float:
    """Fraction of blocks of m consecutive weights (along rows) that hold at least n zeros."""
    rows, cols = weight.shape
    if cols % m:
        return 0.0
    zeros = (weight.detach().reshape(rows, cols // m, m) == 0).sum(dim=-1)
    return float((zeros >= n).float().mean())


def _load_dense(path: Path):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if config_quantization(path) is not None:
        from transformers import CompressedTensorsConfig

        kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    # some schemes (NVFP4) dequantize to bf16 whatever dtype was asked: cast so the fp32 forward works
    return AutoModelForCausalLM.from_pretrained(path, **kwargs).to(torch.float32).eval()


@torch.no_grad()
def verify_checkpoint(
    path: str | Path,
    recipe: Recipe,
    model: torch.nn.Module | None = None,
    base_zeros: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Measure the saved checkpoint at `path` (reloaded unless `model` is given). `base_zeros` (zeros per Linear
    before compression) lets the checks tell added zeros from zeros the base weights already had (dequantized
    4-bit GGUF weights are ~1% exact zeros). Returns a JSON-able dict."""
    import warnings

    from cpbench.compress.magnitude import target_linears

    path = Path(path)
    qconf = config_quantization(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model if model is not None else _load_dense(path)
    group = (qconf or {}).get("groups", [{}])[0] if qconf and qconf.get("groups") else {}
    targets = target_linears(model, recipe.ignore)
    nm = recipe.mask_nm
    layers: dict[str, dict[str, Any]] = {}
    ignored: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        w = mod.weight
        rec: dict[str, Any] = {"zeros": round(float((w == 0).float().mean()), 6), "shape": list(w.shape)}
        if base_zeros is not None and name in base_zeros:
            rec["base_zeros"] = round(float(base_zeros[name]), 6)
        if nm is not None:
            rec["nm_ok"] = round(nm_fraction(w, *nm), 6)
        if name in targets and qconf is not None and recipe.quantize is not None:
            rec["distinct_max"] = max_distinct_per_group(w, group.get("group_size"), group.get("strategy"), MAX_ROWS)
            rec["rows_checked"] = min(w.shape[0], MAX_ROWS)
        (layers if name in targets else ignored)[name] = rec
    ids = torch.arange(1, 9).unsqueeze(0) % int(getattr(model.config, "vocab_size", 8) or 8)
    logits = model(input_ids=ids).logits
    zeros = [r["zeros"] for r in layers.values()]
    return {
        "checkpoint_bytes": checkpoint_bytes(path),
        "quantization_config": qconf,
        "layers": layers,
        "ignored_layers": ignored,
        "summary": {
            "target_layers": len(layers),
            "zeros_mean": round(sum(zeros) / len(zeros), 6) if zeros else None,
            "zeros_min": min(zeros) if zeros else None,
            "zeros_max": max(zeros) if zeros else None,
            "nm_ok_min": min((r["nm_ok"] for r in layers.values()), default=None) if nm else None,
            "distinct_max": max((r.get("distinct_max", 0) for r in layers.values()), default=None)
            if recipe.quantize is not None else None,
            "forward_finite": bool(torch.isfinite(logits).all()),
        },
    }


def expected_bits(recipe: Recipe) -> int | None:
    if recipe.quantize is None or recipe.quantize == "bnb":
        return None
    if recipe.bits is not None:
        return recipe.bits
    from cpbench.compress.llmc import quantization_scheme

    w = quantization_scheme(recipe).get("weights")
    return None if w is None else int(w.num_bits)


def failed_checks(v: dict[str, Any], recipe: Recipe) -> list[str]:
    """Human-readable list of what the checkpoint does not satisfy (empty when everything holds)."""
    bad: list[str] = []
    s = v["summary"]
    if not s["forward_finite"]:
        bad.append("forward pass of the reloaded checkpoint gives non-finite logits")
    if not v["layers"]:
        bad.append("no target Linear layers found")
        return bad
    target = recipe.target_sparsity
    if recipe.prune is not None and target is not None:
        for name, r in v["layers"].items():
            low = target - SPARSITY_TOL
            high = target + SPARSITY_TOL if recipe.quantize is None else 1.0  # rounding adds zeros
            if not low <= r["zeros"] <= high:
                bad.append(f"{name}: {r['zeros']:.3f} zeros, target {target:.3f}")
                break
        if recipe.mask_nm is not None and s["nm_ok_min"] is not None and s["nm_ok_min"] < 1.0:
            bad.append(f"{recipe.mask} pattern broken: only {s['nm_ok_min']:.3f} of blocks have enough zeros")
        for name, r in v["ignored_layers"].items():
            if r["zeros"] - r.get("base_zeros", 0.0) > IGNORED_TOL:
                bad.append(f"ignored layer {name} was pruned ({r['zeros']:.3f} zeros, {r.get('base_zeros', 0.0):.3f} before)")
    if recipe.quantize is not None:
        q = v["quantization_config"]
        bits = expected_bits(recipe)
        if not q or not q.get("groups"):
            bad.append("config.json has no quantization_config")
        else:
            g = q["groups"][0]
            if bits is not None and g.get("bits") != bits:
                bad.append(f"config.json says {g.get('bits')} bits, recipe asks {bits}")
            if recipe.group_size is not None and g.get("group_size") != recipe.group_size:
                bad.append(f"config.json says group size {g.get('group_size')}, recipe asks {recipe.group_size}")
            if bits is not None and s["distinct_max"] is not None and s["distinct_max"] > 2**bits:
                bad.append(f"{s['distinct_max']} distinct values in a quantization group, more than 2^{bits}")
    return bad


def require_ok(v: dict[str, Any], recipe: Recipe) -> None:
    bad = failed_checks(v, recipe)
    v["ok"] = not bad
    v["failed"] = bad
    if bad:
        raise CpbenchError(f"recipe {recipe.name!r} verification failed: {'; '.join(bad[:3])}")
