"""Letter scoring: batched, length-sorted, prefix-KV-cached forward passes equal Ye et al.'s one-prompt loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scoring_fixtures import ForwardCounter, make_prompts, reference_letter_logits, tiny

from cpbench.backends.kv import common_prefix_len
from cpbench.backends.letter import LetterScorer, plan_prefix
from cpbench.backends.tokens import form_for, resolve_option_tokens

LETTERS = list("ABCDEF")


def _score(model, tok, prompts, batch_size, use_prefix_cache=True):
    opt = resolve_option_tokens(tok, LETTERS, form_for([p.text for p in prompts]))
    scorer = LetterScorer(model, tok, prompts, opt.ids, batch_size=batch_size, use_prefix_cache=use_prefix_cache)
    order = scorer.order()
    out = np.full((len(prompts), 6), np.nan, dtype=np.float32)
    out[order] = scorer(order)
    return out, scorer, opt


# --------------------------------------------------------------------------------------------- the prefix plan
@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(st.integers(0, 5), min_size=0, max_size=12),
    tails=st.lists(st.tuples(st.integers(0, 12), st.lists(st.integers(0, 5), min_size=1, max_size=6)), min_size=1,
                   max_size=8),  # fmt: skip
)
def test_plan_prefix_caches_only_shared_tokens_and_saves_the_most(prefix, tails):
    # Each prompt: the first `keep` prefix tokens, then arbitrary tokens (a boundary merge changes the tail).
    full = [prefix[:keep] + rest for keep, rest in tails]
    idx = np.arange(len(full))
    plan = plan_prefix(prefix, full, idx)
    m = plan.cached_tokens
    covered = sorted(np.concatenate([plan.members, plan.fallback]).tolist())
    assert covered == (idx.tolist() if m else plan.fallback.tolist())
    for i in plan.members:
        assert full[i][:m] == prefix[:m]  # the cached tokens are exactly the prompt's own first tokens
        assert len(full[i]) > m  # at least one token left to read logits from
    # Brute force: no other cached length saves more tokens.
    def saving(k):
        return k * sum(1 for f in full if f[:k] == prefix[:k] and len(f) > k)

    best = max([0] + [saving(k) for k in range(1, len(prefix) + 1)])
    assert m * len(plan.members) == best


@settings(max_examples=300, deadline=None)
@given(a=st.lists(st.integers(0, 3), max_size=40), b=st.lists(st.integers(0, 3), max_size=40))
def test_common_prefix_len_matches_an_element_by_element_scan(a, b):
    shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert common_prefix_len(a, b) == common_prefix_len(tuple(b), a) == shared
    assert common_prefix_len(a + b, a) == len(a)


def test_plan_prefix_falls_back_for_prompts_that_diverge_early():
    prefix = list(range(10))
    full = [prefix + [50, 51]] * 5 + [prefix[:2] + [99, 98, 97]]
    plan = plan_prefix(prefix, full, np.arange(6))
    assert plan.cached_tokens == 10 and plan.members.tolist() == [0, 1, 2, 3, 4] and plan.fallback.tolist() == [5]


# --------------------------------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("shots", [0, 3])
def test_equals_one_prompt_at_a_time_reference(shots):
    model, tok = tiny()
    prompts = make_prompts(14, shots=shots)
    out, scorer, opt = _score(model, tok, prompts, batch_size=4)
    ref = reference_letter_logits(model, tok, prompts, opt.ids)
    assert np.abs(out - ref).max() < 1e-4
    assert np.isfinite(out).all()


def test_batch_size_does_not_change_logits():
    model, tok = tiny()
    prompts = make_prompts(17, shots=2)  # 17: the last batch is ragged for every batch size below
    base, _, _ = _score(model, tok, prompts, batch_size=1)
    for bs in (3, 8, 32):
        out, _, _ = _score(model, tok, prompts, batch_size=bs)
        assert np.abs(out - base).max() < 1e-3  # the acceptance bound (fp32); measured ~1e-7
    assert np.abs(out - base).max() < 1e-5


def test_prefix_cache_equals_no_cache_and_is_computed_once():
    model, tok = tiny()
    prompts = make_prompts(12, shots=3)
    counter = ForwardCounter(model)
    try:
        cached, scorer, _ = _score(model, tok, prompts, batch_size=4, use_prefix_cache=True)
        calls_cached = counter.calls
    finally:
        counter.close()
    plain, plain_scorer, _ = _score(model, tok, prompts, batch_size=4, use_prefix_cache=False)
    assert np.abs(cached - plain).max() < 1e-4
    stats = scorer.work.stats()
    assert stats["cached_prompts"] == 12 and stats["fallback_prompts"] == 0
    assert stats["groups"][0]["cached_tokens"] == len(tok(prompts[0].prefix)["input_ids"])
    assert stats["tokens_computed"] < 0.5 * stats["tokens_total"]  # the demonstrations dominate 3-shot prompts
    assert calls_cached == 1 + 3  # one prefix pass, then 12 items in batches of 4
    assert plain_scorer.work.stats()["cached_prompts"] == 0


def test_prefix_ending_mid_word_caches_the_shared_tokens_only():
    # "...only.\n\nQue" + "stion: ..." tokenizes differently from the prefix alone: the plan trims the boundary.
    model, tok = tiny()
    prompts = make_prompts(8, shots=2)
    cut = len(prompts[0].prefix) + len("Que")
    moved = [dataclasses.replace(p, prefix=p.text[:cut]) for p in prompts]
    assert all(p.text.startswith(p.prefix) for p in moved)
    out, scorer, opt = _score(model, tok, moved, batch_size=3)
    group = scorer.work.stats()["groups"][0]
    prefix_ids, full_ids = tok(moved[0].prefix)["input_ids"], tok(moved[0].text)["input_ids"]
    assert full_ids[: len(prefix_ids)] != prefix_ids  # the boundary really merges
    assert 0 < group["cached_tokens"] < group["prefix_tokens"]
    assert np.abs(out - reference_letter_logits(model, tok, moved, opt.ids)).max() < 1e-4


def test_mixed_prefix_groups_and_uncached_prompts():
    model, tok = tiny()
    a = make_prompts(5, shots=3, method="task")
    b = make_prompts(5, shots=1, method="shared", seed=1)
    c = [dataclasses.replace(p, item_id=f"c{p.item_id}", prefix="") for p in make_prompts(4, shots=0, seed=2)]
    b = [dataclasses.replace(p, item_id=f"b{p.item_id}") for p in b]
    prompts = a + b + c
    out, scorer, opt = _score(model, tok, prompts, batch_size=4)
    assert len(scorer.work.prefixes) == 2 and (scorer.work.group == -1).sum() == 4
    assert np.abs(out - reference_letter_logits(model, tok, prompts, opt.ids)).max() < 1e-4


def test_chat_prompts_use_bare_letters():
    model, tok = tiny()
    prompts = make_prompts(6, shots=2, chat="v1", tokenizer=tok)
    out, scorer, opt = _score(model, tok, prompts, batch_size=4)
    assert opt.form == "bare"
    assert np.abs(out - reference_letter_logits(model, tok, prompts, opt.ids)).max() < 1e-4


def test_order_is_longest_first_within_a_group_and_deterministic():
    model, tok = tiny()
    prompts = make_prompts(12, shots=1)
    _, s1, _ = _score(model, tok, prompts, batch_size=4)
    _, s2, _ = _score(model, tok, prompts, batch_size=7)
    assert s1.order().tolist() == s2.order().tolist()
    lengths = s1.work.work_len[s1.order()]
    assert (np.diff(lengths) <= 0).all()


# --------------------------------------------------------------------------------------------- sliding-window models
def _tiny_gemma3(tok, window):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, sliding_window=window, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("window", [1024, 48])
def test_sliding_window_model_matches_reference(window):
    # Gemma 3 mixes sliding-window and full layers. Within the window the prefix cache is used; beyond it, pads
    # between prefix and item would shift the index-based window, so the cache is switched off (and says why).
    _, tok = tiny()
    model = _tiny_gemma3(tok, window)
    prompts = make_prompts(9, shots=2)
    out, scorer, opt = _score(model, tok, prompts, batch_size=4)
    assert np.abs(out - reference_letter_logits(model, tok, prompts, opt.ids)).max() < 1e-4
    if window == 1024:
        assert scorer.work.stats()["cached_prompts"] == 9
    else:
        assert scorer.work.stats()["cached_prompts"] == 0 and "sliding window" in scorer.work.notes[0]


# --------------------------------------------------------------------------------------------- prefix cache reuse
def _per_batch_copy(monkeypatch):
    """Make the scorer use the old path: a fresh DynamicCache holding a copy of the prefix for every batch."""
    from cpbench.backends.kv import PrefixKV

    monkeypatch.setattr(PrefixKV, "cache", lambda self, batch, suffix: self.expand(batch))


@pytest.mark.parametrize("model_kind", ["llama", "gemma3"])
def test_reused_prefix_buffer_gives_the_per_batch_copy_logits(monkeypatch, model_kind):
    # 13 prompts at batch 4 and 5: full batches, a short last batch (fewer rows than the buffer), suffixes shrinking.
    model, tok = tiny()
    if model_kind == "gemma3":  # a sliding-window layer and a full one, everything inside the window
        model = _tiny_gemma3(tok, 1024)
    prompts = make_prompts(13, shots=3)
    reused = {bs: _score(model, tok, prompts, batch_size=bs)[0] for bs in (4, 5)}
    with monkeypatch.context() as m:
        _per_batch_copy(m)
        copied = {bs: _score(model, tok, prompts, batch_size=bs)[0] for bs in (4, 5)}
    for bs in (4, 5):
        assert np.abs(reused[bs] - copied[bs]).max() < 1e-5


class _BigCopies:
    """Counts tensor ops that write at least `numel` elements (cat, copy_, clone, index, expand-materialisation):
    a per-batch copy of the prefix keys is one of them per layer and batch."""

    def __init__(self, numel):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func.overloadpacket.__name__
                if name in {"cat", "copy_", "clone", "index", "index_select", "repeat", "_to_copy"}:
                    t = out[0] if isinstance(out, (tuple, list)) else out
                    if hasattr(t, "numel") and t.numel() >= outer.numel:
                        target = args[0] if name == "copy_" else t
                        outer.count += int(target.numel() >= outer.numel)
                return out

        self.numel, self.count, self.mode = numel, 0, Mode()


def _count_prefix_copies(model, tok, prompts, batch_size):
    opt = resolve_option_tokens(tok, LETTERS, form_for([p.text for p in prompts]))
    scorer = LetterScorer(model, tok, prompts, opt.ids, batch_size=batch_size)
    order = scorer.order()
    scorer(order[:1])  # computes the prefix (batch 1) outside the count
    kv = scorer._prefix(0)
    k = kv.layers[0][0]
    counter = _BigCopies(batch_size * k.shape[1] * kv.length * k.shape[3])  # one layer's prefix keys for a batch
    before = kv.copies
    with counter.mode:
        scorer(order)  # 12 prompts in batches of 4, then again (a second chunk)
        scorer(order)
    return counter.count, kv.copies - before, kv, len(model.model.layers)


def test_prefix_is_not_copied_per_batch(monkeypatch):
    model, tok = tiny()
    prompts = make_prompts(12, shots=3)
    count, copies, kv, n_layers = _count_prefix_copies(model, tok, prompts, 4)
    # keys and values of every layer copied once into a 4-row buffer (by the first batch of 4), never again
    assert count == 2 * n_layers and copies == 1
    c1, c2 = kv.cache(4, 5), kv.cache(3, 2)
    assert c1.layers[0].keys.data_ptr() == c2.layers[0].keys.data_ptr() == kv._buf[0][0].data_ptr()
    with monkeypatch.context() as m:  # the old per-batch copy fails the count: 6 batches x layers x (k, v) x 2 copies
        _per_batch_copy(m)
        old, _, _, _ = _count_prefix_copies(model, tok, prompts, 4)
    assert old >= 6 * n_layers * 2
