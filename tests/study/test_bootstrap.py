"""The paired bootstrap against closed forms: the SE of a mean, an enumerable seed resample, exact pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from calmix.evals.itemscores import item_table
from calmix.study import analysis as A
from calmix.study.bootstrap import Bootstrap, interval
from calmix.study.store import Store

G = ("sparsegpt", "unstructured", 0.5)
DIMS = ("General", "Commonsense", "Code", "Math")


def _task(dim: str, values, n: int | None = None) -> dict:
    values = list(values)
    return {"dimension": dim, "score": float(np.mean(values)), "n": len(values),
            "items": item_table("mean", [{"d": dim, "i": i} for i in range(len(values))], value=values)}


def study(cells: dict[tuple[str, int], dict[str, list[float]]], dense: dict[str, list[float]]):
    """Cell rows and a dense result with one 'mean' task per dimension."""
    rows = [{"key": f"{s}/{seed}", "strategy": s, "kind": "source", "pruner": G[0], "pattern": G[1], "sparsity": G[2],
             "seed": seed, "status": "done",
             "result": {"scores": {"tasks": {f"t{d}": _task(d, v) for d, v in vals.items()}}, "calib_metrics": {}}}
            for (s, seed), vals in cells.items()]
    return rows, {"tasks": {f"t{d}": _task(d, v) for d, v in dense.items()}}


def test_bootstrap_se_of_a_mean_is_the_plug_in_formula():
    # dense scores 1 on every item, so a task's retention is 100 * the mean of the pruned item values; the ideal
    # bootstrap SE of a mean of n items is sigma_pop / sqrt(n) (sigma_pop: the standard deviation with ddof=0)
    rng = np.random.default_rng(1)
    n = 40
    x = rng.uniform(0, 1, size=n)
    flat = [0.5] * n
    rows, dense = study({("a", 0): {"General": x, "Commonsense": flat, "Code": flat, "Math": flat}},
                        {d: [1.0] * n for d in DIMS})
    boot = Bootstrap.from_rows(rows, dense, replicates=20000)
    reps = boot.strategy(G, "a", "General")
    assert reps[0] == pytest.approx(100 * x.mean())
    se = 100 * x.std(ddof=0) / math.sqrt(n)
    assert reps[1:].std() == pytest.approx(se, rel=0.03)
    # Total = mean of the four dimensions, the three constant ones add no spread: SE / 4
    assert boot.strategy(G, "a", "Total")[1:].std() == pytest.approx(se / 4, rel=0.03)
    iv = boot.retention(G, "a", "General")
    assert iv.lo < iv.value < iv.hi and (iv.hi - iv.lo) == pytest.approx(2 * 1.96 * se, rel=0.06)


def test_seed_resample_matches_its_enumeration():
    # one item per task (no item noise); two seeds retaining 40 and 60: the four equally likely seed resamples
    # give 40, 50, 50, 60, so the replicates are 40 / 50 / 60 with probabilities 1/4, 1/2, 1/4
    rows, dense = study({("a", 0): {d: [0.4] for d in DIMS}, ("a", 1): {d: [0.6] for d in DIMS}},
                        {d: [1.0] for d in DIMS})
    reps = Bootstrap.from_rows(rows, dense, replicates=8000).strategy(G, "a", "Total")
    assert reps[0] == pytest.approx(50.0)
    vals, counts = np.unique(np.round(reps[1:], 9), return_counts=True)
    assert list(vals) == [40.0, 50.0, 60.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.02)
    iv = interval(reps)
    assert (iv.lo, iv.hi) == (pytest.approx(40.0), pytest.approx(60.0))  # 2.5 % and 97.5 % quantiles


def test_differences_are_paired_over_items():
    # b keeps every item 5 points of dense score below a: each strategy's own interval is wide, their difference
    # is exactly 5 points in every replicate (the same item resample applies to both)
    rng = np.random.default_rng(2)
    x = rng.uniform(0.3, 0.9, size=30)
    rows, dense = study({("a", 0): {d: x for d in DIMS}, ("b", 0): {d: x - 0.05 for d in DIMS}},
                        {d: [1.0] * 30 for d in DIMS})
    boot = Bootstrap.from_rows(rows, dense, replicates=500)
    a = boot.retention(G, "a", "Total")
    assert a.hi - a.lo > 5
    d = boot.difference(G, "a", "b")
    assert (d.value, d.lo, d.hi) == (pytest.approx(5.0), pytest.approx(5.0), pytest.approx(5.0)) and d.significant
    # deterministic: the same data give the same replicates
    again = Bootstrap.from_rows(rows, dense, replicates=500)
    assert np.array_equal(again.strategy(G, "a", "Total"), boot.strategy(G, "a", "Total"))
    assert not interval(np.array([0.0, -1.0, 1.0, 2.0])).significant


def test_a_dimension_without_tasks_leaves_total_not_measured():
    rows, dense = study({("a", 0): {d: [0.5] for d in DIMS[:3]}}, {d: [1.0] for d in DIMS[:3]})
    boot = Bootstrap.from_rows(rows, dense, replicates=10)
    assert boot.points()["a/0"]["General"] == pytest.approx(50.0) and boot.points()["a/0"]["Total"] is None


def test_fixture_study_intervals_and_spearman(tmp_path, fake_study):
    fake_study(tmp_path / "s", with_failed=False)
    with Store(tmp_path / "s") as store:
        rows = store.cells()
        dense = next(iter(store.conn.execute("SELECT key FROM dense")))[0]
        dense = store.get_dense(dense)["result"]
    boot = Bootstrap.from_rows(rows, dense, replicates=400)
    df = A.cells_frame(rows, boot.points())
    # the per-item scores reproduce the fixture's retentions on the full item set
    assert df.ret_Total.to_numpy() == pytest.approx(A.cells_frame(rows).ret_Total.to_numpy())
    cmp = A.comparisons(df, boot, "pydoc-topics")
    assert list(cmp.comparison) == ["mix − best single source", "mix − reference", "IGSP − Self-Cal", "IGSP − SGS"]
    # by hand: uniform keeps 75 everywhere (+5 for sparsity 0.5), stdlib (45 + 81 + 30 + 48) / 4 + 5 = 56
    assert cmp.value.iloc[0] == pytest.approx(75.0 - 56.0) and cmp.significant.all()
    srcs = sorted(A.source_means(df, G).index)
    iv, p, n = boot.spearman(G, srcs, "agg4", "General")
    ref = stats.spearmanr([A.source_means(df, G).loc[s, "m_agg4"] for s in srcs],
                          [A.source_means(df, G).loc[s, "ret_General"] for s in srcs])
    assert n == 5 and iv.value == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert -1 <= iv.lo <= iv.value <= iv.hi <= 1


def test_a_dimension_at_the_floor_leaves_total_unmeasured():
    rows, dense = study({("a", 0): {"General": [0.1], "Commonsense": [0.5], "Code": [0.25], "Math": [1.0]}},
                        {d: [1.0] for d in DIMS})
    for name, t in dense["tasks"].items():
        t["floor"] = {"above": name != "tGeneral"}
    boot = Bootstrap.from_rows(rows, dense, replicates=10)
    assert boot.floored == ["General"]
    pts = boot.points()["a/0"]
    assert pts["General"] == pytest.approx(10.0) and pts["Total"] is None  # never a mean of the other three
