"""The report's plots (matplotlib, Agg backend): strategies, retention bars, Spearman heatmap, sparsity sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calmix.study.analysis import select
from calmix.study.doc import fmt_p, group_name

KIND_COLORS = {"source": "#4C72B0", "mix": "#DD8452", "generated": "#55A868"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_heatmap(sp: pd.DataFrame, g: tuple, path: Path) -> Path | None:
    """Heatmap of Spearman rho (metric x dimension) annotated with rho and p."""
    sub = select(sp, g)
    if sub.empty:
        return None
    metrics = list(dict.fromkeys(sub.metric))
    dims = list(dict.fromkeys(sub.dimension))
    rho = sub.pivot(index="metric", columns="dimension", values="rho").reindex(index=metrics, columns=dims)
    pv = sub.pivot(index="metric", columns="dimension", values="p").reindex(index=metrics, columns=dims)
    n = int(sub.n.max())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(dims), 0.9 + 0.45 * len(metrics)))
    im = ax.imshow(rho.values.astype(float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(dims)), dims)
    ax.set_yticks(range(len(metrics)), metrics)
    for i in range(len(metrics)):
        for j in range(len(dims)):
            r, p = rho.values[i, j], pv.values[i, j]
            txt = "n/a" if not np.isfinite(r) else f"{r:+.2f}\np={fmt_p(p)}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(r) and abs(r) > 0.6 else "black",
                    fontweight="bold" if np.isfinite(p) and p < 0.05 else "normal")
    fig.colorbar(im, ax=ax, label="Spearman ρ")
    ax.set_title(f"Calibration metric vs retention, {group_name(g)} (n = {n} sources)", fontsize=9)
    return _save(plt, fig, path)


def plot_retention_bars(rt: pd.DataFrame, g: tuple, dims: list[str], path: Path) -> Path | None:
    """Grouped bars: retention of each dimension per strategy, error bars = std over seeds."""
    sub = select(rt, g)
    if sub.empty:
        return None
    plt = _plt()
    x = np.arange(len(sub))
    w = 0.8 / len(dims)
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(sub) * len(dims) / 2.5), 4))
    for k, d in enumerate(dims):
        err = sub.get(d + "_std")
        ax.bar(x + (k - (len(dims) - 1) / 2) * w, sub[d], w, label=d,
               yerr=None if err is None else np.nan_to_num(err.values.astype(float)), capsize=2)
    ax.set_xticks(x, sub.strategy, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("retention (% of dense)")
    ax.axhline(100, color="grey", lw=0.6, ls="--")
    ax.legend(fontsize=8, ncol=len(dims))
    ax.set_title(f"Retention per calibration strategy and dimension, {group_name(g)}", fontsize=9)
    return _save(plt, fig, path)


def plot_strategies(rt: pd.DataFrame, g: tuple, path: Path) -> Path | None:
    """Total retention of every strategy, sorted, with error bars = std over seeds, coloured by kind."""
    sub = select(rt, g)
    if sub.empty or "Total" not in sub:
        return None
    sub = sub.sort_values("Total")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.8 + 0.32 * len(sub)))
    err = np.nan_to_num(sub["Total_std"].values.astype(float)) if "Total_std" in sub else None
    ax.barh(sub.strategy, sub.Total, xerr=err, capsize=3, color=[KIND_COLORS.get(k, "grey") for k in sub.kind])
    for kind, c in KIND_COLORS.items():
        ax.bar(0, 0, color=c, label=kind)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("total retention (% of dense), error bar = std over seeds")
    ax.set_title(f"Total retention of the calibration strategies, {group_name(g)}", fontsize=9)
    return _save(plt, fig, path)


def plot_vs_sparsity(rt: pd.DataFrame, pruner: str, path: Path) -> Path | None:
    """Total retention vs sparsity per strategy (unstructured), when the grid has several sparsities."""
    sub = rt[(rt.pruner == pruner) & (rt.pattern == "unstructured")]
    if sub.sparsity.nunique() < 2 or "Total" not in sub:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strat, s in sub.groupby("strategy", sort=False):
        s = s.sort_values("sparsity")
        kind = s.kind.iloc[0]
        ax.errorbar(s.sparsity * 100, s.Total, yerr=np.nan_to_num(s.Total_std.values.astype(float)),
                    label=strat, marker="o", ms=3, capsize=2, lw=2 if kind != "source" else 1,
                    ls="-" if kind != "source" else ":")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("total retention (% of dense)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Retention vs sparsity, {pruner} unstructured", fontsize=9)
    return _save(plt, fig, path)
