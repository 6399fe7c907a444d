"""The command line's CPU thread defaults: OpenMP threads wait passively (set before torch is imported)."""

from __future__ import annotations

import os
import subprocess
import sys

from cpbench.cli import cpu_thread_defaults


def test_sets_a_passive_wait_policy_unless_the_user_chose_one(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    env: dict[str, str] = {}
    assert cpu_thread_defaults(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for key, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "10000"), ("KMP_BLOCKTIME", "200")):
        env = {key: value}
        assert not cpu_thread_defaults(env) and env == {key: value}


def test_leaves_the_environment_alone_once_torch_is_loaded(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", object())  # too late: libgomp has read its environment
    env: dict[str, str] = {}
    assert not cpu_thread_defaults(env) and env == {}


def _entrypoint_env(extra: dict[str, str]) -> str:
    # The console script's path: `entrypoint` runs before any command; `main` is replaced by a probe that reports
    # what torch's OpenMP runtime was loaded with.
    code = (
        "import os, sys, cpbench.cli as c\n"
        "def probe(argv=None):\n"
        "    import torch\n"
        "    print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
        "    return 0\n"
        "c.main = probe\n"
        "c.entrypoint()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_command_line_sets_it_before_torch_loads():
    assert _entrypoint_env({}) == "PASSIVE True"
    assert _entrypoint_env({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE True"
