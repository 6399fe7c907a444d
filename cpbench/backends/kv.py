"""Key/value-cache plumbing shared by letter and cloze scoring (transformers 5 `DynamicCache`).

A shared token prefix (the few-shot demonstrations) is run once with batch size 1; its per-layer keys and values are
kept. A forward pass appends the batch's own keys/values to the cache it is given, and transformers' `DynamicLayer`
does that with `torch.cat`, so a fresh `DynamicCache` per batch copies the prefix twice per layer and batch (filling
it, then the concatenation). Instead each layer gets one buffer `[rows, kv heads, prefix + room, head dim]` whose first
`prefix` positions are written once; a batch writes its own keys/values after them and attention reads a view of the
first `prefix + suffix` positions (`reused_layer_class`). The prefix is copied again only when a batch needs more rows
or more room than the buffer has (`PrefixKV.copies` counts the copies).

Causal masking in transformers 5 is index based (query i sees kv indices <= its own, offset by the cache length), and
positions for RoPE come from the `position_ids` we pass. So a batch laid out as `[cached prefix][left pads][suffix]`
with attention mask `[1..1, 0..0, 1..1]` and positions `m, m+1, ...` for the suffix computes exactly what the
unpadded, uncached sequence computes, up to float rounding.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix. Slice comparisons run in C: the usual case (the whole demonstration
    prefix is shared, ~1,000 tokens x 10,000 prompts) costs one comparison, a divergence a bisection over slices."""
    a, b = list(a), list(b)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, start: int = 0) -> tuple[torch.Tensor, ...]:
    """Token rows left-padded to one width: (ids, attention mask, position ids), each [len(rows), width]. Every
    row's last token sits at the last position; a row's positions count from `start` (the cached prefix length)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        n = len(row)
        ids[r, width - n :] = torch.tensor(list(row), dtype=torch.long)
        mask[r, width - n :] = 1
        pos[r, width - n :] = torch.arange(start, start + n)
    return ids, mask, pos


def forward(model: Any, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, device: Any, **kwargs: Any) -> Any:
    """One forward pass with explicit attention mask and positions (moved to `device`)."""
    return model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), **kwargs)


def pad_token_id(tokenizer: Any) -> int:
    """Any id works for pads (they are masked out); prefer the tokenizer's own pad, then eos, then 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if isinstance(tid, int):
            return tid
    return 0


def accepts_logits_to_keep(model: Any) -> bool:
    """Most transformers causal LMs can skip the vocabulary projection for all but the last positions."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def sliding_window(model: Any) -> int | None:
    """The sliding-window size when any layer uses local attention (Gemma 2/3, some Mistral/Qwen configs), else None."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if not window:
        return None
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    return int(window)


def cache_supported(model: Any, total_len: int) -> tuple[bool, str]:
    """Whether a prefix cache reproduces the uncached computation for sequences up to `total_len` tokens.

    With sliding-window layers, pads placed between the cached prefix and the suffix would count against the window
    (the window is index based), so prefix caching is used only when every sequence fits inside the window.
    """
    window = sliding_window(model)
    if window is not None and total_len >= window:
        return False, f"sequences up to {total_len} tokens exceed the model's sliding window of {window}"
    return True, ""


def reused_layer_class() -> type:
    """`ReusedPrefixLayer`: one decoder layer's cache for one batch, backed by a `PrefixKV` buffer. It behaves as a
    transformers `DynamicLayer`: `get_seq_length` is the prefix length until the batch's keys are written, and its
    mask sizes are a full layer's, which equal a sliding layer's while everything fits inside the window (the only
    case where the prefix cache is used). Defined on first use so that importing this module does not import
    transformers."""
    global _REUSED_LAYER
    if _REUSED_LAYER is not None:
        return _REUSED_LAYER
    from transformers.cache_utils import DynamicLayer

    class ReusedPrefixLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, prefix: int, sliding: bool):
            super().__init__()
            self.buf_keys, self.buf_values = keys, values  # [rows, heads, prefix + room, dim], prefix filled
            self.is_sliding = sliding
            self.dtype, self.device = keys.dtype, keys.device
            self.keys, self.values = keys[:, :, :prefix], values[:, :, :prefix]
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            if end > self.buf_keys.shape[-2]:
                raise RuntimeError(f"prefix cache buffer holds {self.buf_keys.shape[-2]} positions, {end} needed")
            self.buf_keys[:, :, start:end].copy_(key_states)
            self.buf_values[:, :, start:end].copy_(value_states)
            self.keys, self.values = self.buf_keys[:, :, :end], self.buf_values[:, :, :end]
            return self.keys, self.values

    _REUSED_LAYER = ReusedPrefixLayer
    return _REUSED_LAYER


_REUSED_LAYER: type | None = None


class PrefixKV:
    """Keys/values of one token prefix, computed once, handed out as per-batch caches that share one buffer."""

    def __init__(self, model: Any, ids: Sequence[int], device: torch.device):
        from transformers import DynamicCache

        self.model = model
        self.ids = list(ids)
        self.length = len(self.ids)
        x = torch.tensor([self.ids], dtype=torch.long, device=device)
        cache = DynamicCache(config=model.config)
        kwargs = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        out = model(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            position_ids=torch.arange(self.length, device=device)[None, :],
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        # The distribution of the token after the prefix: cloze scoring needs it for the first continuation token.
        self.last_logits = out.logits[0, -1].float()
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]
        self.copies = 0  # times the prefix was copied into a (new) buffer
        self._buf: list[tuple[torch.Tensor, torch.Tensor]] = []

    def cache(self, batch: int, suffix: int) -> Any:
        """A cache holding this prefix for `batch` rows, with room for `suffix` more positions, for ONE forward pass.

        The prefix is not copied per call: the buffers from an earlier call are reused when they have at least
        `batch` rows and `suffix` room (rows beyond `batch` and positions beyond the batch's are never read). The
        previous call's cache is invalid afterwards (its batch keys are overwritten)."""
        from transformers import DynamicCache

        if not self._buf or self._buf[0][0].shape[0] < batch or self._buf[0][0].shape[-2] < self.length + suffix:
            rows = max(batch, self._buf[0][0].shape[0] if self._buf else 0)
            self._buf = []
            for k, v in self.layers:
                bk = k.new_empty((rows, k.shape[1], self.length + suffix, k.shape[3]))
                bv = v.new_empty((rows, v.shape[1], self.length + suffix, v.shape[3]))
                bk[:, :, : self.length] = k
                bv[:, :, : self.length] = v
                self._buf.append((bk, bv))
            self.copies += 1
        cache = DynamicCache(config=self.model.config)
        sliding = [getattr(layer, "is_sliding", False) for layer in cache.layers]
        layer = reused_layer_class()
        cache.layers = [
            layer(bk[:batch], bv[:batch], self.length, bool(sliding[i]) if i < len(sliding) else False)
            for i, (bk, bv) in enumerate(self._buf)
        ]
        return cache

    def expand(self, batch: int) -> Any:
        """A new `DynamicCache` holding a copy of this prefix for `batch` rows (the copy per batch `cache` avoids;
        kept as the reference the tests compare against)."""
        from transformers import DynamicCache

        data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self.layers]
        return DynamicCache(ddp_cache_data=data, config=self.model.config)
