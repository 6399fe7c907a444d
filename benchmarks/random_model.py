"""A random-initialised model of a real architecture, saved as a local HF directory (benchmarks only: memory and time
behave as with trained weights of the same shapes; scores are meaningless).

    python benchmarks/random_model.py qwen2.5-1.5b /work/mem-models/qwen2.5-1.5b-random [--dtype float32]

The tokenizer is the test suite's tiny byte-level BPE (tests/tiny_model.py): its ids fit in any vocabulary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SHAPES = {
    # Qwen2.5-1.5B: 1.54B parameters, tied embeddings
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, intermediate_size=8960,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0),
    # Qwen2.5-3B: 3.09B parameters, tied embeddings
    "qwen2.5-3b": dict(model_type="qwen2", hidden_size=2048, num_hidden_layers=36, intermediate_size=11008,
                       num_attention_heads=16, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0),
    # SmolLM2-135M: 134.5M parameters, tied embeddings
    "smollm2-135m": dict(model_type="llama", hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0),
}  # fmt: skip


def build(shape: str | dict, out: Path, dtype: str = "float32", seed: int = 0) -> Path:
    """Write a random model with `shape` (a SHAPES name, a config dict or a config.json path) into `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(shape, str):
        cfg_dict = dict(SHAPES[shape]) if shape in SHAPES else json.loads(Path(shape).read_text())
    else:
        cfg_dict = dict(shape)
    cfg_dict = {k: v for k, v in cfg_dict.items() if k not in ("architectures", "transformers_version")}
    model_type = cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    cfg.initializer_range = 0.02
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="2GB")
    del model
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_model import build_tokenizer

    tok = build_tokenizer()
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", help=f"{', '.join(SHAPES)} or a config.json path")
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    build(args.shape, args.out, args.dtype)
    print(f"wrote {args.out} in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
