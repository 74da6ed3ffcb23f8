"""Per-item scores of a task and the one rule per scorer that turns a (re)sample of them into the task's score;
the per-item choice-mass measure and the item resampling the bootstraps share.

A task's result carries `items = {"ids": [...], "agg": NAME, <column>: [...]}`; `score_of(items, counts)` gives
the task score of the items weighted by `counts` (one row per bootstrap resample; all ones = the task's own
score). Ids are content digests of the formatted requests, so equal ids mean the same prompt on the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from calmix.errors import CalmixError
from calmix.fingerprint import digest
from calmix.registry import Registry
from calmix.runrecord import to_jsonable

ID_LENGTH = 12


@dataclass(frozen=True)
class Aggregate:
    """How a task score follows from per-item column sums (`sums[col]`) and the item count `n`."""

    columns: tuple[str, ...]
    score: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


def _mean(s: dict, n: np.ndarray) -> np.ndarray:
    return s["value"] / n


def _mean_cn(s: dict, n: np.ndarray) -> np.ndarray:
    acc, chance = s["value"] / n, s["chance"] / n
    return (acc - chance) / (1.0 - chance)


def _exp_neg_nll(s: dict, n: np.ndarray) -> np.ndarray:
    return np.exp(-s["nll"] / s["tokens"])


def choice_mass_cn(logprobs: Sequence[float], gold: int) -> float:
    """Chance-corrected share of probability mass on the gold choice: (m − 1/K) / (1 − 1/K), m = p_gold / Σ p_i,
    p_i = exp(log-likelihood of choice i given the context), K choices.

    Not length-normalised, on purpose: the p_i are the model's own probabilities of the choice strings, so m is
    the model's conditional probability of the gold answer given that the answer is one of the K choices (the
    expected accuracy of sampling from the model restricted to the choices), a probability that sums to 1 over
    the choices and moves continuously where accuracy moves in steps. Per-token or per-character normalised
    log-likelihoods are no probabilities, and they flatten the mass towards 1/K: on the default model the dense
    margin over chance of the small-offline MC tasks is 1.5-3.4x smaller per token and 4-10x smaller per
    character (general_knowledge 0.245 / 0.168 / 0.059, goal_step_wikihow step_inference 0.430 / 0.127 / 0.040).
    1 = all mass on the gold choice, 0 = spread as chance, < 0 = below chance.
    """
    lp = np.asarray(logprobs, dtype=float)
    k = len(lp)
    if k < 2:
        raise CalmixError(f"a multiple-choice item needs at least 2 choices, got {k}")
    p = np.exp(lp - lp.max())
    m = float(p[gold] / p.sum())
    return (m - 1.0 / k) / (1.0 - 1.0 / k)


AGGREGATES: Registry[Aggregate] = Registry("item aggregate")
AGGREGATES.add("mean", Aggregate(("value",), _mean))                  # accuracy, exact match, pass@1
AGGREGATES.add("mean_cn", Aggregate(("value", "chance"), _mean_cn))   # (acc - chance) / (1 - chance) of the means
AGGREGATES.add("mass_cn", Aggregate(("value",), _mean))             # mean of per-item choice_mass_cn
AGGREGATES.add("exp_neg_nll", Aggregate(("nll", "tokens"), _exp_neg_nll))  # token-weighted NLL, score exp(-NLL)


def resample_counts(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates + 1, n) multiplicities: row 0 all ones, the others multinomial resamples of n items."""
    out = np.ones((replicates + 1, n))
    out[1:] = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates)
    return out


def item_id(request: dict) -> str:
    """Content id of one formatted request (prompt, choices, reference): equal ids, same item."""
    return digest(to_jsonable(request), ID_LENGTH)


def item_table(agg: str, requests: Sequence[dict], **columns: Sequence[float]) -> dict:
    """The per-item record a task result carries: ids, the aggregate's name and its columns."""
    spec = AGGREGATES.get(agg)
    if set(columns) != set(spec.columns):
        raise ValueError(f"aggregate {agg} needs columns {spec.columns}, got {sorted(columns)}")
    return {"ids": [item_id(r) for r in requests], "agg": agg,
            **{c: [float(v) for v in columns[c]] for c in spec.columns}}


def score_of(items: dict, counts: np.ndarray | None = None) -> float | np.ndarray:
    """The task score of `items` (float), or of each row of `counts` (resample multiplicities, shape (B, n))."""
    spec = AGGREGATES.get(items["agg"])
    n_items = len(items["ids"])
    if n_items == 0:
        raise CalmixError("no items to score: the task produced no per-item values")
    w = np.ones(n_items) if counts is None else np.asarray(counts, dtype=float)
    sums = {c: w @ np.asarray(items[c], dtype=float) for c in spec.columns}
    with np.errstate(divide="ignore", invalid="ignore"):
        out = spec.score(sums, w.sum(axis=-1))
    return float(out) if counts is None else out
