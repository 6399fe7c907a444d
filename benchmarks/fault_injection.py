"""Fault injection for `cpbench run` (issue 10): SIGKILL at random moments, rerun, check nothing was lost or corrupted.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py [--kills 20] [--seed 0] [--keep DIR]

The run: the tiny random Llama (tests/tiny_model.py), baseline + magnitude-50, tasks qa and rc, --limit 18, batch 2,
chunks of 4 items; each scoring batch is slowed by 0.1 s so that kills land in scoring as well as in imports,
compression and writes. First one uninterrupted run (the reference). Then, per trial, a fresh cache and results
tree: a run killed (SIGKILL) at a uniformly random moment of the reference's working time (from its first printed
line, after the Python imports, to its end), sometimes killed a second time on the rerun, then a rerun to completion. After each trial it asserts:

- no corrupt file anywhere: every artifact loads (shape, finiteness, content hash), every result record loads with
  nothing skipped, every checkpoint in the cache carries a valid completion marker;
- every finished cell is kept: an artifact present after a kill is reused by the rerun, byte for byte;
- the final artifacts equal the uninterrupted run's (ids, labels, run key, weights id, prompts hash; logits within
  1e-5) and so do the records' numbers;
- no leftovers: no staging folders, temp files or lock files in the results tree or the cache, no chunk files.

It prints one line per kill (when, what the run had printed last) and a summary; exit 1 when any check fails.

`--signal TERM` sends SIGTERM instead (what SLURM sends at a time limit or on preemption; issue 18): each terminated
run must also end with exit 143 and one `cpbench: terminated (SIGTERM)` line, and leave no lock file or staging folder
(checked right after it exits, before the rerun). Before the kills, bad inputs are fed to `cpbench run` (issue 18):
a FIFO and a device as `--data`, a 10 MB item, a prompt longer than the model's context, an unknown `--model-args`
key and `trust_remote_code` in `--model-args`; each must answer with one line and exit 2 within 60 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CHILD = """
import sys, time
from cpbench.backends import letter
real = letter.LetterScorer._batch
def slow(self, idx, g):
    time.sleep(0.1)  # kills land inside scoring too, not only in imports
    return real(self, idx, g)
letter.LetterScorer._batch = slow
from cpbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_args(model: str, results: Path) -> list[str]:
    return ["run", "--model", model, "--quant", "magnitude-50", "--tasks", "qa,rc", "--data", "samples",
            "--limit", "18", "--batch-size", "2", "--chunk-size", "4", "--results", str(results)]  # fmt: skip


def env_for(cache: Path) -> dict[str, str]:
    return dict(os.environ, CPBENCH_CACHE=str(cache), PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO),
                OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TOKENIZERS_PARALLELISM="false",
                HF_HUB_OFFLINE="1")  # fmt: skip


def start(model: str, results: Path, cache: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    return subprocess.Popen([sys.executable, "-c", CHILD, *run_args(model, results)], env=env_for(cache),
                            stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip


def finish(model: str, results: Path, cache: Path, log: Path) -> tuple[int, float]:
    """Run to completion; returns (exit code, seconds from its first printed line to the end of its work: the last
    record written, i.e. its summary printed; interpreter shutdown after that is not worth killing)."""
    p = start(model, results, cache, log)
    started(p, log)
    t = time.perf_counter()
    work = None
    while p.poll() is None:
        if work is None and "result(s) in" in log.read_text(errors="replace"):
            work = time.perf_counter() - t
        time.sleep(0.02)
    rc = p.wait(timeout=900)
    return rc, work if work is not None else time.perf_counter() - t


def started(p: subprocess.Popen, log: Path, timeout: float = 600) -> float:
    """Wait until the run printed its first line (imports done, work begins); returns the seconds it took."""
    t = time.perf_counter()
    while p.poll() is None and time.perf_counter() - t < timeout:
        if log.stat().st_size > 0:
            break
        time.sleep(0.02)
    return time.perf_counter() - t


SIGNAL = signal.SIGKILL  # --signal TERM: signal.SIGTERM


def bad_inputs(model: str, work: Path) -> list[str]:
    """Issue 18's bad inputs: one line and exit 2 within 60 s each; returns the problems (one line per case)."""
    d = work / "bad-inputs"
    d.mkdir(parents=True, exist_ok=True)
    os.mkfifo(d / "fifo.jsonl")
    items = json.loads((REPO / "tasks" / "samples" / "qa.json").read_text())["items"]
    big = [dict(it) for it in items]
    big[3]["question"] = "x" * 10_000_000
    (d / "big.json").write_text(json.dumps(big))
    from cpbench.specs.tasks import load_task

    demos = {str(i) for i in load_task("qa").demonstrations.ids}
    long = [dict(it) for it in items]
    next(it for it in long if str(it["id"]) not in demos)["question"] = " ".join(["water light river"] * 1500)
    (d / "long.json").write_text(json.dumps(long))
    base = ["run", "--model", model, "--tasks", "qa", "--device", "cpu", "--results", str(d / "results")]
    cases = {
        "FIFO --data": (base + ["--data", str(d / "fifo.jsonl")], "FIFO"),
        "/dev/zero --data": (base + ["--data", "/dev/zero"], "device"),
        "10 MB item": (base + ["--data", str(d / "big.json")], "cap per item"),
        "prompt over the context": (base + ["--data", str(d / "long.json")], "reads at most"),
        "unknown --model-args key": (base + ["--data", "samples", "--model-args", "bogus_key=1"], "bogus_key"),
        "trust_remote_code in --model-args": (base + ["--data", "samples", "--model-args", "trust_remote_code=true"],
                                              "--trust-remote-code"),
    }
    problems = []
    for name, (args, keyword) in cases.items():
        t = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-m", "cpbench", *args], env=env_for(d / "cache"), capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        except subprocess.TimeoutExpired:
            problems.append(f"{name}: no answer within 60 s")
            continue
        lines = p.stderr.strip().splitlines()
        ok = p.returncode == 2 and len(lines) == 1 and keyword in lines[0]
        print(f"  bad input {name}: exit {p.returncode}, {len(lines)} line(s), {time.perf_counter() - t:.1f} s"
              f"{'' if ok else ' FAIL'}: {(lines or [''])[-1][:110]}")  # fmt: skip
        if not ok:
            problems.append(f"{name}: exit {p.returncode}, {p.stderr[-300:]}")
    return problems


def leftovers(results: Path, cache: Path) -> list[str]:
    """Lock files and staging folders (what a terminated run must not leave)."""
    return [str(p) for root in (results, cache) if root.exists() for p in root.rglob("*")
            if p.name.endswith(".lock") or p.name.startswith(".tmp-")]  # fmt: skip


def kill_at(model: str, results: Path, cache: Path, log: Path, delay: float) -> tuple[bool, str]:
    """Start a run, SIGKILL it `delay` s after it started working (its first printed line: the Python imports
    before it are not worth killing). Returns (killed before it finished, last line it printed)."""
    p = start(model, results, cache, log)
    started(p, log)
    try:
        p.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        p.send_signal(SIGNAL)
        rc = p.wait()
        killed = True
        if SIGNAL == signal.SIGTERM:  # like Ctrl-C: one line, exit 143, nothing left behind
            last = ([x for x in log.read_text(errors="replace").splitlines() if x.strip()] or [""])[-1]
            left = leftovers(results, cache)
            if rc == 0 or (rc == -signal.SIGTERM and last.startswith("next: ")):
                killed = False  # it finished (its work, or main() had returned) just before the signal
            elif rc != 143 or "terminated (SIGTERM)" not in last or left:
                TERM_PROBLEMS.append(f"exit {rc}, last line {last[:80]!r}, leftovers {left[:3]}")
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return killed, (lines[-1][:90] if lines else "(nothing printed yet)")


TERM_PROBLEMS: list[str] = []


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def artifacts(results: Path) -> dict[str, Path]:
    return {p.name: p for p in results.rglob("artifacts/*.parquet")}


def snapshot(results: Path) -> dict[str, str]:
    return {name: sha(p) for name, p in artifacts(results).items()}


def check_state(results: Path, cache: Path, ref: dict, kept: dict[str, str], problems: list[str]) -> None:
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.base.errors import CpbenchError
    from cpbench.base.locks import is_complete
    from cpbench.results.store import load_results

    arts = artifacts(results)
    if set(arts) != set(ref["artifacts"]):
        problems.append(f"artifacts {sorted(arts)} != reference {sorted(ref['artifacts'])}")
    for name, path in arts.items():
        try:
            a = LogitsArtifact.load(path)
        except CpbenchError as exc:
            problems.append(f"corrupt artifact {name}: {exc}")
            continue
        r = ref["artifacts"].get(name)
        if r is None:
            continue
        prov = a.provenance
        same = (a.ids == r["ids"] and a.labels.tolist() == r["labels"] and prov["run_key"] == r["run_key"]
                and prov.get("weights_id") == r["weights_id"] and prov.get("prompts_hash") == r["prompts_hash"])  # fmt: skip
        diff = float(np.abs(a.logits - r["logits"]).max()) if a.logits.shape == r["logits"].shape else float("inf")
        if not same or diff > 1e-5:
            problems.append(f"artifact {name} differs from the uninterrupted run (max |dlogit| {diff:.2g})")
    for name, digest in kept.items():
        if name in arts and sha(arts[name]) != digest:
            problems.append(f"finished artifact {name} was rewritten by the rerun")
    try:
        df, skipped = load_results(results)
    except CpbenchError as exc:
        problems.append(f"results tree does not load: {exc}")
    else:
        if skipped:
            problems.append(f"skipped while loading results: {[(s.path, s.reason) for s in skipped][:3]}")
        got = {(r.recipe, r.task, r.score): (round(r.acc, 9), round(r.coverage, 9), round(r.set_size, 9))
               for r in df.itertuples()}  # fmt: skip
        if got != ref["records"]:
            problems.append("records' numbers differ from the uninterrupted run")
    for ck in (cache / "checkpoints").iterdir() if (cache / "checkpoints").is_dir() else []:
        if not ck.name.startswith(".") and not is_complete(ck):
            problems.append(f"incomplete checkpoint {ck.name}")
    leftovers = [p for root in (results, cache) for p in root.rglob("*")
                 if p.name.startswith((".tmp", ".cpbench-probe")) or p.name.endswith((".tmp", ".cpbtmp", ".lock"))]  # fmt: skip
    chunk_dirs = list((cache / "scores").iterdir()) if (cache / "scores").is_dir() else []
    if leftovers or chunk_dirs:
        problems.append(f"leftovers: {[str(p) for p in leftovers + chunk_dirs][:4]}")


def reference(model: str, work: Path) -> tuple[dict, float]:
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.store import load_results

    results, cache = work / "ref" / "results", work / "ref" / "cache"
    rc, wall = finish(model, results, cache, work / "ref.log")
    if rc != 0:
        raise SystemExit(f"reference run failed (exit {rc}): {(work / 'ref.log').read_text()[-2000:]}")
    ref: dict = {"artifacts": {}, "records": {}}
    for name, path in artifacts(results).items():
        a = LogitsArtifact.load(path)
        ref["artifacts"][name] = {"ids": a.ids, "labels": a.labels.tolist(), "logits": a.logits,
                                  "run_key": a.provenance["run_key"], "weights_id": a.provenance.get("weights_id"),
                                  "prompts_hash": a.provenance.get("prompts_hash")}  # fmt: skip
    df, _ = load_results(results)
    ref["records"] = {(r.recipe, r.task, r.score): (round(r.acc, 9), round(r.coverage, 9), round(r.set_size, 9))
                      for r in df.itertuples()}  # fmt: skip
    return ref, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in all (>= 20 for the issue's acceptance)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temp dir, removed)")
    ap.add_argument("--signal", choices=("KILL", "TERM"), default="KILL", help="TERM: SLURM's time limit (issue 18)")
    ap.add_argument("--no-bad-inputs", action="store_true", help="skip the bad-input cases")
    args = ap.parse_args(argv)
    global SIGNAL
    SIGNAL = signal.SIGTERM if args.signal == "TERM" else signal.SIGKILL
    from tiny_model import tiny_model_dir

    model = str(tiny_model_dir())
    work = args.keep or Path(tempfile.mkdtemp(prefix="cpbench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    print(f"fault injection: tiny model, base + magnitude-50, qa+rc, limit 18; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, seed {args.seed}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    bad = [] if args.no_bad_inputs else bad_inputs(model, work)
    ref, wall = reference(model, work)
    print(f"reference (uninterrupted) run: {wall:.1f} s of work after imports, {len(ref['artifacts'])} artifacts")
    kills = trials = failures = 0
    reused_after_kill = 0
    while kills < args.kills:
        trials += 1
        d = work / f"trial{trials:02d}"
        results, cache = d / "results", d / "cache"
        d.mkdir()
        kept: dict[str, str] = {}
        problems: list[str] = []
        for attempt in range(2 if rng.random() < 0.5 else 1):  # sometimes kill the rerun as well
            if kills >= args.kills:
                break
            delay = rng.uniform(0.0, wall)
            killed, last = kill_at(model, results, cache, d / f"kill{attempt}.log", delay)
            kills += killed
            kept.update(snapshot(results))  # finished cells must survive, byte for byte
            print(f"  trial {trials:2d} kill {attempt + 1}: at {delay:5.1f} s "
                  f"{'killed' if killed else 'finished first'}; {len(kept)} artifact(s) done; last: {last}")
        problems += TERM_PROBLEMS
        TERM_PROBLEMS.clear()
        rc, _ = finish(model, results, cache, d / "final.log")
        out = (d / "final.log").read_text(errors="replace")
        if rc != 0:
            problems.append(f"rerun exit {rc}: {out[-500:]}")
        reused_after_kill += out.count("artifact reused")
        check_state(results, cache, ref, kept, problems)
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        failures += bool(problems)
        print(f"  trial {trials:2d}: rerun {'ok' if rc == 0 else f'exit {rc}'}, "
              f"{out.count('artifact reused')} artifact(s) reused, {out.count(' items, ')} scored; {status}")
        if not problems and args.keep is None:
            shutil.rmtree(d, ignore_errors=True)
    print(f"summary: {kills} {'SIGTERMs' if SIGNAL == signal.SIGTERM else 'kills'} in {trials} trials, {failures} "
          f"failed trial(s); {reused_after_kill} finished artifacts reused by reruns; bad inputs: "
          f"{'skipped' if args.no_bad_inputs else f'{len(bad)} failed'}; {time.perf_counter() - t0:.0f} s")
    failures += len(bad)
    if args.keep is None and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
