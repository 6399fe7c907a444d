"""Cloze scoring: summed log-likelihood of each option text, as lm-evaluation-harness computes it, batched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scoring_fixtures import ForwardCounter, make_prompts, reference_cloze, tiny

from cpbench.errors import CpbenchError
from cpbench.scoring.cloze import ClozeScorer, encode_pair


def _score(model, tok, prompts, batch_size):
    scorer = ClozeScorer(model, tok, prompts, batch_size=batch_size)
    order = scorer.order()
    out = np.full((len(prompts), 6), np.nan, dtype=np.float32)
    out[order] = scorer(order)
    return out, scorer


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_equals_lm_eval_style_reference(batch_size):
    model, tok = tiny()
    prompts = make_prompts(10, shots=0)
    out, _ = _score(model, tok, prompts, batch_size)
    assert np.abs(out - reference_cloze(model, tok, prompts)).max() < 1e-4


def test_batch_size_does_not_change_logits():
    model, tok = tiny()
    prompts = make_prompts(11, shots=0, seed=3)
    a, _ = _score(model, tok, prompts, 1)
    b, _ = _score(model, tok, prompts, 5)
    assert np.abs(a - b).max() < 1e-3
    assert np.abs(a - b).max() < 1e-5


def test_logit_is_a_sum_of_log_probabilities():
    model, tok = tiny()
    prompts = make_prompts(4, shots=0)
    out, scorer = _score(model, tok, prompts, 4)
    assert (out < 0).all()  # log-probabilities of at least one token each
    # Longer continuations of random text get lower sums (the sum is not length-normalised).
    lengths = np.array([[len(c) for c in it.conts] for it in scorer.items])
    per_token = out / lengths
    assert np.corrcoef(lengths.ravel(), out.ravel())[0, 1] < 0
    assert np.isfinite(per_token).all()


def test_context_runs_once_per_batch_not_once_per_option():
    model, tok = tiny()
    prompts = make_prompts(8, shots=0)
    counter = ForwardCounter(model)
    try:
        _score(model, tok, prompts, 4)
    finally:
        counter.close()
    # Two passes per batch of 4 items: contexts (4 rows), then all 24 continuations on the repeated cache.
    assert counter.calls == 4 and counter.rows == 2 * (4 + 24)


def test_single_token_continuations_need_one_pass():
    model, tok = tiny()
    prompts = [dataclasses.replace(p, options=list("ABCDEF")) for p in make_prompts(4, shots=0)]
    counter = ForwardCounter(model)
    try:
        out, _ = _score(model, tok, prompts, 4)
    finally:
        counter.close()
    assert counter.calls == 1
    assert np.abs(out - reference_cloze(model, tok, prompts)).max() < 1e-4


def test_encode_pair_moves_trailing_space_to_the_continuation():
    _, tok = tiny()
    ctx, cont = encode_pair(tok, "Question: where is the river?\nAnswer: ", "water")
    assert ctx == tok("Question: where is the river?\nAnswer:")["input_ids"]
    assert ctx + cont == tok("Question: where is the river?\nAnswer: water")["input_ids"]
    with pytest.raises(CpbenchError):
        encode_pair(tok, "", "water")
