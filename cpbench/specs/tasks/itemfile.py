"""Read and write item files (JSON, JSONL, Parquet) in the item schema, validating every item at load."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cpbench.base.atomic import atomic_path
from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks.schema import LETTERS, Item, explain_validation_error

ITEM_KEYS = ("id", "source", "context", "question", "choices", "answer", "meta")
ITEM_SUFFIXES = (".json", ".jsonl", ".parquet")
# Caps checked before anything is read or scored (one line, exit 2, instead of a hang or a 48 GB allocation):
# an item file is a regular file of at most MAX_ITEM_FILE_BYTES, and one item's text (context, question and
# options) is at most MAX_ITEM_CHARS characters. The longest benchmark items (HaluEval summarization documents) are
# under 20,000 characters; prompts must in any case fit the model's context (cpbench.run.preflight.check_context).
MAX_ITEM_FILE_BYTES = 1 << 30
MAX_ITEM_CHARS = 200_000


def check_item_path(path: Path, what: str | None = None) -> None:
    """Refuse, with one line, what is not an item file: missing, a directory, a FIFO or a device (reading or hashing
    those would hang or never end), or a file over MAX_ITEM_FILE_BYTES."""
    import stat

    where = what or f"{path}:"
    try:
        st = path.stat()
    except OSError as exc:
        raise CpbenchError(f"{where} not a readable file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")  # fmt: skip
        raise CpbenchError(f"{where} {kind}, not an item file (give a .json, .jsonl or .parquet file)")
    if st.st_size > MAX_ITEM_FILE_BYTES:
        raise CpbenchError(f"{where} {st.st_size / 2**30:.1f} GiB, over the {MAX_ITEM_FILE_BYTES >> 30} GiB cap on "
                           f"item files (split it)")


def _text_chars(rec: dict[str, Any]) -> int:
    n = 0
    for k in ("context", "question"):
        v = rec.get(k)
        n += len(v) if isinstance(v, str) else 0
    choices = rec.get("choices")
    if isinstance(choices, dict):
        n += sum(len(v) for v in choices.values() if isinstance(v, str))
    elif isinstance(choices, list):
        n += sum(len(v) for v in choices if isinstance(v, str))
    return n


def _check_suffix(path: Path, suffix: str) -> None:
    if suffix not in ITEM_SUFFIXES:
        raise CpbenchError(f"{path}: unknown item file type {suffix!r} (use .json, .jsonl or .parquet)")


def items_from_records(records: Iterable[Any], where: str, extra_to_meta: bool = False) -> list[Item]:
    """Validate raw records into items. `extra_to_meta` keeps unknown keys (prepared files) in `item.meta`.

    Errors name the file, the item (position and id) and the field, on one line.
    """
    items: list[Item] = []
    seen: dict[str, int] = {}
    for pos, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise CpbenchError(f"{where}: item {pos}: expected an object, got {type(rec).__name__}")
        chars = _text_chars(rec)
        if chars > MAX_ITEM_CHARS:
            ident = f" (id {str(rec.get('id'))[:40]!r})" if "id" in rec else ""
            raise CpbenchError(f"{where}: item {pos}{ident}: {chars:,} characters of text, over the "
                               f"{MAX_ITEM_CHARS:,}-character cap per item")
        if extra_to_meta:
            extra = {k: v for k, v in rec.items() if k not in ITEM_KEYS}
            rec = {k: v for k, v in rec.items() if k in ITEM_KEYS}
            if extra:
                rec["meta"] = {**extra, **(rec.get("meta") or {})}
        try:
            item = Item.model_validate(rec)
        except ValidationError as exc:
            ident = f" (id {rec.get('id')!r})" if "id" in rec else ""
            raise CpbenchError(explain_validation_error(exc, Item, f"{where}: item {pos}{ident}")) from None
        key = str(item.id)
        if key in seen:
            raise CpbenchError(f"{where}: item {pos}: field 'id': {item.id!r} repeats item {seen[key]}")
        seen[key] = pos
        items.append(item)
    return items


def read_records(path: Path) -> list[Any]:
    """Raw records of a JSON (a list, or an object with `items`), JSONL or Parquet file."""
    suffix = path.suffix.lower()
    _check_suffix(path, suffix)
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            records = pq.read_table(path).to_pylist()
            for rec in records:  # write_items stores meta as a JSON string (free-form dicts do not fit one schema)
                if isinstance(rec.get("meta"), str):
                    rec["meta"] = json.loads(rec["meta"]) if rec["meta"] else {}
            return records
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CpbenchError(f"{path}: cannot read item file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise CpbenchError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types for corrupt files
        raise CpbenchError(f"{path}: not a readable Parquet file ({exc})") from None
    if suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CpbenchError(f"{path}: line {n}: malformed JSON ({exc.msg})") from None
        return records
    try:  # .json
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CpbenchError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None
    if isinstance(data, dict) and "items" in data:
        data = data["items"]
    if not isinstance(data, list):
        raise CpbenchError(f"{path}: expected a JSON list of items or an object with 'items'")
    return data


def read_items(path: str | Path, extra_to_meta: bool = False) -> list[Item]:
    path = Path(path)
    if not path.exists():
        raise CpbenchError(f"{path}: item file not found")
    check_item_path(path)
    return items_from_records(read_records(path), str(path), extra_to_meta=extra_to_meta)


def _record(item: Item) -> dict[str, Any]:
    rec = item.model_dump()
    if not rec["meta"]:
        del rec["meta"]
    return rec


def write_items(items: Sequence[Item], path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write items atomically; the format follows the suffix. JSON is `{"provenance": ..., "items": [...]}`,
    Parquet keeps the provenance in the schema metadata, JSONL is one item per line (no provenance)."""
    path = Path(path)
    suffix = path.suffix.lower()
    records = [_record(it) for it in items]
    _check_suffix(path, suffix)
    with atomic_path(path) as tmp:
        if suffix == ".json":
            tmp.write_text(json.dumps({"provenance": provenance or {}, "items": records}, indent=1,
                                      ensure_ascii=False) + "\n", encoding="utf-8")
        elif suffix == ".jsonl":
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # ids may be int (Ye et al.) or str; a Parquet column has one type, so mixed ids are stored as strings.
            ids = [r["id"] for r in records]
            id_type = pa.int64() if all(isinstance(i, int) for i in ids) else pa.string()
            table = pa.table({
                "id": pa.array(ids if id_type == pa.int64() else [str(i) for i in ids], type=id_type),
                "source": [r["source"] for r in records],
                "context": [r["context"] for r in records],
                "question": [r["question"] for r in records],
                "choices": pa.array([r["choices"] for r in records],
                                    type=pa.struct([(k, pa.string()) for k in LETTERS])),
                "answer": [r["answer"] for r in records],
                "meta": [json.dumps(r.get("meta", {}), ensure_ascii=False) for r in records],
            })
            table = table.replace_schema_metadata({"cpbench": json.dumps({"provenance": provenance or {}})})
            pq.write_table(table, tmp)
    return path
