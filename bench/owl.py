"""Benchmark: OWL against uniform layer-wise sparsity, WikiText-2 perplexity for SparseGPT and Wanda side by side.

The model loads once; every configuration restores the dense weights, prunes on the same calibration windows and
measures perplexity on the same WikiText-2 windows. Prints a table and one JSON record (with the hardware).
Usage: CALMIX_DATA=/path/to/data python bench/owl.py [--sparsities 0.6,0.7 --nsamples 32 --seqlen 512
       --ppl-windows 16 --calib c4 --owl-lambda 0.08 --owl-m 5 --json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

from hardware import hardware


def main() -> None:
    from calmix.calib import build_calib
    from calmix.evals.ppl import dataset_perplexity
    from calmix.models import load_model
    from calmix.prune.engine import PruneConfig, prune_model
    from calmix.runrecord import versions

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default", help="model spec (default: SmolLM2-135M)")
    ap.add_argument("--calib", default="c4", help="calibration spec, one set for every configuration")
    ap.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    ap.add_argument("--seqlen", type=int, default=512, help="tokens per calibration and perplexity window")
    ap.add_argument("--ppl-windows", type=int, default=16, help="WikiText-2 test windows")
    ap.add_argument("--methods", default="sparsegpt,wanda", help="pruners, comma-separated")
    ap.add_argument("--sparsities", default="0.6,0.7")
    ap.add_argument("--owl-lambda", type=float, default=PruneConfig.owl_lambda)
    ap.add_argument("--owl-m", type=float, default=PruneConfig.owl_m)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the record here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model, tok = load_model(args.model, device=args.device)
    dense = copy.deepcopy(model.state_dict())
    calib = build_calib(args.calib, tok, nsamples=args.nsamples, seqlen=args.seqlen, seed=0)

    def ppl() -> float:
        return dataset_perplexity(model, tok, "wikitext2", seqlen=args.seqlen, device=args.device,
                                  max_windows=args.ppl_windows, progress=False)["ppl"]

    rows = [{"method": "dense", "sparsity": 0.0, "profile": "-", "ppl": ppl(), "prune_s": 0.0}]
    print(f"dense: ppl {rows[0]['ppl']:.2f}", flush=True)
    for sparsity in (float(s) for s in args.sparsities.split(",")):
        for method in args.methods.split(","):
            for profile in ("uniform", "owl"):
                model.load_state_dict(dense)
                cfg = PruneConfig(method=method, sparsity=sparsity, sparsity_profile=profile,
                                  owl_lambda=args.owl_lambda, owl_m=args.owl_m)
                t1 = time.perf_counter()
                report = prune_model(model, calib, cfg, device=args.device, progress=False)
                row = {"method": method, "sparsity": sparsity, "profile": profile,
                       "prune_s": round(time.perf_counter() - t1, 1), "measured_sparsity": round(report.sparsity, 4),
                       "layer_min": round(min(report.layer_sparsities), 4),
                       "layer_max": round(max(report.layer_sparsities), 4), "ppl": ppl()}
                rows.append(row)
                print(f"{method} {sparsity:.0%} {profile}: ppl {row['ppl']:.2f} (layers {row['layer_min']:.3f}.."
                      f"{row['layer_max']:.3f}, {row['prune_s']} s)", flush=True)

    print(f"\n| sparsity | method | uniform ppl | OWL ppl (λ {args.owl_lambda:g}, M {args.owl_m:g}) |")
    print("|---|---|---|---|")
    for sparsity in sorted({r["sparsity"] for r in rows[1:]}):
        for method in args.methods.split(","):
            got = {r["profile"]: r["ppl"] for r in rows if r["method"] == method and r["sparsity"] == sparsity}
            print(f"| {sparsity:.0%} | {method} | {got['uniform']:.2f} | {got['owl']:.2f} |")
    print(f"dense ppl {rows[0]['ppl']:.2f}")
    record = {"bench": "owl", "model": args.model, "calib": args.calib, "nsamples": args.nsamples,
              "seqlen": args.seqlen, "ppl_windows": args.ppl_windows, "owl_lambda": args.owl_lambda,
              "owl_m": args.owl_m, "rows": rows, "wall_s": round(time.perf_counter() - t0, 1),
              "hardware": hardware(), "versions": versions()}
    print(json.dumps(record))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
