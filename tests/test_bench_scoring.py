"""benchmarks/bench_scoring.py's plain-forward reference runs the same tokens cpbench scores, so its loaded / idle
ratio is a fair yardstick for the scorer's (docs/scoring.md, issue 19)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scoring_fixtures import make_prompts, reference_letter_logits, tiny

from cpbench.backends.tokens import form_for, resolve_option_tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_scoring import _padded_batches  # noqa: E402


def test_plain_forward_batches_are_each_prompts_own_tokens_longest_first():
    import torch

    model, tok = tiny()
    prompts = make_prompts(11, method="base", shots=0)  # 11: a ragged last batch
    batches = _padded_batches(tok, prompts, batch_size=4)
    own = {tuple(tok(p.text)["input_ids"]): i for i, p in enumerate(prompts)}
    assert len(own) == len(prompts)
    ids_opt = resolve_option_tokens(tok, list("ABCDEF"), form_for([p.text for p in prompts])).ids
    ref = reference_letter_logits(model, tok, prompts, ids_opt)

    seen, lengths = [], []
    with torch.inference_mode():
        for ids, mask in batches:
            assert ids.shape == mask.shape and len(ids) <= 4
            # left padding: every row's real tokens are one run at the right end
            assert (mask[:, -1] == 1).all() and (mask.diff(dim=1) >= 0).all()
            last = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, list(ids_opt)]
            for row, m, out in zip(ids, mask, last, strict=True):
                i = own[tuple(row[m.bool()].tolist())]
                seen.append(i)
                lengths.append(int(m.sum()))
                # RoPE sees only relative positions, so the shifted rows give the unpadded prompt's logits
                assert np.abs(out.float().numpy() - ref[i]).max() < 1e-4
    assert sorted(seen) == list(range(len(prompts)))
    assert lengths == sorted(lengths, reverse=True)
