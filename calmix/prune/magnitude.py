"""Magnitude pruning: score |W_ij|, one threshold per layer (unstructured) or N:M within rows."""

from __future__ import annotations

from torch import Tensor

from calmix.prune.masks import PruneResult, apply_mask, nm_mask, unstructured_mask, validate_pattern
from calmix.prune.registry import Pruner, register_pruner


def magnitude_prune(W: Tensor, sparsity: float, n: int = 0, m: int = 0) -> PruneResult:
    """Prune the smallest |W| over the whole matrix (exactly int(sparsity*numel)) or n in every m (m > 0: sparsity unused)."""
    validate_pattern(sparsity, n, m, W.shape[1])
    scores = W.detach().float().abs()
    mask = nm_mask(scores, n, m) if m else unstructured_mask(scores, sparsity)
    return apply_mask(W.detach(), mask, {"method": "magnitude"})


@register_pruner
class Magnitude(Pruner):
    """Magnitude: no statistic, no calibration data."""

    name = "magnitude"
    description = "Magnitude: |W|, one threshold per layer, no calibration data"

    def prune(self, W: Tensor, stat: None, sparsity: float, n: int = 0, m: int = 0, **_) -> PruneResult:
        return magnitude_prune(W, sparsity, n, m)
