"""Test-wide settings: fixed thread counts (CI has 2 shared cores) and no hub access."""

import os

# Set before torch / tokenizers are imported anywhere: oversubscribed threads made CPU compression up to 6x slower.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
