"""Parsing and applying the `cpbench run` options people bring from lm-eval: `--model-args`, `--revision`,
`--dtype`, per-task `--data`, `--scores`, calibration options. Pure functions, no torch."""

from __future__ import annotations

import ast
import hashlib
import json
from typing import Any

from cpbench.base.errors import CpbenchError

DTYPES = ("auto", "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
SCORE_NAMES = ("lac", "aps", "raps", "aps_rand", "raps_rand")
# from_pretrained arguments cpbench sets itself: passing them through --model-args would contradict the run key
_RESERVED = {"dtype": "--dtype", "torch_dtype": "--dtype", "revision": "--revision", "device_map": "--device",
             "gguf_file": "--model", "quantization_config": "--quant",
             # remote code runs code from the model's repository: it takes its own flag and is recorded in provenance
             "trust_remote_code": "--trust-remote-code"}  # fmt: skip


def parse_dtype(value: str | None) -> str:
    v = (value or "auto").strip().lower()
    v = _DTYPE_ALIASES.get(v, v)
    if v not in DTYPES:
        raise CpbenchError(f"--dtype {value!r}: use one of {', '.join(DTYPES)}")
    return v


def _literal(text: str) -> Any:
    """'true' -> True, '3' -> 3, '0.5' -> 0.5, 'none' -> None, anything else stays a string (lm-eval's rules)."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return v if isinstance(v, (int, float)) else text


def parse_model_args(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """`key=value,key=value` -> dict for `from_pretrained` (attn_implementation=sdpa,low_cpu_mem_usage=true). A dict
    (the Python API) is checked by the same rules."""
    if not value:
        return {}
    if isinstance(value, dict):
        for k in value:
            if k in _RESERVED:
                raise CpbenchError(f"--model-args: set {k} with {_RESERVED[k]}, not --model-args")
        return dict(value)
    out: dict[str, Any] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise CpbenchError(f"--model-args: {part!r} is not key=value (e.g. attn_implementation=sdpa)")
        k, v = (s.strip() for s in part.split("=", 1))
        if not k.isidentifier():
            raise CpbenchError(f"--model-args: {k!r} is not a keyword argument name")
        if k in _RESERVED:
            raise CpbenchError(f"--model-args: set {k} with {_RESERVED[k]}, not --model-args")
        out[k] = _literal(v)
    return out


def model_args_tag(model_args: dict[str, Any]) -> str:
    """Short content tag of the model arguments (part of the model's results-tree name: runs never mix)."""
    blob = json.dumps(model_args, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def parse_task_data(value: str | None, tasks: list[str] | None = None) -> tuple[str | None, dict[str, str]]:
    """`--data samples` -> ('samples', {}); `--data drs=PATH,qa=samples` -> (None, {drs: PATH, qa: samples});
    a bare entry among task=... entries is the default for the other tasks."""
    if value is None:
        return None, {}
    if "=" not in value:
        return value, {}
    default: str | None = None
    per: dict[str, str] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if "=" not in part:
            if default is not None:
                raise CpbenchError(f"--data {value!r}: more than one default source ({default!r}, {part!r})")
            default = part
            continue
        task, src = (s.strip() for s in part.split("=", 1))
        if not task or not src:
            raise CpbenchError(f"--data: {part!r} is not task=SOURCE")
        if task in per:
            raise CpbenchError(f"--data: task {task!r} given twice")
        per[task] = src
    if tasks is not None:
        unknown = [t for t in per if t not in tasks]
        if unknown:
            from cpbench.base.config import did_you_mean

            t = unknown[0]
            raise CpbenchError(f"--data: task {t!r} is not run{did_you_mean(t, tasks) or ''} (tasks: {', '.join(tasks)})")
    return default, per


def parse_scores(value: list[str] | None) -> tuple[str, ...] | None:
    if not value:
        return None
    out = []
    for s in value:
        s = s.strip().lower()
        if s not in SCORE_NAMES:
            from cpbench.base.config import did_you_mean

            raise CpbenchError(f"--scores: unknown score {s!r}{did_you_mean(s, SCORE_NAMES) or ''} "
                               f"(use {', '.join(SCORE_NAMES)})")  # fmt: skip
        out.append(s)
    return tuple(dict.fromkeys(out))


def apply_model_options(entry: Any, revision: str | None, model_args: dict[str, Any],
                        trust_remote_code: bool = False) -> Any:
    """The model entry with `--revision`, `--model-args` and `--trust-remote-code` applied. The first two change
    what is scored, so both change the entry's name (and hence its results-tree directory and run keys): `name@rev`
    and `name+args-<tag>`. `--trust-remote-code` turns remote code on (never off: a registry entry that needs it
    keeps it); it is recorded in provenance."""
    updates: dict[str, Any] = {}
    name = entry.name
    if trust_remote_code and not entry.trust_remote_code:
        updates["trust_remote_code"] = True
    if revision:
        if entry.source != "hub":
            raise CpbenchError(f"--revision applies to hub models; {entry.name!r} comes from {entry.source} "
                               f"({entry.hf_id})")  # fmt: skip
        if revision != entry.revision:
            updates["revision"] = revision
            name = f"{name}@{revision}"
    if model_args:
        updates["model_args"] = dict(model_args)
        name = f"{name}+args-{model_args_tag(model_args)}"
    if name != entry.name:
        updates["name"] = name
    return entry.model_copy(update=updates) if updates else entry


def calibration_spec(base: Any, data: str | None, samples: int | None, seq_len: int | None) -> Any:
    """The suite's (or the default) CalibrationSpec with the command line's overrides."""
    from cpbench.weights.compress.calibration import CalibrationSpec

    spec = base if base is not None else CalibrationSpec()
    updates: dict[str, Any] = {}
    if data is not None:
        updates["source"] = data
    if samples is not None:
        if samples < 1:
            raise CpbenchError(f"--calibration-samples must be >= 1, got {samples}")
        updates["n"] = samples
    if seq_len is not None:
        if seq_len < 8:
            raise CpbenchError(f"--calibration-seq-len must be >= 8, got {seq_len}")
        updates["seq_len"] = seq_len
    return CalibrationSpec(**{**spec.model_dump(), **updates}) if updates else spec
