"""Retention of a pruned model against its dense parent (method.md §6): 100 · score_pruned / score_dense."""

from __future__ import annotations

from typing import Any

from calmix.evals.tasks import DIMENSIONS


def _as_dict(result: Any) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def ratio(pruned: float | None, dense: float | None) -> float | None:
    """100 · pruned / dense; None when either is missing or the dense score is not positive."""
    if pruned is None or dense is None or dense <= 0:
        return None
    return 100.0 * pruned / dense


def retention(pruned: Any, dense: Any) -> dict:
    """Per-dimension retention (%), Total = mean of the four dimensions, and per-task retention under 'tasks'.

    Scores are the EvalResult scores: for likelihood probes score = exp(-NLL), so the ratio is exp(NLL_dense - NLL_pruned).
    A dimension whose dense score is missing or not positive has retention None and is left out of Total
    (listed under 'missing').
    """
    p, d = _as_dict(pruned), _as_dict(dense)
    out: dict[str, Any] = {}
    for dim in DIMENSIONS:
        out[dim] = ratio(p["dimensions"].get(dim), d["dimensions"].get(dim))
    present = [out[dim] for dim in DIMENSIONS if out[dim] is not None]
    out["Total"] = sum(present) / len(present) if present else None
    out["missing"] = [dim for dim in DIMENSIONS if out[dim] is None]
    out["tasks"] = {name: ratio(t.get("score"), d["tasks"].get(name, {}).get("score"))
                    for name, t in p["tasks"].items() if name in d["tasks"]}
    return out
