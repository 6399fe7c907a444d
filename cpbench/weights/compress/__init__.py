"""Compression: model entry + recipe + calibration -> a verified, cached checkpoint.

```python
ckpt = compress(resolve("smollm2-135m-instruct"), resolve_recipe("gptq-4bit"), CalibrationSpec(n=16), "cpu")
model, tokenizer = ckpt.load("cpu")       # compressed weights (or, for bnb-*, quantized at load time)
ckpt.report                               # what was done and measured, for artifact provenance
```

- baseline (`base`): nothing is written; `path` is None and `load()` loads the model itself.
- llmcompressor / magnitude: the checkpoint is written to a temporary directory under the cache, reloaded with
  `AutoModelForCausalLM` and verified (zeros per layer, N:M pattern, bits/group in config.json, distinct values per
  quantization group, a forward pass), then committed (a completion marker written last, then one rename). A later
  call with the same key reuses it; a concurrent call (another process) waits for it and reuses it
  (`cpbench.base.locks.staged_dir`). The key is known without compressing (`checkpoint_key`: no weights, no tokenizer).
- bitsandbytes (`bnb-*`): load-time quantization; nothing is written; needs CUDA.

A checkpoint whose verification fails is not cached: `compress` raises CpbenchError naming the failed check.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cpbench.weights.compress.calibration import CalibrationSet, CalibrationSpec, sample
from cpbench.base.errors import CpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.weights.models import ModelEntry
    from cpbench.specs.recipes import Recipe

log = logging.getLogger(__name__)

__all__ = [
    "CalibrationSet", "CalibrationSpec", "CompressedCheckpoint", "checkpoint_key", "compress", "sample", "stage_line",
    "versions",
]


@dataclass
class CompressedCheckpoint:
    """Result of `compress`. `path` is None for the baseline and for load-time (bitsandbytes) recipes."""

    entry: ModelEntry
    recipe: Recipe
    path: Path | None
    report: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def load(self, device: str = "auto", dtype: Any = None):
        """(model, tokenizer) for scoring: the compressed checkpoint, or the base model (+ load-time recipe)."""
        from cpbench.base import memory
        from cpbench.weights import models

        with memory.stage("scoring load", recipe=self.recipe.name):  # timed apart from compression (issue 20)
            if self.path is None:
                return models.load(self.entry, device, dtype, recipe=self.recipe)
            return models.load(self.path, device, dtype, model_args=self.entry.model_args)


def versions() -> dict[str, str]:
    """Library versions for provenance: the artifact's `versions`, with "not-installed" for a missing package."""
    from cpbench.base.versions import versions as artifact_versions

    return {k: v or "not-installed" for k, v in artifact_versions().items()}


def _base_report(entry: ModelEntry, recipe: Recipe, device: str) -> dict[str, Any]:
    return {
        "schema": "cpbench.compression/1",
        "recipe": {"name": recipe.name, "spec": recipe.spec(), "description": recipe.description},
        "model": entry.provenance(),
        "device": device,
        "versions": versions(),
        "notes": list(entry.source_notes()),
    }


def compress(
    entry: ModelEntry | str,
    recipe: Recipe | str,
    calibration: CalibrationSpec | None = None,
    device: str = "auto",
    *,
    force: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> CompressedCheckpoint:
    """Compress `entry` with `recipe` (cached, content-addressed). `calibration` defaults to CalibrationSpec()
    (builtin text, 128 x 512, seed 0); it is ignored by recipes that need no data (RTN weight-only, magnitude, FP8
    dynamic), so their cache key does not depend on it. `force` recompresses even when a cached copy exists.
    Concurrent calls for one key (other processes, other hosts on a shared cache) compress once: the others wait
    (`on_wait` gets one line saying for whom) and reuse the checkpoint."""
    from cpbench.weights import models
    from cpbench.weights.compress import cache
    from cpbench.specs.recipes import resolve as resolve_recipe

    entry = models.resolve(entry)
    recipe = resolve_recipe(recipe)
    if recipe.is_baseline:
        report = _base_report(entry, recipe, device)
        report["kind"] = "baseline"
        return CompressedCheckpoint(entry, recipe, None, report)
    dev = models.resolve_device(device)
    if recipe.load_time:
        if not dev.startswith("cuda"):
            raise CpbenchError(
                f"recipe {recipe.name!r} needs a CUDA GPU: {recipe.requires_reason or 'load-time bitsandbytes'}"
            )
        report = _base_report(entry, recipe, dev)
        report["kind"] = "load-time"
        return CompressedCheckpoint(entry, recipe, None, report)
    if recipe.requires == "cuda" and not dev.startswith("cuda"):
        raise CpbenchError(f"recipe {recipe.name!r} needs a CUDA GPU: {recipe.requires_reason}")

    threads = models.current_threads()
    key, calib_spec, compute_dtype = _checkpoint_key(entry, recipe, calibration, dev)
    hit = None if force else cache.lookup(key)
    if hit is not None:
        return CompressedCheckpoint(entry, recipe, hit, cache.read_report(hit), cached=True)

    # One process builds a key; another one asking for it meanwhile waits here, then reuses the result.
    with cache.building(key, rebuild=force, on_wait=on_wait) as st:
        if st.done:
            return CompressedCheckpoint(entry, recipe, st.final, cache.read_report(st.final), cached=True)
        try:
            path = _build(entry, recipe, key, calib_spec, dev, threads, compute_dtype, st)
        except OSError as exc:  # full disk, read-only or foreign cache: one line, the staging folder is removed
            from cpbench.base.atomic import os_error_to_cpbench

            err = os_error_to_cpbench(exc, st.tmp or st.final, f"the {recipe.name} checkpoint")
            if err is None:
                raise
            raise err from None
    log.info("compressed %s with %s: %s", entry.key, recipe.name, path)
    return CompressedCheckpoint(entry, recipe, path, cache.read_report(path))


def _build(entry: ModelEntry, recipe: Recipe, key: Any, calib_spec: CalibrationSpec | None, dev: str, threads: int,
           compute_dtype: str, st: Any) -> Path:  # fmt: skip
    """Compress into the staging folder `st.tmp`, verify, write the report, commit (marker last)."""
    from cpbench.base import memory
    from cpbench.weights import models
    from cpbench.weights.compress import cache
    from cpbench.weights.gguf import converted_dir

    tmp = st.tmp
    n_stages = len(memory.stages())
    calib: CalibrationSet | None = None
    if models.gguf_source(entry) is not None:
        converted_dir(entry)  # minutes on a first run: its own "convert" stage, not part of the load
    if calib_spec is not None:  # drawn only now that it is needed (tokenizer)
        with memory.stage("calibration", recipe=recipe.name):
            calib = sample(calib_spec, models.load_tokenizer(entry))
    report = _base_report(entry, recipe, dev)
    report["kind"] = recipe.kind
    report["cache_key"] = key.digest
    report["threads"] = threads
    report["compute_dtype"] = compute_dtype
    report["calibration"] = calib.report() if calib is not None else None
    t0 = time.perf_counter()
    base_zeros, per_layer = _run_recipe(entry, recipe, calib, dev, tmp)
    memory.release()  # the compressed model is gone, its pages handed back, before the checkpoint is verified
    t1 = time.perf_counter()
    from cpbench.weights.compress.verify import require_ok, verify_checkpoint

    with memory.stage("verify", recipe=recipe.name):
        verification = verify_checkpoint(tmp, recipe, base_zeros=base_zeros)
        memory.release()  # the verification reload's pages too, before the scoring load
    t2 = time.perf_counter()
    report["verification"] = verification
    report["checkpoint_bytes"] = verification["checkpoint_bytes"]
    stages = memory.since(n_stages)
    secs = {s["name"]: s["seconds"] for s in stages}
    report["wall_seconds"] = {"compress": round(t1 - t0, 2), "verify": round(t2 - t1, 2),
                              **{f"stage_{k}": v for k, v in secs.items()}}  # fmt: skip
    report["stages"] = stages  # wall seconds and peak RSS of each stage (cpbench.base.memory)
    if per_layer:
        report["per_layer_seconds"] = per_layer
    require_ok(verification, recipe)
    cache.write_report(tmp, report)
    return st.commit({"cache_key": key.digest})  # the completion marker is the last file written


def stage_line(report: dict[str, Any] | None) -> str:
    """One line naming the time of each stage that built a checkpoint, from its report: `convert 75.0 s, load
    78.1 s, compress 2008.9 s (28 layers, 71.7 s/layer), save 20.3 s, verify 9.8 s; peak RSS 8.90 GiB` ("" for a
    report without stages: cached from an older cpbench, baseline, load-time recipes). `memory.timing_line` formats
    it, as it does the scoring load's line."""
    if not report or not report.get("stages"):
        return ""
    from cpbench.base import memory

    return memory.timing_line(report["stages"])


def _checkpoint_key(
    entry: ModelEntry, recipe: Recipe, calibration: CalibrationSpec | None, device: str
) -> tuple[Any, CalibrationSpec | None, str]:
    """(cache key, calibration spec or None when the recipe uses no data, compute dtype) of the checkpoint `recipe`
    writes for `entry` on `device`. Loads no weights and, except for hub models, no tokenizer: a run decides what it
    can reuse before converting or compressing anything."""
    from cpbench.weights import models
    from cpbench.weights.compress import cache
    from cpbench.weights.compress.llmc import needs_calibration

    if entry.source == "hub":
        # For a hub model loading the tokenizer fetches config.json, so the key below pins the commit `revision`
        # resolves to (not "main") on the very first run too, and gated/offline errors come early.
        models.load_tokenizer(entry)
    spec = (calibration or CalibrationSpec()) if needs_calibration(recipe) else None
    compute_dtype = str(models.resolve_dtype(None, device, entry)).removeprefix("torch.")
    return cache.cache_key(entry, recipe, spec, compute_dtype), spec, compute_dtype


def checkpoint_key(
    entry: ModelEntry | str, recipe: Recipe | str, calibration: CalibrationSpec | None = None, device: str = "cpu"
) -> Any:
    """The cache key (`cpbench.weights.compress.cache.CacheKey`) of the checkpoint `compress` writes for these inputs on a
    device of type `device` (cpu / cuda: the compute dtype differs), without compressing anything; None for the
    baseline and load-time recipes, which write no checkpoint. Cheap: no weights, no calibration sample."""
    from cpbench.weights import models
    from cpbench.specs.recipes import resolve as resolve_recipe

    entry, recipe = models.resolve(entry), resolve_recipe(recipe)
    if recipe.is_baseline or recipe.load_time:
        return None
    dev = "cuda" if str(device).startswith("cuda") else "cpu"  # a device type: no GPU needed to name GPU weights
    return _checkpoint_key(entry, recipe, calibration, dev)[0]


def _run_recipe(
    entry: ModelEntry, recipe: Recipe, calib: CalibrationSet | None, device: str, out: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Load the base model, apply the recipe, save to `out` (model + tokenizer); return (zeros per Linear before,
    seconds per decoder layer when calibrated). Stages `load`, `compress`, `save` are measured (cpbench.base.memory).
    Nothing of the model is alive when it returns (a test holds it to that: tests/test_memory_stages.py)."""
    from cpbench.base import memory
    from cpbench.weights import models

    # The model is loaded on the CPU: llm-compressor's sequential pipeline onloads one layer at a time to the GPU
    # when there is one, so models larger than GPU memory compress too. Math in fp32 for CPU runs, in the weights'
    # own dtype (bf16) for GPU runs, as llm-compressor's examples do.
    with memory.stage("load", recipe=recipe.name):
        model, tokenizer = models.load(entry, "cpu", models.resolve_dtype(None, device, entry))
        base_zeros = zeros_per_linear(model)
    per_layer: dict[str, Any] = {}
    if recipe.kind == "magnitude":
        from cpbench.weights.compress.magnitude import magnitude_prune

        with memory.stage("compress", recipe=recipe.name):
            magnitude_prune(model, sparsity=recipe.sparsity, nm=recipe.mask_nm, ignore=recipe.ignore)
        with memory.stage("save", recipe=recipe.name):
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
    elif recipe.kind == "llmcompressor":
        from cpbench.weights.compress.llmc import run_oneshot

        per_layer = run_oneshot(model, tokenizer, recipe, calib, out)
    else:  # pragma: no cover - guarded by the caller
        raise CpbenchError(f"recipe kind {recipe.kind!r} writes no checkpoint")
    del model
    return base_zeros, per_layer


def zeros_per_linear(model: Any, rows: int = 4096) -> dict[str, float]:
    """Fraction of exactly-zero weights of every Linear, counted `rows` rows at a time: no full-size temporary (a
    151936 x 1536 lm_head in fp32 would otherwise add ~1.2 GB of bool + float temporaries at the load's peak)."""
    import torch

    out: dict[str, float] = {}
    with torch.no_grad():
        for n, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                w = m.weight
                zeros = sum(int(torch.count_nonzero(w[i : i + rows] == 0)) for i in range(0, w.shape[0], rows))
                out[n] = zeros / max(1, w.numel())
    return out
