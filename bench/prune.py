"""Benchmark: prune the default model per method and pattern; print wall time, peak RSS, WikiText-2 perplexity.

Each configuration runs as its own `calmix prune` process so that its peak RSS is its own.
Usage: python bench/prune.py [--nsamples 32 --seqlen 512 --calib c4 --ppl-windows 64 --methods ... --patterns ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default")
    ap.add_argument("--calib", default="c4")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--ppl-windows", type=int, default=64, help="WikiText-2 test windows of --seqlen tokens")
    ap.add_argument("--methods", default="sparsegpt,wanda,magnitude")
    ap.add_argument("--patterns", default="0.5,0.6,2:4", help="sparsities and N:M patterns")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    py = [sys.executable, "-m", "calmix.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run(py + ["ppl", "--model", args.model, "--seqlen", str(args.seqlen), "--max-windows", str(args.ppl_windows),
                  "--device", args.device, "--out", f"{tmp}/dense.json"])
        dense = json.loads(Path(f"{tmp}/dense.json").read_text())
        rows.append({"method": "dense", "target": "-", "prune_s": 0.0, "peak_rss_mb": dense["peak_rss_mb"],
                     "sparsity": 0.0, "ppl": dense["ppl"]})
        print(f"dense: ppl {dense['ppl']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for method in args.methods.split(","):
            for target in args.patterns.split(","):
                out = f"{tmp}/{method}-{target.replace(':', 'of')}"
                opt = ["--pattern", target] if ":" in target else ["--sparsity", target]
                run(py + ["prune", "--model", args.model, "--method", method, *opt, "--calib", args.calib,
                          "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--device", args.device,
                          "--out", out])
                rec = json.loads(Path(out, "calmix.json").read_text())
                run(py + ["ppl", "--model", out, "--seqlen", str(args.seqlen), "--max-windows",
                          str(args.ppl_windows), "--device", args.device, "--out", f"{out}.ppl.json"])
                ppl = json.loads(Path(f"{out}.ppl.json").read_text())["ppl"]
                row = {"method": method, "target": target, "prune_s": rec["timings_s"]["prune"],
                       "peak_rss_mb": rec["peak_rss_mb"], "sparsity": rec["overall_sparsity"], "ppl": ppl}
                rows.append(row)
                print(f"{method} {target}: prune {row['prune_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MiB, "
                      f"sparsity {row['sparsity']:.3f}, ppl {ppl:.2f}", flush=True)
    print(f"\nmodel {args.model}, calibration {args.calib} {args.nsamples}x{args.seqlen}, "
          f"WikiText-2 test perplexity on {args.ppl_windows} windows of {args.seqlen} tokens\n")
    print("| method | target | prune time (s) | peak RSS (MiB) | sparsity | WikiText-2 ppl |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['target']} | {r['prune_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['sparsity']:.3f} | "
              f"{r['ppl']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
