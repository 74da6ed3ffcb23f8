"""llm-compressor's side of bench/compare.py, run by the llm-compressor virtual environment's python:
prune the saved model folder on the saved token ids with `oneshot` and save the pruned model (dense format).

Usage: python _llmc_side.py MODEL_DIR IDS_PT METHOD SPARSITY OUT_DIR THREADS BATCH_SIZE  (prints one JSON line)
"""

import json
import resource
import sys
import time

import torch


def main() -> None:
    model_dir, ids_pt, method, sparsity, out, threads, batch_size = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = torch.load(ids_pt)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    if method == "sparsegpt":
        recipe = SparseGPTModifier(sparsity=float(sparsity), mask_structure="0:0", block_size=128,
                                   dampening_frac=0.01, ignore=["re:.*lm_head"])
    else:
        recipe = WandaPruningModifier(sparsity=float(sparsity), mask_structure="0:0", ignore=["re:.*lm_head"])
    t0 = time.perf_counter()
    oneshot(model=model, tokenizer=tok, dataset=ds, recipe=recipe, num_calibration_samples=ids.shape[0],
            max_seq_length=ids.shape[1], shuffle_calibration_samples=False, batch_size=int(batch_size))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the pruning's peak, before saving
    model.save_pretrained(out, save_compressed=False)
    tok.save_pretrained(out)
    import llmcompressor
    import transformers
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak,
                      "peak_rss_after_save_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "versions": {"llmcompressor": llmcompressor.__version__, "torch": torch.__version__,
                                   "transformers": transformers.__version__}}))


if __name__ == "__main__":
    main()
