"""The option-logits artifact: the contract between scoring (GPU) and analysis (anywhere).

One artifact per run cell (model, recipe, task, prompt, shots, ...). Stored as Parquet because it is columnar and
typed (float32 logits stay float32, no text round-trip), compressed, self-describing (schema metadata carries the
provenance header) and readable by pandas, polars, DuckDB and Arrow in any language without cpbench.

Layout: columns `id` (string), `label` (int32, gold option index in [0, K)),
`logits` (fixed_size_list<float32>[K]), optional `prompt_hash` (string). Schema metadata key `cpbench` holds a JSON header:
`{"format": "cpbench.logits/2", "letters": [...], "provenance": {...}, "content_hash": "sha256:..."}`.

Format 2 (`content_hash`): sha256 over the arrays (letters, ids, labels, logits, as in format 1) followed by the
canonical JSON (sorted keys, no whitespace) of `{"letters", "provenance", "prompt_hashes"}`, so a changed byte in the
run key, the sample-data flag, the notes or the prompt hashes is detected like a changed logit. The provenance is
validated as `cpbench.results.records.ArtifactProvenance` when saved and loaded (unknown keys refused).
Format 1 (read, never written): the hash covers the arrays only; such files still load (their provenance is mapped
to today's vocabulary by `cpbench.results.records.migrate_provenance_v1`), and re-saving writes format 2.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpbench.base import jsonsafe
from cpbench.base.atomic import atomic_path
from cpbench.base.errors import CpbenchError

FORMAT = "cpbench.logits/2"
FORMAT_V1 = "cpbench.logits/1"
_META_KEY = b"cpbench"
_HEADER_KEYS = {"format", "letters", "provenance", "content_hash"}


def _arrays_hash(ids: Sequence[str], labels: np.ndarray, logits: np.ndarray, letters: Sequence[str]) -> Any:
    h = hashlib.sha256()
    h.update(json.dumps(list(letters)).encode())
    h.update(json.dumps([str(i) for i in ids]).encode())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(logits, dtype="<f4").tobytes())
    return h


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a JSON value that the hash covers (sorted keys, no whitespace, ASCII, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def content_hash(
    ids: Sequence[str],
    labels: np.ndarray,
    logits: np.ndarray,
    letters: Sequence[str],
    provenance: dict[str, Any] | None = None,
    prompt_hashes: Sequence[str] | None = None,
) -> str:
    """sha256 over everything the analysis reads and every provenance claim (format 2), so a result names exactly
    the numbers and the header it came from."""
    h = _arrays_hash(ids, labels, logits, letters)
    try:
        h.update(canonical_json({"letters": list(letters), "provenance": provenance or {},
                                 "prompt_hashes": None if prompt_hashes is None else list(prompt_hashes)}))
    except (TypeError, ValueError) as exc:
        raise CpbenchError(f"artifact provenance is not plain JSON ({exc})") from None
    return "sha256:" + h.hexdigest()


def content_hash_v1(ids: Sequence[str], labels: np.ndarray, logits: np.ndarray, letters: Sequence[str]) -> str:
    """Format 1's hash (arrays only); used to verify format-1 files."""
    return "sha256:" + _arrays_hash(ids, labels, logits, letters).hexdigest()


@dataclass
class LogitsArtifact:
    """Option logits of n items over K options, with gold labels and provenance."""

    ids: list[str]
    labels: np.ndarray  # int64[n], values in [0, K)
    logits: np.ndarray  # float32[n, K]
    letters: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    prompt_hashes: list[str] | None = None  # per-item sha256 of the exact prompt text (optional column)
    source: str = ""  # where it was loaded from (not stored)
    file_hash: str | None = None  # the verified content hash of the file it was loaded from (not stored)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.labels = np.asarray(self.labels)
        self.logits = np.asarray(self.logits)
        self.validate()

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        return len(self.letters)

    @property
    def content_hash(self) -> str:
        return content_hash(self.ids, self.labels, self.logits, self.letters, self.provenance, self.prompt_hashes)

    def validate(self) -> None:
        where = f"{self.source}: " if self.source else ""
        lg, lb = self.logits, self.labels
        if lg.ndim != 2:
            raise CpbenchError(f"{where}logits must be a 2-D array [n, K], got shape {lg.shape}")
        n, k = lg.shape
        if k < 2:
            raise CpbenchError(f"{where}need at least 2 options, got K={k}")
        if len(self.letters) != k:
            raise CpbenchError(f"{where}{len(self.letters)} option letters for K={k} logit columns")
        if len(set(self.letters)) != k:
            raise CpbenchError(f"{where}option letters are not unique: {self.letters}")
        if lg.dtype != np.float32:
            if not np.issubdtype(lg.dtype, np.floating):
                raise CpbenchError(f"{where}logits must be floating point, got {lg.dtype}")
            self.logits = lg = lg.astype(np.float32)
        if lb.shape != (n,):
            raise CpbenchError(f"{where}{lb.shape[0] if lb.ndim else 0} labels for {n} items")
        if n and not np.issubdtype(lb.dtype, np.integer):
            raise CpbenchError(f"{where}labels must be integers, got {lb.dtype}")
        self.labels = lb = lb.astype(np.int64)
        if len(self.ids) != n:
            raise CpbenchError(f"{where}{len(self.ids)} ids for {n} items")
        bad = ~np.isfinite(lg)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise CpbenchError(
                f"{where}non-finite logits (NaN or inf) in {int(bad.any(axis=1).sum())} item(s), first id {self.ids[row]!r}"
            )
        out = (lb < 0) | (lb >= k)
        if out.any():
            row = int(np.argmax(out))
            raise CpbenchError(
                f"{where}label {int(lb[row])} of id {self.ids[row]!r} is outside the {k} options {self.letters}"
            )
        if self.prompt_hashes is not None and len(self.prompt_hashes) != n:
            raise CpbenchError(f"{where}{len(self.prompt_hashes)} prompt hashes for {n} items")
        if len(set(self.ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise CpbenchError(f"{where}duplicate item id {dup!r}")

    def subset(self, mask: np.ndarray) -> "LogitsArtifact":
        idx = np.flatnonzero(mask)
        return LogitsArtifact(
            ids=[self.ids[i] for i in idx],
            labels=self.labels[idx],
            logits=self.logits[idx],
            letters=list(self.letters),
            provenance=dict(self.provenance),
            prompt_hashes=None if self.prompt_hashes is None else [self.prompt_hashes[i] for i in idx],
            source=self.source,
        )

    # ----------------------------------------------------------------------------------------------- Parquet I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; the header records the content hash so loads can detect corruption."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from cpbench.results.records import check_provenance

        self.validate()
        self.provenance = check_provenance(self.provenance, f"{path}: refusing to write an artifact with")
        header = {
            "format": FORMAT,
            "letters": list(self.letters),
            "provenance": self.provenance,
            "content_hash": self.content_hash,
        }
        flat = pa.array(self.logits.reshape(-1), type=pa.float32())
        columns = {
            "id": pa.array(self.ids, type=pa.string()),
            "label": pa.array(self.labels.astype(np.int32), type=pa.int32()),
            "logits": pa.FixedSizeListArray.from_arrays(flat, self.k),
        }
        if self.prompt_hashes is not None:
            columns["prompt_hash"] = pa.array(self.prompt_hashes, type=pa.string())
        table = pa.table(columns)
        table = table.replace_schema_metadata({_META_KEY: json.dumps(header, sort_keys=True).encode()})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LogitsArtifact":
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = Path(path)
        if p.exists() and not p.is_file() and not p.is_dir():  # a FIFO would block, a device never ends
            raise CpbenchError(f"{p}: not a regular file (FIFO/device)")
        if not p.is_file():
            raise CpbenchError(f"{p}: no such file")
        try:
            # ParquetFile.read avoids read_table's pandas import (~0.2 s of `cpbench analyze`'s start-up).
            table = pq.ParquetFile(p).read()
        except Exception as exc:  # damaged footer/pages: ArrowException, OSError, UnicodeDecodeError in names, ...
            detail = " ".join(str(exc).split())[:200]
            raise CpbenchError(f"{p}: not a readable Parquet file ({type(exc).__name__}: {detail})") from None
        meta = table.schema.metadata or {}
        if _META_KEY not in meta:
            raise CpbenchError(f"{p}: not a cpbench logits artifact (no 'cpbench' header in the Parquet metadata)")
        try:
            header = jsonsafe.loads(meta[_META_KEY], "header")
        except CpbenchError as exc:
            raise CpbenchError(f"{p}: corrupt cpbench header ({str(exc).removeprefix('header: ')})") from None
        if not isinstance(header, dict):
            raise CpbenchError(f"{p}: corrupt cpbench header (a JSON {type(header).__name__}, not an object)")
        if not isinstance(header.get("provenance", {}), dict) or not isinstance(header.get("letters", []), list):
            raise CpbenchError(f"{p}: corrupt cpbench header ('provenance' must be an object, 'letters' a list)")
        fmt = header.get("format")
        if fmt not in (FORMAT, FORMAT_V1):
            raise CpbenchError(f"{p}: unsupported artifact format {fmt!r} (expected {FORMAT} or {FORMAT_V1})")
        if set(header) - _HEADER_KEYS:
            raise CpbenchError(f"{p}: corrupt cpbench header (unknown keys {sorted(set(header) - _HEADER_KEYS)})")
        missing = {"id", "label", "logits"} - set(table.column_names)
        if missing:
            raise CpbenchError(f"{p}: missing column(s) {sorted(missing)}")
        try:
            col = table.column("logits").combine_chunks()
            if not pa.types.is_fixed_size_list(col.type) or not pa.types.is_float32(col.type.value_type):
                raise CpbenchError(f"{p}: column 'logits' must be fixed_size_list<float32>, got {col.type}")
            k = col.type.list_size
            values = col.flatten().to_numpy(zero_copy_only=False)
            logits = values.reshape(-1, k) if k else values.reshape(0, 0)
            ids = table.column("id").to_pylist()
            labels = table.column("label").to_numpy()
            prompt_hashes = table.column("prompt_hash").to_pylist() if "prompt_hash" in table.column_names else None
        except CpbenchError:
            raise
        except Exception as exc:
            # invalid UTF-8 in ids, damaged pages, wrong types: the file is not usable, whatever the detail
            raise CpbenchError(f"{p}: unreadable artifact columns ({type(exc).__name__}: {exc})") from None
        if not all(isinstance(i, str) for i in ids):
            raise CpbenchError(f"{p}: column 'id' must hold strings (no nulls)")
        if prompt_hashes is not None and not all(isinstance(h, str) for h in prompt_hashes):
            raise CpbenchError(f"{p}: column 'prompt_hash' must hold strings (no nulls)")
        provenance = header.get("provenance", {})
        if fmt == FORMAT_V1:
            from cpbench.results.records import migrate_provenance_v1

            provenance = migrate_provenance_v1(provenance)
        art = cls(
            ids=ids,
            labels=labels,
            logits=logits,
            letters=[str(x) for x in header.get("letters", [])],
            provenance=provenance,
            prompt_hashes=prompt_hashes,
            source=str(p),
        )
        stored = header.get("content_hash")
        if fmt == FORMAT_V1:
            actual = content_hash_v1(art.ids, art.labels, art.logits, art.letters)
        else:
            actual = content_hash(ids, art.labels, art.logits, header.get("letters", []), header.get("provenance"),
                                  prompt_hashes)
        if stored != actual:
            what = "no content hash" if not stored else "content hash mismatch"
            raise CpbenchError(f"{p}: {what} (file altered or corrupt; re-create it with `cpbench run`)")
        from cpbench.results.records import check_provenance

        art.provenance = check_provenance(art.provenance, str(p))
        art.file_hash = stored
        return art
