"""vLLM scorer: the request builder gives the HF scorer's exact token ids, the output parser reads exactly the option
ids (recorded/constructed vLLM outputs, no vLLM import), and the whole scoring path through an engine stand-in that
answers like vLLM in raw-logits mode reproduces the HF scorer. On a GPU with vLLM installed, the real engine is
compared with the HF scorer (skipped with the reason elsewhere)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cpbench.base.errors import CpbenchError
from cpbench.backends import vllm as sv


def _output(values: dict[int, float], sampled: int | None = None, recorded: bool = False):
    """A RequestOutput as vLLM 0.33 returns it (Logprob objects keyed by int ids), or its JSON record (str keys)."""
    pos = dict(values)
    if sampled is not None:
        pos.setdefault(sampled, max(values.values()) + 1.0)  # vLLM adds the sampled token to the map
    if recorded:
        return json.loads(json.dumps({"outputs": [{"logprobs": [{str(k): {"logprob": v, "rank": None}
                                                                 for k, v in pos.items()}]}]}))  # fmt: skip
    logprobs = [{k: SimpleNamespace(logprob=v, rank=None, decoded_token=None) for k, v in pos.items()}]
    return SimpleNamespace(outputs=[SimpleNamespace(logprobs=logprobs, token_ids=[sampled or 0])])


def test_parser_reads_exactly_the_option_ids_in_letter_order():
    ids = [35, 36, 37, 38, 39, 40]
    outs = [_output({40: 1.5, 35: -2.0, 36: 0.25, 37: 3.0, 38: -1.0, 39: 0.0}, sampled=7),
            _output({i: float(i) for i in ids}, recorded=True)]  # fmt: skip
    got = sv.parse_outputs(outs, ids, n_expected=2)
    assert got.dtype == np.float32 and got.shape == (2, 6)
    assert got[0].tolist() == [-2.0, 0.25, 3.0, -1.0, 0.0, 1.5]  # by id, not by the map's order; sampled id ignored
    assert got[1].tolist() == [float(i) for i in ids]


def test_parser_rejects_missing_ids_nan_and_count_mismatch():
    ids = [1, 2, 3]
    with pytest.raises(CpbenchError, match="lacks option token id"):
        sv.parse_outputs([_output({1: 0.0, 2: 0.0}, sampled=9)], ids)
    with pytest.raises(CpbenchError, match="non-finite"):
        sv.parse_outputs([_output({1: 0.0, 2: float("nan"), 3: 0.0})], ids)
    with pytest.raises(CpbenchError, match="2 outputs for 3 prompts"):
        sv.parse_outputs([_output({1: 0.0, 2: 0.0, 3: 0.0})] * 2, ids, n_expected=3)
    with pytest.raises(CpbenchError, match="no logprobs"):
        sv.parse_outputs([SimpleNamespace(outputs=[SimpleNamespace(logprobs=None)])], ids)


def test_request_and_engine_settings():
    kw = sv.sampling_kwargs([5, 6, 7])
    assert kw["max_tokens"] == 1 and kw["temperature"] == 0.0 and kw["logprob_token_ids"] == [5, 6, 7]
    assert "prompt_logprobs" not in kw  # it does not include the last prompt position
    with pytest.raises(CpbenchError, match="not distinct"):
        sv.sampling_kwargs([5, 5])
    eng = sv.engine_kwargs("/m", tensor_parallel_size=4)
    assert eng["logprobs_mode"] == "raw_logits" and eng["enable_prefix_caching"] and eng["tensor_parallel_size"] == 4
    assert [sv.tensor_parallel_size(g, 32) for g in (1, 2, 3, 4, 8)] == [1, 2, 2, 4, 8]
    assert sv.tensor_parallel_size(8, 12) == 4  # must divide the attention heads


def test_requests_are_the_hf_scorers_token_ids():
    from scoring_fixtures import make_prompts, tiny

    from cpbench.backends.letter import plan_letter_work

    model, tok = tiny()
    prompts = make_prompts(12, shots=2)
    reqs = sv.build_requests(tok, prompts)
    assert [r["prompt_token_ids"] for r in reqs] == plan_letter_work(tok, model, prompts).full_ids
    assert sv.build_requests(tok, []) == []


class _StandIn:
    """Answers like vLLM in raw-logits mode: for each request's token ids, the next-token logits of the requested
    ids (plus the greedy token), computed by the HF model on exactly those ids."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.kwargs = sv.engine_kwargs("tiny")
        self.tp, self.gpu, self.name_or_path, self.device = 1, "stand-in", "tiny", "cuda:0"
        self.calls = 0

    def option_logits(self, requests, option_ids):
        import torch

        self.calls += 1
        outs = []
        with torch.inference_mode():
            for r in requests:
                row = self.model(input_ids=torch.tensor([r["prompt_token_ids"]])).logits[0, -1]
                values = {int(i): float(row[i]) for i in option_ids}
                outs.append(_output(values, sampled=int(row.argmax())))
        return sv.parse_outputs(outs, option_ids, len(requests))


def test_scoring_through_an_engine_stand_in_reproduces_the_hf_scorer(tmp_path, monkeypatch):
    from scoring_fixtures import make_prompts, reference_letter_logits, tiny

    from cpbench.results.artifact import LogitsArtifact
    from cpbench.base.runkey import ScoreKey

    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))
    model, tok = tiny()
    prompts = make_prompts(10, shots=2)
    key = ScoreKey(model="tiny", task="qa", prompt="task", shots=2, data="samples", scorer="vllm")
    engine = _StandIn(model, tok)
    art = sv.score_prompts_vllm(engine, prompts, key, chunk_size=4, provenance={"weights_id": "w"},
                                out_path=tmp_path / "a.parquet")  # fmt: skip
    ref = reference_letter_logits(model, tok, prompts, art.provenance["option_token_ids"]["ids"])
    assert np.abs(art.logits - ref).max() < 1e-5 and art.ids == [str(p.item_id) for p in prompts]
    prov = LogitsArtifact.load(tmp_path / "a.parquet").provenance
    assert prov["backend"] == "vllm" and prov["run_key"]["scorer"] == "vllm" and engine.calls == 3  # 3 chunks
    assert prov["scoring_detail"]["logprobs_mode"] == "raw_logits"


def test_vllm_scorer_refuses_cpu_with_one_line():
    with pytest.raises(CpbenchError, match="needs a CUDA GPU"):
        sv.require_vllm("cpu")


@pytest.mark.gpu
def test_vllm_matches_hf_option_logits_on_gpu(tmp_path, monkeypatch):
    """Real engine vs HF on the tiny model (bf16 on both): argmax agreement and the largest logit difference."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (vLLM is CUDA-only)")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed in this environment (pip install 'cpbench[vllm]' in a second one)")
    from scoring_fixtures import make_prompts
    from tiny_model import tiny_model_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cpbench.base.runkey import ScoreKey
    from cpbench.backends.pipeline import score_prompts

    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))
    path = str(tiny_model_dir())
    tok = AutoTokenizer.from_pretrained(path)
    prompts = make_prompts(48, shots=2)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to("cuda").eval()
    hf = score_prompts(hf_model, tok, prompts, ScoreKey(model="tiny", task="qa", prompt="task", shots=2),
                       resume=False, progress=False)  # fmt: skip
    del hf_model
    engine = sv.VllmModel(path, tok, "cuda", dtype="bfloat16")
    v = sv.score_prompts_vllm(engine, prompts, ScoreKey(model="tiny", task="qa", prompt="task", shots=2, scorer="vllm"),
                              resume=False)  # fmt: skip
    agree = float((hf.logits.argmax(1) == v.logits.argmax(1)).mean())
    diff = float(np.abs(hf.logits - v.logits).max())
    print(f"vLLM vs HF on {len(prompts)} prompts: argmax agreement {agree:.3f}, max |diff| {diff:.4f}")
    assert agree >= 0.9 and diff < 0.25  # bf16 kernels differ; a wrong position or id would be far off
