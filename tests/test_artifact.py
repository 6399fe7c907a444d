"""The logits artifact: round trip, every validation error, unreadable/corrupt files, content-hash mismatch."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpbench.artifact import FORMAT, LogitsArtifact
from cpbench.errors import CpbenchError

LETTERS = ["A", "B", "C", "D", "E", "F"]


def make(n=20, k=6, **kw):
    rng = np.random.default_rng(0)
    args = dict(
        ids=[f"item-{i}" for i in range(n)],
        labels=rng.integers(0, k, n),
        logits=rng.normal(size=(n, k)).astype(np.float32),
        letters=LETTERS[:k] if k <= 6 else [chr(65 + j) for j in range(k)],
        provenance={"run_key": {"model": "m", "task": "qa"}, "notes": ["x"], "nested": {"a": [1, 2.5, None]}},
        prompt_hashes=[f"h{i}" for i in range(n)],
    )
    args.update(kw)
    return LogitsArtifact(**args)


def test_round_trip(tmp_path):
    art = make()
    path = art.save(tmp_path / "sub" / "a.parquet")
    back = LogitsArtifact.load(path)
    assert back.ids == art.ids and back.letters == art.letters
    assert back.labels.dtype == np.int64 and np.array_equal(back.labels, art.labels)
    assert back.logits.dtype == np.float32 and np.array_equal(back.logits, art.logits)  # bit-exact
    assert back.provenance == art.provenance and back.prompt_hashes == art.prompt_hashes
    assert back.content_hash == art.content_hash and back.source == str(path)
    assert not list((tmp_path / "sub").glob("*.tmp"))  # atomic write leaves no temporary behind


def test_round_trip_without_prompt_hashes_and_k2(tmp_path):
    art = make(k=2, prompt_hashes=None)
    back = LogitsArtifact.load(art.save(tmp_path / "a.parquet"))
    assert back.prompt_hashes is None and back.k == 2


def test_float64_logits_become_float32():
    art = make(logits=np.random.default_rng(1).normal(size=(20, 6)))
    assert art.logits.dtype == np.float32


def test_content_hash_changes_with_content():
    a = make()
    logits = a.logits.copy()
    logits[0, 0] += 1
    assert make(logits=logits).content_hash != a.content_hash
    assert make(letters=list("ABCDEZ")).content_hash != a.content_hash


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(logits=np.zeros(20, dtype=np.float32)), "2-D"),
        (dict(logits=np.zeros((20, 1), dtype=np.float32), letters=["A"], labels=np.zeros(20, int)), "at least 2"),
        (dict(letters=["A", "B"]), "2 option letters for K=6"),
        (dict(letters=["A", "A", "C", "D", "E", "F"]), "not unique"),
        (dict(logits=np.zeros((20, 6), dtype=np.int32)), "floating point"),
        (dict(labels=np.zeros(19, dtype=int)), "19 labels for 20"),
        (dict(labels=np.full(20, 0.5)), "integers"),
        (dict(ids=["a"] * 3), "3 ids for 20"),
        (dict(logits=np.where(np.eye(20, 6, dtype=bool), np.nan, 0).astype(np.float32)), "non-finite"),
        (dict(logits=np.full((20, 6), np.inf, dtype=np.float32)), "non-finite"),
        (dict(labels=np.r_[np.zeros(19, int), 6]), "label 6 of id 'item-19' is outside"),
        (dict(labels=np.r_[-1, np.zeros(19, int)]), "label -1"),
        (dict(prompt_hashes=["h"] * 5), "5 prompt hashes"),
        (dict(ids=[f"x{i % 10}" for i in range(20)]), "duplicate item id 'x0'"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(CpbenchError, match=message):
        make(**kwargs)


def _table(art: LogitsArtifact, header: dict | None, logits_type=pa.float32(), drop=None):
    flat = pa.array(art.logits.reshape(-1).astype(np.float64 if logits_type == pa.float64() else np.float32),
                    type=logits_type)
    cols = {"id": pa.array(art.ids), "label": pa.array(art.labels.astype(np.int32)),
            "logits": pa.FixedSizeListArray.from_arrays(flat, art.k)}
    if drop:
        cols.pop(drop)
    t = pa.table(cols)
    if header is not None:
        t = t.replace_schema_metadata({b"cpbench": json.dumps(header).encode()})
    return t


def _header(art, **kw):
    h = {"format": FORMAT, "letters": art.letters, "provenance": {}, "content_hash": art.content_hash}
    h.update(kw)
    return h


def test_load_errors(tmp_path):
    art = make()
    with pytest.raises(CpbenchError, match="no such file"):
        LogitsArtifact.load(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(CpbenchError, match="not a readable Parquet file"):
        LogitsArtifact.load(junk)
    cases = {
        "noheader": (_table(art, None), "no 'cpbench' header"),
        "version": (_table(art, _header(art, format="cpbench.logits/99")), "unsupported artifact format"),
        "nolabel": (_table(art, _header(art), drop="label"), r"missing column\(s\) \['label'\]"),
        "f64": (_table(art, _header(art), logits_type=pa.float64()), "fixed_size_list<float32>"),
        "hash": (_table(art, _header(art, content_hash="sha256:" + "0" * 64)), "content hash mismatch"),
    }
    for name, (table, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        with pytest.raises(CpbenchError, match=message):
            LogitsArtifact.load(path)
    corrupt = tmp_path / "corrupt_header.parquet"
    bad_headers = {
        b"{not json": "corrupt cpbench header",
        b"\xff\xfe": "corrupt cpbench header",
        b"[1, 2]": "a JSON list, not an object",
        json.dumps(_header(art, provenance=["x"])).encode(): "'provenance' must be an object",
        json.dumps(_header(art, letters="ABCDEF")).encode(): "'letters' a list",
    }
    for raw, message in bad_headers.items():
        pq.write_table(_table(art, None).replace_schema_metadata({b"cpbench": raw}), corrupt)
        with pytest.raises(CpbenchError, match=message):
            LogitsArtifact.load(corrupt)


def test_validation_applies_on_load(tmp_path):
    """A file whose contents break the rules (here: a label outside the options) is refused on load, not later."""
    art = make()
    bad = make()
    object.__setattr__(bad, "labels", np.r_[bad.labels[:-1], 9])
    path = tmp_path / "bad.parquet"
    pq.write_table(_table(bad, _header(art)), path)
    with pytest.raises(CpbenchError, match="label 9 .* outside"):
        LogitsArtifact.load(path)


def test_altered_values_detected(tmp_path):
    art = make()
    path = art.save(tmp_path / "a.parquet")
    table = pq.read_table(path)
    logits = art.logits.copy()
    logits[3, 2] = 7.0
    flat = pa.array(logits.reshape(-1), type=pa.float32())
    table = table.set_column(2, "logits", pa.FixedSizeListArray.from_arrays(flat, 6))
    pq.write_table(table, path)  # metadata (with the old hash) is kept
    with pytest.raises(CpbenchError, match="content hash mismatch"):
        LogitsArtifact.load(path)


def test_truncated_file(tmp_path):
    path = make().save(tmp_path / "a.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CpbenchError, match="not a readable Parquet file"):
        LogitsArtifact.load(path)
