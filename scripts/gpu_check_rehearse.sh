#!/usr/bin/env bash
# Rehearse the GPU check's device call on this CPU machine, before a GPU is lent: a copy of the working tree as the
# device gets it (tracked and untracked, not ignored, files), a venv holding only packages that the GPU image has
# (/work/.library/device/KINDS.md lists them; no pydantic, cpbench not installed), the carried wheels downloaded by
# scripts/gpu_check_wheels.sh for this Python, then the device command that script prints, with `--tiny` (CPU, tiny
# shapes) in place of the real shapes. It catches a wheel missing from the carried set and an import the image
# cannot serve. It cannot catch what differs in the image itself: Python 3.12, torch 2.11+cu130, CUDA.
#
#   scripts/gpu_check_rehearse.sh            # a few minutes with a warm pip cache; needs the package index
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${REHEARSE_DIR:-$(mktemp -d /tmp/cpbench-gpu-rehearse.XXXXXX)}
PY=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

# Packages of the image that the check touches. torch: cpbench's pin; this machine's pip config finds its CPU wheel
# (/opt/wheels); elsewhere add --index-url https://download.pytorch.org/whl/cpu or pip fetches the CUDA build.
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q 'torch==2.13.0' 'transformers==5.17.0' accelerate pandas pyarrow tokenizers typer \
  rich pyyaml numpy scipy pytest hypothesis xxhash fsspec aiohttp requests tqdm psutil httpx safetensors
# Some typer releases pull pydantic; the image has none, and the check must bring its own.
"$WORK/venv/bin/pip" uninstall -y -q pydantic pydantic-core annotated-types typing-inspection loguru 2>/dev/null || true

mkdir -p "$WORK/tree"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [[ -e "$f" ]]; then cp --parents -- "$f" "$WORK/tree/"; fi  # a tracked file deleted here is not sent either
done
GPU_WHEELS_PYTHON=$PY bash "$WORK/tree/scripts/gpu_check_wheels.sh" > "$WORK/wheels.log"
CMD=$(tail -1 "$WORK/wheels.log")
CMD=${CMD/--out \$OUT/--tiny --out \$OUT}
echo "rehearsing in $WORK/tree: $CMD"
mkdir -p "$WORK/out"
# The device starts bare: a /tmp/site left by an earlier rehearsal would hide a wheel missing from the carried set.
# /tmp/site is the device command's own path (not this rehearsal's folder), so run one rehearsal at a time.
(cd "$WORK/tree" && env -u PYTHONPATH PATH="$WORK/venv/bin:$PATH" OUT="$WORK/out" CPBENCH_CACHE="$WORK/cache" \
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" bash -c "rm -rf /tmp/site; $CMD") | tee "$WORK/rehearse.log"
# Every step must have run: a skipped compression (a missing module) fails the rehearsal.
if grep -E '^\| (compress|score) .*\| skipped' "$WORK/out/gpu_check.md"; then
  echo "rehearsal FAILED: the steps above were skipped ($WORK/out/gpu_check.md)" >&2
  exit 1
fi
# The step `pytest -m gpu` (not run by --tiny): the same files, collected in the same environment, all of their tests
# (the GPU-marked ones skip here; the CPU twins of the CUDA scoring tests run).
FILES=$(cd "$WORK/tree" && grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')
echo "pytest on $FILES"
(cd "$WORK/tree" && env PATH="$WORK/venv/bin:$PATH" PYTHONPATH="/tmp/site:$WORK/tree" CPBENCH_CACHE="$WORK/cache" \
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" python3 -m pytest -q -rs -p no:cacheprovider $FILES) | tail -15
echo "rehearsal passed: $WORK/out/gpu_check.md"
