"""calmix's side of bench/compare.py: prune the saved model folder on the saved token ids with
calmix.prune.engine.prune_model and save the pruned model.

Usage: python _calmix_side.py MODEL_DIR IDS_PT METHOD SPARSITY OUT_DIR THREADS DTYPE SEQUENTIAL [HESSIAN_DTYPE]
(prints one JSON line)
"""

import json
import sys
import time

import torch


def main() -> None:
    model_dir, ids_pt, method, sparsity, out, threads, dtype, sequential = sys.argv[1:9]
    hessian_dtype = sys.argv[9] if len(sys.argv) > 9 else "float32"
    torch.set_num_threads(int(threads))
    from calmix.models import load_model
    from calmix.prune.engine import PruneConfig, prune_model
    from calmix.runrecord import peak_rss_mb

    ids = torch.load(ids_pt)
    model, tok = load_model(model_dir, dtype=dtype)
    cfg = PruneConfig(method, float(sparsity), blocksize=128, percdamp=0.01, sequential=sequential,
                      hessian_dtype=hessian_dtype)
    t0 = time.perf_counter()
    report = prune_model(model, ids, cfg, progress=False)
    seconds, peak = time.perf_counter() - t0, peak_rss_mb()  # the pruning's peak, before saving
    model.save_pretrained(out)
    tok.save_pretrained(out)
    stages = {k: round(v, 2) for k, v in report.timings.items() if not k.startswith("layer_")}
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "peak_rss_after_save_mb": peak_rss_mb(),
                      "layer_peak_memory_mb": report.peak_memory_mb, "stages_s": stages,
                      "sparsity": report.sparsity}))


if __name__ == "__main__":
    main()
