#!/usr/bin/env bash
# Kept reliability check (issue 18): inputs that used to hang or end in a traceback after minutes. Each must answer
# with exactly one `cpbench: error:` line and exit 2, within a minute, before any model is loaded:
#   --data FIFO (used to hang forever hashing it), an unknown --model-args key (a 73-line TypeError after loading),
#   --model-args trust_remote_code=True (silently enabled remote code).
# Usage: scripts/check_bad_input.sh   (needs the `run` extra; builds the tests' tiny random model, ~1 s)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" CPBENCH_CACHE="$work/cache" HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fail() { echo "bad input: FAIL: $*" >&2; exit 1; }
tiny="$("$PY" -c 'import sys; sys.path.insert(0, "tests"); from tiny_model import tiny_model_dir; print(tiny_model_dir())')" \
  || fail "cannot build the tiny test model"
mkfifo "$work/items.jsonl"

expect() {  # expect NAME KEYWORD ARGS...: exit 2, one line, the keyword in it, within 60 s
  local name="$1" keyword="$2"; shift 2
  local t0=$SECONDS
  timeout 60 "$PY" -m cpbench "$@" >"$work/$name.out" 2>"$work/$name.err"; local rc=$?
  local secs=$((SECONDS - t0))
  [ "$rc" = 124 ] && fail "$name: no answer within 60 s"
  [ "$rc" = 2 ] || { cat "$work/$name.err" >&2; fail "$name: exit $rc, expected 2"; }
  [ "$(grep -c . "$work/$name.err")" = 1 ] || { cat "$work/$name.err" >&2; fail "$name: not one line"; }
  grep -q "^cpbench: error: .*$keyword" "$work/$name.err" || { cat "$work/$name.err" >&2; fail "$name: no '$keyword'"; }
  echo "bad input: $name ok (exit 2, one line, ${secs} s): $(cat "$work/$name.err")"
}

common=(run --model "$tiny" --tasks qa --device cpu --results "$work/results")
expect fifo-data "FIFO" "${common[@]}" --data "$work/items.jsonl"
expect unknown-model-arg "'bogus_key'" "${common[@]}" --data samples --model-args bogus_key=1
expect remote-code "--trust-remote-code" "${common[@]}" --data samples --model-args trust_remote_code=True
[ -z "$(find "$work/results" -name '*.parquet' 2>/dev/null)" ] || fail "something was scored"
echo "bad input: all ok"
