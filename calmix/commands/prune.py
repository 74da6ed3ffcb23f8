"""`calmix prune`, `calmix ppl`, `calmix sparsity`: prune a model, measure perplexity and sparsity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calmix.commands.options import add_model_args, check_model_args, model_help
from calmix.errors import CalmixError


def register(sub: argparse._SubParsersAction) -> None:
    from calmix.calib.build import BOS_CHOICES, DEFAULT_BOS
    from calmix.prune import PRUNERS
    from calmix.prune.config import HESSIAN_DTYPES
    from calmix.prune.engine import SEQUENTIAL, PruneConfig
    from calmix.prune.profile import PROFILES
    from calmix.publish import MASKS_FILE

    p = sub.add_parser("prune", help="prune a model layer by layer on a calibration set",
                       description="Prune every decoder linear of a causal LM and save the pruned model.")
    p.add_argument("--model", default="default", help=model_help())
    p.add_argument("--method", default="sparsegpt", help=f"{' | '.join(PRUNERS)} (default sparsegpt)")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of weights to prune, in [0, 1)")
    p.add_argument("--pattern", default="unstructured", help="'unstructured' or N:M such as 2:4 (default unstructured)")
    p.add_argument("--sparsity-profile", default=PruneConfig.sparsity_profile, metavar="|".join([*PROFILES, "FILE"]),
                   help="per-layer sparsity: uniform, owl (outlier-weighted, mean = --sparsity) or a FILE (JSON list "
                        "or one number a line, one per decoder layer); default uniform")
    p.add_argument("--owl-lambda", type=float, default=PruneConfig.owl_lambda,
                   help=f"OWL: layer sparsities span 2 x lambda around --sparsity (default {PruneConfig.owl_lambda})")
    p.add_argument("--owl-m", type=float, default=PruneConfig.owl_m,
                   help=f"OWL: outliers are scores above M x the layer mean (default {PruneConfig.owl_m:g})")
    p.add_argument("--calib", default="c4", help="calibration spec: source name, file, mix:..., selfcal, igsp, a built set")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per window (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows (default 0)")
    p.add_argument("--calib-bos", default=DEFAULT_BOS, choices=list(BOS_CHOICES),
                   help="calibration windows start with BOS: auto (where the tokenizer adds one; default), yes, no")
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block size (default 128)")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT damping, fraction of mean diag(H)")
    p.add_argument("--dense-inputs", action="store_true",
                   help="feed each layer the dense model's activations instead of the pruned ones")
    p.add_argument("--sequential", default=PruneConfig.sequential, choices=list(SEQUENTIAL),
                   help="statistics of each linear from the dense layer ('layer') or from the outputs of the pruned "
                        f"linears before it in its layer ('linear'); default {PruneConfig.sequential}")
    p.add_argument("--hessian-dtype", default=PruneConfig.hessian_dtype, choices=list(HESSIAN_DTYPES),
                   help="SparseGPT's XᵀX products in fp32 (default), or in a 16-bit model's own dtype on its matrix "
                        "units (bf16 on CPUs with AVX512-BF16 or AMX), summed in fp32: about 2e-3 relative in H")
    p.add_argument("--include", action="append", default=None, help="fnmatch pattern of linears to prune (repeatable)")
    p.add_argument("--exclude", action="append", default=None, help="fnmatch pattern of linears to skip (repeatable)")
    p.add_argument("--batch-size", type=int, default=8, help="calibration windows per layer forward (default 8)")
    p.add_argument("--offload", default="auto", help="where activations live: auto | device | cpu")
    p.add_argument("--ppl", action="store_true", help="also measure WikiText-2 perplexity, dense and pruned")
    p.add_argument("--ppl-windows", type=int, default=None, help="limit the perplexity to this many windows")
    p.add_argument("--out", required=True,
                   help="output folder (a loadable HF model folder + calmix.json + README.md model card)")
    p.add_argument("--save-masks", action="store_true",
                   help=f"also write the pruning masks, bit-packed, to {MASKS_FILE} in the output folder")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="upload the output folder to this hub model repo (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_model_args(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("ppl", help="perplexity on WikiText-2 or a text file (SparseGPT-style windows)")
    p.add_argument("--model", default="default", help=model_help())
    p.add_argument("--data", default="wikitext2", help="wikitext2 or a .txt/.jsonl file (default wikitext2)")
    p.add_argument("--seqlen", type=int, default=2048, help="window length (default 2048)")
    p.add_argument("--max-windows", type=int, default=None, help="only the first N windows")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    add_model_args(p)
    p.set_defaults(func=cmd_ppl)

    p = sub.add_parser("sparsity", help="report the sparsity of a saved model's decoder linears")
    p.add_argument("model", help="model folder (or any model spec)")
    p.add_argument("--json", action="store_true", help="print the full per-linear report as JSON")
    p.set_defaults(func=cmd_sparsity)


def _calib_set(args, tokenizer, model):
    """The calibration set; a generated one is sampled with the model on the device (offloaded if too large)."""
    import contextlib

    from calmix.calib import build_calib, parse_spec
    from calmix.placement import on_device

    parsed = parse_spec(args.calib)
    with on_device(model, args.device, args.max_gpu_memory) if parsed.needs_model else contextlib.nullcontext():
        return build_calib(parsed, tokenizer, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
                           model=model, device=args.device, bos=args.calib_bos)


def _ppl(args, model, tok) -> dict:
    """WikiText-2 perplexity with the model on the device (offloaded if too large)."""
    from calmix.evals.ppl import dataset_perplexity
    from calmix.placement import on_device

    with on_device(model, args.device, args.max_gpu_memory):
        return dataset_perplexity(model, tok, "wikitext2", seqlen=min(args.seqlen, 2048), device=args.device,
                                  max_windows=args.ppl_windows)


def command_line(prog: str, args: argparse.Namespace) -> str:
    """A shell command that reruns `args`: every option spelled out (flags whose value is off left out)."""
    import shlex

    words = prog.split()
    for dest, value in vars(args).items():
        if dest in ("func", "command") or value is None or value is False:
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _card(args, cfg, report, dtype: str, result: dict):
    """The model card facts of a prune run."""
    import calmix
    from calmix.publish import MASKS_FILE, PruneCard

    ppl = {"dense": result["ppl_dense"], "pruned": result["ppl_pruned"]} if "ppl_pruned" in result else None
    return PruneCard(model=args.model, method=cfg.method, sparsity=cfg.sparsity, pattern=cfg.pattern,
                     measured_sparsity=report.sparsity, n_linears=len(report.layers), dtype=dtype,
                     calib=result["calib"], command=command_line("calmix prune", args),
                     calmix_version=calmix.__version__, ppl=ppl, masks_file=MASKS_FILE if args.save_masks else None,
                     options={"blocksize": cfg.blocksize, "percdamp": cfg.percdamp,
                              "layer inputs": "dense" if cfg.dense_inputs else "pruned (sequential)",
                              "statistics": f"sequential by {cfg.sequential}, XᵀX in {cfg.hessian_dtype}",
                              "sparsity profile": profile_text(cfg, report.layer_sparsities)})


def profile_text(cfg, sparsities: list[float]) -> str:
    """The card's line on the per-layer sparsity: the profile, its parameters and the range of layer targets."""
    if cfg.sparsity_profile == "uniform":
        return "uniform"
    head = (f"owl (lambda {cfg.owl_lambda:g}, M {cfg.owl_m:g})" if cfg.sparsity_profile == "owl"
            else f"file {Path(cfg.sparsity_profile).name}")
    return f"{head}: layer targets {min(sparsities):.3f}..{max(sparsities):.3f}" if sparsities else head


def cmd_prune(args) -> int:
    from calmix.models import dtype_name, load_model
    from calmix.prune import PRUNERS
    from calmix.prune.engine import PruneConfig, prune_model, validate_config
    from calmix.prune.masks import validate_pattern
    from calmix.prune.profile import check_profile
    from calmix.publish import MASKS_FILE, check_repo_id, pruned_masks, push_to_hub, save_masks, write_card
    from calmix.runrecord import Timer, atomic_dir, check_writable_dir, run_record, write_json_atomic

    if args.nsamples < 1 or args.seqlen < 2:
        raise CalmixError("--nsamples must be >= 1 and --seqlen >= 2")
    check_model_args(args)
    if args.push_to_hub is not None:
        check_repo_id(args.push_to_hub)
    out = check_writable_dir(args.out)
    cfg = PruneConfig(method=args.method, sparsity=args.sparsity, pattern=args.pattern, blocksize=args.blocksize,
                      percdamp=args.percdamp, dense_inputs=args.dense_inputs, sequential=args.sequential,
                      hessian_dtype=args.hessian_dtype,
                      include=tuple(args.include or ("*",)), exclude=tuple(args.exclude or ()),
                      offload=args.offload, batch_size=args.batch_size, sparsity_profile=args.sparsity_profile,
                      owl_lambda=args.owl_lambda, owl_m=args.owl_m)
    PRUNERS.get(cfg.method)  # fail on bad options before loading anything
    n, m = cfg.nm()
    validate_pattern(cfg.sparsity, n, m, m or 1)
    check_profile(cfg.sparsity_profile, m, cfg.owl_lambda, cfg.owl_m)
    timer = Timer()
    with timer("load"):  # home: CPU memory; layers stream to the device one at a time
        model, tok = load_model(args.model, device=args.device, dtype=args.dtype, home="cpu",
                                max_memory=args.max_gpu_memory)
    validate_config(model, cfg)
    with timer("calibration"):
        calib = _calib_set(args, tok, model)
    result: dict = {}
    if args.ppl:
        with timer("ppl_dense"):
            result["ppl_dense"] = _ppl(args, model, tok)
    with timer("prune"):
        report = prune_model(model, calib, cfg, device=args.device)
    if args.ppl:
        with timer("ppl_pruned"):
            result["ppl_pruned"] = _ppl(args, model, tok)
    dtype = dtype_name(next(model.parameters()).dtype)
    calib_card = {k: v for k, v in calib.card.items() if k not in ("texts", "generations")}
    calib_info = {"spec": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed,
                  "bos": args.calib_bos, "card": calib_card}
    with atomic_dir(out) as tmp:
        with timer("save"):
            model.save_pretrained(tmp)  # in the dtype the model was loaded in
            tok.save_pretrained(tmp)
            if args.save_masks:
                save_masks(tmp / MASKS_FILE, pruned_masks(model, [r.name for r in report.layers]))
        write_card(tmp, _card(args, cfg, report, dtype, {**result, "calib": calib_info}))
        record = run_record("prune", cfg, timer.times, model=args.model, device=args.device, dtype=args.dtype,
                            loaded_dtype=dtype, calib=calib_info,
                            overall_sparsity=report.sparsity, layer_sparsities=report.layer_sparsities,
                            layers=report.to_dict()["layers"],
                            engine_timings=report.timings, layer_peak_memory_mb=report.peak_memory_mb,
                            memory_kind=report.memory_kind, **result)
        write_json_atomic(tmp / "calmix.json", record)
    msg = f"pruned {args.model} with {cfg.method} ({cfg.pattern if cfg.nm()[1] else f'{cfg.sparsity:.0%}'}): " \
          f"sparsity {report.sparsity:.4f} over {len(report.layers)} linears in {timer.times['prune']:.1f} s"
    print(msg)
    if args.ppl:
        print(f"WikiText-2 perplexity: dense {result['ppl_dense']['ppl']:.2f} -> pruned {result['ppl_pruned']['ppl']:.2f}")
    print(f"saved to {out} in {dtype} (calmix.json holds the run record, README.md the model card)")
    if args.push_to_hub is not None:
        print(f"pushed to {push_to_hub(out, args.push_to_hub, private=args.private or None)}")
    return 0


def cmd_ppl(args) -> int:
    from calmix.evals.ppl import dataset_perplexity
    from calmix.models import load_model
    from calmix.placement import on_device
    from calmix.runrecord import Timer, args_dict, run_record, write_json_atomic

    if args.seqlen < 2:
        raise CalmixError("--seqlen must be >= 2")
    check_model_args(args)
    timer = Timer()
    with timer("load"):
        model, tok = load_model(args.model, device=args.device, dtype=args.dtype, home="cpu",
                                max_memory=args.max_gpu_memory)
    with timer("ppl"), on_device(model, args.device, args.max_gpu_memory):
        res = dataset_perplexity(model, tok, args.data, seqlen=args.seqlen, device=args.device,
                                 max_windows=args.max_windows)
    print(f"perplexity {res['ppl']:.3f} on {res['data']} ({res['windows']} windows x {res['seqlen']} tokens)")
    if args.out:
        write_json_atomic(args.out, run_record("ppl", args_dict(args), timer.times, **res))
    return 0


def cmd_sparsity(args) -> int:
    from calmix.models import BUILTIN_MODELS, load_model
    from calmix.prune.coverage import coverage_lines, parameter_coverage
    from calmix.prune.engine import model_sparsity

    path = Path(args.model)
    if not path.exists() and args.model not in BUILTIN_MODELS:
        raise CalmixError(f"model folder {args.model} does not exist")
    model, _ = load_model(args.model)
    rep = model_sparsity(model)
    rep["all_parameters"] = parameter_coverage(model)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(f"{rep['n_linears']} decoder linears, {rep['n_weights']:,} weights, overall sparsity {rep['overall']:.4f}")
        values = list(rep["linears"].values())
        if values:
            print(f"per-linear sparsity: min {min(values):.4f}, max {max(values):.4f}")
        print("\n".join(coverage_lines(rep["all_parameters"])))
    return 0


