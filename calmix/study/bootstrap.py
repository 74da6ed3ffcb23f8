"""Paired bootstrap of a study's retentions over evaluation items and seeds.

Every cell of a study is scored on the same items as the dense model. One replicate draws, per task, one resample
of the item indices and applies it to the dense model and to every cell alike (so differences between strategies
are paired over items), recomputes each cell's task, dimension and Total retention, and then draws, per strategy,
a resample of its seeds. Replicate 0 is the data itself (every item and every seed once): the point estimate.
Cells without per-item values (stores written before they were kept) are held at their task-level retention.
Dimensions at the floor on the dense model (calmix.evals.floor) are left out of Total, as in evals.retention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from calmix.data.dimensions import DIMENSIONS
from calmix.evals.floor import floored_dimensions
from calmix.evals.itemscores import resample_counts, score_of
from calmix.fingerprint import seed_from

DIMS = (*DIMENSIONS, "Total")
LEVEL = 0.95
REPLICATES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    value: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (used for differences)."""
        return math.isfinite(self.lo) and math.isfinite(self.hi) and (self.lo > 0 or self.hi < 0)


def interval(reps: np.ndarray, level: float = LEVEL) -> Interval:
    """Replicate 0 as the value, the percentile interval of the others (NaN replicates ignored)."""
    point, rest = float(reps[0]), np.asarray(reps[1:], dtype=float)
    rest = rest[np.isfinite(rest)]
    if not math.isfinite(point) or rest.size == 0:
        return Interval(point, float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(rest, [tail, 100 - tail])
    return Interval(point, float(lo), float(hi))


def _items(task: dict | None) -> dict | None:
    items = (task or {}).get("items")
    return items if items and items.get("ids") else None


def _task_ratio(cell_task: dict | None, dense_task: dict, counts: np.ndarray | None, width: int) -> np.ndarray:
    """Retention replicates (width,) of one task of one cell: resampled where both sides carry the same items."""
    if not cell_task or cell_task.get("error") or cell_task.get("score") is None or dense_task.get("score") is None:
        return np.full(width, np.nan)
    ci, di = _items(cell_task), _items(dense_task)
    if counts is not None and ci is not None and ci["ids"] == di["ids"] and ci["agg"] == di["agg"]:
        p, d = score_of(ci, counts), score_of(di, counts)
    else:
        p, d = np.full(width, float(cell_task["score"])), np.full(width, float(dense_task["score"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, 100.0 * p / d, np.nan)


@dataclass
class Bootstrap:
    """Retention replicates of every finished cell, and of strategies, differences and correlations built on them."""

    cells: list[dict]                       # key, strategy, kind, pruner, pattern, sparsity, seed, metrics
    values: dict[str, np.ndarray]           # dimension -> (cells, replicates + 1)
    replicates: int
    seed: int = 0
    held: list[str] = field(default_factory=list)   # tasks not resampled over items
    floored: list[str] = field(default_factory=list)  # dimensions at the floor on the dense model (Total not measured)
    _choice: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_rows(cls, rows: list[dict], dense: dict | None, replicates: int = REPLICATES,
                  seed: int = 0) -> "Bootstrap":
        """Replicates of the done cell rows of a store against its dense result (None: stored retentions only)."""
        done = [r for r in rows if r.get("status") == "done" and r.get("result")]
        width = replicates + 1
        dense_tasks = (dense or {}).get("tasks") or {}
        counts, held = {}, []
        for name in sorted(dense_tasks):
            di = _items(dense_tasks[name])
            if di is None:
                held.append(name)
                continue
            counts[name] = resample_counts(len(di["ids"]), replicates, np.random.default_rng(seed_from("items", name, seed)))
        floored = floored_dimensions(dense_tasks)  # any of them leaves Total not measured (NaN)
        values = {d: np.full((len(done), width), np.nan) for d in DIMS}
        cells = []
        for i, r in enumerate(done):
            res = r["result"]
            cells.append({**{k: r[k] for k in ("key", "strategy", "kind", "pruner", "pattern", "sparsity", "seed")},
                          "metrics": {k: float(v) for k, v in (res.get("calib_metrics") or {}).items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)}})
            tasks = (res.get("scores") or {}).get("tasks")
            if tasks and dense_tasks:
                per_task = {n: _task_ratio(tasks.get(n), t, counts.get(n), width) for n, t in dense_tasks.items()}
                for dim in DIMENSIONS:
                    names = [n for n, t in dense_tasks.items() if t.get("dimension") == dim]
                    if names:
                        values[dim][i] = np.mean([per_task[n] for n in names], axis=0)
            else:  # no scores stored with the cell: its recorded retention, without item resampling
                for dim in DIMENSIONS:
                    v = (res.get("retention") or {}).get(dim)
                    values[dim][i] = float(v) if isinstance(v, (int, float)) else np.nan
            if not floored:
                values["Total"][i] = np.mean([values[d][i] for d in DIMENSIONS], axis=0)
        return cls(cells, values, replicates, seed, held, floored)

    def points(self) -> dict[str, dict[str, float | None]]:
        """Each cell's retentions on the data itself (replicate 0), by cell key: the study's point estimates."""
        return {c["key"]: {d: (float(self.values[d][i, 0]) if math.isfinite(self.values[d][i, 0]) else None)
                           for d in DIMS} for i, c in enumerate(self.cells)}

    def members(self, group: tuple, strategy: str) -> list[int]:
        """Indices of the cells of one strategy in one (pruner, pattern, sparsity) group."""
        return [i for i, c in enumerate(self.cells) if c["strategy"] == strategy
                and (c["pruner"], c["pattern"]) == group[:2] and math.isclose(c["sparsity"], group[2])]

    def seed_choice(self, group: tuple, strategy: str) -> np.ndarray:
        """(replicates + 1, k) resampled positions among the strategy's k seeds; row 0 takes each seed once."""
        key = (group, strategy)
        if key not in self._choice:
            k = len(self.members(group, strategy))
            rng = np.random.default_rng(seed_from("seeds", *group, strategy, self.seed))
            choice = np.empty((self.replicates + 1, k), dtype=int)
            choice[0] = np.arange(k)
            choice[1:] = rng.integers(0, k, size=(self.replicates, k)) if k else 0
            self._choice[key] = choice
        return self._choice[key]

    def strategy(self, group: tuple, strategy: str, dim: str) -> np.ndarray:
        """(replicates + 1,) replicates of a strategy's retention in a dimension, averaged over resampled seeds."""
        idx = self.members(group, strategy)
        if not idx:
            return np.full(self.replicates + 1, np.nan)
        v = self.values[dim][idx]                                   # (k, replicates + 1)
        choice = self.seed_choice(group, strategy)                  # (replicates + 1, k)
        return np.take_along_axis(v, choice.T, axis=0).mean(axis=0)

    def metric(self, group: tuple, strategy: str, name: str) -> np.ndarray:
        """(replicates + 1,) calibration metric of a strategy averaged over the same resampled seeds."""
        idx = self.members(group, strategy)
        m = np.array([self.cells[i]["metrics"].get(name, np.nan) for i in idx])
        return m[self.seed_choice(group, strategy)].mean(axis=1) if idx else np.full(self.replicates + 1, np.nan)

    def retention(self, group: tuple, strategy: str, dim: str) -> Interval:
        """A strategy's retention in a dimension with its interval."""
        return interval(self.strategy(group, strategy, dim))

    def difference(self, group: tuple, a: str, b: str, dim: str = "Total") -> Interval:
        """Retention of strategy a minus strategy b (points), paired over items."""
        return interval(self.strategy(group, a, dim) - self.strategy(group, b, dim))

    def spearman(self, group: tuple, sources: list[str], metric: str, dim: str) -> tuple[Interval, float, int]:
        """Spearman rho of a metric vs a dimension's retention over sources (interval: items, seeds and sources
        resampled), its two-sided p on the data (scipy) and n."""
        x = np.array([self.metric(group, s, metric) for s in sources])     # (n, replicates + 1)
        y = np.array([self.strategy(group, s, dim) for s in sources])
        n = len(sources)
        if n < 3 or not np.isfinite(x[:, 0]).all() or not np.isfinite(y[:, 0]).all() \
                or np.ptp(x[:, 0]) == 0 or np.ptp(y[:, 0]) == 0:
            return Interval(float("nan"), float("nan"), float("nan")), float("nan"), n
        p = float(stats.spearmanr(x[:, 0], y[:, 0]).pvalue)
        pick = np.random.default_rng(seed_from("sources", *group, metric, dim, self.seed)).integers(
            0, n, size=(self.replicates + 1, n))
        pick[0] = np.arange(n)
        cols = np.arange(self.replicates + 1)[:, None]
        rho = _rowwise_spearman(x.T[cols, pick], y.T[cols, pick])
        return interval(rho), p, n


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair (average ranks for ties); NaN where a row is constant or not finite."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx * ry).sum(axis=1) / np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
    rho[bad] = np.nan
    return rho
