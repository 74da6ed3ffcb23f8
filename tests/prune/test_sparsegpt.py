"""SparseGPT against a slow, obviously correct OBS oracle; Hessians; damping fallback; dtypes."""

import warnings

import pytest
import torch

from calmix.errors import CalmixError
from calmix.prune.magnitude import magnitude_prune
from calmix.prune.sparsegpt import HessianAccumulator, hessian_from_inputs, sparsegpt_prune
from calmix.prune.wanda import wanda_prune

SPARSITIES = [0.0, 0.25, 0.5, 0.6, 0.9]
NM = [(2, 4), (4, 8), (1, 4)]


def _correlated(rows=16, cols=48, tokens=400, rank=6, seed=0, dtype=torch.float64):
    """W and inputs X [tokens, cols]: a low-rank mix plus noise, per-feature scales over 2 decades."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    Z = torch.randn(tokens, rank, generator=g, dtype=torch.float64)
    A = torch.randn(rank, cols, generator=g, dtype=torch.float64)
    X = (Z @ A + 0.3 * torch.randn(tokens, cols, generator=g, dtype=torch.float64))
    X = X * torch.logspace(-1, 1, cols, dtype=torch.float64)
    H = 2 * X.t() @ X / tokens
    return W.to(dtype), X.to(dtype), H.to(dtype)


def obs_oracle(W, H, sparsity, n=0, m=0, percdamp=0.01, mask_block=None):
    """Column by column OBS with explicitly inverted Hessians of the remaining columns (float64).

    Mask selection uses the OBS saliency w_j² / [inv(H[j:, j:])]_00 of the current (updated) weights:
    unstructured: once per block of mask_block columns, the block's share of int(sparsity*numel)
    lowest; N:M: at every column i with i % m == 0, the n lowest of columns i..i+m in each row.
    """
    W, H = W.clone().double(), H.clone().double()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H = H + percdamp * torch.diag(H).mean() * torch.eye(cols, dtype=torch.float64)
    d = torch.tensor([torch.linalg.inv(H[j:, j:])[0, 0].item() for j in range(cols)], dtype=torch.float64)
    mask_block = mask_block or cols
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    loss = 0.0
    for i in range(cols):
        if m == 0 and i % mask_block == 0:
            j2 = min(i + mask_block, cols)
            k = int(sparsity * rows * j2) - int(sparsity * rows * i)
            scores = (W[:, i:j2] ** 2 / d[i:j2]).flatten()
            chosen = torch.zeros(scores.numel(), dtype=torch.bool)
            chosen[torch.sort(scores, stable=True).indices[:k]] = True
            mask[:, i:j2] = chosen.reshape(rows, j2 - i)
        if m and i % m == 0:
            scores = W[:, i:i + m] ** 2 / d[i:i + m]
            for r in range(rows):
                for j in torch.sort(scores[r], stable=True).indices[:n].tolist():
                    mask[r, i + j] = True
        Hinv_F = torch.linalg.inv(H[i:, i:])  # inverse Hessian of the columns still to be processed
        err = torch.where(mask[:, i], W[:, i], torch.zeros_like(W[:, i]))  # w - q
        W[:, i + 1:] -= err[:, None] * (Hinv_F[0, 1:] / Hinv_F[0, 0])[None, :]
        W[:, i] -= err
        loss += (err ** 2 / Hinv_F[0, 0]).sum().item() / 2
    return W, mask, loss


def _check_against_oracle(res, oracle):
    Wo, mo, loss = oracle
    assert torch.equal(res.mask, mo)
    torch.testing.assert_close(res.weight, Wo, rtol=1e-9, atol=1e-10)
    assert res.info["err"] == pytest.approx(loss, rel=1e-9)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.6, 0.9])
def test_matches_obs_oracle_unstructured_one_block(sparsity):
    W, _, H = _correlated()
    res = sparsegpt_prune(W, H, sparsity, blocksize=W.shape[1])
    assert res.weight.dtype == torch.float64
    _check_against_oracle(res, obs_oracle(W, H, sparsity))


@pytest.mark.parametrize("n,m", [(0, 0), (2, 4)])
def test_matches_obs_oracle_with_dead_inputs(n, m):
    W, X, _ = _correlated()
    X[:, [5, 30]] = 0
    H = 2 * X.t() @ X / X.shape[0]
    res = sparsegpt_prune(W, H, 0.5, n, m, blocksize=16)
    assert res.info["dead_inputs"] == 2
    _check_against_oracle(res, obs_oracle(W, H, 0.5, n, m, mask_block=16))


@pytest.mark.parametrize("blocksize", [16, 20])
def test_matches_obs_oracle_unstructured_lazy_blocks(blocksize):
    W, _, H = _correlated()
    res = sparsegpt_prune(W, H, 0.5, blocksize=blocksize)
    _check_against_oracle(res, obs_oracle(W, H, 0.5, mask_block=blocksize))
    # per-block masks really differ from a single block's, so the oracle's mask_block matters
    assert not torch.equal(res.mask, sparsegpt_prune(W, H, 0.5, blocksize=W.shape[1]).mask)


@pytest.mark.parametrize("n,m", NM)
def test_matches_obs_oracle_nm_any_blocksize(n, m):
    W, _, H = _correlated()
    oracle = obs_oracle(W, H, 0.0, n, m)
    for blocksize in (W.shape[1], 16, 8, 5):  # 5 is rounded down to a multiple of m
        _check_against_oracle(sparsegpt_prune(W, H, 0.0, n, m, blocksize=blocksize), oracle)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_exact_sparsity_unstructured(sparsity):
    W, _, H = _correlated(rows=7, cols=40, dtype=torch.float32)
    for blocksize in (40, 16, 128):
        res = sparsegpt_prune(W, H, sparsity, blocksize=blocksize)
        assert int(res.mask.sum()) == int(sparsity * W.numel()) == res.info["pruned"]
        assert (res.weight[res.mask] == 0).all()


@pytest.mark.parametrize("n,m", NM)
def test_nm_validity(n, m):
    W, _, H = _correlated(dtype=torch.float32)
    res = sparsegpt_prune(W, H, 0.5, n, m)
    assert (res.mask.reshape(W.shape[0], -1, m).sum(dim=2) == n).all()
    assert (res.weight[res.mask] == 0).all()


def test_sparsity_zero_is_bit_identical():
    W, _, H = _correlated(dtype=torch.float32)
    for Wd in (W, W.to(torch.bfloat16)):
        res = sparsegpt_prune(Wd, H, 0.0)
        assert res.weight.dtype == Wd.dtype and torch.equal(res.weight, Wd) and not res.mask.any()
        assert res.info["err"] == 0.0


def test_bad_patterns_raise():
    W, _, H = _correlated(dtype=torch.float32)
    for s, n, m in [(1.0, 0, 0), (-0.1, 0, 0), (0.5, 4, 4), (0.5, 0, 4), (0.5, 2, 5)]:
        with pytest.raises(CalmixError):
            sparsegpt_prune(W, H, s, n, m)


def test_dead_inputs_zeroed():
    W, X, _ = _correlated(dtype=torch.float32)
    X[:, [3, 17]] = 0  # inputs that never fire
    H, ntok = hessian_from_inputs(X)
    res = sparsegpt_prune(W, H, 0.25, blocksize=16)
    assert res.info["dead_inputs"] == 2 and ntok == X.shape[0]
    assert (res.weight[:, [3, 17]] == 0).all()
    assert torch.isfinite(res.weight).all()
    # the input H is not modified in place
    assert H[3, 3] == 0


def test_reconstruction_error_ordering():
    W, X, H = _correlated(rows=32, cols=64, tokens=512, seed=1, dtype=torch.float32)
    xn = (X * X).sum(0)
    ref = W @ X.t()
    for s, n, m in [(0.5, 0, 0), (0.0, 2, 4)]:
        errs = [torch.linalg.norm(ref - r.weight @ X.t()).item() for r in (
            sparsegpt_prune(W, H, s, n, m, blocksize=32), wanda_prune(W, xn, s, n, m), magnitude_prune(W, s, n, m))]
        assert errs[0] < errs[1] < errs[2], (s, n, m, errs)


def test_hessian_accumulator_equals_batch_formula():
    g = torch.Generator().manual_seed(5)
    acc = HessianAccumulator(24)
    xs, ms = [], []
    for shape in [(2, 7), (3, 5), (1, 9), (4,)]:
        x = torch.randn(*shape, 24, generator=g)
        am = (torch.rand(*shape, generator=g) > 0.25).long()
        x[am == 0] = 50.0  # padding would dominate if counted
        acc.add(x, am)
        xs.append(x.reshape(-1, 24))
        ms.append(am.reshape(-1))
    acc.add(torch.randn(2, 3, 24, generator=g), torch.zeros(2, 3))  # all padding: no change
    X, M = torch.cat(xs), torch.cat(ms)
    H, ntok = hessian_from_inputs(X, M)
    Xk = X[M != 0].double()
    assert acc.H.dtype == H.dtype == torch.float32
    assert acc.ntokens == ntok == Xk.shape[0]
    exact = (2 * Xk.t() @ Xk / Xk.shape[0]).float()
    torch.testing.assert_close(H, exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(acc.H, exact, rtol=1e-5, atol=1e-5)


def test_hessian_accumulator_casts_low_precision_to_fp32():
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    acc = HessianAccumulator(16)
    acc.add(x)
    H, _ = hessian_from_inputs(x)
    assert acc.H.dtype == H.dtype == torch.float32
    torch.testing.assert_close(acc.H, H, rtol=1e-5, atol=1e-5)


def _indefinite():
    W = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    H = torch.tensor([[1.0, 1.5], [1.5, 1.0]])  # eigenvalues 2.5 and -0.5
    return W, H


def test_cholesky_failure_raises_damping_with_warning():
    W, H = _indefinite()
    with pytest.warns(UserWarning, match="Cholesky") as record:
        res = sparsegpt_prune(W, H, 0.5, percdamp=0.01)
    # damp 0.01 and 0.1 fail, 1.0 makes the eigenvalues 3.5 and 0.5
    assert len(record) == 2 and res.info["damp_tries"] == 3
    assert res.info["damp"] == pytest.approx(1.0)
    assert int(res.mask.sum()) == 4 and torch.isfinite(res.weight).all()


def test_cholesky_failure_gives_up_after_max_tries():
    W, H = _indefinite()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(CalmixError, match="Cholesky"):
            sparsegpt_prune(W, H, 0.5, percdamp=0.01, max_damp_tries=2)


def test_healthy_hessian_needs_one_try_without_warning():
    W, _, H = _correlated(dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = sparsegpt_prune(W, H, 0.5)
    assert res.info["damp_tries"] == 1
    assert res.info["damp"] == pytest.approx(0.01 * torch.diag(H).mean().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weight_dtype_kept(dtype):
    W, _, H = _correlated(dtype=torch.float32)
    res = sparsegpt_prune(W.to(dtype), H, 0.5)
    assert res.weight.dtype == dtype and res.mask.dtype == torch.bool
    assert (res.weight[res.mask] == 0).all() and torch.isfinite(res.weight.float()).all()
    ref = sparsegpt_prune(W.to(dtype).float(), H, 0.5)  # same computation in fp32
    assert torch.equal(res.mask, ref.mask)
    torch.testing.assert_close(res.weight, ref.weight.to(dtype))


@pytest.mark.parametrize("n,m,sparsity", [(0, 0, 0.6), (0, 0, 0.37), (2, 4, 0.0)])
def test_group_equals_one_by_one(n, m, sparsity):
    """Weights sharing an input (q/k/v) pruned in one stacked pass: the same masks and weights as one by one."""
    from calmix.prune.sparsegpt import hessian_factor, sparsegpt_prune_group

    _, _, H = _correlated(cols=48, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    Ws = [torch.randn(r, 48, generator=g) for r in (16, 5, 9)]
    factor = hessian_factor(H)
    group = sparsegpt_prune_group(Ws, factor, sparsity, n, m, blocksize=16)
    for W, res in zip(Ws, group):
        one = sparsegpt_prune(W, factor, sparsity, n, m, blocksize=16)
        assert torch.equal(res.mask, one.mask)
        torch.testing.assert_close(res.weight, one.weight, rtol=1e-5, atol=1e-6)
        assert res.info["pruned"] == (W.numel() * n // m if m else int(sparsity * W.numel()))
    with pytest.raises(ValueError, match="input width"):
        sparsegpt_prune_group([Ws[0], torch.randn(4, 40)], factor, 0.5)


def test_stacks_keep_order_and_the_entry_budget():
    """Consecutive weights share a stack while their entries fit the budget; a larger weight is swept alone."""
    from calmix.prune.sparsegpt import _stacks

    Ws = [torch.zeros(r, 4) for r in (2, 2, 5, 1, 1)]  # 8, 8, 20, 4, 4 entries
    shapes = [[w.shape[0] for w in s] for s in _stacks(Ws, limit=16)]
    assert shapes == [[2, 2], [5], [1, 1]]
    assert [[w.shape[0] for w in s] for s in _stacks(Ws, limit=1 << 30)] == [[2, 2, 5, 1, 1]]


@pytest.mark.parametrize("n,m", [(0, 0), (2, 4)])
def test_error_from_the_sweep_loss_equals_the_quadratic_form(n, m):
    """tr(ΔW H ΔWᵀ)/tr(W H Wᵀ) from the OBS loss (no ΔW·H product) equals the direct quadratic form, dead inputs
    and damping included."""
    from calmix.prune.sparsegpt import hessian_error, hessian_error_from_loss

    g = torch.Generator().manual_seed(11)
    X = torch.randn(200, 32, generator=g, dtype=torch.float64)
    X[:, [3, 17]] = 0  # dead inputs: H_ii = 0
    H, _ = hessian_from_inputs(X)
    H = H.double()
    W = torch.randn(12, 32, generator=g, dtype=torch.float64)
    res = sparsegpt_prune(W, H, 0.5, n, m, blocksize=8, percdamp=0.05)
    want = hessian_error(H, W, res.weight)
    got = hessian_error_from_loss(H, W, res.weight, res.info["err"], res.info["damp"])
    assert want > 0
    assert got == pytest.approx(want, rel=1e-6)  # both in fp32


def test_blocked_hessian_accumulator_equals_one_product():
    """Only the blocks on and above the diagonal are multiplied; the mirrored H equals 2XᵀX/n, in fp32 and (within
    bf16 rounding) with products in bf16."""
    g = torch.Generator().manual_seed(4)
    x = [torch.randn(3, 50, 700, generator=g) for _ in range(3)]
    exact = torch.cat([t.reshape(-1, 700) for t in x]).double()
    exact = 2 * exact.t() @ exact / exact.shape[0]
    acc = HessianAccumulator(700)
    assert len(acc._edges) == 3  # two blocks
    for t in x:
        acc.add(t)
    torch.testing.assert_close(acc.H.double(), exact, rtol=1e-5, atol=1e-5)
    e = acc._edges[1]
    assert torch.equal(acc.H[e:, :e], acc.H[:e, e:].t())  # the lower block is the mirrored upper one
    low = HessianAccumulator(700, product_dtype="model")
    for t in x:
        low.add(t.bfloat16())
    ref = torch.cat([t.reshape(-1, 700) for t in x]).bfloat16().double()
    ref = 2 * ref.t() @ ref / ref.shape[0]
    assert low.H.dtype == torch.float32
    assert float((low.H.double() - ref).norm() / ref.norm()) < 4e-3


@pytest.mark.parametrize("n", [1, 7, 48])
def test_upper_cholesky_of_inverse_is_the_factor_of_the_inverse(n):
    """U upper with a positive diagonal and UᵀU = A⁻¹ (oracle: fp64 inverse), as the reference's three steps give."""
    from calmix.prune.sparsegpt import _upper_cholesky_of_inverse

    _, _, H = _correlated(cols=48)
    A = H[:n, :n] + 0.01 * torch.eye(n, dtype=torch.float64)
    U = _upper_cholesky_of_inverse(A)
    assert torch.equal(U, U.triu()) and (U.diagonal() > 0).all()
    torch.testing.assert_close(U.t() @ U, torch.linalg.inv(A), rtol=1e-9, atol=1e-12)
    reference = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(A)), upper=True)
    torch.testing.assert_close(U, reference, rtol=1e-9, atol=1e-12)
