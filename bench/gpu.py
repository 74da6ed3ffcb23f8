"""Benchmark and checks on a CUDA machine (exits with a message where there is none).

1. Scale: a random-init model with LLaMA-3.1-8B's config in bf16, home = CPU, pruned with SparseGPT on
   128 x 2048 random tokens with the compute on the GPU: peak GPU memory (target <= 20 GB) and prune time.
2. Equality: tiny random models of several architectures pruned on CPU and on CUDA: mask agreement and the
   pruned models' losses on the same batch.
3. The CUDA tests of the suite (`pytest -q` on the files that use CUDA), where pytest is installed.
One JSON record at the end. Runs with the system python3 and PYTHONPATH=. (no network, nothing downloaded).
Usage: PYTHONPATH=. python3 bench/gpu.py [--skip-scale] [--nsamples 128 --seqlen 2048 --layers 32 --json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

try:
    import torch
except ImportError:
    sys.exit("bench/gpu.py: torch is not installed for this python; run it where torch and CUDA are")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import hardware  # noqa: E402

TARGET_GPU_GB = 20.0
CUDA_TESTS = ["tests/evals/test_devices.py", "tests/test_device_checks.py"]
LLAMA_31_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5,
                   rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
                   rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"})


def random_llama(layers: int, dtype: torch.dtype) -> torch.nn.Module:
    """LLaMA-3.1-8B's architecture with random weights on the CPU, built on the meta device and filled in place
    (fast; no init pass over 8B parameters), rotary tables rebuilt."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(**{**LLAMA_31_8B, "num_hidden_layers": layers}, use_cache=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)  # norms
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(0.02).to(dtype))
    model.model.rotary_emb = LlamaRotaryEmbedding(cfg)
    return model.eval()


def scale(args) -> dict:
    """Prune the random 8B-config model from CPU on the GPU: peak GPU memory, time."""
    from calmix.prune.engine import PruneConfig, prune_model

    t0 = time.perf_counter()
    model = random_llama(args.layers, torch.bfloat16)
    t_build = time.perf_counter() - t0
    ids = torch.randint(0, LLAMA_31_8B["vocab_size"], (args.nsamples, args.seqlen),
                        generator=torch.Generator().manual_seed(0))
    torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    report = prune_model(model, ids, PruneConfig(method="sparsegpt", sparsity=0.5, batch_size=args.batch_size),
                         device="cuda", progress=False)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    return {"params": sum(p.numel() for p in model.parameters()), "layers": args.layers,
            "tokens": args.nsamples * args.seqlen, "build_s": round(t_build, 1),
            "prune_s": round(time.perf_counter() - t1, 1), "peak_gpu_gb": round(peak, 2),
            "reserved_gpu_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2),
            "meets_target": peak <= TARGET_GPU_GB, "sparsity": round(report.sparsity, 4),
            "home_after": str(next(model.parameters()).device),
            "stages_s": {k: round(v, 1) for k, v in report.timings.items() if not k.startswith("layer_")}}


def tiny_models() -> dict:
    """Tiny random decoders of several architectures, fp32, built from configs."""
    import transformers as tf

    common = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=256, num_key_value_heads=2, use_cache=False)
    return {
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**common)),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**common)),
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**common, sliding_window=8)),
        "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**common, head_dim=16, sliding_window=8,
                                                                    sliding_window_pattern=2)),
        "qwen3_moe": lambda: tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(**common, moe_intermediate_size=32,
                                                                      head_dim=16, num_experts=4,
                                                                      num_experts_per_tok=2)),
    }


def equality() -> dict:
    """Per architecture and method: share of equal mask entries CPU vs CUDA, and the pruned losses on both."""
    from calmix.prune.engine import PruneConfig, prune_model

    out = {}
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    for arch, build in tiny_models().items():
        for method in ("wanda", "sparsegpt"):
            try:
                torch.manual_seed(0)
                base = build().eval()
                runs = {}
                for device in ("cpu", "cuda"):
                    model = copy.deepcopy(base).to(device)
                    prune_model(model, ids, PruneConfig(method=method, sparsity=0.5, batch_size=2), device=device,
                                progress=False)
                    with torch.no_grad():
                        loss = float(model(input_ids=ids.to(device), labels=ids.to(device)).loss)
                    masks = {n: (p.detach() == 0).cpu() for n, p in model.named_parameters() if p.dim() >= 2}
                    runs[device] = (loss, masks)
                (l_cpu, m_cpu), (l_gpu, m_gpu) = runs["cpu"], runs["cuda"]
                same = sum(int((m_cpu[n] == m_gpu[n]).sum()) for n in m_cpu)
                total = sum(m.numel() for m in m_cpu.values())
                out[f"{arch}/{method}"] = {"mask_agreement": same / total, "masks_equal": same == total,
                                           "loss_cpu": l_cpu, "loss_cuda": l_gpu,
                                           "loss_rel_diff": abs(l_cpu - l_gpu) / max(abs(l_cpu), 1e-12)}
            except Exception as exc:  # one architecture failing must not hide the others
                out[f"{arch}/{method}"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def cuda_tests() -> dict:
    """The suite's CUDA tests through pytest, where it is installed."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"skipped": "pytest is not installed here"}
    files = [f for f in CUDA_TESTS if Path(f).exists()]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                          capture_output=True, text=True, timeout=300)
    return {"files": files, "returncode": proc.returncode, "tail": proc.stdout[-1500:] + proc.stderr[-500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=32, help="decoder layers of the 8B config (32 = the real one)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to run")
        return 0
    record: dict = {"bench": "gpu", "hardware": hardware(),
                    "versions": {"torch": torch.__version__, "python": sys.version.split()[0]}}
    try:
        import transformers

        record["versions"]["transformers"] = transformers.__version__
    except ImportError as exc:
        record["error"] = f"transformers missing: {exc}"
    for name, part in (("equality", equality), ("scale", None if args.skip_scale else lambda: scale(args)),
                       ("cuda_tests", cuda_tests)):
        if part is None:
            continue
        t0 = time.perf_counter()
        try:
            record[name] = part()
        except Exception as exc:
            record[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        print(f"{name} done in {time.perf_counter() - t0:.0f} s: {json.dumps(record[name])[:600]}", flush=True)
        torch.cuda.empty_cache()
    print(json.dumps(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
