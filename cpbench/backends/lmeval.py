"""lm-evaluation-harness outputs that pair: names and settings for imported samples, and inputs from directories.

`cpbench.backends.pickles.import_lm_eval_samples` turns one `samples_<task>_<date>.jsonl` into a LogitsArtifact. On its own
it cannot know which model produced the file, so two runs (base and compressed model) of the same items would both
be "unknown". This module adds what makes them pair:

- `read_run(samples)`: lm-eval writes `results_<date>.json` beside the samples of the same run (same `<date>`). From it
  we read the model (`config.model_args`: `pretrained=...`, or `model_name`), the task's n-shot, limit, dtype,
  revision and lm-eval version. Bounded: a results file over `MAX_RESULTS_BYTES` or not a JSON object is refused with
  one line.
- `import_named(path, model=, recipe=)`: the artifact with its run key's model / recipe / shots set (explicit
  `--model` / `--recipe` win over the results file; recipe defaults to `base`). The run key's `data` names the items
  (doc ids and gold labels), not the file, so the base run and the compressed run of the same items share it and pair
  by `items_hash` in `check`, `leaderboard` and decoupling.
- `expand(paths)`: a directory stands for the inputs under it (lm-eval samples, cpbench artifacts, pickles).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cpbench.base import jsonsafe
from cpbench.base.errors import CpbenchError

MAX_RESULTS_BYTES = 64 * 2**20  # a results_*.json is a few hundred kB even for hundreds of tasks
_SAMPLES = re.compile(r"^samples_(?P<task>.+?)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)$")
INPUT_SUFFIXES = (".parquet", ".jsonl", ".pkl", ".pickle")


@dataclass(frozen=True)
class LmEvalRun:
    """What lm-eval's results file says about the run that wrote a samples file."""

    results_file: str | None = None
    task: str | None = None
    model: str | None = None  # `pretrained` (or `model`) from model_args, else model_name
    model_args: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None  # lm-eval's --model (hf, vllm, ...)
    n_shot: int | None = None
    limit: float | None = None
    dtype: str | None = None
    revision: str | None = None
    lm_eval_version: str | None = None
    git_hash: str | None = None
    date: str | None = None

    def provenance(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}


def parse_model_args(raw: Any) -> dict[str, Any]:
    """`pretrained=org/name,dtype=bfloat16` (lm-eval's --model_args string) or a dict -> dict."""
    if isinstance(raw, dict):
        return {str(k): v for k, v in raw.items()}
    out: dict[str, Any] = {}
    for part in str(raw or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def results_file_for(samples: Path) -> Path | None:
    """lm-eval's `results_<date>.json` of the run that wrote `samples` (same folder, same date); the only results
    file of the folder when the date does not match one; None when there is none."""
    m = _SAMPLES.match(samples.stem)
    if m:
        same = samples.with_name(f"results_{m['date']}.json")
        if same.is_file():
            return same
    found = sorted(samples.parent.glob("results_*.json"))
    return found[0] if len(found) == 1 else None


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        if not path.is_file():  # a FIFO or a device: reading it would block or never end
            raise CpbenchError(f"{path}: not a regular file (a FIFO, a device or a directory), not an lm-eval "
                               f"results file")  # fmt: skip
        size = path.stat().st_size
        if size > MAX_RESULTS_BYTES:
            raise CpbenchError(f"{path}: {size} bytes, larger than an lm-eval results file can be "
                               f"({MAX_RESULTS_BYTES} bytes)")  # fmt: skip
        data = jsonsafe.loads(path.read_bytes(), str(path))  # depth-capped, strict UTF-8, no NaN or huge integers
    except OSError as exc:
        raise CpbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise CpbenchError(f"{path}: not an lm-eval results file (top level is not an object)")
    return data


def _int(x: Any) -> int | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 2**53 and float(x).is_integer()
    return int(x) if ok else None


def read_run(samples: str | Path, task: str | None = None) -> LmEvalRun:
    """The lm-eval run behind a samples file (empty LmEvalRun when no results file is beside it)."""
    p = Path(samples)
    m = _SAMPLES.match(p.stem)
    task = task or (m["task"] if m else None)
    rf = results_file_for(p)
    if rf is None:
        return LmEvalRun(task=task)
    data = _read_json_object(rf)
    cfg = data.get("config") if isinstance(data.get("config"), dict) else {}
    args = parse_model_args(cfg.get("model_args"))
    model = args.get("pretrained") or args.get("model") or data.get("model_name") or None
    n_shot = None
    for where in (data.get("n-shot"), (data.get("configs") or {}).get(task or "")):
        if isinstance(where, dict):
            n_shot = _int(where.get(task) if task in where else where.get("num_fewshot"))
            if n_shot is not None:
                break
    limit = cfg.get("limit")
    return LmEvalRun(
        results_file=str(rf), task=task, model=str(model) if model else None, model_args=args,
        backend=str(cfg.get("model")) if cfg.get("model") else None, n_shot=n_shot,
        limit=float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None,
        dtype=str(args.get("dtype") or cfg.get("model_dtype") or "") or None,
        revision=str(args.get("revision") or cfg.get("model_revision") or cfg.get("model_sha") or "") or None,
        lm_eval_version=str(data.get("lm_eval_version") or "") or None,
        git_hash=str(data.get("git_hash") or "") or None, date=m["date"] if m else None,
    )  # fmt: skip


def items_tag(ids: list[str], labels: Any, task: str) -> str:
    """The run key's `data` for imported items: names the items (task, ids, gold labels), not the file, so the
    same items scored by two models get the same tag."""
    material = json.dumps([task, list(ids), [int(v) for v in labels]], separators=(",", ":"))
    return "items:" + hashlib.sha256(material.encode()).hexdigest()[:12]


def _model_name(model: str) -> str:
    """A local path names the model by its folder; an HF id stays as it is (the results tree makes it safe)."""
    if model.startswith(("/", ".", "~")) or Path(model).is_dir():
        return Path(model).expanduser().name or model
    return model


def import_named(
    path: str | Path,
    labels: str | Path | None = None,
    *,
    model: str | None = None,
    recipe: str | None = None,
) -> Any:
    """Any input `cpbench analyze` takes, with its run key's model and recipe set: explicit values first, then (lm-eval
    samples) the results file beside it, then what the input itself carries."""
    from cpbench.backends.pickles import import_lm_eval_samples, load_any

    p = Path(path)
    notes: list[str] = []
    if p.suffix.lower() == ".jsonl":
        run = read_run(p)
        art = import_lm_eval_samples(p, task=run.task)
        key = dict(art.provenance.get("run_key") or {})
        key["model"] = model or (_model_name(run.model) if run.model else key.get("model", "unknown"))
        key["data"] = items_tag(art.ids, art.labels, str(key.get("task")))
        if run.n_shot is not None:
            key["shots"] = run.n_shot
        art.provenance["lm_eval"] = run.provenance()
        if run.results_file:
            notes.append(f"model and settings read from {Path(run.results_file).name}")
        else:
            notes.append("no lm-eval results_*.json beside the samples: model and n-shot not known from the run")
        if run.model and model is None:
            art.provenance["model_id"] = run.model
    else:
        art = load_any(p, labels)
        key = dict(art.provenance.get("run_key") or {})
        if model is not None:
            key["model"] = model
    if recipe is not None:
        key["recipe"] = recipe
    if model is not None or recipe is not None:
        notes.append("run key named on the command line: " + ", ".join(
            f"{k} {v}" for k, v in (("model", model), ("recipe", recipe)) if v is not None))  # fmt: skip
    if key:
        art.provenance["run_key"] = key
    art.provenance["notes"] = list(art.provenance.get("notes") or []) + notes
    return art


def expand(paths: list[Path]) -> list[Path]:
    """Files stand for themselves; a directory for every analysable file under it (lm-eval `samples_*.jsonl`, cpbench
    artifacts `*.parquet`, pickles), sorted. A directory with none of them is an error."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir() or p.suffix.lower() in INPUT_SUFFIXES:  # x.parquet/ is a bad file, not a folder of inputs
            out.append(p)
            continue
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in INPUT_SUFFIXES
                       and (f.suffix.lower() != ".jsonl" or f.name.startswith("samples_")))  # fmt: skip
        if not found:
            raise CpbenchError(f"{p}: no inputs in this directory (lm-eval samples_*.jsonl, .parquet artifacts, .pkl)")
        out.extend(found)
    return out


def store_artifact(artifact: Any, results: str | Path) -> Any:
    """Save an imported artifact in a results tree (`<model>/<recipe>/artifacts/<ScoreKey slug>.parquet`, where
    `cpbench run` keeps its own) and return it reloaded, so that the record names it and `cpbench check` /
    `leaderboard` find the logits for item-level intervals. An artifact already stored there is left as it is."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.conformal.protocols import score_key_of

    key = score_key_of(artifact)
    path = key.cell_dir(results) / "artifacts" / f"{key.slug()}.parquet"
    if artifact.source and Path(artifact.source).resolve() == path.resolve():
        return artifact
    artifact.save(path)
    return LogitsArtifact.load(path)
