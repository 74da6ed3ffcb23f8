"""The pruner registry and interface: names, one uniform call, and each pruner's statistic against an oracle."""

import pytest
import torch

from calmix.errors import CalmixError
from calmix.prune import PRUNERS, Pruner
from calmix.prune.registry import register_pruner
from calmix.prune.sparsegpt import HessianAccumulator, HessianFactor
from calmix.prune.wanda import XNormAccumulator


def _inputs(cols=16, seed=0):
    """Three batches of inputs [2, 9, cols] with padding masks; padded tokens are huge so counting them shows."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(3):
        x = torch.randn(2, 9, cols, generator=g) * torch.logspace(-1, 1, cols)
        am = (torch.rand(2, 9, generator=g) > 0.3).long()
        x[am == 0] = 1e3
        batches.append((x, am))
    kept = torch.cat([x[am != 0] for x, am in batches]).double()  # [tokens, cols]
    return batches, kept


def test_registry():
    assert sorted(PRUNERS) == ["magnitude", "sparsegpt", "wanda"]
    assert PRUNERS.names() == ["sparsegpt", "wanda", "magnitude"]  # the order the CLI help lists them in
    assert PRUNERS.get("wanda").stats == "xnorm"
    assert PRUNERS.get("sparsegpt").stats == "hessian"
    assert PRUNERS.get("magnitude").stats is None
    with pytest.raises(CalmixError, match="unknown pruning method 'x': choose one of magnitude, sparsegpt, wanda"):
        PRUNERS.get("x")
    with pytest.raises(CalmixError, match="did you mean 'wanda'"):
        PRUNERS.get("wandaa")


def test_a_name_registers_once():
    class Again(Pruner):
        name = "wanda"

    with pytest.raises(ValueError, match="registered twice"):
        register_pruner(Again)
    assert type(PRUNERS.get("wanda")).__name__ == "Wanda"


def test_apply_pruner_uniform_call():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(4, 16, generator=g)
    X = torch.randn(64, 16, generator=g)
    H = 2 * X.t() @ X / 64
    xn = (X * X).sum(0)
    for name, stat in [("sparsegpt", H), ("wanda", xn), ("magnitude", None)]:
        res = PRUNERS.get(name).prune(W, stat, 0.5, 0, 0, blocksize=8, percdamp=0.01)
        assert int(res.mask.sum()) == 32 and (res.weight[res.mask] == 0).all()
    res = PRUNERS.get("sparsegpt").prune(W, H, 0.5, 0, 0, blocksize=8)
    assert res.info["blocksize"] == 8
    with pytest.raises(CalmixError):
        PRUNERS.get("wanda").prune(W, None, 0.5)
    with pytest.raises(CalmixError, match="needs the 'hessian' input statistic"):
        PRUNERS.get("sparsegpt").prune_group([W], None, 0.5)


def _fed(name, batches, cols=16):
    pruner = PRUNERS.get(name)
    acc = pruner.accumulator(cols)
    for x, am in batches:
        acc.add(x, am)
    return pruner, acc


def test_sparsegpt_statistic_is_the_factorised_damped_hessian():
    """Accumulated over padded batches and prepared once: the upper Cholesky factor of (2XᵀX/n + λI)⁻¹ on the
    non-padding tokens, dead inputs set to H_ii = 1, λ = percdamp·mean(diag H)."""
    batches, X = _inputs()
    for x, _ in batches:
        x[..., 3] = 0  # input 3 never sees a signal
    X[:, 3] = 0
    pruner, acc = _fed("sparsegpt", batches)
    assert isinstance(acc, HessianAccumulator) and acc.ntokens == X.shape[0]
    factor = pruner.prepare(acc, percdamp=0.05)
    assert isinstance(factor, HessianFactor)

    H = 2 * X.t() @ X / X.shape[0]
    H[3, 3] = 1
    damp = 0.05 * float(torch.diag(H).mean())
    oracle = torch.linalg.cholesky(torch.linalg.inv(H + damp * torch.eye(16, dtype=torch.float64)), upper=True)
    assert factor.dead.tolist() == [j == 3 for j in range(16)]
    assert factor.damp == pytest.approx(damp, rel=1e-5) and factor.tries == 1
    torch.testing.assert_close(factor.hinv.double(), oracle, rtol=1e-4, atol=1e-5)


def test_wanda_statistic_is_the_sum_of_squares_over_real_tokens():
    batches, X = _inputs(seed=1)
    pruner, acc = _fed("wanda", batches)
    assert isinstance(acc, XNormAccumulator) and acc.ntokens == X.shape[0]
    stat = pruner.prepare(acc)
    torch.testing.assert_close(stat.double(), (X * X).sum(0), rtol=1e-5, atol=0)


def test_magnitude_needs_no_statistic():
    pruner = PRUNERS.get("magnitude")
    assert pruner.accumulator(16) is None and pruner.prepare(None) is None
    W = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    res = pruner.prune(W, None, 0.25)
    kept = W.abs()[~res.mask]
    assert int(res.mask.sum()) == 16 and W.abs()[res.mask].max() < kept.min()


@pytest.mark.parametrize("name", ["sparsegpt", "wanda", "magnitude"])
def test_group_of_weights_sharing_one_input(name):
    """prune_group gives each weight its own exact share, and the same result as pruning it alone."""
    batches, _ = _inputs(seed=2)
    pruner = PRUNERS.get(name)
    acc = pruner.accumulator(16)
    for x, am in batches if acc is not None else ():
        acc.add(x, am)
    stat = pruner.prepare(acc, percdamp=0.01)
    g = torch.Generator().manual_seed(3)
    Ws = [torch.randn(r, 16, generator=g) for r in (8, 4)]
    group = pruner.prune_group(Ws, stat, 0.5, blocksize=8, percdamp=0.01)
    for W, res in zip(Ws, group):
        alone = pruner.prune(W, stat, 0.5, blocksize=8, percdamp=0.01)
        assert int(res.mask.sum()) == W.numel() // 2 and torch.equal(res.mask, alone.mask)
        torch.testing.assert_close(res.weight, alone.weight, rtol=1e-5, atol=1e-6)
