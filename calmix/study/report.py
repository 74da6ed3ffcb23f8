"""Study report: report.md and a self-contained report.html with tables and PNG plots (matplotlib Agg)."""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from calmix.errors import CalmixError
from calmix.runrecord import atomic_dir
from calmix.study import analysis as A
from calmix.study.config import StudyConfig

PLOTS = "report_files"
KIND_COLORS = {"source": "#4C72B0", "mix": "#DD8452", "generated": "#55A868"}


@dataclass
class Doc:
    """A report as a list of blocks, rendered both to Markdown and to HTML."""

    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self, base: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |")
                out.append("|" + "|".join("---" for _ in b[1]) + "|")
                out += ["| " + " | ".join(r) + " |" for r in b[2]]
            elif b[0] == "img":
                out.append(f"![{b[2]}]({os.path.relpath(b[1], base)})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
               "img{max-width:100%}code{background:#f3f3f3}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in b[1]) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{_inline(x)}</td>" for x in r) + "</tr>" for r in b[2]]
                out.append("</table>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<p><img alt='{html.escape(b[2])}' src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown `code` and **bold** to HTML, everything else escaped."""
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _f(v: float, digits: int = 1) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _sgn(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:+.1f}"


def _pm(mean: float, std: float) -> str:
    if std is None or not math.isfinite(std):
        return _f(mean)
    return f"{_f(mean)} ± {_f(std)}"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _gname(g: tuple) -> str:
    return f"{g[0]} {g[1]} {g[2]:.0%}" if g[1] == "unstructured" else f"{g[0]} {g[1]}"


def _gslug(g: tuple) -> str:
    return f"{g[0]}_{g[1].replace(':', 'of')}_{int(round(g[2] * 100))}"


# plots ---------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(sp: pd.DataFrame, g: tuple, path: Path) -> Path | None:
    """Heatmap of Spearman rho (metric x dimension) annotated with rho and p."""
    sub = sp[(sp.pruner == g[0]) & (sp.pattern == g[1]) & np.isclose(sp.sparsity, g[2])]
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
            txt = "n/a" if not np.isfinite(r) else f"{r:+.2f}\np={_p(p)}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(r) and abs(r) > 0.6 else "black",
                    fontweight="bold" if np.isfinite(p) and p < 0.05 else "normal")
    fig.colorbar(im, ax=ax, label="Spearman ρ")
    ax.set_title(f"Calibration metric vs retention, {_gname(g)} (n = {n} sources)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_retention_bars(rt: pd.DataFrame, g: tuple, dims: list[str], path: Path) -> Path | None:
    """Grouped bars: retention of each dimension per strategy, error bars = std over seeds."""
    sub = rt[(rt.pruner == g[0]) & (rt.pattern == g[1]) & np.isclose(rt.sparsity, g[2])]
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
    ax.set_title(f"Retention per calibration strategy and dimension, {_gname(g)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_strategies(rt: pd.DataFrame, g: tuple, path: Path) -> Path | None:
    """Total retention of every strategy, sorted, with error bars = std over seeds, coloured by kind."""
    sub = rt[(rt.pruner == g[0]) & (rt.pattern == g[1]) & np.isclose(rt.sparsity, g[2])]
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
    ax.set_title(f"Total retention of the calibration strategies, {_gname(g)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# text ----------------------------------------------------------------------------------------------------
def _gen_label(st: pd.DataFrame, kind: str) -> str | None:
    for _, r in st.iterrows():
        if r.role == "self-generated" and str(r.strategy).split(":")[0] == kind:
            return r.strategy
    return None


def headline(df: pd.DataFrame, cfg: StudyConfig, specs: dict[str, str]) -> list[str]:
    """Plain-language findings per (pruner, pattern, sparsity): one paragraph each."""
    st = A.strategy_table(df, cfg.reference)
    spread = A.seed_spread(df)
    sp = A.spearman_table(df)
    paras = []
    for g in A.groups(df):
        parts = [f"**{_gname(g)}.**"]
        win = A.dimension_winners(df, g)
        dims = [d for d in win if d != "Total"]
        if dims:
            parts.append("Which calibration data keeps which capability: " + "; ".join(
                f"{d} is kept best by `{win[d][0]}` ({_f(win[d][1])}%)" for d in dims) + ".")
        sub = st[(st.pruner == g[0]) & (st.pattern == g[1]) & np.isclose(st.sparsity, g[2])] if not st.empty else st
        row = {r.role + ":" + r.strategy: r for _, r in sub.iterrows()}
        best = next((r for k, r in row.items() if k.startswith("best single source:")), None)
        ref = next((r for k, r in row.items() if k.startswith("reference source:")), None)
        if best is not None:
            parts.append(f"Best single source: `{best.strategy}` with {_pm(best.Total, best.Total_std)}% total "
                         "retention" + (f" ({best.gap_to_reference:+.1f} points vs the reference "
                                        f"`{ref.strategy}`, {_f(ref.Total)}%)." if ref is not None else "."))
        mixes = [r for k, r in row.items() if k.startswith("mix:")]
        for m in mixes:
            if best is not None:
                parts.append(f"The mix `{m.strategy}` keeps {_pm(m.Total, m.Total_std)}% "
                             f"({m.Total - best.Total:+.1f} points vs the best single source).")
        gens = {k: _gen_label(sub, k) for k in ("igsp", "selfcal", "sgs")} if not sub.empty else {}
        gtot = {k: float(sub[sub.strategy == v].Total.iloc[0]) for k, v in gens.items() if v is not None}
        if "igsp" in gtot:
            cmp = [f"{gtot['igsp'] - gtot[k]:+.1f} points vs {name} ({_f(gtot[k])}%)"
                   for k, name in (("selfcal", "Self-Cal"), ("sgs", "SGS")) if k in gtot]
            parts.append(f"IGSP keeps {_f(gtot['igsp'])}%" + (": " + ", ".join(cmp) + "." if cmp else "."))
        sr = spread[(spread.pruner == g[0]) & (spread.pattern == g[1]) & np.isclose(spread.sparsity, g[2])]
        if not sr.empty and math.isfinite(sr.seed_std_mean.iloc[0]):
            s = sr.iloc[0]
            verdict = ("larger than" if s.strategy_range > 2 * s.seed_std_max else
                       "comparable to" if s.strategy_range > s.seed_std_max else "not larger than")
            parts.append(f"Seed spread: the strategies' mean total retention spans {_f(s.strategy_range)} points, "
                         f"while one strategy varies by {_f(s.seed_std_mean)} points (mean std over seeds; "
                         f"largest {_f(s.seed_std_max)}): the differences between strategies are {verdict} the "
                         "seed-to-seed noise.")
        ssub = sp[(sp.pruner == g[0]) & (sp.pattern == g[1]) & np.isclose(sp.sparsity, g[2])].dropna(subset=["rho"])
        if not ssub.empty:
            top = ssub[ssub.dimension != "Total"].sort_values("p").head(3)
            if not top.empty:
                parts.append("Strongest metric–retention correlations over the single sources: " + "; ".join(
                    f"{r.metric} vs {r.dimension} ρ = {r.rho:+.2f} (p = {_p(r.p)}, n = {r.n})"
                    for r in top.itertuples()) + ".")
        paras.append(" ".join(parts))
    return paras


def build_report(df: pd.DataFrame, cfg: StudyConfig, plots: Path, status: dict, dense: dict | None = None) -> Doc:
    """Write the PNG plots into the folder `plots` and return the report document."""
    doc = Doc()
    doc.h(1, f"calmix study `{cfg.name}`")
    specs = {s.label: s.spec for s in cfg.strategies}
    if df.empty:
        doc.p("No finished cells yet: run `calmix study run` first.")
        return doc
    dims = A.dims_of(df)
    doc.h(2, "Headline")
    total = sum(status.values())
    if status.get("done", 0) < total:
        doc.p(f"**Partial study: {status.get('done', 0)} of {total} cells done** (" + ", ".join(
            f"{k} {v}" for k, v in status.items() if k != "done" and v) + "); the figures below cover the "
            "finished cells only. Resume with `calmix study run --out DIR`.")
    for para in headline(df, cfg, specs):
        doc.p(para)
    doc.p(f"Model `{cfg.model}` ({cfg.dtype}); calibration {cfg.nsamples} × {cfg.seqlen} tokens; pruners "
          f"{', '.join(cfg.methods)}; seeds {cfg.seeds}; evaluation suite `{cfg.suite}`"
          + (f" (limit {cfg.limit} items per task)" if cfg.limit else "") + ". Cells: "
          + ", ".join(f"{k} {v}" for k, v in status.items()) + ". Retention = 100 · pruned score / dense score "
          "per dimension; Total = mean of the dimensions.")
    rt = A.retention_table(df)
    st = A.strategy_table(df, cfg.reference)
    sp = A.spearman_table(df)
    spread = A.seed_spread(df)
    for g in A.groups(df):
        slug = _gslug(g)
        doc.h(2, f"{_gname(g)}")
        doc.h(3, "Best single source vs mixes vs self-generated")
        sub = st[(st.pruner == g[0]) & (st.pattern == g[1]) & np.isclose(st.sparsity, g[2])] if not st.empty else st
        ref = cfg.reference or "–"
        doc.table(["role", "strategy"] + dims + [f"gap to {ref}", "seeds"],
                  [[r.role, f"`{r.strategy}`"] + [_pm(r[d], r[d + "_std"]) for d in dims]
                   + [_sgn(r.gap_to_reference), str(r.seeds)] for _, r in sub.iterrows()])
        doc.p("Values: retention in % of the dense model, mean ± std over seeds; gap = difference in points of "
              "total retention to the reference source" + (f" `{cfg.reference}`." if cfg.reference else
                                                             " (no reference source in the config)."))
        p = plot_strategies(rt, g, plots / f"strategies_{slug}.png")
        if p:
            doc.img(p, "total retention per strategy")
        doc.h(3, "Retention per strategy and dimension")
        rsub = rt[(rt.pruner == g[0]) & (rt.pattern == g[1]) & np.isclose(rt.sparsity, g[2])]
        rsub = rsub.sort_values(["kind", "Total"] if "Total" in rsub else ["kind"], ascending=[False, False])
        doc.table(["strategy", "kind"] + dims + ["seeds"],
                  [[f"`{r.strategy}`", r.kind] + [_pm(r[d], r[d + "_std"]) for d in dims] + [str(r.seeds)]
                   for _, r in rsub.iterrows()])
        p = plot_retention_bars(rt, g, dims, plots / f"retention_{slug}.png")
        if p:
            doc.img(p, "retention per strategy and dimension")
        ssub = sp[(sp.pruner == g[0]) & (sp.pattern == g[1]) & np.isclose(sp.sparsity, g[2])]
        doc.h(3, "Spearman correlation: calibration metric vs retention")
        if ssub.empty:
            doc.p("No correlation: the grid has no single sources with metrics for this group.")
        else:
            n = int(ssub.n.max())
            doc.p(f"Spearman ρ (two-sided p) over the n = {n} single sources (mixes and self-generated sets "
                  "excluded); each source's metrics and retentions are first averaged over its seeds. "
                  "Bold in the plot: p < 0.05. With n this small, |ρ| must be large to be significant.")
            metrics = list(dict.fromkeys(ssub.metric))
            sdims = list(dict.fromkeys(ssub.dimension))
            rows = []
            for m in metrics:
                cells = []
                for d in sdims:
                    r = ssub[(ssub.metric == m) & (ssub.dimension == d)].iloc[0]
                    cells.append("–" if not math.isfinite(r.rho) else
                                 (f"**{r.rho:+.2f}** ({_p(r.p)})" if r.p < 0.05 else f"{r.rho:+.2f} ({_p(r.p)})"))
                rows.append([m] + cells)
            doc.table(["metric"] + sdims, rows)
            p = plot_heatmap(sp, g, plots / f"spearman_{slug}.png")
            if p:
                doc.img(p, "Spearman heatmap")
        sr = spread[(spread.pruner == g[0]) & (spread.pattern == g[1]) & np.isclose(spread.sparsity, g[2])]
        if not sr.empty:
            s = sr.iloc[0]
            doc.p(f"Seed spread of total retention: mean std over seeds {_f(s.seed_std_mean, 2)} points (largest "
                  f"{_f(s.seed_std_max, 2)}); range of strategy means {_f(s.strategy_range, 2)} points over "
                  f"{s.strategies} strategies.")
    pruners = sorted({g[0] for g in A.groups(df)})
    sweep = [pl for pl in pruners if (p := plot_vs_sparsity(rt, pl, plots / f"sparsity_{pl}.png"))]
    if sweep:
        doc.h(2, "Retention vs sparsity")
        for pl in sweep:
            doc.img(plots / f"sparsity_{pl}.png", f"retention vs sparsity {pl}")
    if dense:
        doc.h(2, "Dense model scores")
        dims_d = dense.get("dimensions") or {}
        if dims_d:
            doc.table(["dimension", "dense score"], [[k, _f(float(v), 4)] for k, v in dims_d.items()
                                                      if isinstance(v, (int, float))])
    doc.p("Per-cell values: `cells.csv` beside this report. Generated by `calmix study report`.")
    return doc


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(out: Path, df: pd.DataFrame, cfg: StudyConfig, status: dict, dense: dict | None = None) -> dict:
    """Write report.md, report.html (PNGs embedded), report_files/*.png and cells.csv into `out`."""
    out = Path(out)
    if not out.is_dir():
        raise CalmixError(f"study folder {out} does not exist: run `calmix study run` first")
    with atomic_dir(out / PLOTS) as tmp:
        doc = build_report(df, cfg, tmp, status, dense)
        html_text = doc.html(f"calmix study {cfg.name}")
        doc.blocks = [("img", out / PLOTS / Path(b[1]).name, b[2]) if b[0] == "img" else b for b in doc.blocks]
        md_text = doc.markdown(out)
    _write_text_atomic(out / "report.md", md_text)
    _write_text_atomic(out / "report.html", html_text)
    if not df.empty:
        _write_text_atomic(out / "cells.csv", df.to_csv(index=False))
    return {"markdown": out / "report.md", "html": out / "report.html", "plots": sorted((out / PLOTS).glob("*.png"))}


def report_study(out: str | os.PathLike) -> dict:
    """Write the report of a study folder from its store (only the cells of its current config)."""
    from calmix.study.grid import build_grid, cell_key, dense_key
    from calmix.study.runner import grid_status, is_locked, load_study_config
    from calmix.study.store import Store

    out = Path(out)
    cfg = load_study_config(out)
    with Store(out) as store:
        keys = [cell_key(cfg, c) for c in build_grid(cfg)]
        df = A.cells_frame(store.cells(keys))
        st = grid_status(cfg, store, running_alive=is_locked(out))
        dense_row = store.get_dense(dense_key(cfg))
    status = {k: len(v) for k, v in st.items() if v or k != "running"}
    return write_report(out, df, cfg, status, dense_row["result"] if dense_row else None)
