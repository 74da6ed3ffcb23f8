"""Retention arithmetic: per task 100 · pruned / dense, a dimension the mean of its tasks' retentions, Total the
mean of the four dimensions (None when any is not measured); pruned and dense must cover the same tasks and items."""

from __future__ import annotations

import math

import pytest

from calmix.errors import CalmixError
from calmix.evals.evaluate import EvalResult, dimension_scores
from calmix.evals.itemscores import item_table, score_of
from calmix.evals.retention import ratio, retention


def result(tasks: dict[str, tuple[str, float | None]], config: dict | None = None) -> EvalResult:
    t = {name: {"dimension": dim, "score": s, "metric": "m", "metrics": {}, "n": 1, "failures": []}
         for name, (dim, s) in tasks.items()}
    for entry in t.values():
        if entry["score"] is None:
            entry["error"] = "RuntimeError: boom"
    return EvalResult(suite="small", tasks=t, dimensions=dimension_scores(t), config=config or {})


FOUR = {"g": ("General", 0.5), "c": ("Commonsense", 0.4), "k": ("Code", 0.2), "m": ("Math", 0.1)}


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
    assert r["Commonsense"] == pytest.approx((75 + 75) / 2)  # c1: 0.3/0.4, c2: 0.15/0.2
    assert r["Code"] == pytest.approx(100.0)
    assert r["Math"] == pytest.approx(50.0)
    assert r["Total"] == pytest.approx((50 + 75 + 100 + 50) / 4)
    assert r["tasks"] == {"g": pytest.approx(50), "c1": pytest.approx(75), "c2": pytest.approx(75),
                          "k": pytest.approx(100), "m": pytest.approx(50)}
    assert r["missing"] == []
    assert retention(pruned.to_dict(), EvalResult.from_dict(dense.to_dict()))["Total"] == pytest.approx(r["Total"])


def test_several_probes_per_dimension_weigh_equally():
    # NLL 3.0 -> 3.1 keeps exp(-0.1) = 90.48 %, NLL 5.0 -> 6.0 keeps exp(-1) = 36.79 %: the dimension keeps their
    # mean, 63.64 % (the ratio of mean exp(-NLL) would give 84.1 %, the easy probe dominating)
    dense = result({**FOUR, "p1": ("General", math.exp(-3.0)), "p2": ("General", math.exp(-5.0)), "g": ("Math", 0.5)})
    pruned = result({**FOUR, "p1": ("General", math.exp(-3.1)), "p2": ("General", math.exp(-6.0)), "g": ("Math", 0.5)})
    r = retention(pruned, dense)
    assert r["tasks"]["p1"] == pytest.approx(90.4837, abs=1e-4) and r["tasks"]["p2"] == pytest.approx(36.7879, abs=1e-4)
    assert r["General"] == pytest.approx((90.4837418 + 36.7879441) / 2)
    assert r["Total"] == pytest.approx((63.6358430 + 100 + 100 + 100) / 4)


def test_probe_retention_is_exp_of_nll_difference():
    nll_dense, nll_pruned = 1.7, 2.3
    dense = result({**FOUR, "m": ("Math", math.exp(-nll_dense))})
    pruned = result({**FOUR, "m": ("Math", math.exp(-nll_pruned))})
    assert retention(pruned, dense)["Math"] == pytest.approx(100 * math.exp(nll_dense - nll_pruned))


def test_a_task_failed_on_one_side_leaves_its_dimension_and_total_not_measured():
    # General: a keeps 0.4 / 0.5 = 80 %, b failed on the pruned model. Dropping b on that side only would compare
    # 0.4 with the dense mean (0.5 + 0.1) / 2 = 0.3 and report 133 %.
    dense = result({**FOUR, "g": ("General", 0.5), "b": ("General", 0.1)})
    pruned = result({**FOUR, "g": ("General", 0.4), "b": ("General", None)})
    r = retention(pruned, dense)
    assert r["tasks"]["g"] == pytest.approx(80.0) and r["tasks"]["b"] is None
    assert r["General"] is None and r["Total"] is None and r["missing"] == ["General"]
    assert "failed on the pruned model" in r["reasons"]["b"] and "b" in r["reasons"]["General"]
    assert r["Commonsense"] == pytest.approx(100.0)
    # the same failure on the dense side
    assert retention(dense, pruned)["General"] is None


def test_dimension_not_measured_makes_total_none():
    # a dense score at or below 0 (chance-normalised MC at the floor) cannot be a denominator
    dense = result({**FOUR, "c": ("Commonsense", -0.01)})
    pruned = result({**FOUR, "c": ("Commonsense", 0.1), "k": ("Code", 0.1)})
    r = retention(pruned, dense)
    assert r["Commonsense"] is None and r["Code"] == pytest.approx(50.0)
    assert r["missing"] == ["Commonsense"] and r["Total"] is None  # never the mean of the other three
    assert "not positive" in r["reasons"]["c"]
    # a dimension without any task is not measured either
    three = {k: v for k, v in FOUR.items() if k != "m"}
    r = retention(result(three), result(three))
    assert r["Math"] is None and r["Total"] is None and "no task" in r["reasons"]["Math"]
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None


def test_mismatched_tasks_items_or_settings_are_refused():
    with pytest.raises(CalmixError, match="only the dense model has b"):
        retention(result(FOUR), result({**FOUR, "b": ("General", 0.1)}))
    with pytest.raises(CalmixError, match="evaluated with limit 5, the pruned model with 3"):
        retention(result(FOUR, {"limit": 3, "seed": 0}), result(FOUR, {"limit": 5, "seed": 0}))
    with pytest.raises(CalmixError, match="seed"):
        retention(result(FOUR, {"seed": 1}), result(FOUR, {"seed": 0}))
    a, b = result(FOUR), result(FOUR)
    a.tasks["g"]["items"] = item_table("mean", [{"q": 1}, {"q": 2}], value=[1, 0])
    b.tasks["g"]["items"] = item_table("mean", [{"q": 1}, {"q": 3}], value=[1, 0])
    with pytest.raises(CalmixError, match="task g: pruned and dense scores are on different items.*1 shared"):
        retention(a, b)
    b.tasks["g"]["items"] = item_table("mean", [{"q": 1}, {"q": 2}], value=[0, 0])
    assert retention(a, b)["Total"] is not None  # same ids: compared


def test_item_scores_by_hand():
    acc = item_table("mean", [{"i": i} for i in range(4)], value=[1, 0, 1, 1])
    assert score_of(acc) == pytest.approx(0.75)
    cn = item_table("mean_cn", [{"i": i} for i in range(4)], value=[1, 0, 1, 1], chance=[0.25, 0.25, 0.5, 0.5])
    assert score_of(cn) == pytest.approx((0.75 - 0.375) / (1 - 0.375))
    nll = item_table("exp_neg_nll", [{"i": i} for i in range(2)], nll=[3.0, 9.0], tokens=[1, 3])
    assert score_of(nll) == pytest.approx(math.exp(-12 / 4))  # token-weighted, not the mean of per-item NLLs
    # resample multiplicities: item 1 twice, item 0 never
    assert score_of(nll, [[0, 2]])[0] == pytest.approx(math.exp(-3.0))
    assert list(score_of(acc, [[1, 1, 1, 1], [2, 2, 0, 0]])) == pytest.approx([0.75, 0.5])
    assert acc["ids"][0] != acc["ids"][1] and acc["ids"] == item_table("mean", [{"i": i} for i in range(4)],
                                                                        value=[0] * 4)["ids"]


def floor_flags(r: EvalResult, above: dict[str, bool]) -> EvalResult:
    for name, ok in above.items():
        r.tasks[name]["floor"] = {"stat": "chance-corrected score", "value": 0.2 if ok else 0.01, "lo": 0.1 if ok
                                  else -0.03, "hi": 0.3 if ok else 0.05, "margin": 0.05, "above": ok}
    return r


def test_a_dimension_at_the_floor_is_flagged_and_leaves_total_unmeasured():
    two_general = {**FOUR, "g2": ("General", 0.02)}
    dense = floor_flags(result(two_general), {"g": False, "g2": False, "c": True, "k": True, "m": True})
    pruned = result({**two_general, "g": ("General", 0.25), "g2": ("General", 0.03), "c": ("Commonsense", 0.2)})
    r = retention(pruned, dense)
    assert r["floored"] == ["General"] and "floor" in r["reasons"]["General"]
    assert r["General"] == pytest.approx((50 + 150) / 2)  # its arithmetic is kept, for the record
    assert r["Total"] is None  # a floored dimension is not measured: never a mean of the other three
    # one General task above the floor: General counts again
    dense = floor_flags(result(two_general), {"g": True, "g2": False})
    r = retention(pruned, dense)
    assert r["floored"] == [] and r["Total"] == pytest.approx((100 + 50 + 100 + 100) / 4)
    # every dimension at the floor: nothing to average
    dense = floor_flags(result(FOUR), {n: False for n in FOUR})
    assert retention(result(FOUR), dense)["Total"] is None


def test_nll_retention_is_higher_is_better_with_dense_at_100():
    # token-weighted NLL: dense 6 nats over 4 tokens (1.5 per token), pruned 8 nats (2.0 per token)
    reqs = [{"i": 0}, {"i": 1}]
    dense = item_table("exp_neg_nll", reqs, nll=[2.0, 4.0], tokens=[1, 3])
    pruned = item_table("exp_neg_nll", reqs, nll=[3.0, 5.0], tokens=[1, 3])
    kept = 100 * score_of(pruned) / score_of(dense)
    assert kept == pytest.approx(100 * math.exp(-(2.0 - 1.5))) and kept == pytest.approx(60.653, abs=1e-3)
    assert 100 * score_of(dense) / score_of(dense) == pytest.approx(100.0)
    better = item_table("exp_neg_nll", reqs, nll=[1.0, 4.0], tokens=[1, 3])  # lower NLL than dense: above 100
    assert 100 * score_of(better) / score_of(dense) == pytest.approx(100 * math.exp(0.25))
