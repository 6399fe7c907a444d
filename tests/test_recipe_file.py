"""`--quant-file recipe.yaml`: an llm-compressor recipe file as a cpbench recipe (validated, verified, cached by
content, its text in provenance)."""

from __future__ import annotations

import json

import pytest

from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from run_fixtures import tiny_dir  # noqa: F401  (pytest fixtures)

W4A16_GPTQ = """
quant_stage:
  quant_modifiers:
    GPTQModifier:
      targets: ["Linear"]
      scheme: W4A16
      ignore: ["lm_head"]
"""
W8A8_RTN = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      targets: ["Linear"]
      scheme: W8A8
      ignore: ["lm_head"]
"""
SPARSE_24 = """
sparsity_stage:
  sparsity_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      mask_structure: "2:4"
      targets: ["Linear"]
      ignore: ["re:.*lm_head"]
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    from cpbench.specs import recipes

    monkeypatch.setattr(recipes, "FILE_RECIPES", {})


def test_knobs_are_read_from_the_modifiers(tmp_path):
    from cpbench.specs.recipe_file import file_needs_calibration, load_recipe_file
    from cpbench.specs.recipes import resolve

    (tmp_path / "my-gptq.yaml").write_text(W4A16_GPTQ)
    r = load_recipe_file(tmp_path / "my-gptq.yaml")
    assert (r.name, r.kind, r.quantize, r.scheme, r.ignore) == ("my-gptq", "llmcompressor", "gptq", "W4A16",
                                                                ("lm_head",))  # fmt: skip
    assert r.modifiers == W4A16_GPTQ and r.spec()["modifiers"] == W4A16_GPTQ  # full text in provenance and cache key
    assert resolve("my-gptq") is r  # plans name it like a registry recipe
    assert file_needs_calibration(W4A16_GPTQ) and not file_needs_calibration(W8A8_RTN)
    (tmp_path / "s24.yaml").write_text(SPARSE_24)
    s = load_recipe_file(tmp_path / "s24.yaml")
    assert (s.prune, s.mask, s.target_sparsity, s.quantize) == ("sparsegpt", "2:4", 0.5, None)
    assert file_needs_calibration(SPARSE_24)


@pytest.mark.parametrize("text,msg", [
    ("a: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "YAML mapping of stages"),
    ("quant_stage:\n  quant_modifiers:\n    NoSuchModifier:\n      x: 1\n", "llm-compressor cannot read this recipe"),
    ("stage:\n  mods:\n    GPTQModifier:\n      scheme: W4A16\n", "the recipe has no modifiers"),  # not *_stage
])  # fmt: skip
def test_bad_recipe_files_are_one_line(tmp_path, text, msg):
    from cpbench.specs.recipe_file import load_recipe_file

    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(CpbenchError, match=msg) as exc:
        load_recipe_file(tmp_path / "bad.yaml")
    assert "\n" not in str(exc.value)


def test_file_named_like_a_registered_recipe_is_refused(tmp_path, tiny_dir, capsys):
    (tmp_path / "gptq-4bit.yaml").write_text(W4A16_GPTQ)
    rc = main(["run", "--model", tiny_dir, "--quant-file", str(tmp_path / "gptq-4bit.yaml"), "--tasks", "qa",
               "--data", "samples"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "already a recipe" in err[0]
    assert main(["run", "--model", tiny_dir, "--quant-file", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_quant_file_runs_verified_and_cached_by_content(tmp_path, tiny_dir, capsys):
    f = tmp_path / "w8a8-rtn-file.yaml"
    f.write_text(W8A8_RTN)
    args = ["run", "--model", tiny_dir, "--quant-file", str(f), "--tasks", "qa", "--data", "samples",
            "--results", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "checkpoint written" in out
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("w8a8-rtn-file/*.json")]
    prov = rec["provenance"]
    assert prov["recipe"]["spec"]["modifiers"] == W8A8_RTN
    ver = prov["compression_report"]["verification"]
    assert ver["ok"] and ver["quantization_config"]["groups"][0]["bits"] == 8
    assert ver["summary"]["distinct_max"] <= 256
    key = prov["compression_report"]["cache_key"]
    assert main(args) == 0  # same content: the cached checkpoint and the stored artifact are reused
    assert "artifact reused" in capsys.readouterr().out
    f.write_text(W8A8_RTN.replace('ignore: ["lm_head"]', 'ignore: ["lm_head", "re:.*down_proj"]'))
    assert main(args + ["--force"]) == 0  # other content: another checkpoint
    (rec2,) = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("w8a8-rtn-file/*.json")]
    assert rec2["provenance"]["compression_report"]["cache_key"] != key
