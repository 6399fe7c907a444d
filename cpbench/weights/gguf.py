"""GGUF -> fp32 safetensors, once per file, tensor by tensor (issue 20).

transformers dequantizes a GGUF at every load, and a model loaded from GGUF cannot be saved after compression, so a
GGUF entry (PyPI package or local .gguf) is converted once into a cached safetensors directory and loaded from there
(`converted_dir`). The conversion streams: each GGUF tensor is dequantized, processed and renamed exactly as
`transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint(return_tensors=True)` does, then buffered and written in
shards of `SHARD_BYTES`, so the peak is about one shard plus one tensor, not the whole fp32 state dict plus the model
that `from_pretrained(gguf_file=...)` builds from it (6.66 GiB against 2.44 GiB streamed, for 5.16 GiB of fp32
weights: docs/models-and-recipes.md).

fp32 keeps the dequantized 4-bit values exact (scale * q + min is exact in fp32, not in bf16).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpbench.base.errors import CpbenchError
from cpbench.base.paths import cache_dir
from cpbench.base.stamps import sha256_file
from cpbench.weights.identity import pypi_revision

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from cpbench.weights.models import ModelEntry, PypiGGUF

# bump when the GGUF -> safetensors conversion changes (invalidates converted caches). Still "1": the streamed
# conversion writes the same tensors, bit for bit, as the former whole-model `from_pretrained` + `save_pretrained`
# (tests/test_gguf_convert.py checks both PyPI models against `from_pretrained(gguf_file=...)`).
GGUF_CONVERSION_VERSION = "1"
# One safetensors shard's bytes: the conversion's peak is about this plus the largest tensor's temporaries.
SHARD_BYTES = 1 << 30


def gguf_path(pypi: PypiGGUF) -> Path:
    """Locate (or assemble, for chunked packages) the GGUF file a PyPI package ships."""
    spec = importlib.util.find_spec(pypi.module)
    if spec is None or not spec.submodule_search_locations:
        raise CpbenchError(f"PyPI model package {pypi.package!r} is not installed: {pypi.install}")
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    if pypi.assemble:
        target = cache_dir() / "gguf" / pypi.file
        try:
            module = importlib.import_module(pypi.module)
            return Path(module.assemble(output_path=target))
        except (ImportError, FileNotFoundError, ValueError) as exc:
            raise CpbenchError(f"{pypi.package}: cannot assemble {pypi.file} ({exc}); reinstall: {pypi.install}")
    for candidate in (pkg_dir / pypi.file, *pkg_dir.rglob(pypi.file)):
        if candidate.is_file():
            return candidate
    raise CpbenchError(f"{pypi.package} is installed but {pypi.file} is not in {pkg_dir}; reinstall: {pypi.install}")


def gguf_source(entry: ModelEntry) -> Path | None:
    """The GGUF file an entry's weights come from (PyPI package or a local .gguf), or None."""
    if entry.source == "pypi-gguf" and entry.pypi is not None:
        return gguf_path(entry.pypi)
    if entry.source == "local" and entry.gguf_file:
        return Path(entry.hf_id) / entry.gguf_file
    return None


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def gguf_digest(path: Path) -> str:
    """sha256 of a GGUF file, hashed once per process (per size and mtime)."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def converted_dir(entry: ModelEntry) -> Path:
    """The cached safetensors directory of a GGUF entry (PyPI or local .gguf), converted on first use. Keyed by the
    PyPI release or the local file's digest; one process converts, concurrent ones wait and reuse
    (`cpbench.base.locks.staged_dir`)."""
    src, out = _conversion_target(entry)
    if _converted(out):
        return out
    from cpbench.base.locks import staged_dir

    with staged_dir(out, what=f"converting {src.name}") as st:
        if not st.done:
            from cpbench.base import memory, progress

            # Minutes on a first run, once: report it (transformers' own bars are kept off the console by the CLI),
            # as its own stage (wall time, peak RSS), whichever step needed the weights first (issue 20).
            with memory.stage("convert", model=entry.key), \
                    progress.current().task(f"convert {src.name} (GGUF) to safetensors, once") as task:
                task.note(f"into {out}")
                _convert_gguf(entry, src, st.tmp)
            st.commit()
    return out


def _conversion_target(entry: ModelEntry) -> tuple[Path, Path]:
    """(GGUF file, the folder its conversion is cached in)."""
    src = gguf_source(entry)
    if src is None:
        raise CpbenchError(f"model {entry.name!r} is not a GGUF model")
    if entry.source == "pypi-gguf" and entry.pypi is not None:
        name = f"{pypi_revision(entry.pypi)}-{src.stat().st_size}-v{GGUF_CONVERSION_VERSION}"
    else:
        name = f"local-{src.stem}-{gguf_digest(src)[:16]}-v{GGUF_CONVERSION_VERSION}"
    return src, cache_dir() / "models" / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def is_converted(entry: ModelEntry) -> bool:
    """Whether a GGUF entry's converted copy is already cached (False for entries that are not GGUF)."""
    return gguf_source(entry) is not None and _converted(_conversion_target(entry)[1])


def _converted(out: Path) -> bool:
    from cpbench.base.locks import MARKER, is_complete

    # before the marker existed, conversions were renamed into place complete, with cpbench-source.json last
    return is_complete(out) or ((out / "cpbench-source.json").is_file() and not (out / MARKER).exists())


def _convert_gguf(entry: ModelEntry, src: Path, tmp: Path) -> None:
    """Convert `src` into `tmp`: fp32 safetensors shards, config, generation config, tokenizer, cpbench-source.json."""
    import transformers
    from transformers import AutoTokenizer

    from cpbench.base.memory import release

    t0 = time.perf_counter()
    if _loads_packed(_architecture(src)):
        _save_whole(src, tmp)
    else:
        write_safetensors(src, tmp)
    AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name).save_pretrained(tmp)
    release()  # the dequantized tensors' pages back to the OS before anything else loads
    meta: dict[str, Any] = {
        "file": src.name, "gguf_sha256": gguf_digest(src), "saved_dtype": "float32",
        "transformers": transformers.__version__, "conversion_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    if entry.pypi is not None and entry.source == "pypi-gguf":
        meta.update(package=entry.pypi.package, revision=pypi_revision(entry.pypi), gguf_quant=entry.pypi.quant,
                    hub_id=entry.hf_id)  # fmt: skip
    else:
        meta.update(path=str(src))
    (tmp / "cpbench-source.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def write_safetensors(src: Path, out: Path, *, shard_bytes: int = SHARD_BYTES) -> dict[str, str]:
    """Write the GGUF file `src` as an fp32 transformers checkpoint into `out` (config.json, generation_config.json,
    model.safetensors or model-0000i-of-0000n.safetensors + model.safetensors.index.json), one tensor at a time.
    Returns the weight map (parameter name -> shard file)."""
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
        read_field,
    )

    reader = GGUFReader(src)  # memory-mapped: a tensor's quantized blocks are read when it is dequantized
    architecture = read_field(reader, "general.architecture")[0]
    if _loads_packed(architecture):
        raise CpbenchError(f"{src.name}: GGUF architecture {architecture!r} is loaded by transformers' packed GGUF "
                           f"loader (its own weight conversions), which this streamed conversion does not replay")
    parsed = load_gguf_checkpoint(str(src), return_tensors=False)  # metadata only: config + tokenizer fields
    parsed["tensors"] = {}
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    with torch.device("meta"):  # parameter names and shapes only, no memory
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    name_map = get_gguf_hf_weights_map(skeleton, processor)
    # what save_pretrained would leave out: tied copies (the GGUF of a tied model has no output.weight anyway)
    tied = set(getattr(skeleton, "all_tied_weights_keys", None) or {}) if config.tie_word_embeddings else set()
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}

    out.mkdir(parents=True, exist_ok=True)
    shards = _ShardWriter(out, shard_bytes)
    for t in reader.tensors:
        result = processor.process(weights=dequantize(t.data, t.tensor_type), name=t.name,
                                   tensor_key_mapping=name_map, parsed_parameters=parsed)  # fmt: skip
        if result.name not in name_map:  # not a model tensor (e.g. rope_freqs), or a MoE piece the processor kept
            continue
        hf_name = name_map[result.name]
        if hf_name not in tied:
            shards.add(hf_name, _fp32_tensor(np, torch, result.weights), shapes.get(hf_name))
        del result
    # MoE processors (qwen2moe, gpt-oss, minimax-m2) assemble experts into parsed["tensors"] themselves: those
    # accumulate until the last tensor, then are written here (their peak is not bounded by one shard).
    for hf_name in list(parsed["tensors"]):
        shards.add(hf_name, _fp32_tensor(np, torch, parsed["tensors"].pop(hf_name)), shapes.get(hf_name))
    weight_map = shards.close()

    _save_configs(skeleton, out)
    return weight_map


def _architecture(src: Path) -> str:
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import read_field

    return read_field(GGUFReader(src), "general.architecture")[0]


def _save_whole(src: Path, out: Path) -> None:
    """The whole-model conversion (peak about 1.3 x the fp32 weights, above the streamed one), for architectures whose GGUF weights
    transformers maps with its packed loader's own conversions."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # save_pretrained refuses a GGUF-loaded model while its quantizer config is attached
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out, safe_serialization=True)


def _loads_packed(architecture: str) -> bool:
    """Whether transformers loads this GGUF architecture with its packed loader (`integrations.gguf`), whose weight
    conversions differ from the legacy per-tensor processors replayed here."""
    try:
        from transformers.integrations.gguf.utils import is_gguf_arch_supported
    except ImportError:  # older transformers: the legacy loader handles every architecture
        return False
    return is_gguf_arch_supported(architecture)


def _fp32_tensor(np, torch, weights) -> torch.Tensor:
    """An fp32 torch tensor owning its memory (never a view of the memory-mapped file)."""
    if isinstance(weights, torch.Tensor):
        return weights.to(torch.float32).contiguous()
    arr = np.asarray(weights)
    if arr.dtype != np.float32 or not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, dtype=np.float32, order="C")
    return torch.from_numpy(arr)


def _save_configs(skeleton, out: Path) -> None:
    """config.json and generation_config.json as `save_pretrained` writes them for an fp32 model."""
    skeleton.config.dtype = "float32"
    skeleton.config.architectures = [type(skeleton).__name__]
    skeleton.config.save_pretrained(out)
    if skeleton.can_generate() and skeleton.generation_config is not None:
        skeleton.generation_config.save_pretrained(out)


class _ShardWriter:
    """Buffers tensors and writes a safetensors shard before the buffer would pass `limit` bytes; `close` names the
    shards as transformers does (one: model.safetensors; more: model-0000i-of-0000n.safetensors + index)."""

    def __init__(self, out: Path, limit: int):
        self.out, self.limit = out, limit
        self.buffer: dict[str, Any] = {}
        self.buffered = 0
        self.files: list[tuple[Path, list[str]]] = []
        self.total_size = 0
        self.total_parameters = 0

    def add(self, name: str, tensor, shape: tuple[int, ...] | None) -> None:
        if shape is not None and tuple(tensor.shape) != shape:
            raise CpbenchError(f"GGUF conversion: {name} has shape {tuple(tensor.shape)}, the model expects {shape}")
        if name in self.buffer or any(name in names for _, names in self.files):
            raise CpbenchError(f"GGUF conversion: {name} written twice")
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffered + size > self.limit:
            self.flush()
        self.buffer[name] = tensor
        self.buffered += size
        self.total_size += size
        self.total_parameters += tensor.numel()

    def flush(self) -> None:
        from safetensors.torch import save_file

        path = self.out / f"shard-{len(self.files):05d}.safetensors.part"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.buffer)))
        self.buffer, self.buffered = {}, 0

    def close(self) -> dict[str, str]:
        if self.buffer or not self.files:
            self.flush()
        n = len(self.files)
        weight_map: dict[str, str] = {}
        for i, (path, names) in enumerate(self.files, 1):
            final = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.out / final)
            weight_map.update(dict.fromkeys(names, final))
        if n > 1:
            index = {"metadata": {"total_parameters": self.total_parameters, "total_size": self.total_size},
                     "weight_map": dict(sorted(weight_map.items()))}  # fmt: skip
            (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        return weight_map
