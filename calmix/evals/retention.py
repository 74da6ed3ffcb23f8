"""Retention of a pruned model against its dense parent: per task 100 · pruned / dense on the same items, per
dimension the mean of its tasks' retentions, Total the mean of the four dimensions.

A dimension is measured only when every one of its tasks is (scored on both sides, dense score positive). A
dimension on whose every task the dense model is at the floor (calmix.evals.floor) keeps its arithmetic retention
but is listed under 'floored' and left out of Total, which is then the mean of the other dimensions and says so;
otherwise Total is measured only when all four dimensions are. Pruned and dense must come from the same tasks and
items.

Every measure is higher = better with the dense model at 100%: for accuracy-like and chance-corrected scores the
ratio of the scores; for likelihood probes (score exp(-NLL per token)) the ratio is exp(-(NLL_pruned - NLL_dense)),
so an NLL 0.1 nats per token worse keeps 90.5% and an equal NLL keeps 100%.
"""

from __future__ import annotations

from typing import Any, Iterable

from calmix.data.dimensions import DIMENSIONS
from calmix.errors import CalmixError
from calmix.evals.floor import floored_dimensions

# the evaluation settings that decide which items are scored; pruned and dense must agree on each
SAME_SETTINGS = ("suite", "tasks", "limit", "seed")
FIX = "evaluate the pruned and the dense model with the same --suite, --tasks, --limit and --seed"


def _as_dict(result: Any) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def ratio(pruned: float | None, dense: float | None) -> float | None:
    """100 · pruned / dense; None when either is missing or the dense score is not positive."""
    if pruned is None or dense is None or dense <= 0:
        return None
    return 100.0 * pruned / dense


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values; None when there are none or any is None (a part not measured leaves the whole so)."""
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


def check_settings(pruned_config: dict, dense_config: dict, what: str = "dense scores") -> None:
    """CalmixError when the two evaluations' suite, tasks, limit or seed differ (a setting absent on a side is
    not compared)."""
    for key in SAME_SETTINGS:
        if key in pruned_config and key in dense_config and pruned_config[key] != dense_config[key]:
            raise CalmixError(f"the {what} were evaluated with {key} {dense_config[key]!r}, the pruned model with "
                              f"{pruned_config[key]!r}: {FIX}")


def check_same_items(pruned: Any, dense: Any) -> None:
    """CalmixError unless pruned and dense hold the same tasks and, where both carry per-item ids, the same items."""
    p, d = _as_dict(pruned), _as_dict(dense)
    check_settings(p.get("config") or {}, d.get("config") or {})
    only_p, only_d = sorted(set(p["tasks"]) - set(d["tasks"])), sorted(set(d["tasks"]) - set(p["tasks"]))
    if only_p or only_d:
        parts = ([f"only the pruned model has {', '.join(only_p)}"] if only_p else []) + (
            [f"only the dense model has {', '.join(only_d)}"] if only_d else [])
        raise CalmixError(f"pruned and dense scores cover different tasks ({'; '.join(parts)}): {FIX}")
    for name, t in p["tasks"].items():
        ids_p = (t.get("items") or {}).get("ids")
        ids_d = (d["tasks"][name].get("items") or {}).get("ids")
        if ids_p is not None and ids_d is not None and ids_p != ids_d:
            common = len(set(ids_p) & set(ids_d))
            raise CalmixError(f"task {name}: pruned and dense scores are on different items ({len(ids_p)} vs "
                              f"{len(ids_d)} items, {common} shared): {FIX} and the same task definitions")


def task_retention(pruned_task: dict, dense_task: dict) -> tuple[float | None, str | None]:
    """A task's retention and, when it is None, why."""
    for side, t in (("pruned", pruned_task), ("dense", dense_task)):
        if t.get("error") or t.get("score") is None:
            return None, f"failed on the {side} model"
    value = ratio(pruned_task["score"], dense_task["score"])
    return value, None if value is not None else f"dense score {dense_task['score']:.4g} is not positive"


def retention(pruned: Any, dense: Any) -> dict:
    """Per-task retention (%) under 'tasks', per dimension the mean of its tasks' retentions, Total the mean of the
    four; None where not measured ('missing' lists those dimensions, 'reasons' says why). A dimension at the floor
    ('floored') keeps its number but leaves Total None.

    Raises CalmixError when pruned and dense cover different tasks or items (check_same_items).
    """
    check_same_items(pruned, dense)
    p, d = _as_dict(pruned), _as_dict(dense)
    tasks: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name, t in p["tasks"].items():
        tasks[name], why = task_retention(t, d["tasks"][name])
        if why:
            reasons[name] = why
    out: dict[str, Any] = {}
    for dim in DIMENSIONS:
        names = [n for n, t in p["tasks"].items() if t.get("dimension") == dim]
        out[dim] = mean_or_none(tasks[n] for n in names)
        if out[dim] is None:
            reasons[dim] = ("no task of this dimension in the evaluation" if not names else
                            "task " + ", ".join(n for n in names if tasks[n] is None) + " not measured")
    floored = floored_dimensions(d["tasks"])
    for dim in floored:
        reasons[dim] = "the dense model is at the floor on every task of this dimension (Total not measured)"
    out["Total"] = None if floored else mean_or_none(out[dim] for dim in DIMENSIONS)
    out["missing"] = [dim for dim in DIMENSIONS if out[dim] is None]
    out["floored"] = floored
    out["tasks"] = tasks
    out["reasons"] = reasons
    return out
