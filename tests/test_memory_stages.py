"""Memory per stage stays honest (issue 20): compressing and then loading for scoring never holds two copies of the
model, every stage is measured and reported, and the stage timings name what they time.

Every model transformers builds (from_pretrained / from_config) is recorded by weak references to its parameters;
when a new one is built, no parameter of one built before may still be alive (meta-device skeletons hold no memory and are not counted). Nothing is
garbage-collected by the test: what is alive is what the code left alive."""

from __future__ import annotations

import time

import weakref

import pytest
import torch
from tiny_model import tiny_model_dir

from cpbench.base import memory
from cpbench.weights.compress import CalibrationSpec, compress, stage_line
from cpbench.weights.models import resolve

CALIB = CalibrationSpec(n=4, seq_len=32, seed=0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))


def _on_meta(model) -> bool:
    return all(p.device.type == "meta" for p in model.parameters())


@pytest.fixture
def live_models(monkeypatch):
    """Wrap AutoModelForCausalLM's constructors: returns a list of (what, alive-before count) per model built."""
    from transformers import AutoModelForCausalLM

    refs: list[list[weakref.ref]] = []
    built: list[tuple[str, int]] = []

    def wrap(name):
        original = getattr(AutoModelForCausalLM, name)

        def build(*args, **kwargs):
            model = original(*args, **kwargs)
            if not _on_meta(model):
                # a model counts as alive while any of its parameters is: a submodule kept by someone (torch.fx
                # kept the inner decoder of a traced model) holds its weights as surely as the model itself
                alive = sum(1 for params in refs if any(r() is not None for r in params))
                built.append((f"{name}({args[0] if args else ''})", alive))
                refs.append([weakref.ref(p) for p in model.parameters()])
            return model

        monkeypatch.setattr(AutoModelForCausalLM, name, staticmethod(build))

    wrap("from_pretrained")
    wrap("from_config")
    return built


@pytest.mark.parametrize("recipe", ["wanda-50", "rtn-4bit", "magnitude-50"])
def test_never_two_models_alive(recipe, live_models):
    entry = resolve(str(tiny_model_dir()))
    ck = compress(entry, recipe, CALIB, "cpu", force=True)
    model, _ = ck.load("cpu")
    # base load, verification reload (small checkpoints), scoring load: each after the previous one was freed
    assert len(live_models) >= 2, live_models
    assert all(alive == 0 for _, alive in live_models), f"a model was still alive when the next was built: {live_models}"
    del model


def test_stages_reported(live_models):
    entry = resolve(str(tiny_model_dir()))
    ck = compress(entry, "wanda-50", CALIB, "cpu", force=True)
    names = [s["name"] for s in ck.report["stages"]]
    assert names == ["calibration", "load", "compress", "save", "verify"]
    for s in ck.report["stages"]:
        assert s["seconds"] >= 0 and s["peak_mb"] >= s["end_mb"] > 0 and s["peak_mb"] >= s["start_mb"]
    layers = ck.report["per_layer_seconds"]
    assert layers["layers"] == 2 and len(layers["each_s"]) == 2  # the tiny model's two decoder layers
    line = stage_line(ck.report)
    assert line.startswith("calibration ") and "compress " in line and "(2 layers, " in line and "verify " in line
    assert stage_line(None) == "" and stage_line({"stages": []}) == ""


def test_stage_peaks_nest_and_see_allocations():
    start = len(memory.stages())
    with memory.stage("outer"), memory.stage("inner") as inner:
        x = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        x += 1
        # held for several sampling periods: in a long-lived process (the full test suite) the kernel's high-water
        # mark is an earlier, larger peak, so only the 50 ms sampler can see this allocation
        time.sleep(0.4)
        del x
    done = memory.since(start)
    assert [s["name"] for s in done] == ["inner", "outer"]
    assert inner.peak_mb - inner.start_mb >= 30  # the kernel's high-water mark or the sampler saw it
    assert done[1]["peak_mb"] >= done[0]["peak_mb"]
    memory.release()
    assert memory.rss_mb() > 0


def test_timing_line_names_each_stage():
    start = len(memory.stages())
    with memory.stage("compress") as s:
        with memory.stage("inner"):
            pass
        s.detail.update(layers=28, s_per_layer=71.7)
    with memory.stage("verify"):
        pass
    with memory.stage("scoring load"):
        pass
    line = memory.timing_line(memory.since(start), 2051.2)
    assert line.startswith("weights ready in 2051.2 s: compress ") and "(28 layers, 71.7 s/layer)" in line
    assert "verify " in line and "scoring load " in line and "(of which inner " in line and "peak RSS" in line
    start = len(memory.stages())
    with memory.stage("scoring load"):
        pass
    assert memory.timing_line(memory.since(start), 9.0).startswith("model loaded (")  # cached: loading only
    assert memory.timing_line([], 3.25) == "model loaded (3.2 s)"


def test_timing_line_shows_a_conversion_inside_the_load():
    start = len(memory.stages())
    with memory.stage("scoring load"), memory.stage("convert"):
        pass
    line = memory.timing_line(memory.since(start), 47.5)
    assert line.startswith("weights ready in 47.5 s: scoring load ") and "(of which convert " in line
