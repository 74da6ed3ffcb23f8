"""The floor flag on hand-built cases (above, at and below the floor), the unigram baseline and the choice mass."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calmix.errors import CalmixError
from calmix.evals.floor import (describe, floor_of_nll, floor_of_rate, floor_of_scores, floored_dimensions,
                                unigram_nll)
from calmix.evals.itemscores import choice_mass_cn, item_table, score_of


def test_chance_corrected_scores_above_at_and_below_the_floor():
    above = floor_of_scores([0.3, 0.5] * 20)
    assert above["value"] == pytest.approx(0.4) and 0.3 <= above["lo"] < 0.4 < above["hi"] <= 0.5
    assert above["above"] and above["margin"] == 0.05 and above["stat"] == "chance-corrected score"
    at = floor_of_scores([0.5, -0.5] * 20)  # mean 0: mass spread as chance on average
    assert at["value"] == pytest.approx(0.0) and at["lo"] < 0 < at["hi"] and not at["above"]
    below = floor_of_scores([-0.2] * 30)
    assert below["value"] == pytest.approx(-0.2) and not below["above"]
    thin = floor_of_scores([0.04] * 30)  # above 0 with a tight interval, but not by the margin
    assert thin["lo"] == pytest.approx(0.04) and not thin["above"]
    # mean 0.2 > margin, but a resample without the one good item (p = 0.9^10 = 35%) scores 0: lo = 0
    lucky = floor_of_scores([2.0] + [0.0] * 9)
    assert lucky["value"] == pytest.approx(0.2) and lucky["lo"] == 0.0 and not lucky["above"]


def test_rates_against_chance():
    assert floor_of_rate([1.0] * 20, 0.5)["value"] == pytest.approx(0.5)
    assert floor_of_rate([1.0] * 20, 0.5)["above"]
    half = floor_of_rate([1.0, 0.0] * 20, [0.5] * 40)  # a coin on two choices
    assert half["value"] == pytest.approx(0.0) and not half["above"]
    assert not floor_of_rate([0.0] * 10, 0.0)["above"]  # pass@1 = 0


def test_unigram_baseline_by_hand():
    # tokens 1, 1, 2 over a vocabulary of 4: add-half counts 2.5 and 1.5 of a total 3 + 0.5 * 4 = 5
    got = unigram_nll([[1, 1], [2]], vocab=4)
    assert got == pytest.approx([-2 * math.log(0.5), -math.log(0.3)])


def test_nll_probe_above_at_and_below_the_unigram_floor():
    above = floor_of_nll([1.0, 2.0], [1, 2], [3.0, 6.0])  # (3 + 6 - 1 - 2) / 3 tokens = 2 nats per token
    assert above["value"] == pytest.approx(2.0) and above["above"] and above["stat"].startswith("unigram")
    at = floor_of_nll([3.0, 6.0] * 5, [1, 2] * 5, [3.0, 6.0] * 5)
    assert at["value"] == pytest.approx(0.0) and not at["above"]
    below = floor_of_nll([4.0] * 5, [1] * 5, [3.0] * 5)
    assert below["value"] == pytest.approx(-1.0) and not below["above"]


def test_floored_dimensions():
    up, down = {"floor": {"above": True}}, {"floor": {"above": False}}
    tasks = {"g1": {"dimension": "General", **down}, "g2": {"dimension": "General", **down},
             "c1": {"dimension": "Commonsense", **down}, "c2": {"dimension": "Commonsense", **up},
             "k": {"dimension": "Code"}, "m": {"dimension": "Math", **up}}
    assert floored_dimensions(tasks) == ["General"]  # one task above keeps Commonsense; no record counts as above
    assert floored_dimensions({}) == []


def test_describe_says_at_or_above():
    t = {"floor": floor_of_scores([0.5, -0.5] * 20)}
    assert "at the floor" in describe("x", t) and "needs > 0.05" in describe("x", t)
    assert "above the floor" in describe("y", {"floor": floor_of_scores([0.4] * 5)})


def test_choice_mass_by_hand():
    assert choice_mass_cn([math.log(0.6), math.log(0.2), math.log(0.2)], 0) == pytest.approx((0.6 - 1 / 3) / (2 / 3))
    assert choice_mass_cn([math.log(0.3), math.log(0.1)], 0) == pytest.approx(0.5)  # m = 0.3 / 0.4, unnormalised p
    assert choice_mass_cn([-2.0, -2.0, -2.0, -2.0], 1) == pytest.approx(0.0)       # chance
    assert choice_mass_cn([-1000.0, 0.0], 0) == pytest.approx(-1.0)                 # all mass on a wrong choice
    assert choice_mass_cn([-5.0, -900.0, -900.0], 0) == pytest.approx(1.0)
    with pytest.raises(CalmixError, match="2 choices"):
        choice_mass_cn([-1.0], 0)


def test_choice_mass_retention_by_hand():
    reqs = [{"i": 0}, {"i": 1}]
    dense = item_table("mass_cn", reqs, value=[0.4, 0.6])
    pruned = item_table("mass_cn", reqs, value=[0.2, 0.3])
    assert score_of(dense) == pytest.approx(0.5) and 100 * score_of(pruned) / score_of(dense) == pytest.approx(50.0)
    counts = np.array([[2, 0], [0, 2]])  # resamples of item 0 twice, item 1 twice: 50% either way (paired)
    assert np.allclose(100 * score_of(pruned, counts) / score_of(dense, counts), [50.0, 50.0])
