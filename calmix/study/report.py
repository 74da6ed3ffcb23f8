"""Study report: report.md and a self-contained report.html with tables and PNG plots, from a study folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from calmix.errors import CalmixError
from calmix.runrecord import atomic_dir, hardware_line, write_text_atomic
from calmix.study import analysis as A
from calmix.study.config import StudyConfig
from calmix.study.bootstrap import Bootstrap
from calmix.study.doc import Doc, fmt, fmt_ci, fmt_diff, fmt_p, fmt_pm, fmt_signed, group_name, group_slug
from calmix.study.folder import HARDWARE_META, grid_status, is_locked, load_study_config
from calmix.study.grid import build_grid, cell_key, dense_key
from calmix.study.plots import plot_heatmap, plot_retention_bars, plot_strategies, plot_vs_sparsity
from calmix.study.store import Store

PLOTS = "report_files"


def _ci(iv, signed: bool = False) -> str:
    """The interval of an Interval (or a row with lo/hi) as '[a, b]'."""
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return "–"
    return f"[{iv.lo:+.1f}, {iv.hi:+.1f}]" if signed else f"[{iv.lo:.1f}, {iv.hi:.1f}]"


AT_FLOOR = "at the floor"


def floor_sentence(floored: list[str], dense: dict | None) -> str | None:
    """What the report says in place of ranking strategies on dimensions at the floor, and what Total covers."""
    if not floored:
        return None
    ft = A.floor_table(dense)
    parts = []
    for d in floored:
        rows = ft[ft.dimension == d]
        detail = "; ".join(f"`{r.task}` {r.stat} {r.value:.3f} [{r.lo:.3f}, {r.hi:.3f}]" for r in rows.itertuples())
        margins = sorted({f"{m:g}" for m in rows.margin})
        parts.append(f"**{d} is not measured: the dense model is at the floor on every {d} task** ("
                     + (detail + f"; above the floor needs more than {'/'.join(margins)} with the interval above 0"
                        if detail else "no floor details stored") + "), so strategies are not ranked on it.")
    rest = [d for d in A.DIMS[:-1] if d not in floored]
    parts.append(f"Total is not measured (it needs all four dimensions); compare strategies on {', '.join(rest)}."
                 if rest else "Total is not measured: every dimension is at the floor.")
    return " ".join(parts)


def _winners(df: pd.DataFrame, boot: Bootstrap, g: tuple) -> str | None:
    """Per dimension, the single source that keeps it best, with its interval and its lead over the runner-up
    (dimensions at the floor are not ranked)."""
    means = A.source_means(df, g)
    parts = []
    for d in [d for d in A.dims_of(df) if d != "Total" and d not in boot.floored]:
        col = A.RET + d
        if col not in means or not means[col].notna().any():
            continue
        order = means[col].dropna().sort_values(ascending=False)
        first = str(order.index[0])
        iv = boot.retention(g, first, d)
        text = f"{d} is kept best by `{first}` ({fmt(iv.value)}%, {fmt_ci(iv.lo, iv.hi)}"
        if len(order) > 1:
            lead = boot.difference(g, first, str(order.index[1]), d)
            text += f"; ahead of `{order.index[1]}` by {fmt_diff(lead.value, lead.lo, lead.hi)}"
        parts.append(text + ")")
    return "Which calibration data keeps which capability: " + "; ".join(parts) + "." if parts else None


def headline(df: pd.DataFrame, cfg: StudyConfig, boot: Bootstrap, dense: dict | None = None) -> list[str]:
    """Plain-language findings per (pruner, pattern, sparsity), each claim stated with its paired bootstrap
    interval (a difference whose interval includes 0 is called not significant); dimensions at the floor on the
    dense model are named, and not ranked, first."""
    st = A.strategy_table(df, cfg.reference)
    spread = A.seed_spread(df)
    sp = A.spearman_intervals(df, boot)
    cmp = A.comparisons(df, boot, cfg.reference)
    paras = []
    floor = floor_sentence(boot.floored, dense)
    if floor:
        paras.append(floor)
    for g in A.groups(df):
        parts = [f"**{group_name(g)}.**"]
        win = _winners(df, boot, g)
        if win:
            parts.append(win)
        sub = A.select(st, g) if not st.empty else st
        row = {r.role + ":" + r.strategy: r for _, r in sub.iterrows()}
        best = next((r for k, r in row.items() if k.startswith("best single source:")), None)
        ref = next((r for k, r in row.items() if k.startswith("reference source:")), None)
        if best is not None:
            iv = boot.retention(g, best.strategy, "Total")
            text = (f"Best single source: `{best.strategy}` with {fmt_pm(best.Total, best.Total_std)}% total "
                    f"retention ({fmt_ci(iv.lo, iv.hi)})")
            if ref is not None and ref.strategy != best.strategy:
                d = boot.difference(g, best.strategy, ref.strategy)
                text += f", {fmt_diff(d.value, d.lo, d.hi)} vs the reference `{ref.strategy}` ({fmt(ref.Total)}%)"
            parts.append(text + ".")
        csub = A.select(cmp, g) if not cmp.empty else cmp
        for m in [r for k, r in row.items() if k.startswith("mix:")]:
            iv = boot.retention(g, m.strategy, "Total")
            said = [f"vs the {c.comparison.split('− ')[1]} `{c.b}`: "
                    f"{fmt_diff(c.value, c.lo, c.hi)}" for c in csub[csub.a == m.strategy].itertuples()]
            parts.append(f"The mix `{m.strategy}` keeps {fmt_pm(m.Total, m.Total_std)}% ({fmt_ci(iv.lo, iv.hi)})"
                         + ("; " + "; ".join(said) if said else "") + ".")
        igsp = A.generated_label(df, g, "igsp")
        if igsp is not None:
            iv = boot.retention(g, igsp, "Total")
            said = [f"{fmt_diff(c.value, c.lo, c.hi)} vs {c.comparison.split('− ')[1]} (`{c.b}`)"
                    for c in csub[csub.comparison.str.startswith("IGSP")].itertuples()]
            parts.append(f"IGSP keeps {fmt(iv.value)}% ({fmt_ci(iv.lo, iv.hi)})" + (": " + ", ".join(said) if said else "")
                         + ".")
        if not csub.empty:
            k = int(csub.significant.sum())
            parts.append(f"Of these {len(csub)} headline differences, {k} ha{'s' if k == 1 else 've'} a 95% interval "
                         "that excludes 0" + (" (the others are not significant)." if k < len(csub) else "."))
        sr = A.select(spread, g) if not spread.empty else spread
        if not sr.empty and math.isfinite(sr.seed_std_mean.iloc[0]):
            s = sr.iloc[0]
            parts.append(f"Seed spread: one strategy's total retention varies by {fmt(s.seed_std_mean)} points "
                         f"between seeds (mean std; largest {fmt(s.seed_std_max)}); the intervals above include it.")
        ssub = A.select(sp, g).dropna(subset=["rho"])
        if not ssub.empty:
            top = ssub[~ssub.dimension.isin(["Total", *boot.floored])].sort_values("p").head(3)
            if not top.empty:
                parts.append("Strongest metric–retention correlations over the single sources: " + "; ".join(
                    f"{r.metric} vs {r.dimension} ρ = {r.rho:+.2f} (p = {fmt_p(r.p)}, n = {r.n}, "
                    f"{fmt_ci(r.lo, r.hi, signed=True)})" for r in top.itertuples()) + ".")
        paras.append(" ".join(parts))
    return paras


def build_report(df: pd.DataFrame, cfg: StudyConfig, plots: Path, status: dict, dense: dict | None,
                 boot: Bootstrap, hardware: list[dict] | None = None) -> Doc:
    """Write the PNG plots into the folder `plots` and return the report document."""
    doc = Doc()
    doc.h(1, f"calmix study `{cfg.name}`")
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
    for para in headline(df, cfg, boot, dense):
        doc.p(para)
    doc.p(f"Model `{cfg.model}` ({cfg.dtype}); calibration {cfg.nsamples} × {cfg.seqlen} tokens; pruners "
          f"{', '.join(cfg.methods)}; seeds {cfg.seeds}; evaluation suite `{cfg.suite}`"
          + (f" (limit {cfg.limit} items per task)" if cfg.limit else "") + ". Cells: "
          + ", ".join(f"{k} {v}" for k, v in status.items()) + ". Retention per task = 100 · pruned score / dense "
          "score on the same items; a dimension's retention = the mean of its tasks' retentions; Total = the mean of "
          "the four dimensions, not measured when any dimension is not measured or is at the floor on the dense "
          "model. Likelihood probes score exp(−NLL per token), so their retention is "
          "exp(−(NLL_pruned − NLL_dense)). Intervals: 95% percentile intervals of a "
          f"paired bootstrap ({boot.replicates} replicates) over evaluation items (one resample per task, applied to "
          "the dense model and every strategy alike) and over each strategy's seeds; a difference whose interval "
          "includes 0 is not significant."
          + (f" Tasks without per-item scores in the store, held fixed: {', '.join(boot.held)}." if boot.held else ""))
    rt = A.retention_table(df)
    st = A.strategy_table(df, cfg.reference)
    sp = A.spearman_intervals(df, boot)
    cmp = A.comparisons(df, boot, cfg.reference)
    spread = A.seed_spread(df)
    for g in A.groups(df):
        slug = group_slug(g)
        doc.h(2, f"{group_name(g)}")
        doc.h(3, "Best single source vs mixes vs self-generated")
        sub = A.select(st, g) if not st.empty else st
        ref = cfg.reference or "–"
        doc.table(["role", "strategy"] + dims + [f"gap to {ref}", "seeds", "Total 95% CI"],
                  [[r.role, f"`{r.strategy}`"] + [AT_FLOOR if d in boot.floored else fmt_pm(r[d], r[d + "_std"])
                                                 for d in dims]
                   + [fmt_signed(r.gap_to_reference), str(r.seeds), _ci(boot.retention(g, r.strategy, "Total"))]
                   for _, r in sub.iterrows()])
        doc.p("Values: retention in % of the dense model, mean ± std over seeds; gap = difference in points of "
              "total retention to the reference source" + (f" `{cfg.reference}`." if cfg.reference else
                                                             " (no reference source in the config)."))
        csub = A.select(cmp, g) if not cmp.empty else cmp
        if not csub.empty:
            doc.table(["difference (Total retention)", "strategies", "points", "95% CI", "verdict"],
                      [[c.comparison, f"`{c.a}` − `{c.b}`", fmt_signed(c.value), _ci(c, signed=True),
                        "significant" if c.significant else "not significant"] for c in csub.itertuples()])
        p = plot_strategies(rt, g, plots / f"strategies_{slug}.png")
        if p:
            doc.img(p, "total retention per strategy")
        doc.h(3, "Retention per strategy and dimension")
        rsub = A.select(rt, g)
        rsub = rsub.sort_values(["kind", "Total"] if "Total" in rsub else ["kind"], ascending=False)
        doc.table(["strategy", "kind"] + dims + ["seeds"],
                  [[f"`{r.strategy}`", r.kind] + [AT_FLOOR if d in boot.floored else
                                                  fmt_pm(r[d], r[d + "_std"]) + " " + _ci(boot.retention(g, r.strategy, d))
                                                  for d in dims] + [str(r.seeds)] for _, r in rsub.iterrows()])
        doc.p("Values: mean ± std over seeds, then the 95% bootstrap interval over items and seeds.")
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
                  "excluded); each source's metrics and retentions are first averaged over its seeds. In brackets: the 95% "
                  "bootstrap interval of ρ (sources, items and seeds resampled). "
                  "Bold in the plot: p < 0.05. With n this small, |ρ| must be large to be significant.")
            metrics = list(dict.fromkeys(ssub.metric))
            sdims = list(dict.fromkeys(ssub.dimension))
            rows = []
            for m in metrics:
                cells = []
                for d in sdims:
                    r = ssub[(ssub.metric == m) & (ssub.dimension == d)].iloc[0]
                    ci = f"; [{r.lo:+.2f}, {r.hi:+.2f}]" if math.isfinite(r.lo) else ""
                    cells.append("–" if not math.isfinite(r.rho) else
                                 (f"**{r.rho:+.2f}** ({fmt_p(r.p)}{ci})" if r.p < 0.05 else
                                  f"{r.rho:+.2f} ({fmt_p(r.p)}{ci})"))
                rows.append([m] + cells)
            doc.table(["metric"] + sdims, rows)
            p = plot_heatmap(sp, g, plots / f"spearman_{slug}.png")
            if p:
                doc.img(p, "Spearman heatmap")
        sr = A.select(spread, g) if not spread.empty else spread
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
        ft = A.floor_table(dense)
        if not ft.empty:
            doc.p("Above the floor? Per task, how far the dense model's score lies above what a model without the "
                  "capability gets (chance-corrected scores: the score; rates: the rate minus chance; likelihood "
                  "probes: the NLL per token of a unigram model of the references minus the model's), with its 95% "
                  "interval over items; above the floor = more than the margin, with the interval above 0.")
            doc.table(["task", "dimension", "dense score", "above floor by", "95% CI", "margin", "verdict"],
                      [[f"`{r.task}`", r.dimension, fmt(r.score, 4), f"{r.value:.3f} ({r.stat})",
                        f"[{r.lo:.3f}, {r.hi:.3f}]", f"{r.margin:g}", "above" if r.above else AT_FLOOR]
                       for r in ft.itertuples()])
    hardware_section(doc, hardware)
    doc.p("Per-cell values: `cells.csv` beside this report. Generated by `calmix study report`.")
    return doc


def hardware_section(doc: Doc, hardware: list[dict] | None) -> None:
    """The machines that computed the cells: numbers are bit-identical only on the same machine and libraries."""
    if not hardware:
        return
    doc.h(2, "Hardware")
    doc.p("Cells computed on " + ("this machine" if len(hardware) == 1 else f"{len(hardware)} machines (numbers "
          "may differ in the last digits between them: the CPU's bf16 kernels and the library versions enter "
          "every result)") + ":")
    doc.table(["machine"], [[hardware_line(hw)] for hw in hardware])


def write_report(out: Path, df: pd.DataFrame, cfg: StudyConfig, status: dict, dense: dict | None,
                 boot: Bootstrap, hardware: list[dict] | None = None) -> dict:
    """Write report.md, report.html (PNGs embedded), report_files/*.png and cells.csv into `out`."""
    out = Path(out)
    if not out.is_dir():
        raise CalmixError(f"study folder {out} does not exist: run `calmix study run` first")
    with atomic_dir(out / PLOTS) as tmp:
        doc = build_report(df, cfg, tmp, status, dense, boot, hardware)
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
        rows = store.cells(keys)
        st = grid_status(cfg, store, running_alive=is_locked(out))
        dense_row = store.get_dense(dense_key(cfg))
        hardware = store.get_meta(HARDWARE_META)
    dense = dense_row["result"] if dense_row else None
    boot = Bootstrap.from_rows(rows, dense)
    df = A.cells_frame(rows, boot.points())
    status = {k: len(v) for k, v in st.items() if v or k != "running"}
    return write_report(out, df, cfg, status, dense, boot, hardware)
