"""Benchmark: prune the default model per method, pattern and sequential mode; print wall time, the time per
stage (capture, statistics, solve, replay, error; summed over layers), peak RSS and WikiText-2 perplexity.

Each configuration runs as its own `calmix prune` process so that its peak RSS is its own; with --rounds > 1
the configurations alternate (round-robin), so that a shared machine's load falls on all of them alike.
Usage: python bench/prune.py [--nsamples 32 --seqlen 512 --calib c4 --ppl-windows 64 --methods ... --patterns ...
       --sequential layer,linear --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("capture", "statistics", "solve", "replay", "error")


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
    ap.add_argument("--sequential", default="layer", help="sequential modes to compare: layer, linear or both")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every configuration, alternating")
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
        configs = [(m, t, q) for m in args.methods.split(",") for t in args.patterns.split(",")
                   for q in args.sequential.split(",")]
        for rnd in range(args.rounds):
            for method, target, seq in configs:
                out = f"{tmp}/{method}-{target.replace(':', 'of')}-{seq}-{rnd}"
                opt = ["--pattern", target] if ":" in target else ["--sparsity", target]
                run(py + ["prune", "--model", args.model, "--method", method, *opt, "--calib", args.calib,
                          "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--device", args.device,
                          "--sequential", seq, "--out", out])
                rec = json.loads(Path(out, "calmix.json").read_text())
                run(py + ["ppl", "--model", out, "--seqlen", str(args.seqlen), "--max-windows",
                          str(args.ppl_windows), "--device", args.device, "--out", f"{out}.ppl.json"])
                ppl = json.loads(Path(f"{out}.ppl.json").read_text())["ppl"]
                stages = {k: rec["engine_timings"].get(k, 0.0) for k in STAGES}
                row = {"method": method, "target": target, "sequential": seq, "round": rnd,
                       "prune_s": rec["timings_s"]["prune"], "stages_s": stages, "peak_rss_mb": rec["peak_rss_mb"],
                       "sparsity": rec["overall_sparsity"], "ppl": ppl}
                rows.append(row)
                shutil.rmtree(out)
                print(f"{method} {target} {seq}: prune {row['prune_s']:.1f} s "
                      f"({', '.join(f'{k} {v:.1f}' for k, v in stages.items())}), "
                      f"peak RSS {row['peak_rss_mb']:.0f} MiB, sparsity {row['sparsity']:.3f}, ppl {ppl:.2f}",
                      flush=True)
    print(f"\nmodel {args.model}, calibration {args.calib} {args.nsamples}x{args.seqlen}, "
          f"WikiText-2 test perplexity on {args.ppl_windows} windows of {args.seqlen} tokens\n")
    print("| method | target | sequential | prune time (s) | " + " | ".join(f"{k} (s)" for k in STAGES)
          + " | peak RSS (MiB) | sparsity | WikiText-2 ppl |")
    print("|---|---|---|---:|" + "---:|" * len(STAGES) + "---:|---:|---:|")
    for r in rows:
        stages = r.get("stages_s", {})
        print(f"| {r['method']} | {r['target']} | {r.get('sequential', '-')} | {r['prune_s']:.1f} | "
              + " | ".join(f"{stages.get(k, 0.0):.1f}" for k in STAGES)
              + f" | {r['peak_rss_mb']:.0f} | {r['sparsity']:.3f} | {r['ppl']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
