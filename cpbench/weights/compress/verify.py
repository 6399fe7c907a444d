"""Verify a saved checkpoint: measure what the recipe did instead of trusting that it did it.

`verify_checkpoint(path, recipe)` reads the checkpoint's safetensors shards one Linear layer at a time (quantized
layers decompressed with compressed-tensors' own compressor, one layer in memory: a 70B checkpoint is verified without
a second fp32 copy of the model), checks every weight is finite, runs one forward pass of the reloaded model when the
checkpoint is small (<= FORWARD_MAX_BYTES), and measures per Linear layer:
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

from cpbench.base.errors import CpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.specs.recipes import Recipe

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


FORWARD_MAX_BYTES = 2 * 2**30  # checkpoints up to this size are also reloaded whole for one forward pass


def _layer_record(name: str, w: torch.Tensor, targets: Any, recipe: Recipe, qconf: Any, group: dict,
                  base_zeros: dict[str, float] | None) -> dict[str, Any]:  # fmt: skip
    rec: dict[str, Any] = {"zeros": round(int((w == 0).sum()) / w.numel(), 6), "shape": list(w.shape)}  # no fp32 temp
    if base_zeros is not None and name in base_zeros:
        rec["base_zeros"] = round(float(base_zeros[name]), 6)
    if recipe.mask_nm is not None:
        rec["nm_ok"] = round(nm_fraction(w, *recipe.mask_nm), 6)
    if name in targets and qconf is not None and recipe.quantize is not None:
        rec["distinct_max"] = max_distinct_per_group(w, group.get("group_size"), group.get("strategy"), MAX_ROWS)
        rec["rows_checked"] = min(w.shape[0], MAX_ROWS)
    return rec


def _skeleton(path: Path) -> torch.nn.Module:
    """The checkpoint's architecture on the meta device: module names and types, no memory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(path)
    if getattr(cfg, "quantization_config", None) is not None:
        del cfg.quantization_config  # the skeleton needs plain Linear modules; the shards are decompressed by hand
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def _decompressor(path: Path) -> Any:
    """(compressor class, QuantizationScheme) of the checkpoint's first quantization group, or None when dense."""
    raw = json.loads((Path(path) / "config.json").read_text()).get("quantization_config") or {}
    groups = raw.get("config_groups") or {}
    if not groups:
        return None
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    group = dict(next(iter(groups.values())))
    fmt = group.pop("format", None) or raw.get("format")
    scheme = QuantizationScheme.model_validate(group)
    return BaseCompressor.get_value_from_registry(fmt), scheme


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
}  # fmt: skip


class _ShardReader:
    """Tensors of one safetensors file read with plain reads, not a memory map: a memory-mapped shard stays resident
    in the process (counted in its RSS) for as long as it is open, so reading a 6 GB checkpoint through safe_open
    handles held open took the verification from 0.6 to 5.8 GB RSS on a 1.5B model."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        self.base = 8 + n
        self.header: dict[str, Any] = header

    def keys(self) -> Any:
        return self.header.keys()

    def get_tensor(self, key: str) -> torch.Tensor:
        info = self.header[key]
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            from safetensors import safe_open  # a dtype this reader does not know: let safetensors read it

            with safe_open(str(self.path), framework="pt", device="cpu") as h:
                return h.get_tensor(key)
        begin, stop = info["data_offsets"]
        buf = bytearray(stop - begin)
        with open(self.path, "rb") as fh:
            fh.seek(self.base + begin)
            fh.readinto(buf)
        if not buf:
            return torch.empty(info["shape"], dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(info["shape"])


def iter_linear_weights(path: str | Path, names: Any) -> Any:
    """(name, dense float32 weight) for each Linear in `names`, read shard by shard from the checkpoint's
    safetensors files (plain reads, no memory map) and decompressed one layer at a time (compressed-tensors formats):
    memory is one layer, not one model. Layers absent from the files (tied lm_head) yield None."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise CpbenchError(f"{path}: no .safetensors files to verify")
    where: dict[str, Any] = {}
    for f in files:
        reader = _ShardReader(f)
        for k in reader.keys():
            where[k] = reader
    dec = _decompressor(Path(path))
    for name in names:
        local = {k[len(name) + 1 :]: where[k].get_tensor(k) for k in where
                 if k.startswith(name + ".") and "." not in k[len(name) + 1 :]}  # fmt: skip
        if "weight_scale" in local and dec is not None:
            compressor, scheme = dec
            w = compressor.decompress(local, scheme)["weight"]
        else:
            w = local.get("weight")
        yield name, None if w is None else w.to(torch.float32)


@torch.no_grad()
def verify_checkpoint(
    path: str | Path,
    recipe: Recipe,
    model: torch.nn.Module | None = None,
    base_zeros: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Measure the saved checkpoint at `path`. Without `model`, its safetensors shards are read one layer at a time
    (decompressed per layer), so verifying a 70B checkpoint needs one layer of memory, not a second copy of the
    model in fp32; checkpoints up to FORWARD_MAX_BYTES are also reloaded whole for one forward pass (larger ones get
    every weight checked finite; the scorer rejects non-finite logits anyway). `base_zeros` (zeros per Linear
    before compression) lets the checks tell added zeros from zeros the base weights already had (dequantized
    4-bit GGUF weights are ~1% exact zeros). Returns a JSON-able dict."""
    import warnings

    from cpbench.weights.compress.magnitude import target_linears

    path = Path(path)
    qconf = config_quantization(path)
    group = (qconf or {}).get("groups", [{}])[0] if qconf and qconf.get("groups") else {}
    layers: dict[str, dict[str, Any]] = {}
    ignored: dict[str, dict[str, Any]] = {}
    finite = True
    forward_finite: bool | None = None
    nbytes = checkpoint_bytes(path)
    method = "in-memory model" if model is not None else "safetensors shards, one layer at a time"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model is not None:
            targets = target_linears(model, recipe.ignore)
            weights = ((n, m.weight) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
        else:
            skeleton = _skeleton(path)
            targets = target_linears(skeleton, recipe.ignore)
            names = [n for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)]
            weights = iter_linear_weights(path, names)
        for name, w in weights:
            if w is None:  # tied to the embeddings: not stored under its own name
                ignored[name] = {"tied": True}
                continue
            finite = finite and bool(torch.isfinite(w).all())
            (layers if name in targets else ignored)[name] = _layer_record(name, w, targets, recipe, qconf, group,
                                                                           base_zeros)  # fmt: skip
        reloaded = model is None and nbytes <= FORWARD_MAX_BYTES
        if reloaded:
            model = _load_dense(path)
        if model is not None:
            ids = torch.arange(1, 9).unsqueeze(0) % int(getattr(model.config, "vocab_size", 8) or 8)
            forward_finite = bool(torch.isfinite(model(input_ids=ids).logits).all())
        if reloaded:
            from cpbench.base.memory import release

            del model
            release()  # HF models hold reference cycles: free the reload (and its pages) now
    zeros = [r["zeros"] for r in layers.values()]
    return {
        "checkpoint_bytes": nbytes,
        "quantization_config": qconf,
        "layers": layers,
        "ignored_layers": ignored,
        "summary": {
            "target_layers": len(layers),
            "zeros_mean": round(sum(zeros) / len(zeros), 6) if zeros else None,
            "zeros_min": min(zeros) if zeros else None,
            "zeros_max": max(zeros) if zeros else None,
            "nm_ok_min": min((r["nm_ok"] for r in layers.values()), default=None) if recipe.mask_nm else None,
            "distinct_max": max((r.get("distinct_max", 0) for r in layers.values()), default=None)
            if recipe.quantize is not None else None,
            "weights_finite": finite,
            "forward_finite": forward_finite,  # None: not run (checkpoint larger than FORWARD_MAX_BYTES)
            "method": method,
        },
    }


def expected_bits(recipe: Recipe) -> int | None:
    if recipe.quantize is None or recipe.quantize == "bnb":
        return None
    if recipe.bits is not None:
        return recipe.bits
    from cpbench.weights.compress.llmc import quantization_scheme

    w = quantization_scheme(recipe).get("weights")
    return None if w is None else int(w.num_bits)


def failed_checks(v: dict[str, Any], recipe: Recipe) -> list[str]:
    """Human-readable list of what the checkpoint does not satisfy (empty when everything holds)."""
    bad: list[str] = []
    s = v["summary"]
    if s.get("forward_finite") is False:
        bad.append("forward pass of the reloaded checkpoint gives non-finite logits")
    if s.get("weights_finite") is False:
        bad.append("the checkpoint holds non-finite weights")
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
            if r.get("tied"):  # tied to the embeddings, which no recipe prunes: nothing of its own to check
                continue
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
