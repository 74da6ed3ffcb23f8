"""Bench: sampling throughput of calmix's batched generator and the build time of Self-Cal / SGS / IGSP sets.

    python bench/selfgen.py [--model default] [--batch-sizes 1,8,32] [--tokens 64]
                            [--nsamples 32] [--seqlen 512] [--kinds selfcal,sgs,igsp] [--threads N] [--out FILE.json]

Throughput = generated tokens / wall seconds for `batch` BOS-only rows of `--tokens` new tokens (EOS can end a
row early; the count is of tokens actually produced). Set builds use the default parameters of each kind
with batch_size = the largest of --batch-sizes.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from calmix.calib.generated import GENERATORS, generate_set
from calmix.calib.generated.sampling import generate
from calmix.calib.metrics import set_metrics
from calmix.lm import start_token
from calmix.models import load_model
from calmix.runrecord import peak_rss_mb, write_json_atomic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--kinds", default=",".join(GENERATORS.names()))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, device=args.device)
    info = {"model": args.model, "device": args.device, "threads": torch.get_num_threads(),
            "loadavg_start": os.getloadavg(), "throughput": [], "sets": []}
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    bos = start_token(tok, model)
    print(f"model {args.model} on {args.device}, {torch.get_num_threads()} threads, load avg {os.getloadavg()[0]:.1f}")
    for b in sizes:
        t0, c0 = time.perf_counter(), time.process_time()
        out = generate(model, tok, [[bos]] * b, args.tokens, seed=0, batch_size=b, device=args.device)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = sum(len(o) for o in out)
        row = {"batch": b, "tokens": n, "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2),
               "tok_per_s": round(n / dt, 2), "tok_per_cpu_s": round(n / cpu, 2)}
        info["throughput"].append(row)
        print(f"batch {b:3d}: {n:6d} tokens in {dt:7.1f} s = {n / dt:7.1f} tok/s wall, "
              f"{n / cpu:7.1f} tok per CPU-second")
    for kind in [k for k in args.kinds.split(",") if k]:
        t0, c0 = time.perf_counter(), time.process_time()
        s = generate_set(kind, model, tok, args.nsamples, args.seqlen, seed=0, device=args.device,
                         params={"batch_size": str(max(sizes))})
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = set_metrics(s, model=model, tokenizer=tok, device=args.device)["set"]
        row = {"kind": kind, "nsamples": args.nsamples, "seqlen": args.seqlen, "seconds": round(dt, 1),
               "cpu_seconds": round(cpu, 1), "tokens_generated": s.card.get("ntokens_generated"), "ppl": m.get("ppl"), "agg4": m["agg4"],
               "distinct_4": m["distinct_4"], "entropy": m["entropy"]}
        if kind == "igsp":
            row["igsp_agg4_set"] = s.card["agg4_set"]
            row["igsp_strata"] = [(st["name"], st["candidates"], st["picked"]) for st in s.card["strata"]]
        info["sets"].append(row)
        print(f"{kind:8s} {args.nsamples}x{args.seqlen}: {dt:8.1f} s wall ({cpu:.1f} CPU-s), {row['tokens_generated']} tokens generated, "
              f"ppl {m.get('ppl', float('nan')):.2f}, agg4 {m['agg4']:.4f}, distinct_4 {m['distinct_4']:.4f}")
    info["peak_rss_mb"] = round(peak_rss_mb(), 1)
    info["loadavg_end"] = os.getloadavg()
    print(f"peak RSS {info['peak_rss_mb']} MiB, load avg {os.getloadavg()[0]:.1f}")
    if args.out:
        write_json_atomic(args.out, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
