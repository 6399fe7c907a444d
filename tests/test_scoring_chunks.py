"""Resumable scoring: chunks flushed atomically; a killed run recomputes only what it had not finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from scoring_fixtures import ForwardCounter, make_prompts, tiny

from cpbench.base.runkey import ScoreKey
from cpbench.backends.chunks import ChunkStore, run_chunked
from cpbench.backends.pipeline import score_prompts

TESTS = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------- the store itself
def _compute_counting(calls):
    def compute(idx):
        calls.append(idx.tolist())
        return np.stack([idx * 1.0, -idx * 1.0], axis=1).astype(np.float32)

    return compute


def test_chunks_round_trip_and_only_missing_ones_are_computed(tmp_path):
    ids = [f"i{i}" for i in range(10)]
    order = np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
    store = ChunkStore(tmp_path, {"job": 1})
    calls: list = []
    first = run_chunked(ids, order, 2, _compute_counting(calls), store, chunk_size=4)
    assert first.computed == [0, 1, 2] and len(calls) == 3
    assert np.array_equal(first.logits[:, 0], np.arange(10))
    store.path(1).unlink()  # as if the run had died while computing chunk 1
    calls.clear()
    again = run_chunked(ids, order, 2, _compute_counting(calls), ChunkStore(tmp_path, {"job": 1}), chunk_size=4)
    assert again.loaded == [0, 2] and again.computed == [1] and calls == [order[4:8].tolist()]
    assert np.array_equal(again.logits, first.logits)


def test_corrupt_or_foreign_chunks_are_recomputed(tmp_path):
    ids = [f"i{i}" for i in range(6)]
    order = np.arange(6)
    store = ChunkStore(tmp_path, {"job": 2})
    run_chunked(ids, order, 2, _compute_counting([]), store, chunk_size=3)
    store.path(0).write_bytes(b"not a zip file")  # corrupt
    store.save(1, ["x", "y", "z"], np.zeros((3, 2), dtype=np.float32))  # ids of another job
    calls: list = []
    run = run_chunked(ids, order, 2, _compute_counting(calls), store, chunk_size=3)
    assert run.computed == [0, 1] and run.loaded == []


def test_different_jobs_never_share_chunks(tmp_path):
    a, b = ChunkStore(tmp_path, {"prompts": "x"}), ChunkStore(tmp_path, {"prompts": "y"})
    assert a.dir != b.dir and (a.dir / "job.json").is_file()


def test_no_tmp_files_are_left_behind(tmp_path):
    store = ChunkStore(tmp_path, {"job": 3})
    run_chunked([f"i{i}" for i in range(5)], np.arange(5), 2, _compute_counting([]), store, chunk_size=2)
    names = sorted(p.name for p in store.dir.iterdir())
    assert names == ["chunk-00000.npz", "chunk-00001.npz", "chunk-00002.npz", "job.json"]


# --------------------------------------------------------------------------------------------- kill and resume
_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from scoring_fixtures import make_prompts, tiny
    from cpbench.base.runkey import ScoreKey
    from cpbench.backends.pipeline import score_prompts

    model, tok = tiny()
    model.register_forward_pre_hook(lambda *a: time.sleep(0.4))  # slow enough to be killed mid-run
    print("ready", flush=True)
    score_prompts(model, tok, make_prompts(20, shots=1), ScoreKey(model="tiny", task="qa"), batch_size=2,
                  chunk_size=4, cache_root={cache!r}, progress=False)
    """
)


def _run_until_first_chunk(cache: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(TESTS), cache=str(cache))], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while not list(cache.glob("scores/*/chunk-00000.npz")):
            if child.poll() is not None:
                raise AssertionError(f"child exited early: {child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no chunk flushed within 180 s")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # no cleanup, no flush: like a crash or an OOM kill
    finally:
        child.wait(timeout=60)
        child.stderr.close()


def test_killed_scoring_resumes_with_only_the_unfinished_chunks(tmp_path):
    import torch

    torch.set_num_threads(1)
    cache = tmp_path / "cache"
    _run_until_first_chunk(cache)
    finished = sorted(p.name for p in cache.glob("scores/*/chunk-*.npz"))
    assert finished and len(finished) < 5, finished  # killed after the first chunk, before the last

    model, tok = tiny()
    prompts = make_prompts(20, shots=1)
    key = ScoreKey(model="tiny", task="qa")
    counter = ForwardCounter(model)
    try:
        resumed = score_prompts(model, tok, prompts, key, batch_size=2, chunk_size=4, cache_root=cache, progress=False)
    finally:
        counter.close()
    detail = resumed.provenance["scoring_detail"]
    k = len(finished)
    assert detail["chunks_loaded"] == k and detail["chunks_computed"] == 5 - k
    assert detail["items_computed"] == 20 - 4 * k
    assert counter.rows == 1 + (20 - 4 * k)  # one prefix pass + only the unfinished items
    assert any("resumed" in n for n in resumed.provenance["notes"])

    fresh = score_prompts(model, tok, prompts, key, batch_size=2, chunk_size=4, resume=False, progress=False)
    assert resumed.ids == fresh.ids and np.array_equal(resumed.labels, fresh.labels)
    assert np.abs(resumed.logits - fresh.logits).max() < 1e-5


def test_out_path_saves_and_clears_the_chunks(tmp_path):
    model, tok = tiny()
    prompts = make_prompts(6, shots=0)
    out = tmp_path / "a.parquet"
    art = score_prompts(model, tok, prompts, ScoreKey(model="tiny", task="qa"), batch_size=4, chunk_size=2,
                        cache_root=tmp_path / "c", out_path=out, progress=False)  # fmt: skip
    assert out.is_file() and not list((tmp_path / "c" / "scores").glob("*/chunk-*"))
    from cpbench.results.artifact import LogitsArtifact

    assert LogitsArtifact.load(out).content_hash == art.content_hash


@pytest.mark.parametrize("change", ["prompts", "model"])
def test_changed_inputs_do_not_reuse_chunks(tmp_path, change):
    import torch

    model, tok = tiny()
    prompts = make_prompts(6, shots=0)
    key = ScoreKey(model="tiny", task="qa")
    score_prompts(model, tok, prompts, key, batch_size=4, chunk_size=3, cache_root=tmp_path, progress=False)
    if change == "prompts":
        prompts = make_prompts(6, shots=0, seed=9)
        again = score_prompts(model, tok, prompts, key, batch_size=4, chunk_size=3, cache_root=tmp_path, progress=False)
    else:
        from transformers import AutoModelForCausalLM

        other = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32).eval()
        with torch.no_grad():
            other.lm_head.weight.mul_(1.5)
        again = score_prompts(other, tok, prompts, key, batch_size=4, chunk_size=3, cache_root=tmp_path, progress=False)
    assert again.provenance["scoring_detail"]["chunks_loaded"] == 0
