"""`cpbench run --model BASE --candidate PATH`: someone else's compressed checkpoint judged against its base.

The end-to-end test compresses the tiny model with llm-compressor *outside* cpbench (a plain `oneshot`, as a user
would), passes the saved directory as --candidate, and checks that the results pair with the base's: a decoupling
row and a `cpbench check` verdict, with the candidate's quantization config and measured weights in provenance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)


@pytest.fixture(scope="module")
def other_tokenizer_dir():
    """The tiny model built from another seed: the same architecture, a tokenizer trained on other text."""
    from tiny_model import tiny_model_dir

    return str(tiny_model_dir(seed=1))


@pytest.fixture(scope="module")
def w4a16_dir(tiny_dir, tmp_path_factory):
    """The tiny model compressed by a plain llm-compressor `oneshot` (W4A16 RTN, group 128 divides 128 and 256),
    outside cpbench, saved compressed (compressed-tensors pack-quantized) with its tokenizer."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("cand") / "tiny-w4a16"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    oneshot(model=model, recipe=[QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])],
            pipeline="datafree")  # fmt: skip
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    return str(out)


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------------------------ refusals
def test_candidate_with_another_tokenizer_is_refused_with_one_line(tiny_dir, other_tokenizer_dir, capsys, tmp_path):
    capsys.readouterr()
    rc = main(["run", "--model", tiny_dir, "--candidate", other_tokenizer_dir, "--candidate-name", "other",
               "--tasks", "qa", "--data", "samples", "--results", str(tmp_path / "res")])  # fmt: skip
    assert rc == 2
    line = _err_line(capsys)
    assert "candidate 'other' cannot be compared" in line and "tokenizer differs" in line
    assert not list((tmp_path / "res").rglob("*.json"))  # refused before anything was scored


def test_candidate_with_another_architecture_is_refused(tiny_dir, tmp_path, capsys):
    from cpbench.weights.candidates import require_pairable
    from cpbench.weights.models import load_tokenizer, model_config, resolve, resolve_candidate

    other = tmp_path / "wider"
    shutil.copytree(tiny_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (other / "config.json").write_text(json.dumps(cfg))
    base = resolve(tiny_dir)
    with pytest.raises(CpbenchError, match="architecture differs from the base: num_hidden_layers is 3, base has 2"):
        require_pairable(load_tokenizer(base), model_config(base), resolve_candidate(str(other)), base.name)
    same = resolve_candidate(tiny_dir, "copy")
    require_pairable(load_tokenizer(base), model_config(base), same, base.name)  # the base itself pairs


def test_candidate_names(tiny_dir, capsys):
    from cpbench.weights.models import resolve_candidate
    from cpbench.run.plan import plan_from_options

    c = resolve_candidate(tiny_dir)
    assert c.name == Path(tiny_dir).name and c.weights().kind == "candidate"
    assert c.weights().weights_id.startswith("candidate:local:")
    assert resolve_candidate("someorg/model-GPTQ@abc").entry.revision == "abc"
    assert resolve_candidate("someorg/model-GPTQ").name == "model-GPTQ"
    for bad, msg in (("base", "reserved"), ("a/b", "use letters")):
        with pytest.raises(CpbenchError, match=msg):
            resolve_candidate(tiny_dir, bad)
    with pytest.raises(CpbenchError, match="no such checkpoint"):
        resolve_candidate("./missing-dir")
    kw = dict(model=tiny_dir, tasks=["qa"], data="samples")
    with pytest.raises(CpbenchError, match="two candidates are named"):
        plan_from_options(candidates=[tiny_dir, tiny_dir], **kw)
    with pytest.raises(CpbenchError, match="also a recipe of this run"):
        plan_from_options(candidates=[tiny_dir], candidate_names=["gptq-4bit"], quant=["gptq-4bit"], **kw)
    with pytest.raises(CpbenchError, match="--candidate-name values"):
        plan_from_options(candidates=[tiny_dir], candidate_names=["a", "b"], **kw)
    plan = plan_from_options(candidates=[tiny_dir, tiny_dir], candidate_names=["a", "b"], **kw)
    assert [c.name for c in plan.candidates] == ["a", "b"] and list(plan.recipes) == ["base"]


def test_quantized_checkpoint_needs_its_loader(tmp_path):
    from cpbench.weights.models import require_quant_loader

    require_quant_loader({"quant_method": "compressed-tensors"}, "x")  # installed with llm-compressor
    require_quant_loader(None, "x")
    import importlib.util

    if importlib.util.find_spec("gptqmodel") is None:
        with pytest.raises(CpbenchError, match="gptq checkpoint; loading it needs .*gptqmodel"):
            require_quant_loader({"quant_method": "gptq", "bits": 4}, "x")


def test_description_reads_gptq_awq_and_bnb_configs():
    from cpbench.weights.candidates import quantization

    assert quantization({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
                         "tokenizer": None, "dataset": ["x"]}) == {
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}  # fmt: skip
    assert quantization({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}) == {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    assert quantization(None) is None


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_llmcompressor_checkpoint_as_candidate_pairs_with_the_base(tiny_dir, w4a16_dir, tmp_path, capsys):
    from cpbench.results.analysis.decoupling import DecouplingConfig, decoupling_table
    from cpbench.weights.models import resolve
    from cpbench.results.store import load_results

    res = tmp_path / "res"
    args = ["run", "--model", tiny_dir, "--candidate", w4a16_dir, "--candidate-name", "w4a16-rtn", "--tasks", "qa",
            "--data", "samples", "--results", str(res)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "w4a16-rtn" in out
    model_key = resolve(tiny_dir).key
    base_dir, cand_dir = res / model_key / "base", res / model_key / "w4a16-rtn"
    (cand_rec,) = [json.loads(p.read_text()) for p in cand_dir.glob("*.json")]
    (base_rec,) = [json.loads(p.read_text()) for p in base_dir.glob("*.json")]
    assert cand_rec["items_hash"] == base_rec["items_hash"]
    assert cand_rec["run_key"]["score"]["model"] == model_key and cand_rec["run_key"]["score"]["recipe"] == "w4a16-rtn"
    prov = cand_rec["provenance"]
    spec = prov["recipe"]["spec"]
    assert prov["recipe"]["kind"] == "candidate" and spec["id"] == str(Path(w4a16_dir).resolve())
    group = spec["quantization"]["groups"][0]
    assert (group["bits"], group["group_size"], spec["quantization"]["format"]) == (4, 128, "pack-quantized")
    report = prov["compression_report"]
    assert report["summary"]["distinct_max"] <= 16  # really 4-bit: at most 2^4 values per group of 128
    assert report["summary"]["pattern_2_4"] is False
    assert report["checkpoint_bytes"] == sum(f.stat().st_size for f in Path(w4a16_dir).iterdir())
    assert report["fingerprint"] == prov["model_hash"] != base_rec["provenance"]["model_hash"]
    assert prov["weights"]["kind"] == "candidate" and prov["weights_id"].startswith("candidate:local:")

    df, skipped = load_results(res)
    assert not skipped
    dec = decoupling_table(df, DecouplingConfig())
    row = dec[(dec["recipe"] == "w4a16-rtn") & (dec["score"] == "lac")]
    assert len(row) == 1 and row.iloc[0]["category"] != "unpaired"

    junit = tmp_path / "junit.xml"
    rc = main(["check", "--baseline", str(base_dir), "--candidate", str(cand_dir), "--junit", str(junit)])
    assert rc in (0, 1)
    text = capsys.readouterr().out
    assert "w4a16-rtn" in text and ("PASS" in text or "FAIL" in text)
    assert "w4a16-rtn" in junit.read_text()

    # a rerun reuses both sides' artifacts (same weights id): nothing is loaded or scored again
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "model loaded" not in out and out.count("artifact reused") == 2


def test_check_accepts_the_old_baseline_folder_name(tmp_path, capsys):
    """`--baseline results/<model>/fp16` (the folder's name before `base`) maps to `.../base` with a note."""
    from result_factory import make_record

    from cpbench.results.store import write_result

    root = tmp_path / "res"
    write_result(make_record(recipe="base"), root)
    write_result(make_record(recipe="gptq-4bit"), root)
    capsys.readouterr()
    rc = main(["check", "--baseline", str(root / "tiny" / "fp16"), "--candidate", str(root / "tiny" / "gptq-4bit"),
               "--decision", "point"])  # synthetic records have no artifacts: the point-estimate mode
    cap = capsys.readouterr()
    assert rc == 0 and "now called 'base'" in cap.err and "PASS" in cap.out
    rc = main(["check", "--baseline", str(root / "tiny" / "nothing"), "--candidate", str(root / "tiny" / "gptq-4bit")])
    assert rc == 2 and "no such file or directory" in _err_line(capsys)


@pytest.mark.slow
def test_bitsandbytes_int8_checkpoint_as_candidate(tiny_dir, tmp_path, capsys):
    """A pre-quantized bitsandbytes INT8 checkpoint (bnb INT8 save/reload is exact on CPU) judged on CPU. Needs
    bitsandbytes (`cpbench[gpu]`); skipped where it is not installed."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    out = tmp_path / "tiny-bnb8"
    model = AutoModelForCausalLM.from_pretrained(
        tiny_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head"]),
        device_map="cpu")  # fmt: skip
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    res = tmp_path / "res"
    assert main(["run", "--model", tiny_dir, "--candidate", str(out), "--tasks", "qa", "--data", "samples",
                 "--device", "cpu", "--results", str(res)]) == 0  # fmt: skip
    (rec,) = [json.loads(p.read_text()) for p in res.rglob("tiny-bnb8/*.json") if p.parent.name == "tiny-bnb8"]
    q = rec["provenance"]["recipe"]["spec"]["quantization"]
    assert q["quant_method"] == "bitsandbytes" and q["load_in_8bit"] is True
    report = rec["provenance"]["compression_report"]
    assert report["unmeasured_layers"]  # int8 kernels hold no dense float weight to measure


def test_hub_candidate_that_cannot_be_read_is_one_line(tiny_dir, tmp_path, capsys, monkeypatch):
    """Offline (or a typo in the repo id): the candidate's config cannot be read; one line, exit 2, nothing scored."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["run", "--model", tiny_dir, "--candidate", "cpbtest/no-such-model", "--tasks", "qa", "--data",
               "samples", "--results", str(tmp_path / "res")])  # fmt: skip
    assert rc == 2
    line = _err_line(capsys)
    assert "no-such-model" in line
    assert not list((tmp_path / "res").rglob("*.json"))


@pytest.mark.slow
def test_gguf_file_as_candidate(tiny_dir, tmp_path, capsys):
    """A .gguf file (the tiny model written as llama.cpp lays it out, F32) as --candidate: converted once, its tokenizer
    (read back by transformers' GGUF reader) pairs with the base's, and its logits equal the base's."""
    import numpy as np
    from tiny_gguf import write_tiny_gguf

    from cpbench.results.artifact import LogitsArtifact

    gguf_file = write_tiny_gguf(tiny_dir, tmp_path / "tiny-f32.gguf")
    res = tmp_path / "res"
    assert main(["run", "--model", tiny_dir, "--candidate", str(gguf_file), "--tasks", "qa", "--data", "samples",
                 "--results", str(res)]) == 0  # fmt: skip
    base_art, cand_art = (LogitsArtifact.load(next(res.rglob(f"{r}/artifacts/*.parquet"))) for r in ("base", "tiny-f32"))
    assert base_art.ids == cand_art.ids
    np.testing.assert_allclose(cand_art.logits, base_art.logits, atol=1e-4)  # F32 GGUF: the same weights
    prov = cand_art.provenance
    assert prov["weights"]["gguf_file"] == "tiny-f32.gguf" and prov["recipe"]["spec"]["gguf_file"] == "tiny-f32.gguf"
    assert prov["compression_report"]["checkpoint_bytes"] == gguf_file.stat().st_size
