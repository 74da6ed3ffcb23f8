"""Retention arithmetic (method.md §6): 100 · pruned / dense per dimension, Total = mean of the four."""

from __future__ import annotations

import math

import pytest

from calmix.evals.evaluate import EvalResult, dimension_scores
from calmix.evals.retention import ratio, retention


def result(tasks: dict[str, tuple[str, float | None]]) -> EvalResult:
    t = {name: {"dimension": dim, "score": s, "metric": "m", "metrics": {}, "n": 1, "failures": []}
         for name, (dim, s) in tasks.items()}
    return EvalResult(suite="small", tasks=t, dimensions=dimension_scores(t))


def test_dimension_scores_are_task_means():
    r = result({"a": ("Commonsense", 0.2), "b": ("Commonsense", 0.4), "c": ("Math", 0.1), "d": ("Code", None)})
    assert r.dimensions == {"General": None, "Commonsense": pytest.approx(0.3), "Code": None, "Math": 0.1}


def test_retention_by_hand():
    dense = result({"g": ("General", 0.5), "c1": ("Commonsense", 0.4), "c2": ("Commonsense", 0.2),
                    "k": ("Code", 0.25), "m": ("Math", 0.1)})
    pruned = result({"g": ("General", 0.25), "c1": ("Commonsense", 0.3), "c2": ("Commonsense", 0.15),
                     "k": ("Code", 0.25), "m": ("Math", 0.05)})
    r = retention(pruned, dense)
    assert r["General"] == pytest.approx(50.0)
    assert r["Commonsense"] == pytest.approx(100 * 0.225 / 0.3)  # 75
    assert r["Code"] == pytest.approx(100.0)
    assert r["Math"] == pytest.approx(50.0)
    assert r["Total"] == pytest.approx((50 + 75 + 100 + 50) / 4)
    assert r["tasks"] == {"g": pytest.approx(50), "c1": pytest.approx(75), "c2": pytest.approx(75),
                          "k": pytest.approx(100), "m": pytest.approx(50)}
    assert r["missing"] == []
    assert retention(pruned.to_dict(), EvalResult.from_dict(dense.to_dict()))["Total"] == pytest.approx(r["Total"])


def test_probe_retention_is_exp_of_nll_difference():
    nll_dense, nll_pruned = 1.7, 2.3
    dense = result({"p": ("Math", math.exp(-nll_dense))})
    pruned = result({"p": ("Math", math.exp(-nll_pruned))})
    assert retention(pruned, dense)["Math"] == pytest.approx(100 * math.exp(nll_dense - nll_pruned))


def test_missing_or_nonpositive_dense_dimension_is_left_out_of_total():
    dense = result({"g": ("General", 0.5), "c": ("Commonsense", -0.01), "k": ("Code", 0.2)})
    pruned = result({"g": ("General", 0.4), "c": ("Commonsense", 0.1), "k": ("Code", 0.1)})
    r = retention(pruned, dense)
    assert r["Commonsense"] is None and r["Math"] is None
    assert r["missing"] == ["Commonsense", "Math"]
    assert r["Total"] == pytest.approx((80 + 50) / 2)
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None
