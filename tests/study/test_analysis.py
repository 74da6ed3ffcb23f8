"""Spearman analysis: hand-computed rho, agreement with scipy, pooling over seeds, strategy tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from calmix.study import analysis as A
from calmix.study.store import Store


def test_spearman_hand_computed():
    # ranks x = 1..5, y = 2,1,4,3,5: d = -1,1,-1,1,0, sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8
    rho, p, n = A.spearman([10, 20, 30, 40, 50], [2.0, 1.0, 4.0, 3.0, 5.0])
    assert n == 5 and rho == pytest.approx(0.8, abs=1e-12)
    assert 0 < p < 1
    # perfectly monotone decreasing: rho = -1
    assert A.spearman([1, 2, 3, 4], [9, 7, 5, 1])[0] == pytest.approx(-1.0)
    # too few points or a constant input: undefined, stated as NaN with n
    rho, p, n = A.spearman([1, 2], [3, 4])
    assert math.isnan(rho) and math.isnan(p) and n == 2
    assert math.isnan(A.spearman([1, 2, 3], [5, 5, 5])[0])
    # non-finite pairs are dropped
    assert A.spearman([1, 2, 3, float("nan"), 5], [1, 2, 3, 4, 5])[2] == 4


def test_spearman_matches_scipy_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 6, size=12).astype(float)
        y = x * rng.normal(size=12) + rng.normal(size=12)
        rho, p, n = A.spearman(x, y)
        ref = stats.spearmanr(x, y)
        assert rho == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue) and n == 12
        # rho is the Pearson correlation of the average ranks
        rx, ry = stats.rankdata(x), stats.rankdata(y)
        assert rho == pytest.approx(np.corrcoef(rx, ry)[0, 1])


def test_table_uses_single_sources_only_pooled_over_seeds(tmp_path, fake_study, fake_truth):
    fx = fake_study(tmp_path / "s", with_failed=False)
    with Store(tmp_path / "s") as store:
        df = A.cells_frame(store.cells())
    assert len(df) == len(fx["cells"])
    sp = A.spearman_table(df)
    assert set(sp.n) == {5}  # the 5 single sources, mixes and generated sets excluded
    row = sp[(sp.metric == "ppl") & (sp.dimension == "Math")].iloc[0]
    # ppl rises 10..50 (+ seed), Math falls monotonically: rho = -1
    assert row.rho == pytest.approx(-1.0)
    srcs = sorted(fake_truth.PPL)
    ref = stats.spearmanr([fake_truth.AGG4[s] for s in srcs], [fake_truth.GENERAL[s] for s in srcs])
    row = sp[(sp.metric == "agg4") & (sp.dimension == "General")].iloc[0]
    assert row.rho == pytest.approx(ref.statistic) and row.p == pytest.approx(ref.pvalue)
    ref = stats.spearmanr([fake_truth.PPL[s] for s in srcs], [fake_truth.MATH[s] for s in srcs])
    assert ref.statistic == pytest.approx(-1.0)


def test_retention_and_strategy_tables(tmp_path, fake_study):
    fake_study(tmp_path / "s", with_failed=False)
    with Store(tmp_path / "s") as store:
        df = A.cells_frame(store.cells())
    rt = A.retention_table(df)
    a = rt[rt.strategy == "pydoc-topics"].iloc[0]
    # seeds: -0.5 / +0.5 jitter around the base (plus 5 points for sparsity 0.5): mean = base + 5, std = sqrt(0.5)
    assert a.General == pytest.approx(45.0) and a.General_std == pytest.approx(math.sqrt(0.5)) and a.seeds == 2
    st = A.strategy_table(df, "pydoc-topics")
    roles = dict(zip(st.role + ":" + st.strategy, st.gap_to_reference))
    assert roles["reference source:pydoc-topics"] == pytest.approx(0.0)
    assert "mix:uniform" in roles and "self-generated:igsp" in roles
    best = st[st.role == "best single source"].iloc[0]
    assert best.strategy == df[df.kind == "source"].groupby("strategy").ret_Total.mean().idxmax()
    assert roles["mix:uniform"] == pytest.approx(float(rt[rt.strategy == "uniform"].Total.iloc[0] - a.Total))
    spread = A.seed_spread(df).iloc[0]
    assert spread.seed_std_mean == pytest.approx(math.sqrt(0.5))
    winners = A.dimension_winners(df, ("sparsegpt", "unstructured", 0.5))
    assert winners["Math"][0] == "pydoc-topics" and winners["General"][0] == "gsm-symbolic" and winners["Code"][0] == "stdlib"


def test_empty_frame_is_handled():
    df = A.cells_frame([])
    assert df.empty and A.spearman_table(df).empty and A.retention_table(df).empty
    assert isinstance(A.strategy_table(df, None), pd.DataFrame)
