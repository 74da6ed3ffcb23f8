"""Study analysis: cells to a table, Spearman rho of calibration metrics vs retention, strategy comparisons."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

DIMS = ("General", "Commonsense", "Code", "Math", "Total")
GROUP = ["pruner", "pattern", "sparsity"]
RET = "ret_"
MET = "m_"


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def cells_frame(rows: Iterable[dict], retentions: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per finished cell: grid columns, `ret_<dim>` retentions (the stored ones, or `retentions[key]`, e.g.
    recomputed from the stored scores) and `m_<metric>` calibration metrics."""
    recs = []
    for r in rows:
        if r.get("status") != "done" or not r.get("result"):
            continue
        res = r["result"]
        rec = {k: r[k] for k in ("key", "strategy", "kind", "spec", "pruner", "sparsity", "pattern", "seed")}
        ret = (retentions or {}).get(r["key"], res.get("retention"))
        for dim, v in (ret or {}).items():
            if _num(v):
                rec[RET + dim] = float(v)
        for name, v in (res.get("calib_metrics") or {}).items():
            if _num(v):
                rec[MET + name] = float(v)
        recs.append(rec)
    df = pd.DataFrame.from_records(recs)
    if df.empty:
        return pd.DataFrame(columns=["key", "strategy", "kind", "spec", "pruner", "sparsity", "pattern", "seed"])
    return df


def dims_of(df: pd.DataFrame) -> list[str]:
    """Retention dimensions present, in the canonical order (General, Commonsense, Code, Math, Total, extras)."""
    present = [c[len(RET):] for c in df.columns if c.startswith(RET)]
    return [d for d in DIMS if d in present] + sorted(d for d in present if d not in DIMS)


def metrics_of(df: pd.DataFrame) -> list[str]:
    """Calibration metrics present, in column order."""
    return [c[len(MET):] for c in df.columns if c.startswith(MET)]


def groups(df: pd.DataFrame) -> list[tuple]:
    """(pruner, pattern, sparsity) groups present, sorted."""
    if df.empty:
        return []
    return sorted({tuple(x) for x in df[GROUP].itertuples(index=False, name=None)}, key=lambda g: (g[0], g[1], g[2]))


def select(df: pd.DataFrame, group: tuple) -> pd.DataFrame:
    """The rows of a table (cells, retention, Spearman, ...) that belong to one (pruner, pattern, sparsity) group."""
    pruner, pattern, sparsity = group
    return df[(df.pruner == pruner) & (df.pattern == pattern) & np.isclose(df.sparsity, sparsity)]


def source_means(df: pd.DataFrame, group: tuple) -> pd.DataFrame:
    """Single sources of one group, metrics and retentions averaged over seeds (one row per source)."""
    sub = select(df, group)
    sub = sub[sub.kind == "source"]
    cols = [c for c in sub.columns if c.startswith((RET, MET))]
    return sub.groupby("strategy", sort=True)[cols].mean()


def spearman(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, int]:
    """Spearman rho and two-sided p (scipy) over pairs where both values are finite; NaN when undefined."""
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), n
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), n


def spearman_table(df: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho, p and n of every metric against every dimension's retention, over single sources
    (each source's values averaged over seeds first), per (pruner, pattern, sparsity)."""
    rows = []
    for g in groups(df):
        means = source_means(df, g)
        for metric in metrics_of(df):
            for dim in dims_of(df):
                if MET + metric not in means or RET + dim not in means:
                    continue
                rho, p, n = spearman(means[MET + metric], means[RET + dim])
                rows.append({"pruner": g[0], "pattern": g[1], "sparsity": g[2], "metric": metric, "dimension": dim,
                             "rho": rho, "p": p, "n": n})
    return pd.DataFrame(rows, columns=GROUP + ["metric", "dimension", "rho", "p", "n"])


def retention_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per group and strategy: mean and std over seeds of each dimension's retention, and the seed count."""
    if df.empty:
        return pd.DataFrame()
    dims = dims_of(df)
    agg = df.groupby(GROUP + ["strategy", "kind"], sort=False)[[RET + d for d in dims]]
    mean = agg.mean().rename(columns=lambda c: c[len(RET):])
    std = agg.std(ddof=1).rename(columns=lambda c: c[len(RET):] + "_std")
    n = df.groupby(GROUP + ["strategy", "kind"], sort=False).size().rename("seeds")
    return pd.concat([mean, std, n], axis=1).reset_index()


def strategy_table(df: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Per group: the reference source, the best single source (by mean Total), every mix and generated
    strategy, with Total mean ± std over seeds and the gap to the reference (points of total retention)."""
    rt = retention_table(df)
    if rt.empty or "Total" not in rt:
        return pd.DataFrame()
    rows = []
    for g in groups(df):
        sub = select(rt, g)
        src = sub[sub.kind == "source"]
        ref_total = float("nan")
        picks: list[tuple[str, pd.Series]] = []
        if reference is not None and reference in set(src.strategy):
            ref = src[src.strategy == reference].iloc[0]
            ref_total = float(ref.Total)
            picks.append(("reference source", ref))
        if not src.empty:
            best = src.loc[src.Total.idxmax()]
            picks.append(("best single source", best))
        for _, r in sub[sub.kind == "mix"].iterrows():
            picks.append(("mix", r))
        for _, r in sub[sub.kind == "generated"].iterrows():
            picks.append(("self-generated", r))
        for role, r in picks:
            row = {"pruner": g[0], "pattern": g[1], "sparsity": g[2], "role": role, "strategy": r.strategy}
            for d in dims_of(df):
                row[d] = float(r[d])
                row[d + "_std"] = float(r.get(d + "_std", float("nan")))
            row["seeds"] = int(r.seeds)
            row["gap_to_reference"] = float(r.Total) - ref_total
            rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per group: mean seed-to-seed std of Total retention across strategies vs the range of strategy means."""
    rows = []
    if df.empty or RET + "Total" not in df:
        return pd.DataFrame(rows)
    for g in groups(df):
        sub = select(df, g)
        by = sub.groupby("strategy")[RET + "Total"]
        means, stds = by.mean(), by.std(ddof=1)
        rows.append({"pruner": g[0], "pattern": g[1], "sparsity": g[2], "strategies": int(len(means)),
                     "seed_std_mean": float(stds.mean()) if stds.notna().any() else float("nan"),
                     "seed_std_max": float(stds.max()) if stds.notna().any() else float("nan"),
                     "strategy_range": float(means.max() - means.min()) if len(means) else float("nan"),
                     "strategy_std": float(means.std(ddof=1)) if len(means) > 1 else float("nan")})
    return pd.DataFrame(rows)


def dimension_winners(df: pd.DataFrame, group: tuple) -> dict[str, tuple[str, float]]:
    """For each dimension, the single source with the highest mean retention in a group."""
    means = source_means(df, group)
    out = {}
    for d in dims_of(df):
        col = RET + d
        if col in means and means[col].notna().any():
            out[d] = (str(means[col].idxmax()), float(means[col].max()))
    return out


def floor_table(dense: dict | None) -> pd.DataFrame:
    """One row per dense task: dimension, score, its floor statistic with the 95% interval, margin, above or not
    (tasks without a floor record are left out)."""
    cols = ["task", "dimension", "score", "stat", "value", "lo", "hi", "margin", "above"]
    rows = [{"task": name, "dimension": t.get("dimension"), "score": t.get("score"),
             **{k: t["floor"][k] for k in ("stat", "value", "lo", "hi", "margin", "above")}}
            for name, t in ((dense or {}).get("tasks") or {}).items() if isinstance(t.get("floor"), dict)]
    return pd.DataFrame(rows, columns=cols)


GENERATED = (("igsp", "IGSP"), ("selfcal", "Self-Cal"), ("sgs", "SGS"))


def generated_label(df: pd.DataFrame, group: tuple, kind: str) -> str | None:
    """The strategy label of a generated strategy of one kind (`igsp`, `selfcal`, `sgs`) in a group, if any."""
    sub = select(df, group)
    labels = sorted({s for s in sub[sub.kind == "generated"].strategy if str(s).split(":")[0] == kind})
    return labels[0] if labels else None


def best_source(df: pd.DataFrame, group: tuple) -> str | None:
    """The single source with the highest mean Total retention in a group."""
    means = source_means(df, group)
    col = RET + "Total"
    return str(means[col].idxmax()) if col in means and means[col].notna().any() else None


def comparisons(df: pd.DataFrame, boot, reference: str | None) -> pd.DataFrame:
    """The differences a report headlines, per group, in points of Total retention with their paired bootstrap
    interval: each mix minus the best single source and minus the reference source, IGSP minus Self-Cal and SGS."""
    rows = []
    for g in groups(df):
        sub = select(df, g)
        pairs = []
        best = best_source(df, g)
        sources = set(sub[sub.kind == "source"].strategy)
        for mix in sorted(set(sub[sub.kind == "mix"].strategy)):
            if best is not None:
                pairs.append(("mix − best single source", mix, best))
            if reference is not None and reference in sources:
                pairs.append(("mix − reference", mix, reference))
        igsp = generated_label(df, g, "igsp")
        for kind, name in GENERATED[1:]:
            other = generated_label(df, g, kind)
            if igsp is not None and other is not None:
                pairs.append((f"IGSP − {name}", igsp, other))
        for label, a, b in pairs:
            iv = boot.difference(g, a, b, "Total")
            rows.append({"pruner": g[0], "pattern": g[1], "sparsity": g[2], "comparison": label, "a": a, "b": b,
                         "value": iv.value, "lo": iv.lo, "hi": iv.hi, "significant": iv.significant})
    return pd.DataFrame(rows, columns=GROUP + ["comparison", "a", "b", "value", "lo", "hi", "significant"])


def spearman_intervals(df: pd.DataFrame, boot) -> pd.DataFrame:
    """spearman_table with each rho's bootstrap interval (items, seeds and sources resampled)."""
    sp = spearman_table(df)
    lo, hi = [], []
    for r in sp.itertuples():
        g = (r.pruner, r.pattern, r.sparsity)
        sources = sorted(source_means(df, g).index)
        iv, _, _ = boot.spearman(g, sources, r.metric, r.dimension)
        lo.append(iv.lo)
        hi.append(iv.hi)
    return sp.assign(lo=lo, hi=hi)
