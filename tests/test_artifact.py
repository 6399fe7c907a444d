"""The logits artifact: round trip, every validation error, unreadable/corrupt files, content-hash mismatch."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpbench.results.artifact import FORMAT, FORMAT_V1, LogitsArtifact, content_hash_v1
from cpbench.base.errors import CpbenchError

LETTERS = ["A", "B", "C", "D", "E", "F"]


def make(n=20, k=6, **kw):
    rng = np.random.default_rng(0)
    args = dict(
        ids=[f"item-{i}" for i in range(n)],
        labels=rng.integers(0, k, n),
        logits=rng.normal(size=(n, k)).astype(np.float32),
        letters=LETTERS[:k] if k <= 6 else [chr(65 + j) for j in range(k)],
        provenance={"run_key": {"model": "m", "task": "qa"}, "notes": ["x"], "extra": {"nested": {"a": [1, 2.5, None]}}},
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


def _rewrite_header(path, edit):
    """Change the stored header (keeping its content hash) as a bit flip or a hand edit would."""
    table = pq.read_table(path)
    header = json.loads(table.schema.metadata[b"cpbench"])
    edit(header)
    pq.write_table(table.replace_schema_metadata({b"cpbench": json.dumps(header).encode()}), path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h["provenance"]["run_key"].update(model="other-model"),
        lambda h: h["provenance"]["run_key"].update(task="rc"),
        lambda h: h["provenance"].update(sample_data=False),
        lambda h: h["provenance"].update(notes=[]),
        lambda h: h.update(letters=list("ABCDEZ")),
    ],
)
def test_header_is_covered_by_the_content_hash(tmp_path, edit):
    art = make(provenance={"run_key": {"model": "m", "task": "qa"}, "sample_data": True, "notes": ["sample data"]})
    path = art.save(tmp_path / "a.parquet")
    assert LogitsArtifact.load(path).provenance["sample_data"] is True
    _rewrite_header(path, edit)
    with pytest.raises(CpbenchError, match="content hash mismatch"):
        LogitsArtifact.load(path)


def test_prompt_hashes_are_covered(tmp_path):
    art = make()
    path = art.save(tmp_path / "a.parquet")
    table = pq.read_table(path)
    hashes = art.prompt_hashes.copy()
    hashes[0] = "tampered"
    pq.write_table(table.set_column(3, "prompt_hash", pa.array(hashes, type=pa.string())), path)
    with pytest.raises(CpbenchError, match="content hash mismatch"):
        LogitsArtifact.load(path)


def test_single_bit_flips_in_the_header_never_load_silently(tmp_path):
    """Every single-bit flip of the stored header bytes is refused with one line or loads the identical artifact."""
    art = make(n=8, provenance={"run_key": {"model": "m", "task": "qa"}, "sample_data": True, "notes": ["n"]})
    path = art.save(tmp_path / "a.parquet")
    table = pq.read_table(path)
    raw = table.schema.metadata[b"cpbench"]
    rng = np.random.default_rng(0)
    positions = rng.choice(len(raw) * 8, size=min(300, len(raw) * 8), replace=False)
    for bit in positions:
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        pq.write_table(table.replace_schema_metadata({b"cpbench": bytes(flipped)}), path)
        try:
            back = LogitsArtifact.load(path)
        except CpbenchError as exc:
            assert "\n" not in str(exc)
            continue
        # JSON allows a few harmless flips (e.g. whitespace); the loaded artifact must then be the same
        assert back.provenance == art.provenance and back.letters == art.letters


def test_unknown_provenance_key_refused_on_save(tmp_path):
    art = make(provenance={"run_key": {"model": "m", "task": "qa"}, "sampel_data": True})
    with pytest.raises(CpbenchError, match="sampel_data"):
        art.save(tmp_path / "a.parquet")
    assert not any(tmp_path.iterdir())


def test_format_1_artifacts_still_load(tmp_path):
    """Format 1 (hash over the arrays only): still read, with the old rule; provenance mapped to today's names."""
    art = make(provenance={})
    prov = {"run_key": {"model": "m", "recipe": "fp16", "task": "qa"}, "old_detail": 1, "sample_data": True}
    header = {"format": FORMAT_V1, "letters": art.letters, "provenance": prov,
              "content_hash": content_hash_v1(art.ids, art.labels, art.logits, art.letters)}
    path = tmp_path / "v1.parquet"
    pq.write_table(_table(art, header), path)
    back = LogitsArtifact.load(path)
    assert back.provenance["run_key"]["recipe"] == "base" and back.provenance["extra"] == {"old_detail": 1}
    np.testing.assert_array_equal(back.logits, art.logits)
    header["content_hash"] = "sha256:" + "1" * 64
    pq.write_table(_table(art, header), path)
    with pytest.raises(CpbenchError, match="content hash mismatch"):
        LogitsArtifact.load(path)
    # re-saving writes format 2
    again = LogitsArtifact.load(back.save(tmp_path / "v2.parquet"))
    assert json.loads(pq.read_schema(tmp_path / "v2.parquet").metadata[b"cpbench"])["format"] == FORMAT
    assert again.provenance == back.provenance


def test_committed_artifacts_load():
    from pathlib import Path

    root = Path(__file__).parent.parent / "results"
    paths = sorted(root.rglob("*.parquet"))[:3]
    if not paths:
        pytest.skip("no committed artifacts")
    for p in paths:
        assert LogitsArtifact.load(p).n > 0
