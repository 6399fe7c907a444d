"""Cost estimates from parameter counts and item counts: GPU memory, GPUs per unit, GPU-hours.

These are planning figures (`cpbench sweep --dry-run`, Ray's `num_gpus`), not measurements: scoring time assumes
2 x params FLOPs per prompt token at an effective 100 TFLOP/s per GPU (bf16, ~30% of an A100/H100's dense peak, what
batch-1-token scoring reaches), and compression time per billion parameters from llm-compressor's sequential
pipeline (GPTQ/SparseGPT/AWQ ~3 min/B, Wanda ~1 min/B, round-to-nearest and magnitude ~0.3 min/B). Measure on your
cluster and correct with `--gpu-hours-scale`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPU_TFLOPS_EFFECTIVE = 100.0
COMPRESS_MIN_PER_B = {"gptq": 3.0, "sparsegpt": 3.0, "awq": 3.0, "wanda": 1.0, "rtn": 0.3, "magnitude": 0.3}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OVERHEAD = 1.2  # activations, KV of a batch, CUDA context: on top of the weights
FIXED_GB = 2.0


@dataclass(frozen=True)
class UnitEstimate:
    params_b: float | None  # billions; None when unknown
    items: int
    prompt_tokens: int  # total prompt tokens of the unit's cells (estimated from characters when not tokenized)
    gpu_mem_gb: float | None  # to score (and compress, layer by layer) the unit
    gpus: int  # GPUs to request (tensor parallel / device_map across them when > 1)
    gpu_hours: float | None
    host_mem_gb: float | None = None  # CPU RAM: the base weights are loaded on the host to compress (bf16 on GPU)

    def as_row(self) -> dict[str, Any]:
        return {"params_b": self.params_b, "items": self.items, "prompt_tokens": self.prompt_tokens,
                "gpu_mem_gb": self.gpu_mem_gb, "gpus": self.gpus, "gpu_hours": self.gpu_hours,
                "host_mem_gb": self.host_mem_gb}  # fmt: skip


def params_billions(entry: Any) -> float | None:
    """The registry's `params_b`, else counted from a local checkpoint's safetensors headers (no weights read)."""
    if getattr(entry, "params_b", None):
        return float(entry.params_b)
    if entry.source != "local":
        return None
    d = Path(entry.hf_id)
    total = 0
    for f in sorted(d.glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
        except (OSError, ValueError):
            return None
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta.get("shape") or [1])
    return total / 1e9 if total else None


def weight_bytes_per_param(recipe: Any, dtype: str) -> float:
    """Bytes per parameter of the weights as scored: quantized checkpoints keep their bits on GPU."""
    base = DTYPE_BYTES.get(dtype, 2)
    if recipe.kind == "bitsandbytes":
        return 1.0 if recipe.scheme == "int8" else 0.55
    bits = getattr(recipe, "bits", None)
    if recipe.kind == "llmcompressor" and recipe.quantize is not None:
        if bits is None and recipe.scheme:
            digits = "".join(c for c in recipe.scheme.split("A")[0] if c.isdigit())
            bits = int(digits) if digits else None
        if bits:
            return max(bits / 8 + 0.05, 0.3)  # scales and zero points
    return float(base)


def estimate_unit(entry: Any, recipe: Any, items: int, prompt_chars: int, *, gpu_memory_gb: float = 80.0,
                  dtype: str = "bfloat16", gpus: int | None = None) -> UnitEstimate:  # fmt: skip
    """GPU memory and GPU-hours of one unit; `gpus` overrides the count derived from memory."""
    params = params_billions(entry)
    tokens = prompt_chars // 4  # ~4 characters per token for English BPE vocabularies
    if params is None:
        return UnitEstimate(None, items, tokens, None, gpus or 1, None)
    mem = params * weight_bytes_per_param(recipe, dtype) * OVERHEAD + FIXED_GB
    # compression onloads one layer at a time: the scoring footprint bounds it from above
    n_gpus = gpus if gpus is not None else max(1, 2 ** math.ceil(math.log2(max(1.0, mem / gpu_memory_gb))))
    score_h = 2 * params * 1e9 * tokens / (GPU_TFLOPS_EFFECTIVE * 1e12) / 3600
    kind = recipe.prune if recipe.prune in COMPRESS_MIN_PER_B else recipe.quantize
    compress_h = COMPRESS_MIN_PER_B.get(kind or "", 0.0) * params / 60 if not recipe.is_baseline else 0.0
    load_h = params * 2 / 3600  # params x 2 bytes (GB) read at ~1 GB/s from local disk, in hours
    host = params * DTYPE_BYTES.get(dtype, 2) * OVERHEAD + FIXED_GB if not recipe.is_baseline else FIXED_GB * 2
    return UnitEstimate(float(f"{params:.4g}"), items, tokens, round(mem, 1), int(n_gpus),
                        float(f"{(score_h + load_h + compress_h) * n_gpus:.3g}"), round(host, 1))  # fmt: skip
