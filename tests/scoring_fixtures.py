"""Shared helpers for tests/test_scoring_*.py and tests/test_run_*.py: synthetic items, real prompts, and the naive
reference scorers (one unpadded, uncached forward pass per sequence, written independently of cpbench.backends)."""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

WORDS = (
    "the river city music number small large first people world year water light stone house paper school market "
    "ocean planet energy garden window letter science history because where many every other between through"
).split()


def make_items(n: int = 24, seed: int = 0):
    from cpbench.specs.tasks import Item

    rng = random.Random(seed)
    items = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        texts: list[str] = []
        while len(texts) < 4:  # four distinct content options of 1-5 words
            t = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
            if t not in texts:
                texts.append(t)
        choices = dict(zip("ABCD", texts)) | {"E": "I don't know", "F": "None of the above"}
        items.append(Item(id=i, source="test", question=q.capitalize() + "?", choices=choices,
                          answer="ABCDEF"[rng.randrange(6)]))  # fmt: skip
    return items


def make_prompts(n: int = 24, method: str = "task", shots: int = 3, chat: str = "none", tokenizer=None, seed: int = 0):
    """`n` real prompts from cpbench.specs.tasks' builder on synthetic items of the qa task (ids 1,3,5,7,9 are its
    demonstrations and never evaluated, so build from n + 10 items and keep the first n)."""
    from cpbench.specs.tasks import build_prompts, load_task

    prompts = build_prompts(load_task("qa"), make_items(n + 10, seed), method=method, shots=shots, chat=chat,
                            tokenizer=tokenizer)  # fmt: skip
    return prompts[:n]


@lru_cache(maxsize=2)
def tiny(seed: int = 0):
    """(model, tokenizer) of tests/tiny_model.py's tiny random Llama, fp32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny_model import tiny_model_dir

    path = tiny_model_dir(seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def reference_letter_logits(model, tokenizer, prompts, option_ids) -> np.ndarray:
    """Ye et al.'s loop: tokenize the prompt, one forward pass, logits of the option ids at the last position."""
    import torch

    out = []
    with torch.inference_mode():
        for p in prompts:
            x = torch.tensor([tokenizer(p.text)["input_ids"]])
            out.append(model(input_ids=x).logits[0, -1, list(option_ids)].float().numpy())
    return np.stack(out)


def reference_cloze(model, tokenizer, prompts) -> np.ndarray:
    """lm-eval's loglikelihood, unbatched: ctx + cont[:-1] in, sum of log p(cont tokens)."""
    import torch

    out = []
    with torch.inference_mode():
        for p in prompts:
            row = []
            for option in p.options:
                context, cont_text = p.cloze_context, " " + option
                ctx = tokenizer(context)["input_ids"]
                cont = tokenizer(context + cont_text)["input_ids"][len(ctx) :]
                x = torch.tensor([(ctx + cont)[:-1]])
                lp = torch.log_softmax(model(input_ids=x).logits[0].float(), dim=-1)
                row.append(sum(lp[len(ctx) - 1 + t, cont[t]].item() for t in range(len(cont))))
            out.append(row)
    return np.asarray(out, dtype=np.float64)


class ForwardCounter:
    """Counts forward calls and rows (batch sizes) through a model, via a forward pre-hook."""

    def __init__(self, model):
        self.calls = 0
        self.rows = 0
        self._h = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.rows += int(ids.shape[0])

    def close(self):
        self._h.remove()
