"""Cloze scoring: summed log-likelihood of each option text, as lm-evaluation-harness computes it, batched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scoring_fixtures import ForwardCounter, make_prompts, reference_cloze, tiny

from cpbench.base.errors import CpbenchError
from cpbench.backends.cloze import ClozeScorer, encode_cloze, encode_pair, length_groups


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
        _, scorer = _score(model, tok, prompts, 4)
    finally:
        counter.close()
    # Per batch of 4 items: one pass over the 4 contexts, then the continuations with more than one token, once
    # each, on copies of the context cache (in at most 3 length groups).
    multi = sum(len(c) > 1 for it in scorer.items for c in it.conts)
    assert counter.rows == 8 + multi
    assert 2 * 2 <= counter.calls <= 2 * (1 + 3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=14))
def test_length_groups_are_optimal_contiguous_splits(lengths):
    L = np.sort(np.array(lengths))
    groups = length_groups(L)
    assert groups[0][0] == 0 and groups[-1][1] == len(L) and len(groups) <= 3
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:])) and all(lo < hi for lo, hi in groups)

    def cost(gs):
        return sum((hi - lo) * L[hi - 1] + len(L) for lo, hi in gs)

    n = len(L)
    best = cost([(0, n)])
    for i in range(1, n):
        best = min(best, cost([(0, i), (i, n)]))
        for j in range(i + 1, n):
            best = min(best, cost([(0, i), (i, j), (j, n)]))
    assert cost(groups) == best


def test_mixed_length_options_match_the_reference():
    # Long content options next to the short E/F texts: several length groups, same numbers.
    model, tok = tiny()
    long = "the river city music number small large first people world year water light stone house"
    prompts = [dataclasses.replace(p, options=[long, "paper", long + " school market", "ocean", *p.options[4:]])
               for p in make_prompts(5, shots=0)]  # fmt: skip
    out, _ = _score(model, tok, prompts, 5)
    assert np.abs(out - reference_cloze(model, tok, prompts)).max() < 1e-4


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


def test_batched_encoding_equals_encode_pair():
    _, tok = tiny()
    prompts = make_prompts(5, shots=0)
    prompts[0] = dataclasses.replace(prompts[0], cloze_context=prompts[0].cloze_context + " ")  # trailing space
    for p, item in zip(prompts, encode_cloze(tok, prompts)):
        for option, cont in zip(p.options, item.conts):
            assert (item.ctx, cont) == tuple(encode_pair(tok, p.cloze_context, " " + option))


def test_length_groups_share_the_context_cache_without_copying_it(monkeypatch):
    # Several passes per batch over one context cache: the old code deep-copied the cache for every pass but the
    # last. Same logits as that deep copy gave (computed here by restoring it), and no deep copy any more.
    import copy

    from cpbench.backends import cloze

    model, tok = tiny()
    long = "the river city music number small large first people world year water light stone house"
    prompts = [dataclasses.replace(p, options=[long, "paper", long + " school market", "ocean", *p.options[4:]])
               for p in make_prompts(6, shots=0)]  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr(cloze, "_rows_of", copy.deepcopy)
        deep, _ = _score(model, tok, prompts, 3)

    def no_deepcopy(*a, **k):
        raise AssertionError("the context cache was deep-copied")

    monkeypatch.setattr(cloze.copy, "deepcopy", no_deepcopy)
    calls = []
    rows_of = cloze._rows_of
    monkeypatch.setattr(cloze, "_rows_of", lambda cache: calls.append(1) or rows_of(cache))
    out, _ = _score(model, tok, prompts, 3)
    assert calls  # more than one length group per batch: the shared path ran
    assert np.abs(out - deep).max() < 1e-5
    assert np.abs(out - reference_cloze(model, tok, prompts)).max() < 1e-4
