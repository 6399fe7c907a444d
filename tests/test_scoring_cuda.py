"""Scoring on CUDA gives the CPU's numbers (issue 19: no GPU path had run before).

The `cuda` cases are GPU-marked: benchmarks/gpu_check.py runs them on a lent GPU machine (`pytest -m gpu`), and they
skip with the reason elsewhere. The `cpu` cases run the same code on every machine, so the comparison itself is
exercised in CI. The reference is the CPU fp32 one-prompt loop (tests/scoring_fixtures.py), written independently of
cpbench.backends; the model is loaded through cpbench's own path (`models.load`), as `cpbench run` loads it.
"""

from __future__ import annotations

import numpy as np
import pytest
from scoring_fixtures import make_prompts, reference_cloze, reference_letter_logits
from tiny_model import tiny_model_dir

from cpbench.backends.pipeline import score_prompts
from cpbench.base.runkey import ScoreKey
from cpbench.weights import models

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# bf16 moves a tiny random model's option logits by ~0.015 on CPU (fp32 by ~1e-6); 0.1 leaves room for CUDA's
# kernels (another accumulation order) and is still far below the logits' spread (~0.44 per row).
BOUND = {"float32": 1e-3, "bfloat16": 0.1}


def _need(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device visible (a lent GPU machine runs these: docs/scoring.md, 'GPU check')")


@pytest.fixture(scope="module")
def cpu_fp32():
    return models.load(tiny_model_dir(), "cpu", "float32")


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_letter_scores_on_device_match_the_cpu_reference(device, dtype, cpu_fp32, tmp_path):
    _need(device)
    model, tok = models.load(tiny_model_dir(), device, dtype)
    prompts = make_prompts(20, method="task", shots=3)  # a shared 3-shot prefix: the prefix cache is on this path
    key = ScoreKey(model="tiny", task="qa", prompt="task", shots=3, dtype=dtype)
    art = score_prompts(model, tok, prompts, key, batch_size=8, cache_root=tmp_path, resume=False, progress=False)
    assert art.provenance["device"].startswith(device) and art.provenance["dtype"] == dtype
    assert art.provenance["scoring_detail"]["work"]["cached_prompts"] == len(prompts)
    ref = reference_letter_logits(cpu_fp32[0], cpu_fp32[1], prompts, art.provenance["option_token_ids"]["ids"])
    err = np.abs(_centred(art.logits) - _centred(ref)).max()
    assert np.isfinite(art.logits).all() and err < BOUND[dtype], err
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * BOUND[dtype]  # where the error bound cannot flip the top option
    assert (art.logits.argmax(1) == ref.argmax(1))[clear].all()


@pytest.mark.parametrize("device", DEVICES)
def test_cloze_scores_on_device_match_the_cpu_reference(device, cpu_fp32, tmp_path):
    _need(device)
    model, tok = models.load(tiny_model_dir(), device, "float32")
    prompts = make_prompts(8, method="base", shots=0)
    key = ScoreKey(model="tiny", task="qa", scoring="cloze", dtype="float32")
    art = score_prompts(model, tok, prompts, key, batch_size=4, cache_root=tmp_path, resume=False, progress=False)
    ref = reference_cloze(cpu_fp32[0], cpu_fp32[1], prompts)
    assert art.provenance["device"].startswith(device)
    assert np.abs(art.logits - ref).max() < 1e-3
