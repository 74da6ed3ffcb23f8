"""Wanda and magnitude pruning against explicit oracles; XNormAccumulator; dtypes."""

import pytest
import torch

from calmix.errors import CalmixError
from calmix.prune.magnitude import magnitude_prune
from calmix.prune.wanda import XNormAccumulator, wanda_prune

SPARSITIES = [0.0, 0.25, 0.5, 0.6, 0.9]
NM = [(2, 4), (4, 8), (1, 4)]


def _data(rows=12, cols=32, tokens=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(tokens, cols, generator=g) * torch.logspace(-1, 1, cols)  # very different scales
    return W, X, (X * X).sum(0)


def _wanda_oracle(W, xnorm_sq, sparsity):
    """Per row, sort the scores |w|*||x|| in a Python loop and zero the k smallest."""
    out, k = W.clone(), int(sparsity * W.shape[1])
    for r in range(W.shape[0]):
        scores = [(abs(W[r, j].item()) * xnorm_sq[j].item() ** 0.5, j) for j in range(W.shape[1])]
        for _, j in sorted(scores)[:k]:
            out[r, j] = 0
    return out


def _magnitude_oracle(W, sparsity):
    """Zero the k entries of smallest |w| over the whole matrix, in a Python loop."""
    out, k = W.clone(), int(sparsity * W.numel())
    entries = sorted((abs(W[r, j].item()), r, j) for r in range(W.shape[0]) for j in range(W.shape[1]))
    for _, r, j in entries[:k]:
        out[r, j] = 0
    return out


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_wanda_matches_oracle_and_count(sparsity):
    W, _, xn = _data()
    res = wanda_prune(W, xn, sparsity)
    k = int(sparsity * W.shape[1])
    assert res.mask.sum(dim=1).tolist() == [k] * W.shape[0]
    assert torch.equal(res.weight, _wanda_oracle(W, xn, sparsity))
    assert torch.equal(res.mask, (res.weight == 0) & (W != 0))
    assert res.info["pruned"] == k * W.shape[0]


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_magnitude_matches_oracle_and_count(sparsity):
    W, _, _ = _data()
    res = magnitude_prune(W, sparsity)
    assert int(res.mask.sum()) == int(sparsity * W.numel())
    assert torch.equal(res.weight, _magnitude_oracle(W, sparsity))


def test_wanda_uses_activation_scale():
    # a column with huge activations survives although its weights are the smallest
    W = torch.tensor([[0.1, 1.0, 1.0, 1.0]])
    xn = torch.tensor([1e6, 1.0, 1.0, 1.0])
    assert wanda_prune(W, xn, 0.25).mask.tolist() == [[False, True, False, False]]
    assert magnitude_prune(W, 0.25).mask.tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("n,m", NM)
@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_nm_validity(method, n, m):
    W, _, xn = _data()
    res = wanda_prune(W, xn, 0.0, n, m) if method == "wanda" else magnitude_prune(W, 0.0, n, m)
    groups = res.mask.reshape(W.shape[0], -1, m)
    assert (groups.sum(dim=2) == n).all()
    scores = W.abs() * (xn.sqrt() if method == "wanda" else 1)
    sg = scores.reshape(W.shape[0], -1, m)
    kept_min = sg.masked_fill(groups, float("inf")).min(dim=2).values
    pruned_max = sg.masked_fill(~groups, -float("inf")).max(dim=2).values
    assert (pruned_max < kept_min).all()
    assert (res.weight[res.mask] == 0).all() and torch.equal(res.weight[~res.mask], W[~res.mask])


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_sparsity_zero_is_bit_identical(method):
    W, _, xn = _data()
    W = W.to(torch.bfloat16)
    res = wanda_prune(W, xn, 0.0) if method == "wanda" else magnitude_prune(W, 0.0)
    assert res.weight.dtype == torch.bfloat16 and torch.equal(res.weight, W) and not res.mask.any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_low_precision_dtype_kept(method, dtype):
    W, _, xn = _data()
    Wl = W.to(dtype)
    res = wanda_prune(Wl, xn, 0.5) if method == "wanda" else magnitude_prune(Wl, 0.5)
    assert res.weight.dtype == dtype
    assert torch.equal(res.weight[~res.mask], Wl[~res.mask]) and (res.weight[res.mask] == 0).all()


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_bad_patterns_raise(method):
    W, _, xn = _data()
    for s, n, m in [(1.0, 0, 0), (-0.5, 0, 0), (0.5, 4, 4), (0.5, 3, 5), (0.5, 0, 4)]:
        with pytest.raises(CalmixError):
            wanda_prune(W, xn, s, n, m) if method == "wanda" else magnitude_prune(W, s, n, m)


def test_xnorm_accumulator_excludes_padding():
    g = torch.Generator().manual_seed(3)
    acc = XNormAccumulator(16)
    kept = []
    for b in range(3):
        x = torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
        am = (torch.rand(2, 5, generator=g) > 0.3).long()
        x[am == 0] = 1e3  # padding would dominate if it were counted
        acc.add(x, am)
        kept.append(x[am != 0])
    acc.add(torch.randn(4, 16, generator=g)[:0])  # an empty batch changes nothing
    X = torch.cat(kept)
    assert acc.xnorm_sq.dtype == torch.float32 and acc.ntokens == X.shape[0]
    torch.testing.assert_close(acc.xnorm_sq, (X * X).sum(0).float(), rtol=1e-6, atol=0)
    acc2 = XNormAccumulator(16)
    acc2.add(X.float())  # no mask: every token counts
    torch.testing.assert_close(acc2.xnorm_sq, acc.xnorm_sq, rtol=1e-6, atol=0)
