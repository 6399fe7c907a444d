"""Cloze scoring: the log-likelihood of each option's text as the continuation of the item (lm-evaluation-harness's
`loglikelihood`, as its HellaSwag / ARC multiple-choice tasks use it).

For each item, the "logit" of option j is `sum_t log p(cont_j[t] | context, cont_j[:t])`, the *sum* of the
continuation tokens' log-probabilities (lm-eval's `acc`, not the length-normalised `acc_norm`). A softmax over the six
sums is the option distribution the conformal analysis uses. The artifact's provenance says so (`scoring: cloze`,
`cloze.logit: sum_logprob`).

Tokenization follows lm-eval's `_encode_pair`: trailing whitespace of the context moves to the continuation, the
continuation is `" " + option text`, `whole = tok(context + continuation)`, `ctx = tok(context)`, and the continuation
tokens are `whole[len(ctx):]`; the model sees `ctx + cont`. So the context tokens are the same for all six options and
are run once per item: step 1 runs a batch of contexts (left-padded) and keeps their KV cache; step 2 repeats each
context's cache six times and runs all continuations of the batch at once (right-padded after the context, so real
tokens stay contiguous). Two forward passes per batch instead of six full sequences per item.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cpbench.base.errors import CpbenchError
from cpbench.backends.kv import accepts_logits_to_keep, forward, left_pad, pad_token_id

DELIMITER = " "  # lm-eval's default target_delimiter between context and choice


@dataclass
class ClozeItem:
    ctx: list[int]
    conts: list[list[int]]

    @property
    def work_len(self) -> int:
        return len(self.ctx) + max(len(c) for c in self.conts)


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split of (context, continuation) into token ids for a causal model."""
    if not context:
        raise CpbenchError("cloze scoring needs a non-empty context")
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = list(tokenizer(context + continuation)["input_ids"])
    ctx = list(tokenizer(context)["input_ids"])
    return ctx, whole[len(ctx) :]


def encode_cloze(tokenizer: Any, prompts: Sequence[Any]) -> list[ClozeItem]:
    """`encode_pair` for every (prompt, option), with two batched tokenizer calls instead of 2 x K per prompt."""
    contexts, wholes = [], []
    for p in prompts:
        if not p.cloze_context:
            raise CpbenchError(f"item {p.item_id}: cloze scoring needs a non-empty context")
        n_spaces = len(p.cloze_context) - len(p.cloze_context.rstrip())
        head = p.cloze_context[: len(p.cloze_context) - n_spaces]
        contexts.append(head)
        wholes.extend(p.cloze_context + DELIMITER + str(o) for o in p.options)
    if not prompts:
        return []
    ctx_ids = tokenizer(contexts)["input_ids"]
    whole_ids = tokenizer(wholes)["input_ids"]
    items, at = [], 0
    for p, ctx in zip(prompts, ctx_ids):
        conts = [list(whole_ids[at + j][len(ctx) :]) for j in range(len(p.options))]
        at += len(p.options)
        for j, cont in enumerate(conts):
            if not cont:
                raise CpbenchError(f"item {p.item_id}: option {j} has an empty continuation for cloze scoring")
        items.append(ClozeItem(ctx=list(ctx), conts=conts))
    return items


class ClozeScorer:
    """Scores batches of items (given by index) to per-option summed log-probabilities [b, K] in float32."""

    def __init__(self, model: Any, tokenizer: Any, prompts: Sequence[Any], *, batch_size: int):
        self.model = model
        self.device = next(model.parameters()).device
        self.items = encode_cloze(tokenizer, prompts)
        self.batch_size = max(1, int(batch_size))
        self.pad_id = pad_token_id(tokenizer)
        self._keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        self.on_batch: Callable[[int], None] | None = None  # items done after each batch
        self.notes: list[str] = []

    def order(self) -> np.ndarray:
        n = len(self.items)
        return np.lexsort((np.arange(n), -np.array([it.work_len for it in self.items], dtype=np.int64)))

    def stats(self) -> dict[str, Any]:
        return {
            # Without the shared context: K sequences of context + continuation minus its last token per item.
            "tokens_total": int(sum(sum(len(it.ctx) + len(c) - 1 for c in it.conts) for it in self.items)),
            "tokens_computed": int(sum(len(it.ctx) + sum(len(c) - 1 for c in it.conts) for it in self.items)),
        }

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        k = len(self.items[int(indices[0])].conts) if len(indices) else 0
        out = np.empty((len(indices), k), dtype=np.float32)
        for start in range(0, len(indices), self.batch_size):
            out[start : start + self.batch_size] = self._batch(indices[start : start + self.batch_size])
            if self.on_batch is not None:  # progress per batch (cpbench.backends.pipeline)
                self.on_batch(len(indices[start : start + self.batch_size]))
        return out

    @torch.inference_mode()
    def _batch(self, idx: np.ndarray) -> np.ndarray:
        from transformers import DynamicCache

        items = [self.items[int(i)] for i in idx]
        b, k = len(items), len(items[0].conts)
        dev = self.device
        # Step 1: contexts, left-padded, cache kept.
        ids, cmask, pos = left_pad([it.ctx for it in items], self.pad_id)
        cache = DynamicCache(config=self.model.config)
        out = forward(self.model, ids, cmask, pos, dev, past_key_values=cache, use_cache=True, **self._keep)
        first = out.logits[:, -1].float().to(dev)  # a model spread over GPUs returns logits on its last one
        first_lp = first - torch.logsumexp(first, dim=-1, keepdim=True)  # [b, V]
        conts = [c for it in items for c in it.conts]  # row r*k + j
        first_tok = torch.tensor([c[0] for c in conts], device=dev)
        total = first_lp.repeat_interleave(k, dim=0).gather(1, first_tok[:, None])[:, 0]  # [b*k]
        # Step 2: every continuation's tokens but the last, after its context's cache, right-padded. Rows are
        # grouped by length (E/F are a few tokens, content options can be dozens) so padding is not computed.
        need = np.array([len(c) - 1 for c in conts])
        rows_sorted = np.argsort(need, kind="stable")
        rows_sorted = rows_sorted[need[rows_sorted] > 0]
        groups = length_groups(need[rows_sorted])
        total = total.clone()
        for g, (lo, hi) in enumerate(groups):
            rows = rows_sorted[lo:hi]
            # Each pass selects its rows into new tensors (`batch_select_indices` reassigns, and a forward pass
            # appends by concatenation): a shallow copy of the cache and its layers keeps the contexts' keys/values
            # intact for the next pass without copying them (a deep copy per pass copied every context's cache).
            part = _rows_of(cache) if g < len(groups) - 1 else cache
            owner = torch.as_tensor(rows // k)
            part.batch_select_indices(owner.to(dev))
            sums = self._continuations(part, [conts[r] for r in rows], [items[r // k] for r in rows], cmask[owner])
            total[torch.as_tensor(rows, device=dev)] += sums
        return total.view(b, k).cpu().numpy().astype(np.float32)

    def _continuations(self, cache: Any, conts: list[list[int]], items: list[ClozeItem], cmask: torch.Tensor):
        """Sum of log p(cont[t] | ...) for t >= 1 of each row; `cache` holds each row's context."""
        dev = self.device
        rows, lc = cmask.shape
        t = max(len(c) for c in conts) - 1
        ids = torch.full((rows, t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, lc + t), dtype=torch.long)
        mask[:, :lc] = cmask
        pos = torch.zeros((rows, t), dtype=torch.long)
        target = torch.zeros((rows, t), dtype=torch.long)
        valid = torch.zeros((rows, t), dtype=torch.bool)
        for r, (c, it) in enumerate(zip(conts, items)):
            n, start = len(c) - 1, len(it.ctx)
            pos[r] = torch.arange(start, start + t)  # pads continue the count; they are masked and unread
            ids[r, :n] = torch.tensor(c[:-1])
            mask[r, lc : lc + n] = 1
            target[r, :n] = torch.tensor(c[1:])
            valid[r, :n] = True
        logits = forward(self.model, ids, mask, pos, dev, past_key_values=cache, use_cache=True).logits.float().to(dev)
        lp = logits.gather(2, target.to(dev)[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        return torch.where(valid.to(dev), lp, torch.zeros_like(lp)).sum(dim=1)


def _rows_of(cache: Any) -> Any:
    """A cache object whose layers can be re-pointed (row selection, appended keys) without touching `cache`'s."""
    part = copy.copy(cache)
    part.layers = [copy.copy(layer) for layer in cache.layers]
    return part


def length_groups(lengths: np.ndarray, max_groups: int = 3) -> list[tuple[int, int]]:
    """Split rows sorted by length into at most `max_groups` contiguous groups minimising padded work.

    Cost of a group = rows x its longest row; each extra group (one more forward pass) costs one padded column of
    all rows, so rows are split only where that saves more than it costs. Exact dynamic programme over split points.
    """
    n = len(lengths)
    if n == 0:
        return []
    L = np.asarray(lengths, dtype=np.int64)
    penalty = n
    # best[g][j]: minimal cost of the first j rows in g groups; arg[g][j]: where its last group starts.
    inf = np.iinfo(np.int64).max // 4
    best = np.full((max_groups + 1, n + 1), inf, dtype=np.int64)
    arg = np.zeros((max_groups + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0
    starts = np.arange(n)
    for g in range(1, max_groups + 1):
        for j in range(1, n + 1):
            cand = best[g - 1, :j] + (j - starts[:j]) * L[j - 1] + penalty
            i = int(np.argmin(cand))
            best[g, j], arg[g, j] = cand[i], i
    g = int(np.argmin(best[1:, n])) + 1
    out, j = [], n
    while g > 0:
        i = int(arg[g, j])
        out.append((i, j))
        j, g = i, g - 1
    return out[::-1]
