"""Importers: existing option-logit outputs -> LogitsArtifact, so published numbers can be recomputed.

- LLM-Uncertainty-Bench (Ye et al. 2024): a pickle of `[{"id": int, "logits_options": float32[6]}, ...]` in item
  order (written by their generate_logits.py) plus the task's dataset JSON `[{"id": int, "answer": "A".."F",
  "choices": {...}, ...}, ...]`. Items are matched by position and their ids must agree (their script asserts the
  same). The pickle is read with an unpickler that only allows the numpy classes such a file needs.
- lm-evaluation-harness `--log_samples` JSONL of a multiple-choice task: per-choice log-likelihoods in
  `filtered_resps` (`[[ll, is_greedy], ...]`, numbers or, in lm-eval >= 0.4.3, strings), gold index in `target`
  (an int, its string, or a choice text), choice texts in `arguments` (list of [context, continuation] or
  `{"gen_args_i": {"arg_0": ..., "arg_1": ...}}`). The logits are the raw (unnormalised) log-likelihoods, so the
  softmax over them gives the choice distribution lm-eval's `acc` takes the argmax of.
"""

from __future__ import annotations

import io
import pickle
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cpbench.base.stamps import sha256_file, utc_now
from cpbench import __version__
from cpbench.base import jsonsafe
from cpbench.results.artifact import LogitsArtifact
from cpbench.base.errors import CpbenchError

# Their file names: {model}_{data}_{prompt}_icl{shots}[_cot].pkl; data names map to cpbench task names.
YE2024_TASKS = {
    "mmlu_10k": "qa",
    "cosmosqa_10k": "rc",
    "hellaswag_10k": "ci",
    "halu_dialogue": "drs",
    "halu_summarization": "ds",
}
_YE_NAME = re.compile(
    r"^(?P<model>.+)_(?P<data>" + "|".join(YE2024_TASKS) + r")_(?P<prompt>base|shared|task)"
    r"_icl(?P<shots>\d+)(?P<cot>_cot)?$"
)


def _sha256(path: Path) -> str:
    return "sha256:" + sha256_file(path)


def _require_file(path: Path, what: str) -> None:
    if not path.exists() or path.is_dir():
        raise CpbenchError(f"{path}: no such file ({what})")
    if not path.is_file():  # a FIFO would block, a device never ends: refused, and said as what it is
        raise CpbenchError(f"{path}: not a regular file (FIFO/device), expected a file ({what})")


# lm-eval samples: one line is one document (its text, arguments and per-choice responses), a few kB, rarely 1 MB.
# Read with a bound, so a 1 GiB line is refused after 32 MiB, not parsed into GBs; and at most 26 choices (A-Z).
MAX_SAMPLE_LINE_BYTES = 32 * 2**20
MAX_CHOICES = 26
BENCHMARK_K = 6  # Ye et al.'s six options (A-F, with "I don't know" and "None of the above")
MAX_PICKLE_BYTES = 512 * 2**20  # a 10k-item LLM-Uncertainty-Bench pickle is ~3 MB
MAX_PICKLE_STACK = 10_000  # open objects on the unpickler's stack (nesting depth bound); real files need ~1,010
MAX_PICKLE_MARKS = 64  # nested MARKs (tuples/lists/dicts being built at once); real files need 4


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's `_reconstruct`, limited to what `ndarray.__reduce__` writes: (ndarray, (0,), b'b'). The real size comes
    from the BUILD state, whose raw bytes are in the file, so an array is never larger than the file."""
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"refusing ndarray reconstruction with shape {shape!r}")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.itemsize > 64 or dtype.hasobject:
        raise pickle.UnpicklingError("refusing a numpy scalar of an unusual dtype")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar data does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> Any:
    if not isinstance(spec, str) or len(spec) > 8:
        raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r}")
    dt = np.dtype(spec)
    if dt.itemsize > 64 or dt.fields is not None or dt.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r}")
    return dt


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); other codecs (zlib, bz2, ...) are not data
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1")


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)  # a view: no allocation beyond the file


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickling runs code named in the file; allow only what a list of dicts of numpy arrays needs, each through a
    wrapper that refuses arguments numpy itself would never write."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy.core.multiarray", "scalar"): _np_scalar,
        ("numpy._core.multiarray", "scalar"): _np_scalar,
        ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _np_dtype,
        ("_codecs", "encode"): _codecs_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        found = self._ALLOWED.get((module, name))
        if found is not None:
            return found
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def scan_pickle(data: bytes, where: str) -> None:
    """Refuse a pickle whose opcodes would make the unpickler allocate beyond the file's size, before any object is
    built: memo indices must be assigned in order (as every Pickler does; a single LONG_BINPUT 4e9 would otherwise
    grow the memo table to 32 GB), memo reads must name an assigned index, frames must fit in the file, and the stack
    and MARK nesting stay bounded. Lengths of strings and bytes are checked against the file by `genops`, which reads
    them from it."""
    import pickletools

    def _bad(why: str) -> CpbenchError:
        return CpbenchError(f"{where}: not a readable pickle ({why})")

    memo_next = 0
    stack = 0
    marks: list[int] = []
    end = len(data)
    put_ops = {"PUT", "BINPUT", "LONG_BINPUT"}
    get_ops = {"GET", "BINGET", "LONG_BINGET"}
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in put_ops:
                if not isinstance(arg, int) or arg < 0 or arg > memo_next:
                    raise _bad(f"memo index {arg} out of order at byte {pos}")
                memo_next = max(memo_next, arg + 1)
            elif name == "MEMOIZE":
                memo_next += 1
            elif name in get_ops:
                if not isinstance(arg, int) or not 0 <= arg < memo_next:
                    raise _bad(f"reads memo index {arg} that was never written, byte {pos}")
            elif name == "FRAME":
                if not isinstance(arg, int) or arg > end - (pos or 0):
                    raise _bad(f"frame of {arg} bytes is larger than the file, byte {pos}")
            # stack bookkeeping as pickletools.dis does it, counting objects only
            before, after = op.stack_before, op.stack_after
            if name == "MARK":
                marks.append(stack)
                if len(marks) > MAX_PICKLE_MARKS:
                    raise _bad(f"nested deeper than {MAX_PICKLE_MARKS} levels")
                continue
            if pickletools.markobject in before:
                if not marks:
                    raise _bad(f"no MARK for {name} at byte {pos}")
                stack = marks.pop()
                stack -= len(before) - 2  # objects below the mark the opcode also consumes
            else:
                stack -= len(before)
            if stack < 0:
                raise _bad(f"stack underflow at byte {pos}")
            stack += len(after)
            if stack > MAX_PICKLE_STACK:
                raise _bad(f"stack deeper than {MAX_PICKLE_STACK} objects")
    except CpbenchError:
        raise
    except Exception as exc:  # genops: unknown opcode, truncated argument, bad UTF-8, ...
        raise CpbenchError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def option_count_note(k: int) -> str:
    """What a task with K options other than the benchmark's six changes (one line, for notes and warnings)."""
    return (f"{k} options per item, not the benchmark's {BENCHMARK_K} (A-F with 'I don't know' and 'None of the "
            f"above'): set sizes range over 1-{k}, UAcc scales accuracy by sqrt({k}) instead of sqrt({BENCHMARK_K}), "
            f"and these numbers compare only with other {k}-option results")


def _letters(k: int) -> list[str]:
    """A, B, C, ... for K options (the first six are Ye et al.'s A-F)."""
    return [chr(65 + j) for j in range(k)]


def _load_pickle(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise CpbenchError(f"{path}: {size} bytes is larger than the {MAX_PICKLE_BYTES} accepted for a pickle")
        data = path.read_bytes()
    except OSError as exc:
        raise CpbenchError(f"{path}: unreadable ({exc.strerror or exc})") from None
    scan_pickle(data, str(path))
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # hostile input: every decode error (Overflow, System, Recursion, Memory, ...) is one line
        detail = " ".join(str(exc).split())[:200]
        raise CpbenchError(
            f"{path}: not a readable LLM-Uncertainty-Bench logits pickle ({type(exc).__name__}: {detail})"
        ) from None


def import_ye2024(logits_path: str | Path, labels_path: str | Path) -> LogitsArtifact:
    """LLM-Uncertainty-Bench logits pickle + dataset JSON -> LogitsArtifact (all items, in file order)."""
    lp, dp = Path(logits_path), Path(labels_path)
    _require_file(lp, "logits pickle")
    _require_file(dp, "dataset JSON given with --labels")
    rows = _load_pickle(lp)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CpbenchError(f"{lp}: expected a list of {{'id', 'logits_options'}} dicts")
    data = jsonsafe.load_file(dp)  # bounded: size, nesting depth, UTF-8, no NaN literals
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise CpbenchError(f"{dp}: expected a JSON list of items with 'id' and 'answer'")
    if len(rows) != len(data):
        raise CpbenchError(f"{lp} has {len(rows)} items but {dp} has {len(data)}: ids do not match the labels")
    ids: list[str] = []
    labels = np.empty(len(rows), dtype=np.int64)
    logits: list[np.ndarray] = []
    try:
        k, letters = _ye_items(lp, dp, rows, data, ids, labels, logits)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a 5,000-digit id, an int too large for float32
        detail = " ".join(str(exc).split())[:160]
        raise CpbenchError(f"{lp}: unreadable item ({type(exc).__name__}: {detail})") from None
    if not rows:
        raise CpbenchError(f"{lp}: no items")
    return _ye_artifact(lp, dp, ids, labels, logits, letters)


def _ye_items(lp: Path, dp: Path, rows: list, data: list, ids: list, labels: np.ndarray, logits: list) -> tuple:
    """Match pickle rows and dataset items by position, filling ids, labels and logits; (K, letters)."""
    k: int | None = None
    letters: list[str] = []
    for pos, (row, item) in enumerate(zip(rows, data)):
        if "id" not in row or "logits_options" not in row:
            raise CpbenchError(f"{lp}: item {pos} lacks 'id' or 'logits_options'")
        if "id" not in item or "answer" not in item:
            raise CpbenchError(f"{dp}: item {pos} lacks 'id' or 'answer'")
        if str(row["id"]) != str(item["id"]):
            raise CpbenchError(
                f"id mismatch at position {pos}: logits have id {row['id']!r}, labels have id {item['id']!r} "
                f"({lp.name} vs {dp.name})"
            )
        try:
            vec = np.asarray(row["logits_options"], dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise CpbenchError(f"{lp}: logits_options of id {row['id']!r} is not a numeric vector") from None
        if k is None:
            k = len(vec)
            if not 2 <= k <= 26:
                raise CpbenchError(f"{lp}: item id {row['id']!r} has {k} option logits (2 to 26 expected; Ye et al.: 6)")
            letters = _letters(k)
        if len(vec) != k:
            raise CpbenchError(f"{lp}: item id {row['id']!r} has {len(vec)} option logits, others have {k}")
        answer = str(item["answer"]).strip()
        if answer not in letters:
            raise CpbenchError(f"{dp}: label {answer!r} of id {item['id']!r} is outside the options {letters}")
        ids.append(str(row["id"]))
        labels[pos] = letters.index(answer)
        logits.append(vec)
    return k, letters


def _ye_artifact(lp: Path, dp: Path, ids: list[str], labels: np.ndarray, logits: list, letters: list[str]
                 ) -> LogitsArtifact:
    m = _YE_NAME.match(lp.stem)
    notes = ["imported from LLM-Uncertainty-Bench (Ye et al. 2024) outputs"]
    sha = {"logits": _sha256(lp), "labels": _sha256(dp)}
    data_key = "file:" + sha["labels"].split(":")[1][:12]
    if m:
        run_key = {
            "model": m["model"],
            "task": YE2024_TASKS[m["data"]],
            "prompt": m["prompt"],
            "shots": int(m["shots"]),
            "data": data_key,
        }
        if m["cot"]:
            notes.append("chain-of-thought prompt (_cot)")
    else:
        run_key = {"model": lp.stem, "task": dp.stem, "data": data_key}
        notes.append(
            "file name does not follow {model}_{data}_{prompt}_icl{shots}.pkl; model/task taken from file names"
        )
    provenance = {
        "run_key": run_key,
        "model_id": run_key["model"],
        "source_format": "llm-uncertainty-bench",
        "source_files": {"logits": str(lp), "labels": str(dp)},
        "source_sha256": sha,
        "imported_at": utc_now(),
        "versions": {"cpbench": __version__},
        "notes": notes,
    }
    return LogitsArtifact(ids=ids, labels=labels, logits=np.stack(logits), letters=letters, provenance=provenance,
                          source=str(lp))


# ------------------------------------------------------------------------------------------- lm-evaluation-harness
def _choices(sample: dict) -> list[str] | None:
    args = sample.get("arguments")
    if isinstance(args, dict):
        keys = sorted(args, key=lambda s: int(s.rsplit("_", 1)[-1]) if s.rsplit("_", 1)[-1].isdigit() else 0)
        return [str(args[key].get("arg_1", "")) for key in keys if isinstance(args[key], dict)]
    if isinstance(args, list):
        return [str(a[1]) for a in args if isinstance(a, (list, tuple)) and len(a) > 1]
    return None


def _loglik(resp: Any) -> float:
    while isinstance(resp, (list, tuple)):  # [ll, is_greedy] or [[ll, is_greedy]] depending on version
        if not resp:
            raise ValueError("empty response")
        resp = resp[0]
    return float(resp)


def _gold(target: Any, choices: list[str] | None, k: int) -> int:
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    if isinstance(target, bool):
        raise ValueError(f"boolean target {target!r}")
    if isinstance(target, (int, np.integer)):
        return int(target)
    text = str(target).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if choices:
        stripped = [c.strip() for c in choices]
        if text in stripped:
            return stripped.index(text)
    letters = _letters(k)
    if text in letters:
        return letters.index(text)
    raise ValueError(f"target {target!r} is not an index, a choice text or a letter")


def import_lm_eval_samples(path: str | Path, model: str | None = None, task: str | None = None) -> LogitsArtifact:
    """lm-evaluation-harness `samples_<task>_<date>.jsonl` (multiple-choice task) -> LogitsArtifact."""
    p = Path(path)
    _require_file(p, "lm-evaluation-harness samples JSONL")
    ids: list[str] = []
    labels: list[int] = []
    logits: list[list[float]] = []
    k = None
    filters: set[str] = set()
    lm_eval_acc: list[float] = []
    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise CpbenchError(f"{p}: unreadable ({exc.strerror or exc})") from None
    letter_choices = True  # every doc's continuations are option letters (" A", " B", ...): letter scoring
    with fh:
        lineno = 0
        while True:
            raw = fh.readline(MAX_SAMPLE_LINE_BYTES + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > MAX_SAMPLE_LINE_BYTES:
                raise CpbenchError(f"{p}:{lineno}: line longer than {MAX_SAMPLE_LINE_BYTES >> 20} MiB; an lm-eval "
                                   f"sample is one document (a few kB)")  # fmt: skip
            if not raw.strip():
                continue
            s = jsonsafe.loads(raw, f"{p}:{lineno}")  # one line for invalid UTF-8, deep nesting, NaN, huge ints
            if not isinstance(s, dict) or "doc_id" not in s or "target" not in s:
                raise CpbenchError(f"{p}:{lineno}: not an lm-eval sample (needs doc_id, target, filtered_resps)")
            resps = s.get("filtered_resps", s.get("resps"))
            if not isinstance(resps, list) or len(resps) < 2:
                raise CpbenchError(
                    f"{p}:{lineno}: doc_id {s['doc_id']} has no per-choice log-likelihoods "
                    "(is this a multiple-choice task?)"
                )
            try:
                row = [_loglik(r) for r in resps]
            except (TypeError, ValueError, OverflowError) as exc:
                raise CpbenchError(f"{p}:{lineno}: doc_id {s['doc_id']}: unreadable log-likelihood ({exc})") from None
            if len(row) > MAX_CHOICES:
                raise CpbenchError(f"{p}:{lineno}: doc_id {str(s['doc_id'])[:40]} has {len(row):,} choices; at most "
                                   f"{MAX_CHOICES} (A-Z) are supported")  # fmt: skip
            k = len(row) if k is None else k
            if len(row) != k:
                raise CpbenchError(f"{p}:{lineno}: doc_id {s['doc_id']} has {len(row)} choices, earlier docs have {k}")
            try:
                gold = _gold(s["target"], _choices(s), k)
            except (ValueError, TypeError, OverflowError, AttributeError) as exc:
                raise CpbenchError(f"{p}:{lineno}: doc_id {s['doc_id']}: {exc}") from None
            if not 0 <= gold < k:
                raise CpbenchError(f"{p}:{lineno}: label {gold} of doc_id {s['doc_id']} is outside the {k} choices")
            texts = _choices(s)
            letter_choices = letter_choices and bool(texts) and [t.strip() for t in texts] == _letters(k)
            ids.append(str(s["doc_id"]))
            labels.append(gold)
            logits.append(row)
            filters.add(str(s.get("filter", "none")))
            acc = s.get("acc")
            if isinstance(acc, (int, float)) and -1e9 < acc < 1e9:
                lm_eval_acc.append(float(acc))
    if not ids:
        raise CpbenchError(f"{p}: no samples")
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise CpbenchError(
            f"{p}: doc_id {dup} appears more than once (filters {sorted(filters)}); keep one filter's rows per file"
        )
    lg = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(lg).all():
        bad = ids[int(np.argwhere(~np.isfinite(lg))[0][0])]
        raise CpbenchError(f"{p}: non-finite log-likelihood (NaN or inf) for doc_id {bad}")
    stem = p.stem
    m = re.match(r"^samples_(?P<task>.+?)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)$", stem)
    task_name = task or (m["task"] if m else stem)
    notes = [
        "imported from lm-evaluation-harness --log_samples; logits are unnormalised per-choice log-likelihoods "
        "stored as float32",
    ]
    if lm_eval_acc:
        notes.append(f"lm-eval's own acc over these samples: {np.mean(lm_eval_acc):.6f}")
    if k != BENCHMARK_K:
        notes.append(option_count_note(k))
    if letter_choices:
        notes.append("the choices are option letters: scored as letters (the log-likelihood of each letter after "
                     "the prompt), not cloze")
    sha = _sha256(p)
    provenance = {
        "run_key": {"model": model or "unknown", "task": task_name, "scoring": "letter" if letter_choices else "cloze",
                    "data": "file:" + sha.split(":")[1][:12]},
        "model_id": model or "unknown",
        "source_format": "lm-evaluation-harness-samples",
        "source_files": {"samples": str(p)},
        "source_sha256": {"samples": sha},
        "lm_eval_filters": sorted(filters),
        "imported_at": utc_now(),
        "versions": {"cpbench": __version__},
        "notes": notes,
    }
    return LogitsArtifact(
        ids=ids,
        labels=np.asarray(labels, dtype=np.int64),
        logits=lg.astype(np.float32),
        letters=_letters(k),
        provenance=provenance,
        source=str(p),
    )


def load_any(path: str | Path, labels: str | Path | None = None) -> LogitsArtifact:
    """A cpbench artifact (.parquet), an LLM-Uncertainty-Bench pickle (.pkl, needs `labels`) or an lm-eval samples
    file (.jsonl), chosen by extension."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        if labels is None:
            raise CpbenchError(
                f"{p}: an LLM-Uncertainty-Bench pickle needs --labels DATA.json (the task's dataset file)"
            )
        return import_ye2024(p, labels)
    if suffix == ".jsonl":
        return import_lm_eval_samples(p)
    return LogitsArtifact.load(p)
