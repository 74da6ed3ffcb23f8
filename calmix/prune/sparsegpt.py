"""SparseGPT (Frantar & Alistarh 2023): one-shot OBS pruning with lazy batch updates.

Follows IST-DASLab/sparsegpt ``SparseGPT.fasterprune`` (spec: shared/spec/method.md §2), with three
deliberate differences:
- unstructured: each block prunes exactly its share of the layer's ``int(sparsity * numel)`` entries
  (block b covering columns [i1, i2) prunes ``int(s*rows*i2) - int(s*rows*i1)``, the lowest scores
  with stable ties); the reference's ``tmp <= sort(tmp)[int(s*numel)]`` prunes one extra entry per block
  (and one entry at sparsity 0);
- N:M groups are aligned to absolute column indices: blocksize is rounded down to a multiple of m;
- a failed Cholesky factorisation multiplies the damping by 10 and retries (with a warning).

Returned mask: True exactly where the pruning rule chose to zero a weight. Those weights are 0 in the
result; weights of dead inputs (H_ii == 0, zeroed because they never see a signal) and weights that
merely happen to be 0 are *not* marked unless the rule selected them (it usually does, their score is 0).

Computation runs on W's device in fp32, or in fp64 when W or H is fp64; the weight returns in W's dtype.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from calmix.errors import CalmixError
from calmix.prune.masks import PruneResult, lowest_k_mask, nm_mask, validate_pattern


def hessian_from_inputs(X: Tensor, mask: Tensor | None = None) -> tuple[Tensor, int]:
    """H = 2 XᵀX / n in fp32 over the tokens (rows of X [tokens, in]) where mask != 0."""
    X = X.detach().reshape(-1, X.shape[-1])
    if mask is not None:
        X = X[mask.reshape(-1).to(X.device) != 0]
    X = X.float()
    ntokens = X.shape[0]
    H = X.t() @ X
    return (H * (2.0 / ntokens) if ntokens else H), ntokens


class HessianAccumulator:
    """Streaming H = 2 Σ x xᵀ / ntokens in fp32, the reference's running average counted in tokens."""

    def __init__(self, in_features: int, device: str | torch.device = "cpu") -> None:
        self.in_features = in_features
        self._H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.ntokens = 0

    @property
    def H(self) -> Tensor:
        """The accumulated Hessian (the live fp32 buffer, not a copy)."""
        return self._H

    def add(self, x: Tensor, attention_mask: Tensor | None = None) -> None:
        """Add inputs x [..., in]; tokens where attention_mask [...] == 0 are excluded."""
        x = x.detach().reshape(-1, self.in_features)
        if attention_mask is not None:
            x = x[attention_mask.reshape(-1).to(x.device) != 0]
        tmp = x.shape[0]
        if tmp == 0:
            return
        self._H *= self.ntokens / (self.ntokens + tmp)
        self.ntokens += tmp
        x = math.sqrt(2 / self.ntokens) * x.to(self._H.device, torch.float32)
        self._H += x.t() @ x


def _inverse_cholesky(H: Tensor, damp: float, max_tries: int) -> tuple[Tensor, float, int]:
    """Upper Cholesky factor of (H + damp·I)⁻¹, multiplying damp by 10 after each failure."""
    scale = H.diagonal().mean().item()
    for tries in range(1, max_tries + 1):
        Hd = H.clone()
        Hd.diagonal().add_(damp)
        try:
            U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
            if torch.isfinite(U).all():
                return U, damp, tries
        except torch.linalg.LinAlgError:
            pass
        if tries == max_tries:
            break
        new = damp * 10 if damp > 0 else 0.01 * abs(scale)
        warnings.warn(f"SparseGPT: Cholesky of the damped Hessian failed with damp={damp:.3g} "
                      f"(try {tries}/{max_tries}); retrying with damp={new:.3g}", stacklevel=3)
        damp = new
    raise CalmixError(f"SparseGPT: Cholesky of the Hessian failed {max_tries} times (last damp={damp:.3g}): "
                      f"raise percdamp or max_damp_tries, or use more calibration tokens")


@dataclass
class HessianFactor:
    """H prepared once for every linear that reads the same input: upper Cholesky of (H+λI)⁻¹ and dead inputs."""

    hinv: Tensor
    dead: Tensor
    damp: float
    tries: int


def hessian_factor(H: Tensor, percdamp: float = 0.01, max_damp_tries: int = 5,
                   dtype: torch.dtype = torch.float32) -> HessianFactor:
    """Dead inputs set to H_ii = 1, damping λ = percdamp·mean(diag H), then the inverse's upper Cholesky factor."""
    H = H.detach().to(dtype=dtype, copy=True)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    hinv, damp, tries = _inverse_cholesky(H, percdamp * torch.diag(H).mean().item(), max_damp_tries)
    return HessianFactor(hinv, dead, damp, tries)


def sparsegpt_prune(W: Tensor, H: Tensor | HessianFactor, sparsity: float, n: int = 0, m: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01, max_damp_tries: int = 5) -> PruneResult:
    """Prune W [out, in] given H = 2XXᵀ/n [in, in] (or its HessianFactor) by SparseGPT; N:M when m > 0."""
    rows, cols = W.shape
    validate_pattern(sparsity, n, m, cols)
    shape = tuple(H.hinv.shape if isinstance(H, HessianFactor) else H.shape)
    if shape != (cols, cols):
        raise ValueError(f"H has shape {shape}, expected ({cols}, {cols})")
    if blocksize < 1:
        raise CalmixError(f"blocksize {blocksize} must be >= 1: use the default 128")
    if m:
        blocksize = max(m, blocksize // m * m)
    hdtype = H.hinv.dtype if isinstance(H, HessianFactor) else H.dtype
    dtype = torch.float64 if torch.float64 in (W.dtype, hdtype) else torch.float32
    W0, W = W, W.detach().to(dtype=dtype, copy=True)
    if not isinstance(H, HessianFactor):
        H = hessian_factor(H.to(W.device), percdamp, max_damp_tries, dtype)
    Hinv, dead, damp, tries = H.hinv.to(W.device, dtype), H.dead.to(W.device), H.damp, H.tries
    W[:, dead] = 0

    mask = torch.zeros(rows, cols, dtype=torch.bool, device=W.device)
    losses = torch.zeros(rows, dtype=dtype, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1).reshape(1, -1)

        if m == 0:
            k = int(sparsity * rows * i2) - int(sparsity * rows * i1)
            mask1 = lowest_k_mask(W1 ** 2 / d1 ** 2, k)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if m and i % m == 0:
                mask1[:, i:i + m] = nm_mask(W1[:, i:i + m] ** 2 / d1[:, i:i + m] ** 2, n, m)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        mask[:, i1:i2] = mask1
        losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    pruned = int(mask.sum())
    info = {"method": "sparsegpt", "damp": damp, "damp_tries": tries, "dead_inputs": int(dead.sum()),
            "err": float(losses.sum()), "blocksize": blocksize, "percdamp": percdamp,
            "pruned": pruned, "sparsity": pruned / max(mask.numel(), 1)}
    return PruneResult(weight=W.to(W0.dtype), mask=mask, info=info)
