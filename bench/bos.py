"""Benchmark: does a BOS token at the start of every calibration window change the pruned model?

For each model: dense WikiText-2 perplexity with and without BOS at the start of every window, then SparseGPT at
the given sparsity on c4 calibration windows built with `bos=no` and with `bos=yes` (the same draws, the first
token replaced by BOS), each pruned model's perplexity measured both ways. The chosen default of
`calmix calib build --bos` / `calmix prune --calib-bos` comes from these numbers.
Usage: python bench/bos.py [--models default,gemma3-270m --nsamples 32 --seqlen 512 --ppl-windows 16
       --sparsity 0.6 --json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

from hardware import describe, hardware

from calmix.calib import build_calib
from calmix.evals.ppl import dataset_perplexity
from calmix.lm import bos_prefix
from calmix.models import load_model
from calmix.prune.engine import PruneConfig, prune_model


def ppl_both(model, tok, args) -> dict:
    """WikiText-2 perplexity with BOS starting each window (where the tokenizer adds one) and without."""
    out = {}
    for name, bos in (("bos", True), ("no_bos", False)):
        res = dataset_perplexity(model, tok, "wikitext2", seqlen=args.seqlen, device=args.device,
                                 max_windows=args.ppl_windows, progress=False, bos=bos)
        out[name] = res["ppl"]
        out["tokens"] = res["tokens"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="default,gemma3-270m")
    ap.add_argument("--calib", default="c4")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--ppl-windows", type=int, default=16)
    ap.add_argument("--sparsity", type=float, default=0.6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    for spec in args.models.split(","):
        model, tok = load_model(spec, device=args.device)
        model.eval()
        dense = ppl_both(model, tok, args)
        print(f"{spec}: tokenizer adds BOS: {bool(bos_prefix(tok))} (bos id {tok.bos_token_id}); dense ppl "
              f"{dense['bos']:.2f} with BOS, {dense['no_bos']:.2f} without ({dense['tokens']} tokens)", flush=True)
        rows.append({"model": spec, "calib_bos": "dense", "ppl_bos": dense["bos"], "ppl_no_bos": dense["no_bos"],
                     "tokens": dense["tokens"]})
        del model
        for calib_bos in ("no", "yes"):
            model, tok = load_model(spec, device=args.device)
            model.eval()
            calib = build_calib(args.calib, tok, args.nsamples, args.seqlen, seed=0, bos=calib_bos, use_cache=False)
            t0 = time.perf_counter()
            prune_model(model, calib, PruneConfig(method="sparsegpt", sparsity=args.sparsity), device=args.device,
                        progress=False)
            seconds = time.perf_counter() - t0
            got = ppl_both(model, tok, args)
            rows.append({"model": spec, "calib_bos": calib_bos, "ppl_bos": got["bos"], "ppl_no_bos": got["no_bos"],
                         "tokens": got["tokens"], "prune_s": round(seconds, 1)})
            print(f"{spec} calib bos={calib_bos}: pruned ppl {got['bos']:.2f} with BOS, {got['no_bos']:.2f} "
                  f"without (prune {seconds:.0f} s)", flush=True)
            del model
    hw = hardware()
    print(f"\nSparseGPT {args.sparsity:.0%}, {args.calib} {args.nsamples}x{args.seqlen} calibration windows; "
          f"WikiText-2 test, {args.ppl_windows} windows of {args.seqlen}; {describe(hw)}\n")
    print("| model | calibration windows | ppl, eval with BOS | ppl, eval without BOS |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['calib_bos']} | {r['ppl_bos']:.2f} | {r['ppl_no_bos']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"hardware": hw, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
