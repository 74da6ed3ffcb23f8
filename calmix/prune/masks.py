"""Pruning patterns and masks shared by every pruner (mask True = pruned, i.e. zeroed).

Exact counts: unstructured pruning removes exactly ``int(sparsity * numel)`` entries (per row:
``int(sparsity * cols)``), the lowest scores first; ties are broken deterministically by a stable
sort (the entry with the lower flat index is pruned first). N:M pruning removes exactly ``n`` entries
in every group of ``m`` consecutive input columns of each row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from calmix.errors import CalmixError


@dataclass
class PruneResult:
    """A pruned weight (original dtype), its mask (bool, True = pruned) and method details."""

    weight: Tensor
    mask: Tensor
    info: dict = field(default_factory=dict)


def validate_pattern(sparsity: float, n: int, m: int, in_features: int) -> None:
    """Raise CalmixError unless (sparsity, n:m) is a valid pattern for a layer with in_features inputs."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise CalmixError(f"sparsity {sparsity} is outside [0, 1): pass a fraction such as 0.5 for 50%")
    if m < 0 or n < 0:
        raise CalmixError(f"N:M pattern {n}:{m} has a negative number: use e.g. 2:4, or 0:0 for unstructured")
    if m == 0:
        if n != 0:
            raise CalmixError(f"N:M pattern {n}:{m} gives n without m: use e.g. 2:4, or 0:0 for unstructured")
        return
    if not 0 < n < m:
        raise CalmixError(f"N:M pattern {n}:{m} needs 0 < n < m: use e.g. 2:4 (2 pruned in every 4)")
    if in_features % m != 0:
        raise CalmixError(
            f"N:M pattern {n}:{m} needs m to divide the layer's {in_features} input features: "
            f"choose an m that divides {in_features}, or use unstructured sparsity"
        )


def parse_pattern(s: str) -> tuple[int, int]:
    """Parse "2:4" -> (2, 4) and "unstructured" -> (0, 0); raise CalmixError on anything else."""
    text = str(s).strip().lower()
    if text in ("unstructured", "0:0"):
        return (0, 0)
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise CalmixError(f"bad sparsity pattern {s!r}: write N:M such as '2:4', or 'unstructured'")
    n, m = int(parts[0]), int(parts[1])
    if not 0 < n < m:
        raise CalmixError(f"bad sparsity pattern {s!r}: N:M needs 0 < N < M, e.g. '2:4' or '4:8'")
    return (n, m)


def kth_smallest(flat: Tensor, k: int) -> Tensor:
    """The k-th smallest value (1-based) of a 1-D tensor, as flat.kthvalue(k).values.

    fp32 on the CPU goes by radix instead of kthvalue's selection (4-6x faster on the 10⁵-10⁶ scores of a
    SparseGPT block): the float bits, made order-preserving as int32, are counted by their top 16 bits, and only
    the bucket holding the k-th value is searched."""
    if flat.dtype != torch.float32 or flat.device.type != "cpu" or flat.numel() < 1 << 14:
        return flat.kthvalue(k).values
    bits = flat.view(torch.int32)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats reversed: int order = float order
    bucket = (key >> 16) + (1 << 15)
    below = torch.bincount(bucket, minlength=1 << 16).cumsum(0)
    b = int(torch.searchsorted(below, torch.tensor(k, dtype=below.dtype), right=False))
    before = int(below[b - 1]) if b > 0 else 0
    return flat[bucket == b].kthvalue(k - before).values


def lowest_k_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the k lowest entries of scores (flattened; stable ties), same shape as scores."""
    flat = scores.reshape(-1)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= flat.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    # Linear-time selection instead of a full sort: everything up to the k-th value; where ties at that value
    # overshoot k, the highest-index ones are kept (the same set a stable sort would prune). Scores rarely tie,
    # so the tie search is skipped unless the count is off.
    kth = kth_smallest(flat, k)
    mask = flat <= kth
    extra = int(mask.sum()) - k
    if extra > 0:
        ties = torch.nonzero(flat == kth).reshape(-1)[-extra:]
        mask[ties] = False
    return mask.reshape(scores.shape)


def unstructured_mask(scores: Tensor, sparsity: float, per_row: bool = False) -> Tensor:
    """Mask of the lowest int(sparsity*numel) scores (per_row: int(sparsity*cols) in each row)."""
    if not per_row:
        return lowest_k_mask(scores, int(sparsity * scores.numel()))
    rows, cols = scores.shape
    k = int(sparsity * cols)
    if k <= 0:
        return torch.zeros(rows, cols, dtype=torch.bool, device=scores.device)
    if k >= cols:
        return torch.ones(rows, cols, dtype=torch.bool, device=scores.device)
    # Per-row selection, then ties at each row's k-th value in index order: a stable sort's set, without the sort.
    # Without ties, everything up to the k-th value is exactly k per row; the tie pass (as costly as the selection)
    # runs only where a row counts more.
    kth = scores.kthvalue(k, dim=1, keepdim=True).values
    mask = scores <= kth
    if bool((mask.sum(dim=1) == k).all()):
        return mask
    mask = scores < kth
    missing = k - mask.sum(dim=1, keepdim=True)
    ties = scores == kth
    return mask | (ties & (ties.cumsum(dim=1) <= missing))


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Mask of the n lowest scores in each group of m consecutive columns of every row."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    order = torch.sort(groups, dim=2, stable=True).indices
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    mask.scatter_(2, order[:, :, :n], True)
    return mask.reshape(rows, cols)


def apply_mask(W: Tensor, mask: Tensor, info: dict) -> PruneResult:
    """Zero W where mask is True (W's dtype kept, other entries bit-identical) and add counts to info."""
    pruned = int(mask.sum())
    info = {**info, "pruned": pruned, "sparsity": pruned / max(mask.numel(), 1)}
    return PruneResult(weight=W.masked_fill(mask, 0), mask=mask, info=info)
