"""Units of the compression package that need no llm-compressor run: calibration sampling, magnitude pruning,
the verification measures and checks, the cache key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.weights.compress import calibration as cal
from cpbench.weights.compress.calibration import CalibrationSpec, sample
from cpbench.weights.compress.magnitude import magnitude_prune, prune_nm_, prune_unstructured_
from cpbench.weights.compress.verify import failed_checks, max_distinct_per_group, nm_fraction
from cpbench.base.errors import CpbenchError
from cpbench.specs.recipes import resolve
from tiny_model import tiny_model_dir


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir())


# ------------------------------------------------------------------------------------------------ calibration
def test_builtin_sample_shape_seed_and_hash(tok):
    a = sample(CalibrationSpec(n=8, seq_len=64, seed=0), tok)
    b = sample(CalibrationSpec(n=8, seq_len=64, seed=0), tok)
    c = sample(CalibrationSpec(n=8, seq_len=64, seed=1), tok)
    assert a.input_ids.shape == (8, 64) and a.input_ids.dtype == np.int64
    assert np.array_equal(a.input_ids, b.input_ids) and a.hash == b.hash
    assert not np.array_equal(a.input_ids, c.input_ids) and a.hash != c.hash
    assert not a.overlapping  # 8 x 64 tokens fit in the shipped text without overlap
    assert len({tuple(r) for r in a.input_ids.tolist()}) == 8
    ds = a.to_dataset()
    assert ds.column_names == ["input_ids", "attention_mask"] and len(ds) == 8


def test_builtin_windows_come_from_the_shipped_text(tok):
    s = sample(CalibrationSpec(n=4, seq_len=32), tok)
    text = "\n".join(f.read_text() for f in cal.builtin_files())
    for row in s.input_ids:
        # decode a window and find a run of its words in the corpus (windows may start mid-word)
        words = tok.decode(row[1:-1].tolist()).split("<|eos|>")[0].split()[1:-1]
        assert " ".join(words[:4]) in " ".join(text.split())


def test_large_requests_overlap_and_say_so(tok):
    s = sample(CalibrationSpec(n=128, seq_len=512), tok)
    assert s.overlapping and s.input_ids.shape == (128, 512)
    rep = s.report()
    assert rep["overlapping_windows"] is True and rep["corpus_tokens"] < 128 * 512
    assert rep["hash"] == s.hash and rep["source"] == "builtin"


def test_file_sources(tok, tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("\n\n".join(f"document {i} " + "alpha beta gamma delta " * 20 for i in range(10)))
    s = sample(CalibrationSpec(source=str(txt), n=4, seq_len=32), tok)
    assert s.input_ids.shape == (4, 32) and "file_sha256" in s.report()
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps({"body": "one two three four five six " * 10}) for _ in range(5)))
    s2 = sample(CalibrationSpec(source=str(jl), n=2, seq_len=16, column="body"), tok)
    assert s2.input_ids.shape == (2, 16)
    with pytest.raises(CpbenchError, match="'text' field"):
        sample(CalibrationSpec(source=str(jl), n=2, seq_len=16), tok)
    with pytest.raises(CpbenchError, match="not 'builtin'"):
        sample(CalibrationSpec(source=str(tmp_path / "missing.txt")), tok)
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(CpbenchError, match="fewer than one sequence"):
        sample(CalibrationSpec(source=str(short), n=1, seq_len=64), tok)


def test_bos_is_prepended_when_the_tokenizer_adds_one(tok):
    class WithBos:
        """Wraps the tiny tokenizer so that it adds <|bos|> like Gemma's does."""

        bos_token_id = tok.bos_token_id
        eos_token_id = tok.eos_token_id
        name_or_path = "with-bos"

        def __call__(self, text, add_special_tokens=True):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    s = sample(CalibrationSpec(n=3, seq_len=16), WithBos())
    assert (s.input_ids[:, 0] == tok.bos_token_id).all() and s.input_ids.shape == (3, 16)
    assert (s.input_ids[:, 1:] != tok.bos_token_id).all()


def test_hf_source_failure_is_one_line(tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CpbenchError, match="cannot be loaded"):
        sample(CalibrationSpec(source="hf:surely-not/a-cached-dataset", n=2, seq_len=16), tok)


# ---------------------------------------------------------------------------------------------- magnitude
@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 40), s=st.floats(0.05, 0.95), seed=st.integers(0, 10**6))
def test_unstructured_prunes_exactly_the_smallest(rows, cols, s, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    orig = w.clone()
    prune_unstructured_(w, s)
    k = round(s * w.numel())
    assert int((w == 0).sum()) == k
    kept, dropped = orig[w != 0].abs(), orig[w == 0].abs()
    if k and k < w.numel():
        assert dropped.max() <= kept.min()
    assert torch.equal(w[w != 0], orig[w != 0])  # survivors are untouched


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 8), blocks=st.integers(1, 10), nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (4, 8)]),
       seed=st.integers(0, 10**6))  # fmt: skip
def test_nm_pattern(rows, blocks, nm, seed):
    n, m = nm
    w = torch.randn(rows, blocks * m, generator=torch.Generator().manual_seed(seed))
    orig = w.clone()
    prune_nm_(w, n, m)
    zeros = (w.view(rows, blocks, m) == 0).sum(-1)
    assert (zeros == n).all()
    assert nm_fraction(w, n, m) == 1.0
    ob, wb = orig.view(rows, blocks, m).abs(), w.view(rows, blocks, m)
    kept_min = torch.where(wb != 0, ob, torch.inf).min(-1).values
    dropped_max = torch.where(wb == 0, ob, -torch.inf).max(-1).values
    assert (dropped_max <= kept_min).all()


def test_nm_needs_divisible_columns():
    with pytest.raises(CpbenchError, match="divisible"):
        prune_nm_(torch.randn(2, 6), 2, 4)


def test_magnitude_prune_skips_ignored_layers():
    model = torch.nn.Sequential()
    model.add_module("fc", torch.nn.Linear(16, 8))
    model.add_module("lm_head", torch.nn.Linear(8, 4))
    out = magnitude_prune(model, sparsity=0.5)
    assert set(out) == {"fc"} and out["fc"] == 0.5
    assert float((model.lm_head.weight == 0).float().mean()) == 0.0
    with pytest.raises(CpbenchError, match="exactly one"):
        magnitude_prune(model)


# ------------------------------------------------------------------------------------------- verify measures
def test_max_distinct_per_group_counts_levels():
    levels = torch.tensor([-2.0, -1.0, 0.0, 1.0])
    w = levels[torch.randint(0, 4, (6, 256), generator=torch.Generator().manual_seed(0))]
    assert max_distinct_per_group(w, 128, "group") == 4
    w[0, 5] = 0.123  # a fifth value in the first group of row 0
    assert max_distinct_per_group(w, 128, "group") == 5
    assert max_distinct_per_group(torch.arange(12.0).view(3, 4), None, "channel") == 4
    assert max_distinct_per_group(torch.arange(12.0).view(3, 4), None, "tensor") == 12


def _verification(zeros, nm_ok=None, distinct=None, bits=None, group=None, ignored_zeros=0.0):
    layers = {"l0": {"zeros": zeros, **({"nm_ok": nm_ok} if nm_ok is not None else {})}}
    return {
        "layers": layers,
        "ignored_layers": {"lm_head": {"zeros": ignored_zeros, "base_zeros": 0.0}},
        "quantization_config": None if bits is None else {"groups": [{"bits": bits, "group_size": group}]},
        "summary": {"forward_finite": True, "nm_ok_min": nm_ok, "distinct_max": distinct},
    }


def test_failed_checks_catch_what_recipes_promise():
    assert failed_checks(_verification(0.5), resolve("magnitude-50")) == []
    assert "target 0.500" in failed_checks(_verification(0.0), resolve("magnitude-50"))[0]  # zeroed nothing
    assert "pattern broken" in failed_checks(_verification(0.5, nm_ok=0.9), resolve("wanda-2:4"))[-1]
    assert "was pruned" in failed_checks(_verification(0.5, ignored_zeros=0.5), resolve("wanda-50"))[-1]
    ok = _verification(0.1, distinct=16, bits=4, group=128)
    assert failed_checks(ok, resolve("gptq-4bit")) == []
    assert "more than 2^4" in failed_checks(_verification(0.1, distinct=17, bits=4, group=128),
                                             resolve("gptq-4bit"))[0]  # fmt: skip
    assert "says 8 bits" in failed_checks(_verification(0.1, distinct=4, bits=8, group=128), resolve("gptq-4bit"))[0]
    assert "no quantization_config" in failed_checks(_verification(0.1), resolve("rtn-4bit"))[0]
    # pruning + rounding: rounding may add zeros beyond the target, never fewer than it
    assert failed_checks(_verification(0.56, nm_ok=1.0, distinct=16, bits=4, group=128),
                         resolve("sparsegpt-2:4-w4a16")) == []  # fmt: skip
