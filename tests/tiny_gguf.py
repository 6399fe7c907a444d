"""Test helper: write the tiny Llama model (tests/tiny_model.py) as a GGUF file, the way llama.cpp's converter lays it
out (F32 tensors, Q/K rows permuted for llama.cpp's rotary layout, a `gpt2` BPE tokenizer with its merges), with the
`gguf` package. transformers reads it back to the same logits (checked in tests/test_candidates.py)."""

from __future__ import annotations

import json
from pathlib import Path


def _permute(x, n_head: int):
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def write_tiny_gguf(src: str | Path, out: str | Path) -> Path:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    src, out = Path(src), Path(out)
    cfg = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    w.add_rope_freq_base(float(theta))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    added = {a["id"]: a["content"] for a in tok.get("added_tokens", [])}
    inv = {i: t for t, i in tok["model"]["vocab"].items()} | added
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([inv[i] for i in range(cfg["vocab_size"])])
    w.add_token_types([gguf.TokenType.CONTROL if i in added else gguf.TokenType.NORMAL
                       for i in range(cfg["vocab_size"])])  # fmt: skip
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])
    w.add_add_bos_token(False)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}  # fmt: skip
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}  # fmt: skip
    for i in range(cfg["num_hidden_layers"]):
        names.update({f"model.layers.{i}.{k}.weight": f"blk.{i}.{v}.weight" for k, v in parts.items()})
    for name, tensor in load_file(str(src / "model.safetensors")).items():
        t = tensor.astype(np.float32)
        if name.endswith("q_proj.weight"):
            t = _permute(t, cfg["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            t = _permute(t, cfg["num_key_value_heads"])
        w.add_tensor(names[name], t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
