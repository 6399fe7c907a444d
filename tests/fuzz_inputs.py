"""Seed inputs and byte-level mutations for the importer fuzz tests (tests/test_importers_fuzz.py).

`fuzz(kind, n, seed, workdir)` writes one valid seed file of `kind`, mutates it `n` times (seeded: the same cases
every run) and feeds each mutant to the reader of that kind. A mutant must either load (into a valid artifact or
record) or raise CpbenchError with a one-line message; anything else is returned as a failure. It runs in-process
(pytest) or in a child process (the memory measurement), hence a plain module.
"""

from __future__ import annotations

import json
import pickle
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cpbench.base.errors import CpbenchError

KINDS = ("pickle", "labels_json", "lm_eval_jsonl", "lm_eval_results", "parquet", "record_json")
LETTERS = ["A", "B", "C", "D", "E", "F"]

# Hand-written hostile inputs that random flips rarely hit: each once, in every run.
HOSTILE_PICKLES = (
    b"\x80\x02]r\xff\xff\xff\x7f.",  # LONG_BINPUT 2**31-1: the memo table would grow to 16 GB
    b"\x80\x02]q\x00r\x00\x00\x00\x10.",  # LONG_BINPUT 2**28 after a valid BINPUT
    b"\x80\x02B\xff\xff\xff\x7fabc.",  # BINBYTES claiming 2 GB
    b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00].",  # FRAME claiming 4 GB
    b"\x80\x02X\xff\xff\xff\x7fabc.",  # BINUNICODE claiming 2 GB
    b"\x80\x02" + b"]" * 50_000 + b"e" * 49_999 + b".",  # 50,000-deep nested list
    b"\x80\x02" + b"(" * 10_000 + b".",  # 10,000 nested MARKs
    b"\x80\x02L" + b"9" * 100_000 + b"L\n.",  # a 100,000-digit integer (protocol-0 LONG)
    b"\x80\x02\x8b\xff\xff\xff\x7f\x00.",  # LONG4 claiming a 2 GB integer
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x40\x85U\x01b\x87R.",  # shape 2**30
    b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00xxxxX\x04\x00\x00\x00zlib\x86R.",  # a non-latin1 codec
    b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.",  # code execution
)


def _ye_rows(n: int = 40) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 6)).astype(np.float32)
    rows = [{"id": i, "logits_options": logits[i]} for i in range(n)]
    data = [{"id": i, "answer": LETTERS[i % 6], "question": f"q{i}", "choices": {o: o.lower() for o in LETTERS}}
            for i in range(n)]
    return rows, data


def _lm_eval_rows(n: int = 30, k: int = 4) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows = []
    for d in range(n):
        lls = rng.normal(-5, 2, k)
        gold = int(rng.integers(0, k))
        rows.append({
            "doc_id": d, "doc": {"q": f"Question {d}"}, "target": str(gold),
            "arguments": {f"gen_args_{j}": {"arg_0": f"Question {d}\nAnswer:", "arg_1": f" c{j}"} for j in range(k)},
            "resps": [[[str(v), "False"]] for v in lls], "filtered_resps": [[str(v), "False"] for v in lls],
            "filter": "none", "acc": float(np.argmax(lls) == gold),
        })  # fmt: skip
    return rows


def _results_json() -> dict[str, Any]:
    return {
        "results": {"mmlu_tiny": {"acc,none": 0.5}}, "n-shot": {"mmlu_tiny": 5},
        "configs": {"mmlu_tiny": {"num_fewshot": 5}},
        "config": {"model": "hf", "model_args": "pretrained=org/m,dtype=bfloat16", "limit": None},
        "model_name": "org/m", "git_hash": "abc",
    }  # fmt: skip


SAMPLES = "samples_mmlu_tiny_2026-11-29T10-00-00.123456.jsonl"
RESULTS = "results_2026-11-29T10-00-00.123456.json"


def seed(kind: str, d: Path) -> tuple[Path, Callable[[Path], Any]]:
    """(the valid seed file, the reader that takes a mutant path) for one kind."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.backends.pickles import import_lm_eval_samples, import_ye2024
    from cpbench.base.jsonsafe import load_file
    from cpbench.results.records import load_record

    d.mkdir(parents=True, exist_ok=True)
    rows, data = _ye_rows()
    labels = d / "labels.json"
    labels.write_text(json.dumps(data))
    pkl = d / "m_mmlu_10k_base_icl0.pkl"
    pkl.write_bytes(pickle.dumps(rows, protocol=4))
    if kind == "pickle":
        return pkl, lambda p: import_ye2024(p, labels)
    if kind == "labels_json":
        return labels, lambda p: import_ye2024(pkl, p)
    samples = d / SAMPLES
    samples.write_text("".join(json.dumps(r) + "\n" for r in _lm_eval_rows()))
    if kind == "lm_eval_jsonl":
        return samples, import_lm_eval_samples
    if kind == "lm_eval_results":
        from cpbench.backends.lmeval import import_named

        results = d / RESULTS
        results.write_text(json.dumps(_results_json()))

        def read_named(p: Path) -> Any:
            if p != results:
                results.write_bytes(p.read_bytes())
            return import_named(samples)

        return results, read_named
    if kind == "parquet":
        art = import_ye2024(pkl, labels)
        path = art.save(d / "a.parquet")
        return path, LogitsArtifact.load
    if kind == "record_json":
        from result_factory import make_record

        path = d / "record.json"
        path.write_text(json.dumps(make_record(splits=10), indent=2))
        return path, lambda p: load_record(load_file(p))
    raise ValueError(kind)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    n = len(b)
    how = int(rng.integers(0, 7))
    if how == 0:  # flip 1-3 bits
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif how == 1:  # random byte values
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, n))] = int(rng.integers(0, 256))
    elif how == 2:  # a large little-endian length or index somewhere
        i = int(rng.integers(0, max(1, n - 4)))
        b[i:i + 4] = bytes([0xFF, 0xFF, 0xFF, int(rng.choice([0x7F, 0x0F, 0x01]))])
    elif how == 3:  # truncate
        return bytes(b[: int(rng.integers(0, n))])
    elif how == 4:  # delete a slice
        i = int(rng.integers(0, n))
        return bytes(b[:i] + b[i + int(rng.integers(1, 16)):])
    elif how == 5:  # duplicate a slice
        i = int(rng.integers(0, n))
        j = min(n, i + int(rng.integers(1, 64)))
        return bytes(b[:j] + b[i:j] + b[j:])
    else:  # invalid UTF-8 / structural bytes
        i = int(rng.integers(0, n))
        b[i] = int(rng.choice([0xFF, 0xC3, 0x80, ord("["), ord("{"), ord('"'), 0x00]))
    return bytes(b)


def _check(read: Callable[[Path], Any], path: Path, case: str, same: Callable[[Any], bool] | None = None
           ) -> tuple[str, str]:
    """('ok' | 'refused', detail) or raises AssertionError naming the case."""
    try:
        out = read(path)
    except CpbenchError as exc:
        msg = str(exc)
        if "\n" in msg or not msg:
            raise AssertionError(f"{case}: error message is not one line: {msg!r}") from None
        return "refused", msg
    except Exception as exc:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{case}: {type(exc).__name__} escaped: {exc}\n{traceback.format_exc()}") from None
    from cpbench.results.artifact import LogitsArtifact

    if isinstance(out, LogitsArtifact):
        out.validate()
        if same is not None and not same(out):
            raise AssertionError(f"{case}: a damaged artifact loaded with different content")
    return "ok", ""


def fuzz(kind: str, n: int, seed_: int, workdir: Path) -> dict[str, int]:
    """Run `n` mutants of one kind (plus the hand-written hostile pickles for 'pickle'); counts of outcomes."""
    d = Path(workdir) / kind
    path, read = seed(kind, d)
    original = path.read_bytes()
    assert _check(read, path, f"{kind} seed")[0] == "ok", f"{kind}: the seed itself does not load"
    same = None
    if kind == "parquet":  # the content hash covers everything: a mutant that loads must be the same artifact
        from cpbench.results.artifact import LogitsArtifact

        ref = LogitsArtifact.load(path)

        def same(a: Any) -> bool:
            return (a.ids == ref.ids and np.array_equal(a.labels, ref.labels) and np.array_equal(a.logits, ref.logits)
                    and a.provenance == ref.provenance and a.letters == ref.letters)
    rng = np.random.default_rng(seed_)
    counts = {"ok": 0, "refused": 0}
    mutant = path.with_name("mutant" + path.suffix) if kind != "lm_eval_results" else path.with_name("m.json")
    cases: list[tuple[str, bytes]] = [(f"{kind} #{i} (seed {seed_})", mutate(original, rng)) for i in range(n)]
    if kind == "pickle":
        cases += [(f"hostile pickle {i}", h) for i, h in enumerate(HOSTILE_PICKLES)]
    for case, data in cases:
        if kind == "pickle":  # keep the file name the importer parses
            target = path.with_name("x_mmlu_10k_base_icl0.pkl")
        elif kind == "lm_eval_jsonl":
            target = path.with_name("samples_x_2026-11-29T10-00-00.1.jsonl")
        else:
            target = mutant
        target.write_bytes(data)
        outcome, _ = _check(read, target, case, same)
        counts[outcome] += 1
    path.write_bytes(original)
    return counts


def special_files(workdir: Path, seconds: int = 20) -> dict[str, str]:
    """Every reader (each importer kind, item files, the run key's data tag) fed a FIFO nobody writes to and the
    endless `/dev/zero` (linked under the reader's suffix) and a 10 MB item: each must refuse with one line, never
    hang (a SIGALRM watchdog turns a hang into a failure) nor read without end (issue 18). Returns {case: message}."""
    import os
    import signal

    from cpbench.specs.tasks import data_tag, read_items

    d = Path(workdir) / "special"
    d.mkdir(parents=True, exist_ok=True)
    readers: dict[str, Callable[[Path], Any]] = {kind: seed(kind, d / kind)[1] for kind in KINDS}
    results_file = seed("lm_eval_results", d / "lm_eval_results")[0]

    def read_results_in_place(p: Path) -> Any:  # the special file itself where lm-eval's results file sits
        from cpbench.backends.lmeval import import_named

        results_file.unlink()
        results_file.symlink_to(p)
        return import_named(results_file.with_name(SAMPLES))

    readers["lm_eval_results"] = read_results_in_place
    readers["item_file"] = read_items
    readers["data_tag"] = data_tag
    suffix = {"pickle": ".pkl", "labels_json": ".json", "lm_eval_jsonl": ".jsonl", "lm_eval_results": ".json",
              "parquet": ".parquet", "record_json": ".json", "item_file": ".json", "data_tag": ".json"}
    out: dict[str, str] = {}

    def hang(*_: Any) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    try:
        for kind, read in readers.items():
            fifo, dev = d / f"fifo-{kind}{suffix[kind]}", d / f"zero-{kind}{suffix[kind]}"
            if kind == "pickle":
                fifo, dev = d / f"f{kind}_mmlu_10k_base_icl0.pkl", d / f"z{kind}_mmlu_10k_base_icl0.pkl"
            os.mkfifo(fifo)
            dev.symlink_to("/dev/zero")
            for name, path in (("FIFO", fifo), ("/dev/zero", dev)):
                signal.alarm(seconds)
                try:
                    outcome, msg = _check(read, path, f"{kind} {name}")
                except TimeoutError as exc:
                    raise AssertionError(f"{kind} {name}: {exc}") from None
                finally:
                    signal.alarm(0)
                if outcome != "refused":
                    raise AssertionError(f"{kind} {name}: loaded")
                out[f"{kind} {name}"] = msg
        items = json.loads((Path(__file__).resolve().parents[1] / "tasks" / "samples" / "qa.json").read_text())
        items["items"][2]["context"] = "y" * 10_000_000
        (d / "big.json").write_text(json.dumps(items))
        outcome, msg = _check(read_items, d / "big.json", "10 MB item")
        if outcome != "refused":
            raise AssertionError("a 10 MB item loaded")
        out["10 MB item"] = msg
    finally:
        signal.signal(signal.SIGALRM, previous)
    return out
