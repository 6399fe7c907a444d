"""Recipes -> llm-compressor modifiers, run through `oneshot`, saved compressed (compressed-tensors format).

Workarounds for llm-compressor 0.14.0.1 (measured, see docs/models-and-recipes.md):
- The pruning modifiers do not honour a plain `lm_head` in `ignore` (they prune it); they get `re:.*lm_head$`.
  The quantization modifiers get the plain names.
- Pruning followed by quantization uses QuantizationModifier (round to nearest): GPTQ after a 2:4 mask refills the
  pruned zeros. `Recipe` validation enforces `quantize: rtn` after pruning.
- AWQ on a machine without an accelerator: AWQ pins its cached activations (`IntermediatesCache.pin_memory`), which
  raises "Cannot access accelerator device when none is available". Pinning only speeds up host-to-device copies,
  so `cpu_pin_memory_guard` turns it into a no-op, only while AWQ runs and only when no accelerator is available.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpbench.base.errors import CpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.weights.compress.calibration import CalibrationSet
    from cpbench.specs.recipes import Recipe


def quantization_scheme(recipe: Recipe) -> dict[str, Any]:
    """The compressed-tensors scheme (weights / input_activations QuantizationArgs) the recipe asks for: a preset
    when `scheme` is named (with group_size/symmetric overrides), otherwise built from bits/group_size/act_bits."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    if recipe.scheme is not None:
        if recipe.scheme not in PRESET_SCHEMES:
            raise CpbenchError(f"recipe {recipe.name!r}: compressed-tensors has no preset scheme {recipe.scheme!r}")
        scheme = {k: copy.deepcopy(v) for k, v in PRESET_SCHEMES[recipe.scheme].items()}
        w = scheme.get("weights")
        if w is not None:
            updates: dict[str, Any] = {}
            if recipe.bits is not None and recipe.bits != w.num_bits:
                raise CpbenchError(f"recipe {recipe.name!r}: bits={recipe.bits} contradicts scheme {recipe.scheme}")
            if recipe.group_size is not None and recipe.group_size != w.group_size:
                if w.strategy != "group":
                    raise CpbenchError(f"recipe {recipe.name!r}: scheme {recipe.scheme} is not group-wise; "
                                       f"group_size does not apply")  # fmt: skip
                updates["group_size"] = recipe.group_size
            if not recipe.symmetric:
                updates["symmetric"] = False
            if updates:
                scheme["weights"] = w.model_copy(update=updates)
        return scheme
    assert recipe.bits is not None
    weights = QuantizationArgs(
        num_bits=recipe.bits, type="int", symmetric=recipe.symmetric,
        strategy="group" if recipe.group_size else "channel", group_size=recipe.group_size,
    )  # fmt: skip
    scheme = {"weights": weights}
    if recipe.act_bits is not None:
        scheme["input_activations"] = QuantizationArgs(
            num_bits=recipe.act_bits, type="int", symmetric=True, strategy="token", dynamic=True
        )
    return scheme


def check_group_divisibility(model: Any, recipe: Recipe) -> None:
    """Fail before calibrating when a targeted Linear's input columns are not a multiple of the group size,
    naming the group sizes that would fit (e.g. SmolLM2-135M has 576 columns: g64 fits, g128 does not)."""
    from cpbench.weights.compress.magnitude import target_linears
    from cpbench.specs.recipes import group_size_hint

    if recipe.quantize is None:
        return
    w = quantization_scheme(recipe).get("weights")
    if w is None or w.strategy not in ("group", "tensor_group") or not w.group_size:
        return
    layers = target_linears(model, recipe.ignore)
    bad = {n: m.in_features for n, m in layers.items() if m.in_features % w.group_size}
    if not bad:
        return
    name, cols = next(iter(bad.items()))
    hint = group_size_hint(recipe.name, [m.in_features for m in layers.values()])
    raise CpbenchError(
        f"recipe {recipe.name!r} quantizes in groups of {w.group_size} but {len(bad)} layer(s) have input columns "
        f"not divisible by it (e.g. {name}: {cols}){hint}"
    )


def needs_calibration(recipe: Recipe) -> bool:
    """Whether the result depends on calibration data (and so the cache key must include it)."""
    if recipe.kind != "llmcompressor":
        return False
    if recipe.modifiers is not None:  # a recipe file: ask its modifiers
        from cpbench.specs.recipe_file import file_needs_calibration

        return file_needs_calibration(recipe.modifiers)
    if recipe.prune is not None or recipe.smoothquant is not None or recipe.quantize in ("gptq", "awq"):
        return True
    # RTN: data matters only for static activation ranges (e.g. NVFP4's global activation scale, static FP8)
    act = quantization_scheme(recipe).get("input_activations")
    return act is not None and act.dynamic is not True


def _prune_ignore(ignore: tuple[str, ...]) -> list[str]:
    # SparseGPT/Wanda match ignore against f"{layer_name}.{submodule}", which is "lm_head." for a targeted Linear
    # itself: a plain name never matches, and an anchored regex needs the optional trailing dot.
    return [p if p.startswith("re:") else rf"re:(.*\.)?{re.escape(p)}\.?$" for p in ignore]


def build_modifiers(recipe: Recipe) -> list[Any]:
    """The llm-compressor modifier list for a recipe, in application order."""
    from compressed_tensors.quantization import QuantizationScheme
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    mods: list[Any] = []
    if recipe.prune is not None:
        kw: dict[str, Any] = {"targets": ["Linear"], "ignore": _prune_ignore(recipe.ignore)}
        if recipe.mask is not None:
            kw["mask_structure"] = recipe.mask
            kw["sparsity"] = recipe.target_sparsity
        else:
            kw["sparsity"] = recipe.sparsity
        cls = {"sparsegpt": SparseGPTModifier, "wanda": WandaPruningModifier}[recipe.prune]
        mods.append(cls(**kw))
    if recipe.quantize is not None:
        scheme = QuantizationScheme(targets=["Linear"], **quantization_scheme(recipe))
        qkw: dict[str, Any] = {"config_groups": {"group_0": scheme}, "ignore": list(recipe.ignore)}
        if recipe.smoothquant is not None:
            mods.append(SmoothQuantModifier(smoothing_strength=recipe.smoothquant))
        if recipe.quantize == "awq":
            mods.append(AWQModifier())
            mods.append(QuantizationModifier(**qkw))
        elif recipe.quantize == "gptq":
            mods.append(GPTQModifier(**qkw))
        else:
            mods.append(QuantizationModifier(**qkw))
    return mods


@contextlib.contextmanager
def cpu_pin_memory_guard() -> Iterator[bool]:
    """Make llm-compressor's `IntermediatesCache.pin_memory` a no-op while no accelerator is available.
    Yields whether the patch is active. Restores the original method on exit."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield False
        return
    original = IntermediatesCache.pin_memory

    def _no_pin(self, batch_index, input_names=None):
        return None

    IntermediatesCache.pin_memory = _no_pin  # type: ignore[method-assign]
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


def run_oneshot(model: Any, tokenizer: Any, recipe: Recipe, calib: CalibrationSet | None, out: Path) -> dict[str, Any]:
    """Apply the recipe with `oneshot` and save the compressed checkpoint + tokenizer to `out`. Returns the seconds
    per decoder layer of the calibrated pipeline (`progress.per_layer_summary`; {} for data-free recipes). The
    `compress` and `save` stages are measured (`cpbench.base.memory`)."""
    from llmcompressor import oneshot

    from cpbench.base import memory, progress

    check_group_divisibility(model, recipe)
    # a --quant-file recipe is passed as written (YAML text, as oneshot(recipe=...) takes it)
    modifiers: Any = recipe.modifiers if recipe.modifiers is not None else build_modifiers(recipe)
    kwargs: dict[str, Any] = {"model": model, "recipe": modifiers, "processor": tokenizer}
    if calib is not None:
        n, seq_len = calib.input_ids.shape
        kwargs.update(dataset=calib.to_dataset(), num_calibration_samples=int(n), max_seq_length=int(seq_len),
                      shuffle_calibration_samples=False)  # fmt: skip
    else:
        kwargs["pipeline"] = "datafree"

    table = fx_patch_table()
    fx_before = set(table) if table is not None else set()
    guard = cpu_pin_memory_guard() if recipe.quantize == "awq" else contextlib.nullcontext()
    what = "layers" if calib is not None else "data-free"
    times: list[float] = []
    try:
        try:
            with memory.stage("compress", recipe=recipe.name) as st, guard, \
                    progress.current().task(f"[{recipe.name}] llm-compressor oneshot ({what})", unit="layer") as t:
                with progress.layer_progress(model, t, times) if calib is not None else contextlib.nullcontext():
                    oneshot(**kwargs)
                if times:
                    st.detail.update(layers=len(times), s_per_layer=round(sum(times) / len(times), 2))
        except CpbenchError:
            raise
        except Exception as exc:  # llm-compressor raises many kinds; keep the type name in the one-line message
            raise CpbenchError(f"llm-compressor failed on recipe {recipe.name!r}: {type(exc).__name__}: {exc}") from exc
        memory.release()  # the pipeline's calibration activations are garbage now: hand their pages back before saving
        with memory.stage("save", recipe=recipe.name):
            model.save_pretrained(out, save_compressed=True)
            tokenizer.save_pretrained(out)
    finally:
        release_session()
        forget_traced_globals(fx_before)
    return progress.per_layer_summary(times)


def fx_patch_table() -> dict | None:
    """torch.fx's module-level table of globals to patch while tracing (None when torch has none)."""
    try:
        from torch.fx import _symbolic_trace as fx_trace
    except ImportError:  # pragma: no cover - torch without fx
        return None
    table = getattr(fx_trace, "_wrapped_fns_to_patch", None)
    return table if isinstance(table, dict) else None


def forget_traced_globals(before: set) -> int:
    """Drop what torch.fx recorded while llm-compressor traced the model. The sequential pipeline traces the model
    into subgraphs whose generated code has the model as a global (`self`, the CausalLM or its inner decoder);
    torch.fx records those code objects' globals in `torch.fx._symbolic_trace._wrapped_fns_to_patch` and never
    removes them, so the compressed model stayed alive for the rest of the process, beside the verification reload
    and the scoring load (measured on SmolLM2-135M: +0.5 GB, the fp32 model, at both). Entries added since `before`
    (the table's keys before oneshot) whose globals are not an imported module's own namespace (generated code, not
    a `torch.fx.wrap` at import) are removed. Returns how many."""
    import sys

    table = fx_patch_table()
    if table is None:
        return 0
    modules = {id(vars(m)) for m in list(sys.modules.values()) if m is not None and hasattr(m, "__dict__")}
    doomed = [k for k, g in table.items() if k not in before and id(g) not in modules]
    for k in doomed:
        del table[k]
    return len(doomed)


def release_session() -> None:
    """Drop llm-compressor's global session, which keeps the compressed model alive after `oneshot`: otherwise the
    verification reload and the scoring load run beside it (measured on SmolLM2-135M RTN: the process held ~0.5 GB
    more, the model's fp32 size, until the session was reset)."""
    import gc

    from llmcompressor.core import active_session

    active_session().reset()
    gc.collect()
