"""Shard-wise checkpoint verification (cpbench.weights.compress.verify) measures exactly what the whole-model reload
measured, for dense (pruned), packed 4-bit and int8 checkpoints of the tiny model, without loading the model."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    import os

    from cpbench.weights.compress import CalibrationSpec, compress
    from cpbench.weights.models import resolve
    from tiny_model import tiny_model_dir

    old = os.environ.get("CPBENCH_CACHE")
    os.environ["CPBENCH_CACHE"] = str(tmp_path_factory.mktemp("verify-cache"))
    entry = resolve(str(tiny_model_dir()))
    try:
        out = {name: compress(entry, name, CalibrationSpec(n=4, seq_len=64), "cpu")
               for name in ("magnitude-2:4", "rtn-4bit", "w8a8-rtn")}  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("CPBENCH_CACHE", None)
        else:
            os.environ["CPBENCH_CACHE"] = old
    return out


@pytest.mark.parametrize("recipe", ["magnitude-2:4", "rtn-4bit", "w8a8-rtn"])
def test_shard_wise_verification_equals_the_whole_model_reload(checkpoints, recipe):
    from cpbench.weights.compress.verify import _load_dense, iter_linear_weights, verify_checkpoint

    ck = checkpoints[recipe]
    shards = verify_checkpoint(ck.path, ck.recipe)
    whole = verify_checkpoint(ck.path, ck.recipe, model=_load_dense(ck.path))
    assert shards["summary"]["method"].startswith("safetensors") and whole["summary"]["method"] == "in-memory model"
    assert shards["layers"] == whole["layers"] and shards["ignored_layers"] == whole["ignored_layers"]
    assert shards["summary"]["weights_finite"] and shards["summary"]["forward_finite"]
    dense = _load_dense(ck.path)
    mods = dict(dense.named_modules())
    for name, w in iter_linear_weights(ck.path, ["model.layers.0.mlp.down_proj", "lm_head"]):
        assert torch.equal(w, mods[name].weight.float())  # decompressed per layer = transformers' dequantization


def test_non_finite_weights_fail_verification(checkpoints, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from cpbench.weights.compress.verify import failed_checks, verify_checkpoint

    ck = checkpoints["magnitude-2:4"]
    bad = tmp_path / "bad"
    shutil.copytree(ck.path, bad)
    (f,) = bad.glob("*.safetensors")
    tensors = load_file(f)
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, f, metadata={"format": "pt"})
    v = verify_checkpoint(bad, ck.recipe)
    assert v["summary"]["weights_finite"] is False
    assert any("non-finite weights" in b for b in failed_checks(v, ck.recipe))
