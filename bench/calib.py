"""Bench: build a calibration set from every available source, time it, and (optionally) measure its metrics.

    python bench/calib.py [--nsamples 32] [--seqlen 512] [--gen-nsamples 32 --gen-seqlen 512] [--dtype bfloat16]
                          [--no-metrics] [--no-selfgen] [--out FILE.json]

Prints per source: documents read, stream tokens, build seconds and the information metrics (dense perplexity
with the default model), then the generation time of Self-Cal / SGS / IGSP sets. Run it from the checkout with
calmix installed (pip install -e .).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from calmix.calib.build import build_calib
from calmix.calib.sources import SOURCES
from calmix.runrecord import peak_rss_mb, write_json_atomic

METRIC_COLS = ("ppl", "agg4", "repetition", "distinct_1", "distinct_4", "vocab_coverage", "entropy", "zipf",
               "compression")


def _num(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", default="", help="comma list (default: every available source)")
    ap.add_argument("--no-metrics", action="store_true")
    ap.add_argument("--no-selfgen", action="store_true")
    ap.add_argument("--ppl-sources", default="all",
                    help="comma list of sources whose dense perplexity is measured ('all', or 'none'); "
                         "the other metrics are computed for every source")
    ap.add_argument("--gen-nsamples", type=int, default=4, help="rows per self-generated set (generation is slow)")
    ap.add_argument("--gen-seqlen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", help="model dtype for perplexity and generation (bfloat16 is "
                                                       "2x faster on CPUs with AVX512-BF16/AMX)")
    ap.add_argument("--out", default=None, help="write all figures as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from calmix.models import load_model, load_tokenizer

    t0 = time.perf_counter()
    have_metrics = not args.no_metrics
    have_selfgen = not args.no_selfgen
    model = None
    if (have_metrics and args.ppl_sources != "none") or have_selfgen:
        model, tok = load_model(args.model, dtype=args.dtype)
    else:
        tok = load_tokenizer(args.model)
    print(f"model/tokenizer load: {time.perf_counter() - t0:.1f} s")

    names = [n for n in args.sources.split(",") if n] or list(SOURCES)
    rows, skipped = [], []
    for name in names:
        ok, why = SOURCES[name].available()
        if not ok:
            skipped.append((name, why))
            continue
        t = time.perf_counter()
        cs = build_calib(name, tok, args.nsamples, args.seqlen, seed=args.seed, use_cache=False)
        row = {"source": name, "dimension": SOURCES[name].dimension, "origin": SOURCES[name].origin(),
               "build_s": time.perf_counter() - t, **{k: cs.card["components"][0][k]
                                                      for k in ("docs_used", "docs_total", "stream_tokens")}}
        if have_metrics:
            from calmix.calib.metrics import set_metrics

            t = time.perf_counter()
            with_ppl = args.ppl_sources == "all" or name in args.ppl_sources.split(",")
            res = set_metrics(cs, model=model if with_ppl else None, tokenizer=tok)
            row["metrics_s"] = time.perf_counter() - t
            row["metrics"] = res["set"]
        rows.append(row)
        print(f"  {name:<18} built {row['build_s']:.2f} s" + (f", metrics {row['metrics_s']:.1f} s" if have_metrics else ""),
              flush=True)

    print(f"\nbuild {args.nsamples}x{args.seqlen} per source ({len(rows)} available, {len(skipped)} not available):")
    head = f"{'source':<18} {'dim':<11} {'origin':<7} {'docs used/total':>16} {'stream tok':>10} {'build s':>8}"
    if have_metrics:
        head += " " + " ".join(f"{c[:10]:>10}" for c in METRIC_COLS) + f" {'metric s':>8}"
    print(head)
    for r in rows:
        line = (f"{r['source']:<18} {r['dimension']:<11} {r['origin']:<7} {str(r['docs_used']) + '/' + str(r['docs_total']):>16} "
                f"{r['stream_tokens']:>10} {r['build_s']:>8.2f}")
        if have_metrics:
            line += " " + " ".join(f"{_num(r['metrics'].get(c, '-')):>10}" for c in METRIC_COLS) + f" {r['metrics_s']:>8.1f}"
        print(line)
    for name, why in skipped:
        print(f"{name:<18} not available: {why}")

    gen_rows = []
    if have_selfgen:
        print(f"\nself-generated sets ({args.gen_nsamples}x{args.gen_seqlen}, default parameters):")
        for kind in ("selfcal", "sgs", "igsp"):
            t = time.perf_counter()
            try:
                cs = build_calib(kind, tok, args.gen_nsamples, args.gen_seqlen, seed=args.seed, model=model,
                                 use_cache=False)
                entry = {"kind": kind, "gen_s": time.perf_counter() - t, "shape": list(cs.input_ids.shape)}
                if have_metrics:
                    from calmix.calib.metrics import set_metrics

                    entry["metrics"] = set_metrics(cs, model=model, tokenizer=tok)["set"]
            except Exception as err:  # noqa: BLE001 - report and continue the bench
                entry = {"kind": kind, "error": f"{type(err).__name__}: {str(err)[:160]}"}
            gen_rows.append(entry)
            print(f"  {kind:<8} " + (f"{entry['gen_s']:.1f} s" if "gen_s" in entry else entry["error"]), flush=True)

    total = time.perf_counter() - t0
    print(f"\ntotal {total:.1f} s, peak RSS {peak_rss_mb():.0f} MiB, threads {args.threads}")
    if args.out:
        write_json_atomic(args.out, {"args": vars(args), "sources": rows, "skipped": skipped, "generated": gen_rows,
                                     "total_s": total, "peak_rss_mb": peak_rss_mb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
