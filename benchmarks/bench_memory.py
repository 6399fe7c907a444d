"""Peak RSS and wall time per stage of compressing and scoring one model (not a test).

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py MODEL [--recipe wanda-50] [--n 128 --seq-len 512]
                                                        [--cache DIR] [--keep-cache] [--score 4x256]

MODEL is a registry name (`smollm2-135m-instruct@pypi`), a local model directory or .gguf file, or a config-shaped
random model `random:SHAPE[:LAYERS]` (SHAPE from benchmarks/random_model.py, e.g. `random:qwen2.5-1.5b` or
`random:qwen2.5-1.5b:2` for its first two layers' shapes only; built once under --models, not measured).

Everything runs in this one process, in the order `cpbench run --quant RECIPE` runs it: GGUF conversion (when the
model is a GGUF not yet converted), calibration sample, base load, compression (llm-compressor oneshot), save,
verification, scoring load, a scoring forward pass. The cache is a fresh folder (conversion and compression are
measured, never reused) unless --cache names one. Each stage's peak is measured by cpbench.base.memory (the kernel's
high-water mark when the stage set a new process peak, else RSS sampled every 50 ms).

Prints one Markdown row per stage (seconds, peak RSS, RSS at its end, peak / fp32 weights), the whole process's
peak (ru_maxrss) against the acceptance bound of issue 20 (1.5 x fp32 weights + 1 GB), the seconds per decoder
layer of calibrated recipes, threads, CPU count and load average: quote them with any figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
GB = 1024**3


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _random_model(spec: str, root: Path) -> str:
    from random_model import SHAPES, build

    _, shape, *rest = spec.split(":")
    cfg = dict(SHAPES[shape])
    if rest:
        cfg["num_hidden_layers"] = int(rest[0])
    out = root / f"{shape}-random" if not rest else root / f"{shape}-random-{rest[0]}layers"
    if not (out / "config.json").is_file():
        t = time.perf_counter()
        print(f"building {out} (random weights, not measured) ...", flush=True)
        build(cfg, out)
        print(f"built in {time.perf_counter() - t:.0f} s", flush=True)
    return str(out)


def _fp32_bytes(path: str | None, entry) -> int | None:
    from cpbench.weights import models

    d = Path(path) if path else None
    if d is None or not d.is_dir():
        try:
            d = Path(models.model_dir(entry))
        except Exception:  # noqa: BLE001
            return None
    n = models._count_params(d)  # parameters from the safetensors headers
    return None if n is None else 4 * n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--recipe", default="wanda-50")
    ap.add_argument("--n", type=int, default=128, help="calibration sequences")
    ap.add_argument("--seq-len", type=int, default=512, help="tokens per calibration sequence")
    ap.add_argument("--source", default="builtin", help="calibration source")
    ap.add_argument("--cache", type=Path, help="cpbench cache folder (default: a fresh temporary one)")
    ap.add_argument("--keep-cache", action="store_true", help="do not delete the temporary cache")
    ap.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "cpbench-random-models",
                    help="where random:SHAPE models are built")  # fmt: skip
    ap.add_argument("--score", default="4x256", help="scoring forward pass: BATCHxTOKENS (0 to skip)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    tmp_cache = None
    if args.cache is None:
        tmp_cache = tempfile.mkdtemp(prefix="cpbench-bench-memory-")
        os.environ["CPBENCH_CACHE"] = tmp_cache
    else:
        os.environ["CPBENCH_CACHE"] = str(args.cache)
    spec = _random_model(args.model, args.models) if args.model.startswith("random:") else args.model

    import torch

    from cpbench.base import memory
    from cpbench.base.progress import LineReporter, use
    from cpbench.weights import models
    from cpbench.weights.compress import CalibrationSpec, compress, stage_line

    threads = models.configure_threads()
    imports_mb = memory.rss_mb()
    entry = models.resolve(spec)
    fp32 = _fp32_bytes(spec if Path(spec).is_dir() else None, entry) if models.gguf_source(entry) is None else None
    print(f"model {entry.key} ({entry.source}), recipe {args.recipe}, calibration {args.source} {args.n} x "
          f"{args.seq_len}, threads {threads}, cpus {os.cpu_count()}, load {_load()}, cache {os.environ['CPBENCH_CACHE']}",
          flush=True)  # fmt: skip
    t_all = time.perf_counter()
    with use(LineReporter(lambda s: print(s, flush=True), interval=60.0)):
        ck = compress(entry, args.recipe, CalibrationSpec(source=args.source, n=args.n, seq_len=args.seq_len), "cpu",
                      force=args.cache is not None)  # fmt: skip
    rows = list(ck.report.get("stages") or [])
    if fp32 is None:
        fp32 = _fp32_bytes(str(models.model_dir(entry)), entry)
    n0 = len(memory.stages())
    model, tok = ck.load("cpu")  # its own stage, "scoring load" (CompressedCheckpoint.load)
    rows += memory.since(n0)
    if args.score != "0":
        b, t = (int(x) for x in args.score.lower().split("x"))
        ids = torch.randint(0, min(int(model.config.vocab_size), len(tok)), (b, t))
        with memory.stage("score (forward)") as s, torch.no_grad():
            model(input_ids=ids, logits_to_keep=1)  # as the letter scorer does
        rows.append(s.as_dict())
    del model
    wall = time.perf_counter() - t_all
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    w_gb = (fp32 or 0) / GB
    print(f"\nfp32 weights {w_gb:.2f} GiB; RSS after imports {imports_mb / 1024:.2f} GiB; load now {_load()}")
    print("| stage | s | peak RSS GiB | RSS at end GiB | peak / fp32 weights |\n|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['peak_mb'] / 1024 / w_gb:.2f}" if w_gb else "-"
        print(f"| {r['name']} | {r['seconds']:.1f} | {r['peak_mb'] / 1024:.2f} | {r['end_mb'] / 1024:.2f} | {ratio} |")
    bound = 1.5 * w_gb + 1.0
    verdict = "within" if maxrss_mb / 1024 <= bound else "ABOVE"
    print(f"\nwhole process: peak RSS {maxrss_mb / 1024:.2f} GiB (ru_maxrss), bound 1.5 x {w_gb:.2f} + 1 = "
          f"{bound:.2f} GiB: {verdict}; wall {wall:.0f} s")  # fmt: skip
    per_layer = ck.report.get("per_layer_seconds") or {}
    if per_layer:
        print(f"per decoder layer: mean {per_layer['mean_s']} s, min {per_layer['min_s']}, max {per_layer['max_s']} "
              f"({per_layer['layers']} layers): {per_layer['each_s']}")  # fmt: skip
    print("stage line:", stage_line(ck.report))
    print("progress line:", memory.timing_line([r for r in rows if r["name"] != "score (forward)"], wall))
    if args.json:
        args.json.write_text(json.dumps({"model": entry.key, "recipe": args.recipe, "threads": threads,
                                         "calibration": [args.n, args.seq_len], "fp32_bytes": fp32,
                                         "stages": rows, "maxrss_mb": maxrss_mb, "per_layer": per_layer,
                                         "wall_s": wall}, indent=1))  # fmt: skip
    if tmp_cache and not args.keep_cache:
        import shutil

        shutil.rmtree(tmp_cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
