"""Test helpers: a tiny random Llama model with a locally built tokenizer (no hub, deterministic, ~1 s).

```python
from tiny_model import tiny_model_dir
path = tiny_model_dir()                       # built once per process (and reused across processes)
model = AutoModelForCausalLM.from_pretrained(path); tok = AutoTokenizer.from_pretrained(path)
```

The tokenizer is a byte-level BPE (like GPT-2/SmolLM) trained on generated text, so any string tokenizes; " A".." F"
and "A".."F" are single tokens; it has bos/eos/pad tokens and a simple chat template. The model is a 2-layer Llama
with hidden size 128 and MLP size 256 (multiples of 128, so group-128 quantization applies to every Linear),
untied lm_head, ~0.5M parameters, random weights from a fixed seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import uuid
from pathlib import Path

TINY_VERSION = "1"
LETTERS = ("A", "B", "C", "D", "E", "F")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TINY_CONFIG = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.05,
)  # fmt: skip

_WORDS = ["the", "a", "of", "to", "and", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it", "this", "be", "are", "which", "or", "an", "has", "have", "not", "but", "one", "model", "answer", "question", "option", "none", "above", "know", "water", "light", "river", "city", "music", "number", "small", "large", "first", "time", "people", "world", "year", "day", "way", "work", "part", "place", "case", "point", "government", "company", "system", "program", "group", "problem", "fact", "cat", "dog", "tree", "stone", "house", "paper", "school", "market", "ocean", "planet", "energy", "garden", "window", "letter", "science", "history", "because", "when", "where", "what", "which", "who", "why", "how", "many", "most", "some", "every", "other", "between", "through", "during", "before", "after"]


def _training_text(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(400):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        lines.append(" ".join(words).capitalize() + ".")
        if i % 2 == 0:  # multiple-choice shaped lines so " A".." F" and "Answer:" get merged into single tokens
            opts = " ".join(f"{L}. {rng.choice(_WORDS)}" for L in LETTERS)
            lines.append(f"Question: {' '.join(rng.choice(_WORDS) for _ in range(8))}? {opts} Answer: "
                         f"{rng.choice(LETTERS)}")  # fmt: skip
            lines.append(" ".join(f"{L}" for L in LETTERS) + " " + " ".join(f"({L})" for L in LETTERS))
    return lines


def build_tokenizer(seed: int = 0):
    """A PreTrainedTokenizerFast (byte-level BPE, vocab <= 512) trained on generated text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False, min_frequency=2,
    )  # fmt: skip
    tok.train_from_iterator(_training_text(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE, model_max_length=1024,
    )  # fmt: skip
    return fast


def build_tiny_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny model + tokenizer to `path` (a new or empty directory) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed)
    for letter in LETTERS:  # the property the scorer's tests rely on; fail here, not in their tests
        for text in (letter, " " + letter):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise AssertionError(f"tiny tokenizer splits {text!r} into {ids}")
    config = LlamaConfig(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **TINY_CONFIG,
    )  # fmt: skip
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _fingerprint(seed: int) -> str:
    import tokenizers
    import transformers

    material = json.dumps([TINY_VERSION, seed, TINY_CONFIG, CHAT_TEMPLATE, transformers.__version__,
                           tokenizers.__version__], sort_keys=True)  # fmt: skip
    return hashlib.sha256(material.encode()).hexdigest()[:12]


_BUILT: dict[int, Path] = {}


def tiny_model_dir(seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """The tiny model's directory, built on first use and cached (per process, and on disk under `root`, default
    `$TMPDIR/cpbench-testing-<uid>`). Treat it as read-only; copy it before changing files."""
    if seed in _BUILT and root is None and (_BUILT[seed] / "config.json").is_file():
        return _BUILT[seed]
    base = Path(root) if root is not None else Path(tempfile.gettempdir()) / f"cpbench-testing-{os.getuid()}"
    final = base / f"tiny-llama-s{seed}-{_fingerprint(seed)}"
    if not (final / "tokenizer.json").is_file() or not (final / "config.json").is_file():
        tmp = base / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            build_tiny_model(tmp, seed)
            try:
                os.rename(tmp, final)
            except OSError:  # built concurrently by another process
                if not (final / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if root is None:
        _BUILT[seed] = final
    return final
