"""Whether a model is measurably above chance/floor on a task, and which dimensions are at the floor.

Every task result carries `floor = {stat, value, lo, hi, margin, above}`: `value` is how far the task's score lies
above what a model without the capability gets, `[lo, hi]` its 95% percentile interval over a bootstrap of the
items, and `above` = value > margin and lo > 0. The statistic depends on the task's measure:

- chance-corrected scores (choice mass `mass_cn`, chance-normalised accuracy `mean_cn`): the score itself, whose
  floor is 0 (a model that spreads its mass evenly, or guesses); margin 0.05 (5 points of the way from chance to
  certainty);
- rates (`mean`: accuracy, exact match, pass@1): the rate minus the chance rate (the mean of 1/K for multiple
  choice, 0 for generation); margin 0.05;
- likelihood probes (`exp_neg_nll`): the unigram NLL per token minus the model's NLL per token of the references,
  where the unigram model is fitted on the very references it scores (add-half smoothing over the vocabulary), so
  it knows every token's frequency and nothing of context or order; margin 0.1 nats per token.

The dense model's flag is the one that counts (stored with the dense result); a dimension whose tasks are all
below it is at the floor, and retention leaves it out of Total (calmix.evals.retention).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from calmix.data.dimensions import DIMENSIONS
from calmix.evals.itemscores import resample_counts
from calmix.fingerprint import seed_from

LEVEL = 0.95
REPLICATES = 1000
MARGINS = {"chance-corrected score": 0.05, "rate above chance": 0.05, "unigram NLL − NLL per token": 0.1}


def _check(stat: str, reps: np.ndarray) -> dict:
    """The floor record of replicates (row 0 the data itself) of an above-floor statistic."""
    point, rest = float(reps[0]), reps[1:][np.isfinite(reps[1:])]
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = (np.percentile(rest, [tail, 100 - tail]) if rest.size else (math.nan, math.nan))
    margin = MARGINS[stat]
    return {"stat": stat, "value": point, "lo": float(lo), "hi": float(hi), "margin": margin,
            "above": bool(math.isfinite(point) and point > margin and float(lo) > 0)}


def _counts(n: int, key: str) -> np.ndarray:
    return resample_counts(n, REPLICATES, np.random.default_rng(seed_from("floor", key, n)))


def floor_of_scores(values: Sequence[float], key: str = "") -> dict:
    """Floor record of per-item chance-corrected scores (floor 0): their mean with its item-bootstrap interval."""
    v = np.asarray(values, dtype=float)
    counts = _counts(len(v), key)
    return _check("chance-corrected score", counts @ v / counts.sum(axis=1))


def floor_of_rate(values: Sequence[float], chance: Sequence[float] | float = 0.0, key: str = "") -> dict:
    """Floor record of per-item hits (0/1) against per-item chance rates: mean(hit − chance) with its interval."""
    v = np.asarray(values, dtype=float) - np.broadcast_to(np.asarray(chance, dtype=float), (len(values),))
    counts = _counts(len(v), key)
    return _check("rate above chance", counts @ v / counts.sum(axis=1))


def unigram_nll(references: Sequence[Sequence[int]], vocab: int) -> list[float]:
    """Per-reference NLL (nats, summed over its tokens) under the unigram model of all the references' tokens,
    add-half smoothed over a vocabulary of `vocab` ids."""
    counts = Counter(t for ref in references for t in ref)
    total = sum(counts.values()) + 0.5 * max(vocab, len(counts))
    return [float(sum(-math.log((counts[t] + 0.5) / total) for t in ref)) for ref in references]


def floor_of_nll(nll: Sequence[float], tokens: Sequence[float], baseline_nll: Sequence[float], key: str = "") -> dict:
    """Floor record of a likelihood probe: the token-weighted NLL gap (baseline − model, nats per token) between the
    per-item baseline NLLs and the model's, with its interval (items resampled, the gap paired per item)."""
    m, b, t = (np.asarray(x, dtype=float) for x in (nll, baseline_nll, tokens))
    counts = _counts(len(m), key)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _check("unigram NLL − NLL per token", counts @ (b - m) / (counts @ t))


def is_above(task: dict) -> bool | None:
    """A task result's floor verdict: True/False, None when it carries none (older results, failed tasks)."""
    fl = task.get("floor")
    return bool(fl["above"]) if isinstance(fl, dict) and "above" in fl else None


def floored_dimensions(dense_tasks: dict[str, dict]) -> list[str]:
    """Dimensions whose tasks the dense model scores all at or below the floor (tasks without a floor record, e.g.
    from results written before it existed, count as above, so such results keep their old Total)."""
    out = []
    for dim in DIMENSIONS:
        verdicts = [is_above(t) for t in dense_tasks.values() if t.get("dimension") == dim]
        if verdicts and all(v is False for v in verdicts):
            out.append(dim)
    return out


def describe(name: str, task: dict) -> str:
    """One line on a task's floor record: 'task: stat value [lo, hi], at/above the floor (margin m)'."""
    fl = task.get("floor") or {}
    if not fl:
        return f"{name}: no floor record"
    verdict = "above the floor" if fl["above"] else "at the floor"
    return (f"{name}: {fl['stat']} {fl['value']:.3f} [{fl['lo']:.3f}, {fl['hi']:.3f}], {verdict} "
            f"(needs > {fl['margin']:g} with the interval above 0)")
