"""The CI integration: action.yml (composite GitHub Action) and the GitLab job in docs/examples/gitlab-ci.yml.

Static checks: the YAML parses, the action is composite, every `${{ inputs.X }}` is declared, every run step names its
shell, and every `cpbench <command> --option` in the scripts exists in the CLI. The slow test executes the action's
own `run:` scripts (and the GitLab job's script) with bash against a real compressed checkpoint, as a runner would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "action.yml"
GITLAB = ROOT / "docs" / "examples" / "gitlab-ci.yml"


def _cli_options() -> dict[str, set[str]]:
    import typer

    from cpbench.cli import app

    group = typer.main.get_command(app)
    return {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} for name, cmd in group.commands.items()}


def _cpbench_calls(script: str) -> list[tuple[str, list[str]]]:
    """(command, options) of each `cpbench <command> ...` in a shell script (continuation lines joined); options in
    an `args=(...)` / `args+=(...)` array count for the `cpbench run "${args[@]}"` that uses them."""
    text = re.sub(r"\\\n\s*", " ", script)
    arrays = " ".join(m.group(1) for m in re.finditer(r"args\+?=\((.*?)\)", text, flags=re.S))
    calls = []
    for m in re.finditer(r"(?<![\w./-])cpbench\s+([a-z]+)([^\n;|&]*)", text):
        cmd, rest = m.group(1), m.group(2)
        opts = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest + (" " + arrays if "${args[@]}" in rest else ""))
        calls.append((cmd, opts))
    return calls


def _steps() -> list[dict]:
    return yaml.safe_load(ACTION.read_text())["runs"]["steps"]


def test_action_parses_and_declares_what_it_uses():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite" and action["name"] and action["description"]
    inputs = action["inputs"]
    assert inputs["base"]["required"] and inputs["candidate"]["required"]
    used = set(re.findall(r"\$\{\{\s*inputs\.([a-z0-9-]+)\s*\}\}", ACTION.read_text()))
    assert used and used <= set(inputs), used - set(inputs)
    assert set(inputs) <= used  # no dead inputs
    for step in action["runs"]["steps"]:
        assert ("uses" in step) != ("run" in step), step
        if "run" in step:
            assert step["shell"] == "bash", step.get("name")  # composite run steps must name their shell
            assert "${{ inputs." not in step["run"], "inputs reach scripts through env, never pasted into code"
        else:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
    for out in action["outputs"].values():
        assert re.fullmatch(r"\$\{\{ steps\.check\.outputs\.[a-z-]+ \}\}", out["value"])


def test_action_and_gitlab_scripts_call_commands_that_exist():
    options = _cli_options()
    scripts = [s["run"] for s in _steps() if "run" in s]
    gitlab = yaml.safe_load(GITLAB.read_text())["cpbench-gate"]
    scripts.append("\n".join(gitlab["script"]))
    calls = [c for s in scripts for c in _cpbench_calls(s)]
    assert {c for c, _ in calls} >= {"run", "check", "leaderboard"}
    for cmd, opts in calls:
        assert cmd in options, f"cpbench {cmd} does not exist"
        missing = [o for o in opts if o not in options[cmd]]
        assert not missing, f"cpbench {cmd} has no option {missing}"
    run_opts = next(o for c, o in calls if c == "run")
    assert "--candidate" in run_opts and "--model" in run_opts
    check = next(o for c, o in calls if c == "check")
    assert {"--baseline", "--candidate", "--summary", "--junit"} <= set(check)
    assert gitlab["artifacts"]["reports"]["junit"] == "gate-junit.xml" and gitlab["artifacts"]["when"] == "always"
    assert "CPBENCH_CACHE" in gitlab["variables"] and any(".cpbench-cache" in p for p in gitlab["cache"]["paths"])


def test_until_decided_inputs_reach_run_and_check(tmp_path):
    """`until-decided` (default off) and `max-items` / `gate-limits` become `cpbench run --until-decided --max-items N
    --gate-limits L`, and check gets `--until-decided` (it reads the design from the results); without
    until-decided neither command sees them, and max-items alone is refused (exit 2)."""
    from tiny_model import tiny_model_dir

    inputs = yaml.safe_load(ACTION.read_text())["inputs"]
    assert inputs["until-decided"]["default"] == "false" and not inputs["until-decided"]["required"]
    assert inputs["max-items"]["default"] == "" and inputs["gate-limits"]["default"] == ""
    assert inputs["futility"]["default"] == "" and not inputs["futility"]["required"]
    env = _shims(tmp_path)
    log = tmp_path / "calls"
    (tmp_path / "bin" / "cpbench").write_text(f'#!/bin/bash\necho "$*" >> "{log}"\n')  # records its arguments
    run_step = next(s for s in _steps() if "cpbench run" in s.get("run", ""))
    check_step = next(s for s in _steps() if s.get("id") == "check")
    d = str(tiny_model_dir())
    common = dict(BASE=d, CANDIDATE=d, CANDIDATE_NAME="w4", TASKS="qa", DATA="samples", LIMIT="", DEVICE="cpu",
                  RESULTS=str(tmp_path / "res"), RUN_ARGS="", CHECK_ARGS="", GITHUB_OUTPUT=str(tmp_path / "out"),
                  GITHUB_ENV=str(tmp_path / "env"))  # fmt: skip

    def calls(**kw: str) -> tuple[int, list[str]]:
        log.write_text("")
        rc = 0
        for step in (run_step, check_step):
            proc = subprocess.run(["bash", "-e", "-c", step["run"]], env=dict(env, **common, **kw),
                                  capture_output=True, text=True)  # fmt: skip
            rc = rc or proc.returncode
        return rc, log.read_text().splitlines()

    rc, (run, check) = calls(UNTIL_DECIDED="true", MAX_ITEMS="500", GATE_LIMITS="max_accuracy_drop=0.02", FUTILITY="")
    assert rc == 0 and "--until-decided --max-items 500 --gate-limits max_accuracy_drop=0.02" in run
    assert run.startswith("run ") and check.startswith("check ") and "--until-decided" in check
    assert "--futility" not in run + check  # empty: the run's default level, stored with the design
    rc, (run, check) = calls(UNTIL_DECIDED="true", MAX_ITEMS="", GATE_LIMITS="", FUTILITY="0")
    assert rc == 0 and "--until-decided --futility 0" in run and "--futility" not in check  # check reads it
    rc, (run, check) = calls(UNTIL_DECIDED="false", MAX_ITEMS="", GATE_LIMITS="", FUTILITY="")
    assert rc == 0 and "--until-decided" not in run + check and "--max-items" not in run
    rc, lines = calls(UNTIL_DECIDED="false", MAX_ITEMS="500", GATE_LIMITS="", FUTILITY="")
    assert rc == 2 and not any(x.startswith("run ") for x in lines)
    rc, lines = calls(UNTIL_DECIDED="false", MAX_ITEMS="", GATE_LIMITS="", FUTILITY="0.1")
    assert rc == 2 and not any(x.startswith("run ") for x in lines)
    options = _cli_options()
    assert {"--until-decided", "--max-items", "--gate-limits", "--futility"} <= options["run"]
    assert "--futility" in options["check"]
    assert "--until-decided" in options["check"]


def test_result_dirs_match_where_run_writes(tmp_path):
    from tiny_model import tiny_model_dir

    from cpbench.weights.candidates import result_dirs
    from cpbench.weights.models import resolve

    d = str(tiny_model_dir())
    b, c = result_dirs(d, d, "w4", tmp_path)
    assert b == tmp_path / resolve(d).key / "base" and c == tmp_path / resolve(d).key / "w4"


def _shims(tmp_path: Path) -> dict[str, str]:
    """`cpbench` and `python` on PATH as this interpreter and this checkout (the action installs them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in (("cpbench", f'exec "{sys.executable}" -m cpbench.cli "$@"'),
                         ("python", f'exec "{sys.executable}" "$@"')):  # fmt: skip
        p = bin_dir / name
        p.write_text(f"#!/bin/bash\n{target}\n")
        p.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def w8a8_dir(tmp_path_factory):
    """The tiny model compressed outside cpbench by a plain llm-compressor oneshot (W8A8 RTN, dynamic activations)."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from tiny_model import tiny_model_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tiny_model_dir()
    out = tmp_path_factory.mktemp("ci") / "tiny-w8a8"
    model, tok = AutoModelForCausalLM.from_pretrained(src), AutoTokenizer.from_pretrained(src)
    oneshot(model=model, recipe=[QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])],
            pipeline="datafree")  # fmt: skip
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    return str(src), str(out)


@pytest.mark.slow
def test_action_steps_run_as_a_runner_would(tmp_path, w8a8_dir):
    base, cand = w8a8_dir
    env = _shims(tmp_path)
    gh = {k: tmp_path / k for k in ("output", "env", "summary")}
    for f in gh.values():
        f.write_text("")
    inputs = {k: str(v.get("default", "")) for k, v in yaml.safe_load(ACTION.read_text())["inputs"].items()}
    inputs.update(base=base, candidate=cand, tasks="qa", data="samples", results=str(tmp_path / "res"),
                  **{"check-args": "--max-set-size-increase 6 --decision point"})  # fmt: skip
    ctx = {"runner.temp": str(tmp_path), "github.action_path": str(ROOT)}
    work = tmp_path / "work"
    work.mkdir()

    def expand(text: str) -> str:
        def sub(m: re.Match) -> str:
            expr = m.group(1).strip()
            return inputs[expr[len("inputs."):]] if expr.startswith("inputs.") else ctx[expr]

        return re.sub(r"\$\{\{(.*?)\}\}", sub, text)

    ran = []
    for step in _steps():
        if "run" not in step or "pip install" in step["run"]:
            continue  # setup-python, cache, upload: GitHub's; the install step: this environment is installed
        step_env = dict(env, GITHUB_OUTPUT=str(gh["output"]), GITHUB_ENV=str(gh["env"]),
                        GITHUB_STEP_SUMMARY=str(gh["summary"]), CPBENCH_CACHE=str(tmp_path / "cache"))  # fmt: skip
        step_env.update({k: expand(str(v)) for k, v in (step.get("env") or {}).items()})
        for line in gh["env"].read_text().splitlines():  # what earlier steps exported through $GITHUB_ENV
            k, _, v = line.partition("=")
            step_env[k] = v
        proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=work, env=step_env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        ran.append(step["name"])
        assert proc.returncode == 0, (step["name"], proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(ran) == 5
    outputs = dict(line.split("=", 1) for line in gh["output"].read_text().splitlines())
    assert outputs["exit-code"] == "0"
    assert "cpbench check" in gh["summary"].read_text() and "PASS" in gh["summary"].read_text()
    res = tmp_path / "res"
    assert (res / "gate-junit.xml").is_file() and (res / "leaderboard" / "index.html").is_file()
    assert {p.parent.name for p in res.rglob("*.json") if p.parent.name != "leaderboard"} >= {"base", "tiny-w8a8"}

    # a gate that fails makes the action's last step fail with check's exit status
    inputs["check-args"] = "--min-coverage 0.99 --decision point"  # LAC covers ~0.95 of these items
    gh["env"].write_text("")
    check = next(s for s in _steps() if s.get("id") == "check")
    step_env = dict(env, GITHUB_OUTPUT=str(gh["output"]), GITHUB_ENV=str(gh["env"]))
    step_env.update({k: expand(str(v)) for k, v in check["env"].items()})
    subprocess.run(["bash", "-e", "-c", check["run"]], cwd=work, env=step_env, check=True, capture_output=True)
    code = gh["env"].read_text().strip().split("=")[1]
    fail_step = _steps()[-1]
    proc = subprocess.run(["bash", "-e", "-c", fail_step["run"]], env=dict(env, CPBENCH_GATE_EXIT=code),
                          capture_output=True, text=True)  # fmt: skip
    assert code in ("1",) and proc.returncode == 1 and "cpbench check exited 1" in proc.stdout

    # the GitLab job's script, line by line in one shell (its pip lines skipped), in a fresh project directory
    project = tmp_path / "gitlab"
    project.mkdir()
    job = yaml.safe_load(GITLAB.read_text())["cpbench-gate"]
    script = "\n".join(line for line in job["script"] if "pip install" not in line)
    variables = dict(job["variables"], BASE=base, CANDIDATE=cand, TASKS="qa", DATA="samples",
                     CHECK_ARGS="--max-set-size-increase 6 --decision point")  # fmt: skip
    genv = dict(env, **{k: str(v).replace("$CI_PROJECT_DIR", str(project)) for k, v in variables.items()})
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=project, env=genv, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert (project / "gate-junit.xml").is_file() and "PASS" in (project / "gate-summary.md").read_text()
    assert (project / "results" / "leaderboard" / "index.html").is_file()
