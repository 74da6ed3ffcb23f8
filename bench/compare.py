"""Side-by-side benchmark: calmix against llm-compressor (`oneshot` with SparseGPTModifier and
WandaPruningModifier) on exactly the same token ids, alternating runs, one perplexity evaluator.

Steps: (1) llm-compressor is installed, once, in its own virtual environment (--venv): torch==2.13.0 first,
then llmcompressor under a constraints file pinning that torch, so no install brings another torch;
(2) the model is saved as a plain folder and the calibration windows (calmix's builder, --calib) as ids.pt;
both sides read those; (3) every (method, implementation) runs as its own process with --threads threads,
round-robin over --rounds; (4) WikiText-2 perplexity of every output by `calmix ppl` (same windows);
(5) a table (time, peak RSS, perplexity, calmix/llm-compressor ratio) with the hardware and the load average
beside each figure, and compare.json in --out.
Usage: nice -n 5 python bench/compare.py [--methods sparsegpt,wanda --sparsity 0.6 --rounds 1 --bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hardware import describe, hardware  # noqa: E402
TORCH = "torch==2.13.0"


def ensure_venv(venv: Path) -> dict:
    """llm-compressor's own virtual environment (created on first use); the versions it holds."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        constraints = venv / "constraints.txt"
        constraints.write_text(TORCH + "\n")
        subprocess.run([str(py), "-m", "pip", "install", "-q", TORCH], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(constraints), "llmcompressor"], check=True)
    probe = ("import json, torch, transformers, llmcompressor; print(json.dumps({'torch': torch.__version__, "
             "'transformers': transformers.__version__, 'llmcompressor': llmcompressor.__version__}))")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"llm-compressor does not import in {venv}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(args, out: Path) -> tuple[Path, Path]:
    """Save the model as a plain folder (fp32) and the calibration token ids as ids.pt, once."""
    import torch

    from calmix.calib import build_calib
    from calmix.models import load_model

    model_dir, ids_pt = out / "dense", out / "ids.pt"
    if not (model_dir / "config.json").exists():
        model, tok = load_model(args.model, dtype="float32")
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    if not ids_pt.exists():
        from calmix.models import load_tokenizer

        calib = build_calib(args.calib, load_tokenizer(str(model_dir)), nsamples=args.nsamples, seqlen=args.seqlen,
                            seed=args.seed)
        torch.save(calib.input_ids.clone(), ids_pt)
    return model_dir, ids_pt


def side(cmd: list[str], env: dict) -> dict:
    """Run one side's process; its JSON line, with the load average before and after."""
    load0 = os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["load_avg_before"], rec["load_avg_after"] = [round(x, 2) for x in load0], [round(x, 2) for x in os.getloadavg()]
    return rec


def perplexity(folder: Path, args, env: dict) -> float:
    """WikiText-2 perplexity by calmix's evaluator (calmix.evals.ppl), --ppl-windows windows of --seqlen."""
    out = folder.with_suffix(".ppl.json")
    subprocess.run([sys.executable, "-m", "calmix.cli", "ppl", "--model", str(folder), "--seqlen", str(args.seqlen),
                    "--max-windows", str(args.ppl_windows), "--dtype", "float32", "--out", str(out)],
                   check=True, capture_output=True, env=env)
    return json.loads(out.read_text())["ppl"]


def main() -> None:
    from calmix.prune.config import PruneConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--calib", default="c4")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparsity", type=float, default=0.6)
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--sequential", default=PruneConfig.sequential,
                    help="calmix's sequential mode(s), comma-separated; the first is compared with llm-compressor")
    ap.add_argument("--bf16", action="store_true", help="also run calmix SparseGPT on the bf16 model, with XᵀX "
                    "products in fp32 and in bf16 (--hessian-dtype model), both summed in fp32")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every configuration, alternating")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llmc-batch-size", type=int, default=1, help="llm-compressor's calibration batch size")
    ap.add_argument("--ppl-windows", type=int, default=64)
    ap.add_argument("--venv", default=str(Path.home() / ".cache" / "calmix" / "llmc-venv"))
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "calmix" / "compare"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    versions = ensure_venv(Path(args.venv))
    model_dir, ids_pt = prepare(args, out)
    llmc_py = str(Path(args.venv) / "bin" / "python")
    modes = args.sequential.split(",")
    # the calmix-vs-llm-compressor pairs first, then the extra calmix modes and dtypes
    runs = [(m, impl, "float32", modes[0], "float32") for m in args.methods.split(",")
            for impl in ("calmix", "llm-compressor")]
    if args.bf16:
        runs += [("sparsegpt", "calmix", "bfloat16", modes[0], h) for h in ("float32", "model")]
    runs += [(m, "calmix", "float32", q, "float32") for q in modes[1:] for m in args.methods.split(",")]
    rows = []
    for rnd in range(args.rounds):
        for method, impl, dtype, seq, hdtype in runs:
            dest = out / f"{impl}-{method}-{dtype}-{seq}-{hdtype}-{rnd}"
            common = [str(model_dir), str(ids_pt), method, str(args.sparsity), str(dest), str(args.threads)]
            if impl == "calmix":
                cmd = [sys.executable, str(HERE / "_calmix_side.py"), *common, dtype, seq, hdtype]
            else:
                cmd = [llmc_py, str(HERE / "_llmc_side.py"), *common, str(args.llmc_batch_size)]
            rec = side(cmd, env)
            rec.update(method=method, impl=impl, dtype=dtype, round=rnd, ppl=perplexity(dest, args, env),
                       sequential=seq if impl == "calmix" else "-",
                       hessian_dtype=hdtype if impl == "calmix" and method == "sparsegpt" else "-")
            rows.append(rec)
            (out / "compare.partial.json").write_text(json.dumps({"hardware": hardware(), "rows": rows}, indent=2))
            print(f"{impl} {method} {dtype} {rec['sequential']} XᵀX {rec['hessian_dtype']} round {rnd}: "
                  f"{rec['seconds']:.1f} s, peak RSS {rec['peak_rss_mb']:.0f} MiB,"
                  f" ppl {rec['ppl']:.2f}, load {rec['load_avg_before'][0]}->{rec['load_avg_after'][0]}", flush=True)
    dense_ppl = perplexity(model_dir, args, env)
    record = {"hardware": hardware(), "llmc": versions, "args": vars(args), "dense_ppl": dense_ppl, "rows": rows}
    (out / "compare.json").write_text(json.dumps(record, indent=2))
    print_table(record)


def print_table(record: dict) -> None:
    """The markdown table: per run time, peak RSS, perplexity and load; calmix/llm-compressor ratios."""
    hw, a = record["hardware"], record["args"]
    print(f"\n{describe(hw)}; {a['threads']} threads; "
          f"llm-compressor {record['llmc']['llmcompressor']} (transformers {record['llmc']['transformers']}); "
          f"{a['nsamples']}x{a['seqlen']} {a['calib']} windows, {a['sparsity']:.0%}; WikiText-2 ppl on "
          f"{a['ppl_windows']} windows of {a['seqlen']} (dense {record['dense_ppl']:.2f})\n")
    print("| method | impl | sequential | dtype | XᵀX products | round | time (s) | peak RSS (MiB) | ppl | "
          "load avg (1 min, before/after) |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---|")
    for r in record["rows"]:
        print(f"| {r['method']} | {r['impl']} | {r['sequential']} | {r['dtype']} | {r.get('hessian_dtype', '-')} | "
              f"{r['round']} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['ppl']:.2f} | {r['load_avg_before'][0]} / {r['load_avg_after'][0]} |")
    stages = ("capture", "statistics", "solve", "replay", "error")
    print("\ncalmix's time by stage (s, summed over layers):\n")
    print("| method | dtype | XᵀX products | round | " + " | ".join(stages) + " |")
    print("|---|---|---|---:|" + "---:|" * len(stages))
    for r in record["rows"]:
        if r.get("stages_s"):
            print(f"| {r['method']} | {r['dtype']} | {r.get('hessian_dtype', '-')} | {r['round']} | "
                  + " | ".join(f"{r['stages_s'].get(k, 0):.1f}" for k in stages) + " |")
    print("\n| method | round | time ratio calmix/llm-compressor | ppl calmix / llm-compressor |")
    print("|---|---:|---:|---|")
    for r in record["rows"]:
        if r["impl"] != "calmix" or r["dtype"] != "float32" or r["sequential"] != a["sequential"].split(",")[0]:
            continue
        ref = [q for q in record["rows"] if q["impl"] == "llm-compressor" and q["method"] == r["method"]
               and q["round"] == r["round"]]
        if ref:
            print(f"| {r['method']} | {r['round']} | {r['seconds'] / ref[0]['seconds']:.2f} | "
                  f"{r['ppl']:.2f} / {ref[0]['ppl']:.2f} |")


if __name__ == "__main__":
    main()
