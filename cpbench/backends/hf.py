"""The transformers backend (`--scorer hf`, the reference): letter or cloze scoring of a loaded causal LM.

Letter scoring reads the next-token logits of the option letters after the prompt (a shared demonstrations prefix
computed once per cache group: cpbench.backends.letter); cloze sums each option's continuation log-probabilities
(cpbench.backends.cloze). Batches run left-padded with explicit position ids under `torch.inference_mode()`; the model
stays on the device and in the dtype cpbench.weights loaded it with (float32 on CPU unless asked, bf16/fp16 on GPU).
"""

from __future__ import annotations

import platform
from typing import Any, Sequence

from cpbench.backends.base import Backend, Prepared, WeightsRequest
from cpbench.base.errors import CpbenchError
from cpbench.base.versions import versions

CLOZE_LOGIT = "sum_logprob"


def default_batch_size(device: str) -> int:
    return 32 if device.startswith("cuda") else 8


class HFBackend(Backend):
    name = "hf"

    def __init__(self, use_prefix_cache: bool = True):
        self.use_prefix_cache = use_prefix_cache

    @classmethod
    def check_scoring(cls, scoring: str) -> None:
        if scoring not in ("letter", "cloze"):
            raise CpbenchError(f"unknown scoring {scoring!r} (use letter or cloze)")

    def load(self, weights: WeightsRequest) -> tuple[Any, Any]:
        return weights.hf()

    def fingerprint(self, handle: tuple[Any, Any]) -> str:
        from cpbench.weights.identity import fingerprint

        return fingerprint(handle[0])

    def prepare(self, handle: tuple[Any, Any], prompts: Sequence[Any], key: Any, *,
                batch_size: int | None = None) -> Prepared:  # fmt: skip
        import torch

        from cpbench.backends.tokens import tokenizer_info
        from cpbench.weights.models import current_threads

        model, tokenizer = handle
        model.eval()
        device = str(next(model.parameters()).device)
        batch_size = int(batch_size or default_batch_size(device))
        letters = list(prompts[0].letters)
        detail: dict[str, Any] = {"threads": current_threads(), "prefix_cache": self.use_prefix_cache}
        notes: list[str] = []
        option_ids: dict[str, Any] | None = None
        if key.scoring == "letter":
            from cpbench.backends.letter import LetterScorer
            from cpbench.backends.tokens import check_prompt_continuation, form_for, resolve_option_tokens

            opt = resolve_option_tokens(tokenizer, letters, form_for([p.text for p in prompts]))
            for p in prompts[:3]:  # the prompt format is shared; three real prompts catch a merging tail
                check_prompt_continuation(tokenizer, p.text, opt)
            option_ids = opt.to_provenance()
            scorer: Any = LetterScorer(model, tokenizer, prompts, opt.ids, batch_size=batch_size,
                                       use_prefix_cache=self.use_prefix_cache)  # fmt: skip
            detail["work"] = scorer.work.stats()
            notes.extend(scorer.work.notes)
        elif key.scoring == "cloze":
            from cpbench.backends.cloze import DELIMITER, ClozeScorer

            scorer = ClozeScorer(model, tokenizer, prompts, batch_size=batch_size)
            detail["work"] = scorer.stats()
            detail["cloze"] = {
                "logit": CLOZE_LOGIT,
                "definition": "sum over the option's continuation tokens of log p(token | context, earlier tokens); "
                "softmax over the K sums gives the option distribution (lm-eval 'acc', not length-normalised)",
                "delimiter": DELIMITER,
                "context": "Prompt.cloze_context; continuation = delimiter + option text; "
                "split as lm-eval _encode_pair",
            }
        else:  # ScoreKey validates this; keep the message for direct callers
            raise CpbenchError(f"unknown scoring mode {key.scoring!r}")
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        tok_info = tokenizer_info(tokenizer)
        job = {"tokenizer": tok_info, "option_token_ids": option_ids, "dtype": dtype,
               "device_type": device.split(":")[0], "batch_size": batch_size,
               "prefix_cache": self.use_prefix_cache}  # fmt: skip

        def on_batch(callback: Any) -> None:
            scorer.on_batch = callback

        return Prepared(
            order=scorer.order(), compute=scorer, job=job, detail=detail, notes=notes, on_batch=on_batch,
            context=torch.inference_mode, model_id=getattr(model, "name_or_path", "") or None,
            provenance={
                "tokenizer": tok_info, "option_token_ids": option_ids, "dtype": dtype, "device": device,
                "backend": "transformers", "batch_size": batch_size, "versions": versions(),
                "host": platform.platform(),
            },
        )  # fmt: skip
