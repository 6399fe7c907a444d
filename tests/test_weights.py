"""cpbench.weights.identity: the one owner of "which weights were scored"."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cpbench.weights import identity as weights
from cpbench.weights.models import resolve
from cpbench.specs.recipes import resolve as resolve_recipe
from run_fixtures import tiny_dir  # noqa: F401  (pytest fixtures)


def test_no_import_cycle_and_no_torch():
    """cpbench.weights.identity imports neither cpbench.weights.models nor cpbench.weights.compress (both import it), nor torch."""
    code = (
        "import sys; import cpbench.weights.identity; "
        "assert 'cpbench.weights.models' not in sys.modules and 'cpbench.weights.compress' not in sys.modules; "
        "assert 'torch' not in sys.modules; "
        "import cpbench.weights.compress.cache; import cpbench.weights.models; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_local_identity_and_weights_ids(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "model.safetensors").write_bytes(b"x" * 10)
    entry = resolve(str(d))
    base = entry.weights()
    assert base.kind == "base" and base.source == "local" and base.id == str(d.resolve())
    assert base.revision == weights.local_fingerprint(d)
    # the string forms the score cache always compared (old artifacts keep matching)
    assert base.weights_id == f"local:{d.resolve()}@{base.revision}"
    assert base.cache_material() == {"source": "local", "id": str(d.resolve()), "revision": base.revision,
                                     "gguf_file": None}  # fmt: skip
    rec = resolve_recipe("gptq-4bit")
    w = weights.of_recipe(entry, rec)
    assert w.kind == "recipe" and w.weights_id == f"{base.weights_id}+gptq-4bit:{rec.spec_hash()[:16]}"
    assert weights.of_recipe(entry, rec, checkpoint="ab" * 32).weights_id == "checkpoint:" + "ab" * 32
    assert weights.of_recipe(entry, resolve_recipe("base")) == base
    # a changed weight file changes the identity
    (d / "model.safetensors").write_bytes(b"y" * 11)
    assert resolve(str(d)).weights().weights_id != base.weights_id


def test_provenance_keys():
    entry = resolve("cpbtest/tiny")  # an HF id that is not in the local cache
    prov = entry.weights().provenance()
    assert prov["weights_id"] == "hub:cpbtest/tiny@main" and prov["model_commit"] is None
    assert prov["weights"]["source"] == "hub"
    with pytest.raises(Exception):
        weights.WeightsIdentity(source="hub", id="x", bogus=1)  # extra="forbid"


def test_fingerprint_tells_weights_apart(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_dir)
    a = weights.fingerprint(m)
    assert a == weights.fingerprint(m) and a.startswith("sha256:")
    with torch.no_grad():
        m.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0
    assert weights.fingerprint(m) != a
