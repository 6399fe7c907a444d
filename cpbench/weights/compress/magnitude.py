"""Magnitude pruning as a torch transform (llm-compressor's MagnitudePruningModifier zeroes nothing under oneshot).

Unstructured: in every targeted Linear, the round(s x numel) weights of smallest |w| become zero (per layer, the
classic magnitude baseline of SparseGPT/Wanda papers). N:M: in every group of M consecutive weights along a row
(the input dimension, the layout 2:4 sparse kernels use), the N of smallest |w| become zero.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from cpbench.base.errors import CpbenchError


def _ignored(name: str, ignore: Iterable[str]) -> bool:
    for pat in ignore:
        if pat.startswith("re:"):
            if re.match(pat[3:], name):
                return True
        elif name == pat or name.endswith("." + pat):
            return True
    return False


def target_linears(model: torch.nn.Module, ignore: Iterable[str] = ("lm_head",)) -> dict[str, torch.nn.Linear]:
    ignore = tuple(ignore)
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not _ignored(n, ignore)}


@torch.no_grad()
def prune_unstructured_(weight: torch.Tensor, sparsity: float) -> None:
    """Zero the round(sparsity x numel) entries of smallest magnitude, in place (ties at the threshold broken by
    index). kthvalue + a mask is ~7x faster than a full argsort on CPU, which matters for 70B layers."""
    k = round(sparsity * weight.numel())
    if k <= 0:
        return
    flat = weight.view(-1)
    mag = flat.abs()
    thr = torch.kthvalue(mag.float().cpu() if mag.device.type == "mps" else mag, k).values
    below = mag < thr
    rest = k - int(below.sum())
    flat[below] = 0
    if rest > 0:
        tied = torch.nonzero(mag == thr).view(-1)[:rest]
        flat[tied] = 0


@torch.no_grad()
def prune_nm_(weight: torch.Tensor, n: int, m: int) -> None:
    """Zero the n smallest-magnitude entries in every block of m consecutive weights of each row, in place."""
    rows, cols = weight.shape
    if cols % m:
        raise CpbenchError(f"N:M pruning needs the input dimension ({cols}) divisible by M={m}")
    blocks = weight.view(rows, cols // m, m)
    smallest = torch.topk(blocks.abs(), n, dim=-1, largest=False).indices
    blocks.scatter_(-1, smallest, 0.0)


def magnitude_prune(
    model: torch.nn.Module,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    ignore: Iterable[str] = ("lm_head",),
) -> dict[str, float]:
    """Prune every Linear except `ignore` (names, suffixes or `re:` patterns); returns measured zeros per layer."""
    if (sparsity is None) == (nm is None):
        raise CpbenchError("magnitude pruning needs exactly one of sparsity, nm")
    layers = target_linears(model, ignore)
    if not layers:
        raise CpbenchError("magnitude pruning found no Linear layers to prune")
    out = {}
    for name, mod in layers.items():
        w = mod.weight.data
        if nm is not None:
            prune_nm_(w, *nm)
        else:
            prune_unstructured_(w, float(sparsity))  # type: ignore[arg-type]
        out[name] = float((w == 0).float().mean())
    return out
