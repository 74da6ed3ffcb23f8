"""Patterns and masks: exact counts, N:M validity, stable ties, errors."""

import pytest
import torch

from calmix.errors import CalmixError
from calmix.prune.masks import lowest_k_mask, nm_mask, parse_pattern, unstructured_mask, validate_pattern

SPARSITIES = [0.0, 0.25, 0.5, 0.6, 0.9]


def _scores(rows=8, cols=16, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_unstructured_mask_prunes_exactly_the_lowest(sparsity):
    s = _scores()
    mask = unstructured_mask(s, sparsity)
    k = int(sparsity * s.numel())
    assert mask.dtype == torch.bool and mask.shape == s.shape
    assert int(mask.sum()) == k
    if 0 < k < s.numel():
        assert s[mask].max() < s[~mask].min()


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_unstructured_mask_per_row(sparsity):
    s = _scores(6, 20)
    mask = unstructured_mask(s, sparsity, per_row=True)
    k = int(sparsity * 20)
    assert mask.sum(dim=1).tolist() == [k] * 6
    for r in range(6):
        if 0 < k:
            assert s[r][mask[r]].max() < s[r][~mask[r]].min()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_groups(n, m):
    s = _scores(5, 24)
    mask = nm_mask(s, n, m)
    groups = mask.reshape(5, 24 // m, m)
    assert (groups.sum(dim=2) == n).all()
    sg = s.reshape(5, 24 // m, m)
    # oracle: each pruned entry is below each kept entry of its own group
    for r in range(5):
        for g in range(24 // m):
            sel = groups[r, g]
            assert sg[r, g][sel].max() < sg[r, g][~sel].min()


def test_ties_are_deterministic_and_stable():
    s = torch.zeros(2, 8)
    assert lowest_k_mask(s, 3).reshape(-1).nonzero().flatten().tolist() == [0, 1, 2]
    assert unstructured_mask(s, 0.25, per_row=True).nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert nm_mask(s, 2, 4)[0].tolist() == [True, True, False, False] * 2


@pytest.mark.parametrize("args", [(-0.1, 0, 0, 8), (1.0, 0, 0, 8), (1.5, 0, 0, 8), (0.5, 4, 4, 8),
                                  (0.5, 5, 4, 8), (0.5, 0, 4, 8), (0.5, 2, 4, 10), (0.5, 2, 0, 8),
                                  (0.5, -1, 4, 8)])
def test_validate_pattern_rejects(args):
    with pytest.raises(CalmixError):
        validate_pattern(*args)


def test_validate_pattern_accepts():
    validate_pattern(0.0, 0, 0, 7)
    validate_pattern(0.99, 0, 0, 7)
    validate_pattern(0.5, 2, 4, 8)
    validate_pattern(0.5, 1, 4, 4)


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(" 4:8 ") == (4, 8)
    assert parse_pattern("unstructured") == (0, 0)
    assert parse_pattern("Unstructured") == (0, 0)
    for bad in ["4:2", "2:2", "0:4", "2-4", "a:b", "2:4:8", "", "-1:4", "2:"]:
        with pytest.raises(CalmixError):
            parse_pattern(bad)


def test_lowest_k_mask_equals_a_stable_sort_with_many_ties():
    """The linear-time selection picks exactly the set a stable sort picks, ties in index order."""
    from calmix.prune.masks import lowest_k_mask

    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        scores = torch.randint(0, 5, (13, 7), generator=gen).float()
        k = int(torch.randint(0, scores.numel() + 1, (), generator=gen))
        ref = torch.zeros(scores.numel(), dtype=torch.bool)
        ref[torch.sort(scores.flatten(), stable=True).indices[:k]] = True
        assert torch.equal(lowest_k_mask(scores, k).flatten(), ref)


@pytest.mark.parametrize("kind", ["normal", "nonnegative", "integers", "signed_zeros"])
def test_radix_kth_smallest_equals_kthvalue(kind):
    """The radix path (fp32, >= 16k entries) returns torch.kthvalue's value for negatives, ties and ±0."""
    from calmix.prune.masks import kth_smallest

    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        n = int(torch.randint(1 << 14, 1 << 17, (1,), generator=g))
        x = torch.randn(n, generator=g)
        if kind == "nonnegative":
            x = x.abs()
        elif kind == "integers":
            x = torch.randint(-5, 5, (n,), generator=g).float()
        elif kind == "signed_zeros":
            x = torch.where(torch.rand(n, generator=g) < 0.4, torch.tensor(-0.0), torch.where(x > 0, 0.0, x))
        for k in (1, int(torch.randint(1, n, (1,), generator=g)), n):
            assert torch.equal(kth_smallest(x, k), x.kthvalue(k).values), (kind, n, k)


def test_per_row_mask_equals_a_stable_sort_with_ties():
    g = torch.Generator().manual_seed(8)
    for trial in range(20):
        s = torch.randint(0, 4, (17, 40), generator=g).float() if trial % 2 else torch.rand(17, 40, generator=g)
        for sparsity in (0.0, 0.1, 0.5, 0.6, 0.99):
            k = int(sparsity * 40)
            ref = torch.zeros(17, 40, dtype=torch.bool)
            if k:
                ref.scatter_(1, torch.sort(s, dim=1, stable=True).indices[:, :k], True)
            assert torch.equal(unstructured_mask(s, sparsity, per_row=True), ref), (trial, sparsity)
