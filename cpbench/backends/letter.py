"""Letter scoring: one forward pass per prompt, the logits of the option-letter tokens at the last position.

Work plan, decided once for all prompts so that it does not depend on the batch size:
- Every prompt is tokenized whole (`text`, the tokenizer's default special tokens). The demonstration prefix
  (`Prompt.prefix`, shared by the prompts of one `build_prompts` call) is tokenized alone as well.
- BPE merges can cross the prefix/item boundary (a prefix ending in "\\n\\n" becomes one token alone but two tokens
  before "Question"). So the cached part is the longest run of prefix tokens that the prompts' own tokenizations
  start with, chosen to save the most tokens; prompts whose tokens diverge earlier are scored without the cache and
  counted (`fallback`). Either way the model sees exactly the token ids of `tokenizer(text)`.
- Prompts are ordered by cache group, then by uncached length, longest first (a batch that does not fit in memory
  fails at once, and padding is minimal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cpbench.backends.kv import (
    PrefixKV,
    accepts_logits_to_keep,
    cache_supported,
    common_prefix_len,
    forward,
    left_pad,
    pad_token_id,
)


@dataclass
class PrefixPlan:
    """How the shared prefix of one group of prompts is cached."""

    prefix_tokens: int  # tokens of the prefix tokenized alone
    cached_tokens: int  # tokens actually cached (<= prefix_tokens when the boundary merges)
    members: np.ndarray  # indices of prompts that use the cache
    fallback: np.ndarray  # indices of prompts of this prefix scored without the cache
    reason: str = ""  # why nothing is cached, if so


def plan_prefix(prefix_ids: Sequence[int], full_ids: Sequence[Sequence[int]], indices: np.ndarray) -> PrefixPlan:
    """Pick the cached length m that saves the most tokens: m * (number of prompts whose tokens start with it)."""
    if len(prefix_ids) == 0:
        return PrefixPlan(0, 0, indices[:0], indices[:0], reason="no shared prefix")
    # A prompt must keep at least one uncached token: the last position is the one we read logits from.
    lcp = np.array([min(common_prefix_len(prefix_ids, full_ids[i]), len(full_ids[i]) - 1) for i in indices])
    best_m, best_saving = 0, 0
    for m in sorted(set(lcp.tolist())):
        saving = m * int((lcp >= m).sum())
        if m > 0 and saving > best_saving:
            best_m, best_saving = m, saving
    if best_m == 0:
        return PrefixPlan(len(prefix_ids), 0, indices[:0], indices, reason="prefix tokens do not start any prompt")
    use = lcp >= best_m
    return PrefixPlan(len(prefix_ids), best_m, indices[use], indices[~use])


@dataclass
class LetterWork:
    """Tokenized prompts and the per-prompt cache assignment."""

    full_ids: list[list[int]]
    group: np.ndarray  # int per prompt: index into `prefixes`, or -1 for no cache
    prefixes: list[list[int]]  # cached token ids per group
    plans: list[PrefixPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def work_len(self) -> np.ndarray:
        """Tokens each prompt runs through the model (after its cached prefix)."""
        cached = np.array([len(self.prefixes[g]) if g >= 0 else 0 for g in self.group], dtype=np.int64)
        return np.array([len(x) for x in self.full_ids], dtype=np.int64) - cached

    def order(self) -> np.ndarray:
        """Group, then uncached length descending, then input index: a pure function of the prompts and tokenizer."""
        n = len(self.full_ids)
        return np.lexsort((np.arange(n), -self.work_len, self.group))

    def stats(self) -> dict[str, Any]:
        return {
            "groups": [
                {
                    "prefix_tokens": p.prefix_tokens,
                    "cached_tokens": p.cached_tokens,
                    "cached_prompts": int(p.members.size),
                    "fallback_prompts": int(p.fallback.size),
                    **({"reason": p.reason} if p.reason else {}),
                }
                for p in self.plans
            ],
            "cached_prompts": int((self.group >= 0).sum()),
            "fallback_prompts": int(sum(p.fallback.size for p in self.plans)),
            "tokens_total": int(sum(len(x) for x in self.full_ids)),
            "tokens_computed": int(self.work_len.sum() + sum(len(p) for p in self.prefixes)),
        }


def plan_letter_work(tokenizer: Any, model: Any, prompts: Sequence[Any], use_prefix_cache: bool = True) -> LetterWork:
    full_ids = [list(x) for x in tokenizer([p.text for p in prompts])["input_ids"]] if prompts else []
    n = len(prompts)
    group = np.full(n, -1, dtype=np.int64)
    work = LetterWork(full_ids=full_ids, group=group, prefixes=[])
    if not use_prefix_cache or n == 0:
        return work
    ok, why = cache_supported(model, max(len(x) for x in full_ids))
    if not ok:
        work.notes.append(f"prefix KV cache off: {why}")
        return work
    by_prefix: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        if p.prefix:
            by_prefix.setdefault(p.prefix, []).append(i)
    for prefix, members in by_prefix.items():
        plan = plan_prefix(list(tokenizer(prefix)["input_ids"]), full_ids, np.asarray(members, dtype=np.int64))
        work.plans.append(plan)
        if plan.cached_tokens:
            group[plan.members] = len(work.prefixes)
            work.prefixes.append(full_ids[int(plan.members[0])][: plan.cached_tokens])
    if any(p.fallback.size for p in work.plans):
        k = sum(p.fallback.size for p in work.plans)
        work.notes.append(f"{k} prompt(s) scored without the prefix KV cache (prefix/item token boundary differs)")
    return work


class LetterScorer:
    """Scores batches of prompts (given by index) to option logits [b, K] in float32."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Any],
        option_ids: Sequence[int],
        *,
        batch_size: int,
        use_prefix_cache: bool = True,
    ):
        self.model = model
        self.device = next(model.parameters()).device
        self.option_ids = torch.tensor(list(option_ids), dtype=torch.long, device=self.device)
        self.batch_size = max(1, int(batch_size))
        self.work = plan_letter_work(tokenizer, model, prompts, use_prefix_cache)
        self.pad_id = pad_token_id(tokenizer)
        self._kv: dict[int, PrefixKV] = {}
        self._keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        self.on_batch: Callable[[int], None] | None = None  # items done after each batch

    def order(self) -> np.ndarray:
        return self.work.order()

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """Option logits for prompts `indices` (any order; batches never mix cache groups)."""
        out = np.empty((len(indices), len(self.option_ids)), dtype=np.float32)
        groups = self.work.group[indices]
        start = 0
        while start < len(indices):
            g = groups[start]
            stop = start + 1
            while stop < len(indices) and stop - start < self.batch_size and groups[stop] == g:
                stop += 1
            out[start:stop] = self._batch(indices[start:stop], int(g))
            if self.on_batch is not None:  # progress per batch (cpbench.backends.pipeline)
                self.on_batch(stop - start)
            start = stop
        return out

    def _prefix(self, g: int) -> PrefixKV:
        if g not in self._kv:
            self._kv[g] = PrefixKV(self.model, self.work.prefixes[g], self.device)
        return self._kv[g]

    @torch.inference_mode()
    def _batch(self, idx: np.ndarray, g: int) -> np.ndarray:
        m = len(self.work.prefixes[g]) if g >= 0 else 0
        ids, mask, pos = left_pad([self.work.full_ids[i][m:] for i in idx], self.pad_id, start=m)
        b = len(idx)
        mask = torch.cat([torch.ones((b, m), dtype=torch.long), mask], dim=1)  # the cached prefix is attended
        kwargs: dict[str, Any] = dict(self._keep)
        if g >= 0:
            # The prefix's buffer is reused (not copied per batch); the batch writes its keys after the prefix.
            kwargs.update(past_key_values=self._prefix(g).cache(b, ids.shape[1]), use_cache=True)
        else:
            kwargs.update(use_cache=False)
        logits = forward(self.model, ids, mask, pos, self.device, **kwargs).logits[:, -1]
        return logits.index_select(-1, self.option_ids.to(logits.device)).float().cpu().numpy()

