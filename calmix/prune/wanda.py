"""Wanda (Sun et al. 2024): score |W_ij| * ||X_j||_2, prune the lowest per output row; no update.

Statistic: ``xnorm_sq[j] = sum over non-padding tokens of x_j**2`` (a plain sum). The reference
implementation divides by the number of samples; a positive scale on every column multiplies every
score of a row by the same factor, so the per-row ranking, and hence the mask, are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calmix.prune.masks import PruneResult, apply_mask, nm_mask, unstructured_mask, validate_pattern
from calmix.prune.registry import Pruner, register_pruner


def wanda_prune(W: Tensor, xnorm_sq: Tensor, sparsity: float, n: int = 0, m: int = 0) -> PruneResult:
    """Prune the lowest |W|*sqrt(xnorm_sq) per row (int(sparsity*cols) each) or n in every m (m > 0: sparsity unused)."""
    validate_pattern(sparsity, n, m, W.shape[1])
    if xnorm_sq.shape != (W.shape[1],):
        raise ValueError(f"xnorm_sq has shape {tuple(xnorm_sq.shape)}, expected ({W.shape[1]},)")
    scores = W.detach().float().abs() * torch.sqrt(xnorm_sq.to(W.device, torch.float32)).reshape(1, -1)
    mask = nm_mask(scores, n, m) if m else unstructured_mask(scores, sparsity, per_row=True)
    return apply_mask(W.detach(), mask, {"method": "wanda"})


class XNormAccumulator:
    """Streaming sum over non-padding tokens of x_j**2 for each input feature j (fp32)."""

    def __init__(self, in_features: int, device: str | torch.device = "cpu") -> None:
        self.in_features = in_features
        self.xnorm_sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.ntokens = 0

    def add(self, x: Tensor, attention_mask: Tensor | None = None) -> None:
        """Add inputs x [..., in]; tokens where attention_mask [...] == 0 are skipped."""
        x = x.detach().reshape(-1, self.in_features)
        if attention_mask is not None:
            x = x[attention_mask.reshape(-1).to(x.device) != 0]
        x = x.to(self.xnorm_sq.device, torch.float32)
        self.ntokens += x.shape[0]
        self.xnorm_sq += (x * x).sum(dim=0)


@register_pruner
class Wanda(Pruner):
    """Wanda: its statistic is the per-input sum of squares over tokens, read as is."""

    name = "wanda"
    description = "Wanda: |W|·||X_j||, lowest per output row, no weight update"
    stats = "xnorm"

    def accumulator(self, in_features: int, device: str | torch.device = "cpu") -> XNormAccumulator:
        return XNormAccumulator(in_features, device)

    def prepare(self, acc: XNormAccumulator, **_) -> Tensor:
        return acc.xnorm_sq

    def prune(self, W: Tensor, stat: Tensor | None, sparsity: float, n: int = 0, m: int = 0, **_) -> PruneResult:
        self.require(stat)
        return wanda_prune(W, stat, sparsity, n, m)
