"""benchmarks/bench_paired.py takes published outputs of two models (LLM-Uncertainty-Bench pickles with their dataset
file) as a real population, as `cpbench analyze` reads them: the held-back check of issue 15 runs it on such files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _write_ye(tmp_path: Path, n: int = 240) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, n)
    signal = np.eye(6)[labels] * 2.0
    base = signal + rng.normal(0, 1.0, (n, 6))
    cand = base + rng.normal(0, 0.6, (n, 6))  # a noisier model on the same items
    data = [{"id": i, "answer": "ABCDEF"[lab], "question": f"q{i}"} for i, lab in enumerate(labels)]
    (tmp_path / "mmlu_10k.json").write_text(json.dumps(data))
    paths = []
    for name, x in (("m1", base), ("m2", cand)):
        p = tmp_path / f"{name}_mmlu_10k_base_icl1.pkl"
        p.write_bytes(pickle.dumps([{"id": i, "logits_options": x[i].astype(np.float32)} for i in range(n)]))
        paths.append(p)
    return paths[0], paths[1], tmp_path / "mmlu_10k.json"


def test_published_pickles_are_a_population(tmp_path):
    base, cand, labels = _write_ye(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_paired.py"), "--pair", str(base), str(cand),
           "--labels", str(labels), "--sizes", "100", "--draws", "6", "--no-gaussian", "--no-cost", "--scores", "lac"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{base.name} vs {cand.name}" in out.stdout and "N = 240 items" in out.stdout
    assert "| d_acc |" in out.stdout  # the coverage table was computed on the pickles' items
    # the gate's exact pass rates at the limit, summed over every count (not sampled)
    assert "| flip, exact over every count |" in out.stdout
    assert "| acc, Tango on the full-sample counts, exact over every count |" in out.stdout


def test_a_pickle_without_its_labels_is_one_clear_line(tmp_path):
    base, cand, _ = _write_ye(tmp_path, n=20)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_paired.py"), "--pair", str(base), str(cand),
           "--sizes", "100", "--draws", "2", "--no-gaussian", "--no-cost"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1 and "needs --labels" in out.stderr and "Traceback" not in out.stderr


def test_a_missing_file_is_one_clear_line(tmp_path):
    """The loaders own the message (a CpbenchError): the script prints it as one line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_paired.py"), "--pair", str(tmp_path / "nope.jsonl"),
           str(tmp_path / "nope2.jsonl"), "--sizes", "100", "--draws", "2", "--no-gaussian", "--no-cost"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1 and "bench_paired:" in out.stderr and "Traceback" not in out.stderr, out.stderr[-800:]
