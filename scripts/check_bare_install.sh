#!/usr/bin/env bash
# The base install on its own: `pip install cpbench` (no extras, no torch) must run the analysis half on committed
# results. Usage: scripts/check_bare_install.sh [VENV]  (default: a fresh venv in a temp dir, removed afterwards).
# Runs `cpbench --version`, `analyze` on a committed artifact, `leaderboard --no-plots` into a temp dir and `check`
# on committed results (exit 0 or 1 are answers; 2 or a traceback fail this script), and that `cpbench run` without
# the `run` extra is one line naming it (exit 2).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="${1:-$work/venv}"
fail() { echo "bare install: FAIL: $*" >&2; exit 1; }

if [ ! -x "$venv/bin/cpbench" ]; then
  "$PY" -m venv "$venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install -q . || fail "pip install . failed"
fi
cp="$venv/bin/cpbench"
"$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)' \
  || fail "torch is installed in the bare venv: the base install must not need it"

run() {  # run NAME ALLOWED_CODES CMD...: fail on a traceback or an exit code outside ALLOWED_CODES
  local name="$1" allowed="$2"; shift 2
  "$@" >"$work/$name.out" 2>&1; local rc=$?
  if grep -q "Traceback (most recent call last)" "$work/$name.out"; then tail -20 "$work/$name.out" >&2; fail "$name: traceback"; fi
  case " $allowed " in *" $rc "*) ;; *) tail -20 "$work/$name.out" >&2; fail "$name: exit $rc (allowed: $allowed)";; esac
  echo "bare install: $name ok (exit $rc)"
}

run version "0" "$cp" --version
art="$(find results -path '*/artifacts/*.parquet' | sort | head -1)"
[ -n "$art" ] || fail "no committed artifact under results/"
run analyze "0" "$cp" analyze "$art"
run leaderboard "0" "$cp" leaderboard results --no-plots --out "$work/leaderboards"
[ -s "$work/leaderboards/leaderboard.md" ] || fail "leaderboard wrote no leaderboard.md"
model_dir="$(dirname "$(dirname "$(dirname "$art")")")"
base="$model_dir/base"; [ -d "$base" ] || base="$model_dir/fp16"
cand="$(find "$model_dir" -mindepth 1 -maxdepth 1 -type d ! -name base ! -name fp16 | sort | head -1)"
[ -d "$base" ] && [ -n "$cand" ] || fail "no baseline and candidate result directories under $model_dir"
run check "0 1" "$cp" check --baseline "$base" --candidate "$cand"
run run-needs-extra "2" "$cp" run --model smollm2-135m-instruct@pypi --tasks qa --data samples
[ "$(grep -c . "$work/run-needs-extra.out")" = 1 ] && grep -q "pip install 'cpbench\[run\]'" "$work/run-needs-extra.out" \
  || { cat "$work/run-needs-extra.out" >&2; fail "run without the run extra: not one line naming cpbench[run]"; }
echo "bare install: all ok"
