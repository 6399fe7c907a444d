"""Recipe registry: shipped recipes validate, names resolve, sweeps expand, bad definitions fail clearly."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.specs import recipes
from cpbench.base.errors import CpbenchError
from cpbench.specs.recipes import Recipe, expand, load_registry, resolve

ISSUE_NAMES = [
    "base", "gptq-8bit", "gptq-4bit", "gptq-3bit", "gptq-2bit", "awq-4bit", "rtn-4bit", "w8a8", "w4a4", "fp8",
    "sparsegpt-50", "sparsegpt-2:4", "wanda-50", "wanda-2:4", "magnitude-50", "bnb-nf4", "bnb-int8",
]  # fmt: skip


@pytest.mark.parametrize("name", ISSUE_NAMES)
def test_issue_recipes_exist(name):
    r = resolve(name)
    assert r.name == name


def test_every_shipped_recipe_is_consistent():
    reg = load_registry()
    assert len(reg.recipes) >= 40
    for r in reg.recipes.values():
        assert r.description, r.name
        if r.kind == "bitsandbytes":
            assert r.requires == "cuda" and r.requires_reason
        if r.prune is not None:
            assert r.target_sparsity is not None and 0 < r.target_sparsity < 1


def test_knobs_of_named_recipes():
    g = resolve("gptq-3bit")
    assert (g.kind, g.quantize, g.bits, g.group_size, g.symmetric) == ("llmcompressor", "gptq", 3, 128, True)
    assert g.sweep is not None and (g.sweep.name, g.sweep.knob, g.sweep.level) == ("gptq-bits", "bits", 3)
    s = resolve("sparsegpt-2:4")
    assert s.mask_nm == (2, 4) and s.target_sparsity == 0.5 and s.quantize is None
    m = resolve("magnitude-70")
    assert m.kind == "magnitude" and m.sparsity == pytest.approx(0.7) and m.sweep.level == 70
    assert resolve("base").is_baseline and resolve("bnb-nf4").load_time


def test_sweep_levels_outside_the_registered_ones_resolve():
    r = resolve("sparsegpt-35")
    assert r.sparsity == pytest.approx(0.35) and r.sweep.name == "sparsegpt-sparsity"
    assert resolve("gptq-5bit").bits == 5
    with pytest.raises(CpbenchError, match="percent"):
        resolve("wanda-100")


def test_group_size_variants():
    r = resolve("gptq-4bit-g64")
    assert (r.name, r.bits, r.group_size, r.quantize) == ("gptq-4bit-g64", 4, 64, "gptq")
    assert resolve("w4a4-g32").group_size == 32
    for bad in ("magnitude-50-g64", "w8a8-g64", "fp8-g64"):
        with pytest.raises(CpbenchError, match="does not"):
            resolve(bad)


def test_unknown_recipe_did_you_mean():
    with pytest.raises(CpbenchError, match="did you mean 'gptq-4bit'"):
        resolve("gtpq-4bit")
    with pytest.raises(CpbenchError, match="is a sweep"):
        resolve("gptq-bits")


def test_case_insensitive():
    assert resolve("GPTQ-4bit").name == "gptq-4bit"


def test_expand_brace_and_sweeps():
    assert expand("gptq-{8,6,4,3,2}bit") == ["gptq-8bit", "gptq-6bit", "gptq-4bit", "gptq-3bit", "gptq-2bit"]
    assert expand("sparsegpt-{10..90}") == [f"sparsegpt-{v}" for v in range(10, 100, 10)]
    assert expand("wanda-{20..80..30}") == ["wanda-20", "wanda-50", "wanda-80"]
    assert expand("base,gptq-bits") == ["base"] + [f"gptq-{b}bit" for b in (8, 6, 4, 3, 2)]
    assert expand("base, base ,rtn-4bit") == ["base", "rtn-4bit"]
    assert [r.name for r in recipes.expand_recipes("magnitude-{90..70..10}")] == [
        "magnitude-90", "magnitude-80", "magnitude-70"
    ]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(lo=st.integers(1, 60), span=st.integers(0, 30), step=st.integers(1, 15))
def test_expand_ranges_match_python_range(lo, span, step):
    hi = lo + span
    names = expand(f"x{{{lo}..{hi}..{step}}}y")
    assert names == [f"x{v}y" for v in range(lo, hi + 1, step)]


def test_spec_hash_distinguishes_knobs_not_descriptions():
    a = resolve("gptq-4bit")
    b = Recipe(**{**a.model_dump(), "description": "other words"})
    c = Recipe(**{**a.model_dump(), "group_size": 64})
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"kind": "baseline", "bits": 4}, "no compression knobs"),
        ({"kind": "magnitude", "prune": "magnitude"}, "exactly one of sparsity, mask"),
        ({"kind": "llmcompressor", "prune": "magnitude", "sparsity": 0.5}, "zeroes nothing"),
        ({"kind": "llmcompressor", "prune": "sparsegpt", "mask": "2:4", "quantize": "gptq", "bits": 4}, "refills"),
        ({"kind": "llmcompressor", "quantize": "gptq"}, "needs bits"),
        ({"kind": "llmcompressor", "quantize": "rtn", "scheme": "W4A61"}, "did you mean 'W4A16'"),
        ({"kind": "llmcompressor", "prune": "wanda", "mask": "4:2"}, "N:M"),
        ({"kind": "bitsandbytes", "quantize": "bnb", "scheme": "nf4"}, "requires: cuda"),
        ({"kind": "llmcompressor"}, "needs prune and/or quantize"),
    ],
)
def test_invalid_recipes_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        Recipe(name="bad", **fields)


def test_registry_file_errors(tmp_path):
    p = tmp_path / "recipes.yaml"
    p.write_text(textwrap.dedent("""
        recipes:
          mine:
            kind: llmcompressor
            quantise: gptq
            bits: 4
    """))
    with pytest.raises(CpbenchError, match="did you mean 'quantize'"):
        load_registry(p)
    p.write_text("recipes:\n  x: {kind: llmcompressor, quantize: gptq}\n")
    with pytest.raises(CpbenchError, match="recipe 'x'.*needs bits"):
        load_registry(p)
    p.write_text(textwrap.dedent("""
        recipes:
          gptq-4bit: {kind: llmcompressor, quantize: gptq, bits: 4}
        sweeps:
          gptq-bits:
            pattern: "gptq-{level}bit"
            knob: bits
            levels: [4]
            base: {kind: llmcompressor, quantize: gptq}
    """))
    with pytest.raises(CpbenchError, match="defined twice"):
        load_registry(p)
