"""`cpbench sweep` against real engines on CPU: a local Ray cluster started once per session (fake GPUs) and
submitit's local executor. A tiny grid (tiny random model, qa, 18 items, base + magnitude-50) must give artifacts
numerically identical to the local executor; a worker that dies once is rerun; a second identical sweep submits
nothing; a driver killed mid-sweep loses nothing on rerun; two drivers never run one unit twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cpbench.cli import main
from run_fixtures import tiny_dir  # noqa: F401  (pytest fixtures)

TINY_GRID = ["--quant", "magnitude-50", "--tasks", "qa", "--data", "samples", "--limit", "18", "--batch-size", "4"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compression/score cache for the module (workers get it through the forwarded environment)."""
    root = tmp_path_factory.mktemp("sweep-cache")
    old = os.environ.get("CPBENCH_CACHE")
    os.environ["CPBENCH_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("CPBENCH_CACHE", None)
    else:
        os.environ["CPBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (Ray 2.60 has no local mode): 2 CPUs, 2 fake GPUs, small object store."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_results(tmp_path_factory, tiny_dir, cache):
    out = tmp_path_factory.mktemp("local") / "results"
    assert main(["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(out)]) == 0
    return out


def _unit_uid(tiny_dir: str, recipe: str) -> str:
    from cpbench.sweep.grid import grid_units

    _, units = grid_units([tiny_dir], quant=["magnitude-50"], tasks=["qa"], data="samples", limit=18, batch_size=4)
    return next(u.uid for u in units if u.recipe.name == recipe)


def _same_results(a: Path, b: Path) -> None:
    from cpbench.results.artifact import LogitsArtifact

    arts = sorted(p.relative_to(a) for p in a.rglob("artifacts/*.parquet"))
    assert len(arts) == 2 and arts == sorted(p.relative_to(b) for p in b.rglob("artifacts/*.parquet"))
    for rel in arts:
        x, y = LogitsArtifact.load(a / rel), LogitsArtifact.load(b / rel)
        assert x.ids == y.ids and np.array_equal(x.labels, y.labels)
        assert np.array_equal(x.logits, y.logits), rel  # bit-identical, not merely close
        assert x.provenance["weights_id"] == y.provenance["weights_id"]
    recs = sorted(p.relative_to(a) for p in a.rglob("*.json") if ".cpbench" not in p.parts)
    assert len(recs) == 2 and recs == sorted(p.relative_to(b) for p in b.rglob("*.json") if ".cpbench" not in p.parts)
    for rel in recs:
        x, y = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
        assert x["acc"] == y["acc"] and x["lac"] == y["lac"] and x["aps"] == y["aps"]
        assert x["input"] == str(a / rel.parent / "artifacts" / (rel.name.rsplit("__", 1)[0] + ".parquet"))
    assert not [p for p in b.rglob("*") if p.name.startswith(".tmp")]  # nothing half-written


def _submitted(out: str) -> int:
    line = next(ln for ln in out.splitlines() if ln.startswith("sweep finished"))
    return int(line.split(" submitted")[0].rsplit(" ", 1)[-1])


# ------------------------------------------------------------------------------------------------- planning
def test_dry_run_lists_units_cache_state_and_estimates(tmp_path, tiny_dir, cache, local_results, capsys):
    capsys.readouterr()
    assert main(["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(local_results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("│ done ") == 2 and "GPU-hours" in out  # both units cached in the local results
    assert main(["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(tmp_path / "empty"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("│ todo ") == 2 and not (tmp_path / "empty").exists()  # nothing run, nothing written
    (row,) = [ln for ln in out.splitlines() if "/magnitude-50 " in ln]
    assert "│ cached " in row  # its checkpoint is in this machine's cache (the local sweep compressed it)


def test_estimates_scale_with_model_size():
    from cpbench.weights import models
    from cpbench.specs import recipes
    from cpbench.sweep.estimate import estimate_unit

    big, small = models.resolve("llama-3.1-70b"), models.resolve("llama-3.1-8b")
    base, q4 = recipes.resolve("base"), recipes.resolve("gptq-4bit")
    e70 = estimate_unit(big, base, 10_000, 4_000_000, gpu_memory_gb=80)
    e8 = estimate_unit(small, base, 10_000, 4_000_000, gpu_memory_gb=80)
    assert e70.gpus >= 2 and e8.gpus == 1 and e70.gpu_mem_gb > 140  # 70B bf16 does not fit one 80 GB GPU
    assert estimate_unit(big, q4, 10_000, 4_000_000).gpu_mem_gb < e70.gpu_mem_gb / 2
    assert e70.gpu_hours > 5 * e8.gpu_hours


def test_unknown_executor_is_one_line_error(tiny_dir, capsys):
    assert main(["sweep", "--models", tiny_dir, *TINY_GRID, "--executor", "k8s", "--dry-run"]) == 2
    assert "unknown executor 'k8s'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_sweep_matches_local_retries_a_dead_worker_and_resumes(tmp_path, tiny_dir, cache, local_results,
                                                                   ray_cluster, monkeypatch, capsys):  # fmt: skip
    faults = tmp_path / "faults"
    faults.mkdir()
    marker = faults / f"{_unit_uid(tiny_dir, 'magnitude-50')}.die-once"
    marker.write_text("")
    monkeypatch.setenv("CPBENCH_SWEEP_FAULT_DIR", str(faults))
    out_dir = tmp_path / "ray"
    args = ["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(out_dir), "--executor", "ray",
            "--address", ray_cluster, "--max-parallel", "2"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert not marker.exists()  # the first attempt of magnitude-50 died (os._exit) and Ray reran it
    assert _submitted(out) == 2 and "0 failed" in out
    _same_results(local_results, out_dir)

    stamps = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file()}
    assert main(args) == 0  # a second identical sweep submits nothing and rewrites nothing
    assert _submitted(capsys.readouterr().out) == 0
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file()} == stamps


def _kill_mid_sweep_and_rerun(out_dir: Path, tiny_dir: str, local_results: Path, executor_args: list[str], capsys):
    """Run the sweep in a child driver, SIGKILL it once the first unit is written and the second is in flight,
    rerun: only the unit that was in flight is submitted again and everything equals the local executor's."""
    args = ["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(out_dir), "--max-parallel", "1",
            *executor_args]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-m", "cpbench", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen: list[str] = []
    deadline = time.monotonic() + 240
    try:
        for line in child.stdout:  # kill as soon as the first unit is written and the second is in flight
            seen.append(line)
            if "/magnitude-50] submitted" in line and any("/base] done" in ln for ln in seen):
                break
            assert time.monotonic() < deadline, "".join(seen[-20:])
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stdout.close()
    assert any("/base] done" in ln for ln in seen), "".join(seen[-20:])
    assert len(list(out_dir.rglob("artifacts/*.parquet"))) == 1  # the killed driver wrote only the finished unit
    capsys.readouterr()
    assert main(args) == 0
    assert _submitted(capsys.readouterr().out) == 1  # only the unit that was in flight
    _same_results(local_results, out_dir)


@pytest.mark.slow
def test_killed_ray_driver_loses_nothing(tmp_path, tiny_dir, cache, local_results, ray_cluster, capsys):
    _kill_mid_sweep_and_rerun(tmp_path / "ray-killed", tiny_dir, local_results,
                              ["--executor", "ray", "--address", ray_cluster], capsys)  # fmt: skip


@pytest.mark.slow
def test_killed_submitit_driver_loses_nothing(tmp_path, tiny_dir, cache, local_results, capsys):
    """submitit's local executor runs jobs as child processes: the killed driver's orphaned job may still finish,
    but only a driver writes the results tree, so the rerun resubmits that unit and nothing is half-written."""
    pytest.importorskip("submitit")
    _kill_mid_sweep_and_rerun(tmp_path / "slurm-killed", tiny_dir, local_results,
                              ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-folder",
                               str(tmp_path / "submitit")], capsys)  # fmt: skip


def test_a_unit_claimed_by_another_driver_is_not_run_twice(tmp_path, tiny_dir, cache, local_results, capsys):
    """Two drivers on one results tree: while another holds a unit's claim, this one waits instead of running it,
    then finds the unit done by the other. (Claims are flocks: a killed driver's claim vanishes with it.)"""
    import shutil

    from cpbench.sweep.claims import Claims

    out_dir = tmp_path / "shared"
    shutil.copytree(local_results, out_dir, ignore=shutil.ignore_patterns("magnitude-50"))
    (mag,) = [p for p in local_results.rglob("magnitude-50") if p.is_dir()]
    uid = _unit_uid(tiny_dir, "magnitude-50")
    other_driver = (  # holds the claim, "works" 3 s, writes the unit's results, lets go
        "import shutil, sys, time; from cpbench.sweep.claims import Claims; c = Claims(sys.argv[1]); "
        "assert c.take(sys.argv[2]); print('held', flush=True); time.sleep(3); "
        "shutil.copytree(sys.argv[3], sys.argv[4]); c.release_all()"
    )
    holder = subprocess.Popen([sys.executable, "-c", other_driver, str(out_dir), uid, str(mag),
                               str(out_dir / mag.relative_to(local_results))], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not Claims(out_dir).take(uid)
        capsys.readouterr()
        assert main(["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(out_dir)]) == 0
    finally:
        holder.wait(timeout=60)
        holder.stdout.close()
    out = capsys.readouterr().out
    assert _submitted(out) == 0 and "claimed by another sweep" in out and "done by another sweep" in out
    assert not list((out_dir / ".cpbench" / "claims").glob("*.lock"))


# ------------------------------------------------------------------------------------------------- submitit
@pytest.mark.slow
def test_submitit_local_executor_matches_local_and_retries(tmp_path, tiny_dir, cache, local_results, monkeypatch,
                                                           capsys):  # fmt: skip
    pytest.importorskip("submitit")
    faults = tmp_path / "faults"
    faults.mkdir()
    marker = faults / f"{_unit_uid(tiny_dir, 'base')}.die-once"
    marker.write_text("")
    monkeypatch.setenv("CPBENCH_SWEEP_FAULT_DIR", str(faults))
    out_dir = tmp_path / "slurm"
    args = ["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(out_dir), "--executor", "slurm",
            "--slurm-cluster", "local", "--slurm-folder", str(tmp_path / "submitit"), "--max-parallel", "2"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert not marker.exists() and "died" in out and "resubmitting" in out
    assert _submitted(out) == 3  # two units + one resubmission of the job that died
    _same_results(local_results, out_dir)
    assert main(args) == 0
    assert _submitted(capsys.readouterr().out) == 0


@pytest.mark.slow
def test_a_failing_unit_is_reported_with_its_last_error_line_and_not_retried(tmp_path, tiny_dir, cache, ray_cluster,
                                                                             capsys):  # fmt: skip
    import torch

    if torch.cuda.is_available():
        pytest.skip("bnb-nf4 runs on this machine")
    args = ["sweep", "--models", tiny_dir, "--quant", "bnb-nf4", "--tasks", "qa", "--data", "samples", "--limit", "18",
            "--results", str(tmp_path / "r"), "--executor", "ray", "--address", ray_cluster]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 1  # the base unit is written, the sweep says it failed
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("FAILED")]
    assert "bnb-nf4 (attempts 1)" in line and "CUDA" in line  # bad input: no retry, its one-line reason
    assert "rerun the same command" in out and len(list((tmp_path / "r").rglob("*.parquet"))) == 1


def test_progress_line_counts_rate_and_eta():
    from types import SimpleNamespace

    from cpbench.sweep import driver

    states = [SimpleNamespace(status=s, items=100) for s in (driver.DONE, driver.RUNNING, driver.QUEUED,
                                                              driver.FAILED, driver.WAITING)]  # fmt: skip
    t0 = driver.time.monotonic() - 10.0
    line = driver.progress_line(states, t0, items_done=100)
    assert line.startswith("sweep: 1/5 done, 1 running, 1 queued, 1 claimed by another sweep, 1 failed")
    rate = float(line.split("items, ")[1].split(" items/s")[0])
    assert 9.0 < rate <= 10.0 and "ETA 0m3" in line  # 300 items left at ~10 items/s


def test_ray_preflight_refuses_units_larger_than_any_node():
    """Checked against the live cluster description (ray.nodes / cluster_resources), here a stand-in of 2 nodes."""
    from types import SimpleNamespace

    from cpbench.base.errors import CpbenchError
    from cpbench.sweep.estimate import UnitEstimate
    from cpbench.sweep.executors import RayExecutor

    node = {"Alive": True, "Resources": {"GPU": 2.0, "CPU": 32.0, "memory": 256 * 2**30}}
    fake_ray = SimpleNamespace(nodes=lambda: [node, dict(node)],
                               cluster_resources=lambda: {"GPU": 4.0, "CPU": 64.0})  # fmt: skip
    ex = object.__new__(RayExecutor)
    ex.ray, ex.gpus_per_unit, ex._gpu_total, ex.echo = fake_ray, None, 4.0, print

    def unit(gpus, host_gb):
        est = UnitEstimate(70.0, 100, 1000, 150.0, gpus, 10.0, host_gb)
        return SimpleNamespace(name=f"m/{gpus}", estimate=est)

    ex.preflight([unit(2, 100.0)])  # fits one node
    with pytest.raises(CpbenchError, match=r"needs 4 GPU\(s\) \(~150 GB\) but the largest node of the Ray cluster has 2"):
        ex.preflight([unit(2, 100.0), unit(4, 100.0)])
    with pytest.raises(CpbenchError, match="needs ~300 GB of host memory"):
        ex.preflight([unit(1, 300.0)])
    ex.gpus_per_unit = 1.0  # --gpus-per-unit overrides the estimate
    ex.preflight([unit(4, 100.0)])


def test_a_candidate_is_a_unit_like_a_recipe(tmp_path, tiny_dir, cache, local_results, capsys):
    """cpbench's own magnitude-50 checkpoint brought back as a candidate: one more unit, scored beside the recipes
    under its name, with exactly the recipe's logits (same weights, same prompts); a rerun submits nothing."""
    import shutil

    from cpbench.results.artifact import LogitsArtifact

    out_dir = tmp_path / "cand"
    shutil.copytree(local_results, out_dir)
    (mag,) = out_dir.rglob("magnitude-50/artifacts/*.parquet")
    ckpt = LogitsArtifact.load(mag).provenance["checkpoint_path"]
    args = ["sweep", "--models", tiny_dir, *TINY_GRID, "--results", str(out_dir), "--candidate", ckpt,
            "--candidate-name", "mine"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert _submitted(out) == 1 and "/mine] done" in out
    (cand,) = out_dir.rglob("mine/artifacts/*.parquet")
    a, b = LogitsArtifact.load(cand), LogitsArtifact.load(mag)
    assert np.array_equal(a.logits, b.logits) and a.provenance["weights_id"].startswith("candidate:")
    assert main(args) == 0 and _submitted(capsys.readouterr().out) == 0
    assert main(["sweep", "--models", f"{tiny_dir},{tiny_dir}x", "--candidate", ckpt, "--dry-run"]) == 2
    assert "exactly one --models" in capsys.readouterr().err


def test_cpbench_run_reuses_what_a_sweep_wrote(tmp_path, tiny_dir, cache, local_results, capsys):
    """One unit of work for both commands: `cpbench run` on a sweep's results tree scores nothing."""
    import shutil

    out_dir = tmp_path / "both"
    shutil.copytree(local_results, out_dir)
    capsys.readouterr()
    assert main(["run", "--model", tiny_dir, *TINY_GRID, "--results", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("artifact reused") == 2 and "model loaded" not in out
