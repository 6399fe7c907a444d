"""Calibration data: a seeded sample of N sequences x L tokens.

Sources (`CalibrationSpec.source`):
- `builtin` (default, offline): the text shipped in `benchmark/calibration/*.txt` (written for cpbench; see its
  README for provenance). It is small (~10k tokens), so the default 128 x 512 sample draws overlapping windows;
  the report says so. Use a real corpus for publishable numbers.
- `hf:NAME[:CONFIG]`: a `datasets` dataset (`split`, `column`), e.g. `hf:wikitext:wikitext-2-raw-v1`,
  `hf:HuggingFaceH4/ultrachat_200k` (needs the hub or a local datasets cache).
- a local file: `.txt` (documents separated by blank lines) or `.jsonl` (one object per line, text in `column`).

Sampling: documents in a seeded random order are tokenized and joined with EOS into one stream until it holds
n x L tokens (or the corpus ends). If the stream is long enough, n distinct non-overlapping windows are drawn;
otherwise n random (overlapping) windows. A BOS token is put first when the tokenizer adds one by itself (Gemma
without <bos> produces garbage activations). The content hash is over the token ids, so it changes whenever the
text, the tokenizer or the sampling changes, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cpbench.base.errors import CpbenchError
from cpbench.base.paths import data_dir

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(default="builtin", description="builtin | hf:NAME[:CONFIG] | path to .txt/.jsonl")
    n: int = Field(default=128, ge=1, description="number of sequences")
    seq_len: int = Field(default=512, ge=8, description="tokens per sequence")
    seed: int = 0
    split: str = "train"
    column: str = "text"


SAMPLING_VERSION = "1"  # bump when `sample` draws different windows from the same text and tokenizer


def spec_identity(spec: CalibrationSpec) -> dict[str, Any]:
    """What fixes the calibration sample without drawing it (no tokenizer needed): the spec, the sampling code's
    version and the digest of the text for builtin and local-file sources. With the base model (hence its
    tokenizer) it determines the sample, so checkpoint cache keys and weights ids can be computed before any model or
    tokenizer is loaded. A `hf:` dataset is named, not hashed (its content is only known once downloaded)."""
    out: dict[str, Any] = {**spec.model_dump(), "sampling": SAMPLING_VERSION}
    if spec.source == "builtin":
        h = hashlib.sha256()
        for f in builtin_files():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        out["text_sha256"] = h.hexdigest()
    elif not spec.source.startswith("hf:"):
        path = Path(spec.source).expanduser()
        if not path.is_file():
            raise CpbenchError(f"calibration source {spec.source!r}: not 'builtin', 'hf:NAME', or an existing .txt/.jsonl file")
        from cpbench.base.stamps import sha256_file

        out["file_sha256"] = sha256_file(path)
    return out


@dataclass
class CalibrationSet:
    spec: CalibrationSpec
    input_ids: np.ndarray  # int64 [n, seq_len]
    corpus_tokens: int  # tokens in the stream the windows were drawn from
    overlapping: bool
    source_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(list(self.input_ids.shape)).encode())
        h.update(np.ascontiguousarray(self.input_ids, dtype="<i8").tobytes())
        return "sha256:" + h.hexdigest()

    def to_dataset(self):  # -> datasets.Dataset
        from datasets import Dataset

        ids = self.input_ids.tolist()
        return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]})

    def report(self) -> dict[str, Any]:
        return {
            **self.spec.model_dump(),
            "hash": self.hash,
            "corpus_tokens": int(self.corpus_tokens),
            "overlapping_windows": bool(self.overlapping),
            **self.source_detail,
        }


def builtin_files() -> list[Path]:
    files = sorted((data_dir("benchmark") / "calibration").glob("*.txt"))
    if not files:
        raise CpbenchError("benchmark/calibration/*.txt: the shipped calibration text is missing")
    return files


def _paragraph_docs(text: str) -> list[str]:
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def _iter_documents(spec: CalibrationSpec, rng: np.random.Generator) -> tuple[Iterator[str], dict[str, Any]]:
    src = spec.source
    if src == "builtin":
        files = builtin_files()
        docs = [d for f in files for d in _paragraph_docs(f.read_text(encoding="utf-8"))]
        digest = hashlib.sha256("\n\n".join(docs).encode()).hexdigest()[:16]
        order = rng.permutation(len(docs))
        return (docs[i] for i in order), {"text_sha256": digest, "documents": len(docs)}
    if src.startswith("hf:"):
        parts = src[3:].split(":")
        name, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
        try:
            from datasets import load_dataset

            ds = load_dataset(name, config, split=spec.split)
        except Exception as exc:  # noqa: BLE001 - datasets raises many types (network, missing config, ...)
            raise CpbenchError(f"calibration dataset {src!r} (split {spec.split!r}) cannot be loaded: {exc}") from None
        if spec.column not in ds.column_names:
            raise CpbenchError(f"calibration dataset {src!r} has no column {spec.column!r} (has {ds.column_names})")
        order = rng.permutation(len(ds))
        fingerprint = getattr(ds, "_fingerprint", "")
        return (ds[int(i)][spec.column] for i in order), {"dataset_fingerprint": fingerprint, "documents": len(ds)}
    path = Path(src).expanduser()
    if not path.is_file():
        raise CpbenchError(f"calibration source {src!r}: not 'builtin', 'hf:NAME', or an existing .txt/.jsonl file")
    raw = path.read_bytes()
    detail = {"file_sha256": hashlib.sha256(raw).hexdigest(), "path": str(path.resolve())}
    if path.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(raw.decode("utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                docs.append(str(json.loads(line)[spec.column]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CpbenchError(f"{path}:{i + 1}: not a JSON object with a {spec.column!r} field") from None
    else:
        docs = _paragraph_docs(raw.decode("utf-8"))
    if not docs:
        raise CpbenchError(f"{path}: no text")
    order = rng.permutation(len(docs))
    return (docs[i] for i in order), {**detail, "documents": len(docs)}


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def sample(spec: CalibrationSpec, tokenizer: PreTrainedTokenizerBase) -> CalibrationSet:
    """Draw the calibration set described by `spec`, tokenized with `tokenizer` (deterministic given both)."""
    rng = np.random.default_rng(spec.seed)
    docs, detail = _iter_documents(spec, rng)
    bos = _adds_bos(tokenizer)
    body = spec.seq_len - (1 if bos else 0)
    want = spec.n * body
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in docs:
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if len(stream) >= want:
            break
    if len(stream) < body:
        raise CpbenchError(
            f"calibration source {spec.source!r} has {len(stream)} tokens, fewer than one sequence of {spec.seq_len}"
        )
    arr = np.asarray(stream, dtype=np.int64)
    chunks = len(arr) // body
    if chunks >= spec.n:
        picks = rng.choice(chunks, size=spec.n, replace=False)
        windows = np.stack([arr[p * body : (p + 1) * body] for p in picks])
        overlapping = False
    else:
        starts = rng.integers(0, len(arr) - body + 1, size=spec.n)
        windows = np.stack([arr[s : s + body] for s in starts])
        overlapping = True
    if bos:
        windows = np.concatenate([np.full((spec.n, 1), tokenizer.bos_token_id, dtype=np.int64), windows], axis=1)
    detail = {**detail, "bos_prepended": bos, "tokenizer": getattr(tokenizer, "name_or_path", "")}
    return CalibrationSet(spec=spec, input_ids=windows, corpus_tokens=len(arr), overlapping=overlapping,
                          source_detail=detail)  # fmt: skip
