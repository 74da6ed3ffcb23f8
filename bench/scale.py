"""Benchmark: memory and time of pruning a ~1B-parameter model on CPU.

A random-init LLaMA-architecture model is built from a config in-process (no download) and saved in
safetensors to a temporary folder by one child process; a second child loads it as calmix loads models (home
CPU, the checkpoint's dtype) and prunes it with SparseGPT on a few random-token windows, so that its peak RSS is
that of loading and pruning alone. Prints peak RSS against the model's bytes (target: peak RSS <= model bytes +
1.5 GB) and the times; one JSON record with the hardware.
Usage: python bench/scale.py [--hidden 2048 --intermediate 5632 --layers 16 --nsamples 8 --seqlen 512
       --dtype float32 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hardware import hardware

TARGET_OVERHEAD_GB = 1.5


def build(args, folder: Path) -> None:
    """Child 1: the random model, saved as safetensors (its memory is not the pruning run's)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128,
                      num_key_value_heads=args.kv_heads or args.hidden // 128, max_position_embeddings=4096,
                      tie_word_embeddings=False, torch_dtype=args.dtype)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(getattr(torch, args.dtype))
    model.save_pretrained(folder, safe_serialization=True)
    from calmix.models import tiny_tokenizer

    tiny_tokenizer().save_pretrained(folder)  # load_model wants one; the windows are random ids anyway


def prune(args, folder: Path) -> dict:
    """Child 2: load as calmix does, prune with SparseGPT, report peak RSS and times."""
    import torch

    from calmix.models import load_model
    from calmix.prune.engine import PruneConfig, prune_model

    t0 = time.perf_counter()
    model, _ = load_model(str(folder), device="cpu", dtype="auto")
    t_load = time.perf_counter() - t0
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rss_loaded = rss_gb()
    ids = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    report = prune_model(model, ids, PruneConfig(method="sparsegpt", sparsity=0.5, batch_size=args.batch_size),
                         device="cpu", progress=False)
    return {"params": sum(p.numel() for p in model.parameters()), "dtype": str(next(model.parameters()).dtype),
            "model_gb": model_bytes / 1e9, "rss_after_load_gb": rss_loaded, "peak_rss_gb": rss_gb(),
            "load_s": round(t_load, 1), "prune_s": round(time.perf_counter() - t1, 1),
            "sparsity": round(report.sparsity, 4),
            "stages_s": {k: round(v, 1) for k, v in report.timings.items() if not k.startswith("layer_")}}


def rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    from calmix.runrecord import peak_rss_mb

    return peak_rss_mb() * 2**20 / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=0, help="0: as many as attention heads (hidden / 128)")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--phase", choices=["all", "build", "prune"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "build":
        return build(args, Path(args.folder))
    if args.phase == "prune":
        print(json.dumps(prune(args, Path(args.folder))))
        return None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        child = [sys.executable, __file__, *sys.argv[1:], "--folder", tmp]
        subprocess.run(child + ["--phase", "build"], check=True)
        t_build = time.perf_counter() - t0
        out = subprocess.run(child + ["--phase", "prune"], check=True, capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
    budget = res["model_gb"] + TARGET_OVERHEAD_GB
    res.update({"build_s": round(t_build, 1), "target_peak_rss_gb": round(budget, 2),
                "meets_target": res["peak_rss_gb"] <= budget})
    record = {"bench": "scale", "config": {k: v for k, v in vars(args).items() if k not in ("phase", "folder", "json")},
              **res, "wall_s": round(time.perf_counter() - t0, 1), "hardware": hardware()}
    print(f"{res['params'] / 1e9:.2f}B parameters in {res['dtype']}: model {res['model_gb']:.2f} GB, peak RSS "
          f"{res['peak_rss_gb']:.2f} GB (after load {res['rss_after_load_gb']:.2f} GB; target <= {budget:.2f} GB: "
          f"{'met' if res['meets_target'] else 'NOT met'}); load {res['load_s']} s, prune {res['prune_s']} s")
    print(json.dumps(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
