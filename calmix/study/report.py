"""Study report: report.md and a self-contained report.html with tables and PNG plots, from a study folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from calmix.errors import CalmixError
from calmix.runrecord import atomic_dir, write_text_atomic
from calmix.study import analysis as A
from calmix.study.config import StudyConfig
from calmix.study.doc import Doc, fmt, fmt_p, fmt_pm, fmt_signed, group_name, group_slug
from calmix.study.folder import grid_status, is_locked, load_study_config
from calmix.study.grid import build_grid, cell_key, dense_key
from calmix.study.plots import plot_heatmap, plot_retention_bars, plot_strategies, plot_vs_sparsity
from calmix.study.store import Store

PLOTS = "report_files"


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
        parts = [f"**{group_name(g)}.**"]
        win = A.dimension_winners(df, g)
        dims = [d for d in win if d != "Total"]
        if dims:
            parts.append("Which calibration data keeps which capability: " + "; ".join(
                f"{d} is kept best by `{win[d][0]}` ({fmt(win[d][1])}%)" for d in dims) + ".")
        sub = A.select(st, g) if not st.empty else st
        row = {r.role + ":" + r.strategy: r for _, r in sub.iterrows()}
        best = next((r for k, r in row.items() if k.startswith("best single source:")), None)
        ref = next((r for k, r in row.items() if k.startswith("reference source:")), None)
        if best is not None:
            parts.append(f"Best single source: `{best.strategy}` with {fmt_pm(best.Total, best.Total_std)}% total "
                         "retention" + (f" ({best.gap_to_reference:+.1f} points vs the reference "
                                        f"`{ref.strategy}`, {fmt(ref.Total)}%)." if ref is not None else "."))
        mixes = [r for k, r in row.items() if k.startswith("mix:")]
        for m in mixes:
            if best is not None:
                parts.append(f"The mix `{m.strategy}` keeps {fmt_pm(m.Total, m.Total_std)}% "
                             f"({m.Total - best.Total:+.1f} points vs the best single source).")
        gens = {k: _gen_label(sub, k) for k in ("igsp", "selfcal", "sgs")} if not sub.empty else {}
        gtot = {k: float(sub[sub.strategy == v].Total.iloc[0]) for k, v in gens.items() if v is not None}
        if "igsp" in gtot:
            cmp = [f"{gtot['igsp'] - gtot[k]:+.1f} points vs {name} ({fmt(gtot[k])}%)"
                   for k, name in (("selfcal", "Self-Cal"), ("sgs", "SGS")) if k in gtot]
            parts.append(f"IGSP keeps {fmt(gtot['igsp'])}%" + (": " + ", ".join(cmp) + "." if cmp else "."))
        sr = A.select(spread, g)
        if not sr.empty and math.isfinite(sr.seed_std_mean.iloc[0]):
            s = sr.iloc[0]
            verdict = ("larger than" if s.strategy_range > 2 * s.seed_std_max else
                       "comparable to" if s.strategy_range > s.seed_std_max else "not larger than")
            parts.append(f"Seed spread: the strategies' mean total retention spans {fmt(s.strategy_range)} points, "
                         f"while one strategy varies by {fmt(s.seed_std_mean)} points (mean std over seeds; "
                         f"largest {fmt(s.seed_std_max)}): the differences between strategies are {verdict} the "
                         "seed-to-seed noise.")
        ssub = A.select(sp, g).dropna(subset=["rho"])
        if not ssub.empty:
            top = ssub[ssub.dimension != "Total"].sort_values("p").head(3)
            if not top.empty:
                parts.append("Strongest metric–retention correlations over the single sources: " + "; ".join(
                    f"{r.metric} vs {r.dimension} ρ = {r.rho:+.2f} (p = {fmt_p(r.p)}, n = {r.n})"
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
        slug = group_slug(g)
        doc.h(2, f"{group_name(g)}")
        doc.h(3, "Best single source vs mixes vs self-generated")
        sub = A.select(st, g) if not st.empty else st
        ref = cfg.reference or "–"
        doc.table(["role", "strategy"] + dims + [f"gap to {ref}", "seeds"],
                  [[r.role, f"`{r.strategy}`"] + [fmt_pm(r[d], r[d + "_std"]) for d in dims]
                   + [fmt_signed(r.gap_to_reference), str(r.seeds)] for _, r in sub.iterrows()])
        doc.p("Values: retention in % of the dense model, mean ± std over seeds; gap = difference in points of "
              "total retention to the reference source" + (f" `{cfg.reference}`." if cfg.reference else
                                                             " (no reference source in the config)."))
        p = plot_strategies(rt, g, plots / f"strategies_{slug}.png")
        if p:
            doc.img(p, "total retention per strategy")
        doc.h(3, "Retention per strategy and dimension")
        rsub = A.select(rt, g)
        rsub = rsub.sort_values(["kind", "Total"] if "Total" in rsub else ["kind"], ascending=[False, False])
        doc.table(["strategy", "kind"] + dims + ["seeds"],
                  [[f"`{r.strategy}`", r.kind] + [fmt_pm(r[d], r[d + "_std"]) for d in dims] + [str(r.seeds)]
                   for _, r in rsub.iterrows()])
        p = plot_retention_bars(rt, g, dims, plots / f"retention_{slug}.png")
        if p:
            doc.img(p, "retention per strategy and dimension")
        ssub = A.select(sp, g)
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
                                 (f"**{r.rho:+.2f}** ({fmt_p(r.p)})" if r.p < 0.05 else f"{r.rho:+.2f} ({fmt_p(r.p)})"))
                rows.append([m] + cells)
            doc.table(["metric"] + sdims, rows)
            p = plot_heatmap(sp, g, plots / f"spearman_{slug}.png")
            if p:
                doc.img(p, "Spearman heatmap")
        sr = A.select(spread, g)
        if not sr.empty:
            s = sr.iloc[0]
            doc.p(f"Seed spread of total retention: mean std over seeds {fmt(s.seed_std_mean, 2)} points (largest "
                  f"{fmt(s.seed_std_max, 2)}); range of strategy means {fmt(s.strategy_range, 2)} points over "
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
            doc.table(["dimension", "dense score"], [[k, fmt(float(v), 4)] for k, v in dims_d.items()
                                                      if isinstance(v, (int, float))])
    doc.p("Per-cell values: `cells.csv` beside this report. Generated by `calmix study report`.")
    return doc


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
    write_text_atomic(out / "report.md", md_text)
    write_text_atomic(out / "report.html", html_text)
    if not df.empty:
        write_text_atomic(out / "cells.csv", df.to_csv(index=False))
    return {"markdown": out / "report.md", "html": out / "report.html", "plots": sorted((out / PLOTS).glob("*.png"))}


def report_study(out: str | os.PathLike) -> dict:
    """Write the report of a study folder from its store (only the cells of its current config)."""
    out = Path(out)
    cfg = load_study_config(out)
    with Store(out) as store:
        keys = [cell_key(cfg, c) for c in build_grid(cfg)]
        df = A.cells_frame(store.cells(keys))
        st = grid_status(cfg, store, running_alive=is_locked(out))
        dense_row = store.get_dense(dense_key(cfg))
    status = {k: len(v) for k, v in st.items() if v or k != "running"}
    return write_report(out, df, cfg, status, dense_row["result"] if dense_row else None)
