"""`calmix eval`: score a model on a suite, and its retention against the dense model (scores cached per model and suite)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from calmix.errors import CalmixError

ENGINES = ("calmix", "lm-eval")


def register(subparsers) -> None:
    """Add the `eval` subcommand."""
    from calmix.commands.options import add_model_args, model_help
    from calmix.evals.suites import SUITES

    p = subparsers.add_parser("eval", help="capability scores of a model, and retention against the dense model",
                              description="Score a model on an evaluation suite; with --dense, also the per-dimension "
                                          "and total retention against the dense model (dense scores are cached).")
    p.add_argument("--model", required=True, help=model_help())
    p.add_argument("--suite", default=None, choices=sorted(SUITES),
                   help="suite (default: small for models under 1B parameters, else paper)")
    p.add_argument("--tasks", default=None, help="comma-separated task names instead of the suite's list")
    p.add_argument("--limit", type=int, default=None, help="items per task (seeded subset; default: each task's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the item subsets and few-shot draws")
    p.add_argument("--dense", default=None,
                   help="dense model (folder/spec) or a JSON file of its scores (an earlier --out, or a dense cache file)")
    p.add_argument("--engine", default="calmix", choices=ENGINES, help="calmix scorers (default) or lm-evaluation-harness")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-cache", action="store_true", help="recompute the dense scores instead of reading the cache")
    p.add_argument("--out", required=True, help="output JSON file (a run record is written beside it)")
    p.add_argument("--allow-unsafe-exec", action="store_true",
                   help="run model-written code even where the sandbox has no kernel isolation (in-process guard only)")
    p.set_defaults(func=run)


def _load_scores_file(path: Path):
    from calmix.evals.evaluate import EvalResult

    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise CalmixError(f"--dense {path} is not valid JSON ({err}): pass a model folder or an eval JSON") from None
    for key in ("result", "scores"):
        if isinstance(data, dict) and isinstance(data.get(key), dict) and "tasks" in data[key]:
            return EvalResult.from_dict(data[key])
    if isinstance(data, dict) and "tasks" in data and "dimensions" in data:
        return EvalResult.from_dict(data)
    raise CalmixError(f"--dense {path} holds no eval scores: pass a model folder or the --out file of a dense eval")


def _score(engine: str, model, tokenizer, args, suite: str, tasks: list[str] | None):
    from calmix.evals.evaluate import EvalResult, dimension_scores, evaluate

    if engine == "calmix":
        return evaluate(model, tokenizer, suite=suite, tasks=tasks, limit=args.limit, seed=args.seed,
                        device=args.device, batch_size=args.batch_size, progress=True,
                        allow_unsafe_exec=args.allow_unsafe_exec)
    if not tasks:
        raise CalmixError("--engine lm-eval needs --tasks (lm-eval task names), e.g. --tasks arc_easy,piqa")
    try:
        from calmix.evals.lmeval import run_lm_eval
    except ImportError as err:
        raise CalmixError(f"--engine lm-eval is not available ({err}): pip install 'calmix[lm-eval]'") from None
    t0 = time.perf_counter()
    res = run_lm_eval(model, tokenizer, tasks=tasks, limit=args.limit, device=args.device,
                      batch_size=args.batch_size, seed=args.seed)
    out = {k: {"dimension": v.get("dimension"), "score": v.get("score"), "metric": v.get("metric", "lm-eval"),
               "metrics": v.get("metrics", {}), "n": v.get("n"), "failures": v.get("failures", [])}
           for k, v in res.items()}
    return EvalResult(suite="lm-eval", tasks=out, dimensions=dimension_scores(out),
                      config={"engine": "lm-eval", "tasks": tasks, "limit": args.limit, "seed": args.seed},
                      timings={"lm-eval": time.perf_counter() - t0})


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}" if abs(x) < 10 else f"{x:.1f}"


def print_table(scores, retention: dict | None, file=None) -> None:
    """Per-task and per-dimension scores (and retention) as a plain text table."""
    from calmix.data.dimensions import DIMENSIONS

    file = file or sys.stdout
    rtasks = (retention or {}).get("tasks", {})
    print(f"{'task':<26}{'dimension':<13}{'metric':<13}{'score':>9}{'n':>6}{'retention%':>12}", file=file)
    for name, t in scores.tasks.items():
        score = _fmt(t.get("score")) if not t.get("error") else "FAILED"
        print(f"{name:<26}{t['dimension'] or '-':<13}{str(t.get('metric')):<13}{score:>9}{t.get('n') or 0:>6}"
              f"{_fmt(rtasks.get(name)):>12}", file=file)
    print("-" * 79, file=file)
    for dim in DIMENSIONS:
        r = retention.get(dim) if retention else None
        print(f"{dim:<52}{_fmt(scores.dimensions.get(dim)):>9}{'':>6}{_fmt(r):>12}", file=file)
    if retention:
        print(f"{'Total retention':<67}{_fmt(retention.get('Total')):>12}", file=file)
        for dim in retention.get("floored") or []:
            print(f"{dim}: the dense model is at the floor on every task, so its retention is not a measurement "
                  "and Total is not measured", file=file)


def _sandbox_check(suite: str | None, tasks: list[str] | None, allow_unsafe_exec: bool) -> None:
    """Where the run executes model-written code, print the sandbox layers, or refuse without kernel isolation."""
    from calmix.evals.evaluate import sandbox_protections
    from calmix.evals.sandbox import describe

    prot = sandbox_protections(suite, tasks, allow_unsafe_exec)
    if prot is not None:
        print(f"calmix: sandbox: {describe(prot)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Handler of `calmix eval`."""
    from calmix.commands.options import check_model_args
    from calmix.evals.evaluate import dense_scores
    from calmix.evals.retention import check_settings, retention
    from calmix.evals.suites import default_suite, get_suite, suite_tasks
    from calmix.models import dtype_name, load_model
    from calmix.placement import on_device
    from calmix.runrecord import Timer, args_dict, run_record, write_json_atomic

    check_model_args(args)
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise CalmixError(f"--out {out} is a folder: pass a JSON file path")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if args.limit is not None and args.limit <= 0:
        raise CalmixError(f"--limit must be positive (got {args.limit})")
    if args.suite:
        get_suite(args.suite)
    if args.engine == "calmix" and tasks:
        suite_tasks(args.suite or "small", tasks)  # unknown task names fail before any model is loaded
    if args.engine == "calmix" and (tasks or args.suite):
        _sandbox_check(args.suite, tasks, args.allow_unsafe_exec)
    dense_file = Path(args.dense) if args.dense and args.dense.endswith(".json") else None
    if dense_file is not None and not dense_file.is_file():
        raise CalmixError(f"--dense {dense_file} does not exist: pass a dense model folder/spec or an eval JSON")
    dense = _load_scores_file(dense_file) if dense_file is not None else None
    if dense is not None:  # refuse a dense file of other settings before the model is loaded and scored
        names = suite_tasks(args.suite or "small", tasks) if args.engine == "calmix" and (tasks or args.suite) else tasks
        wanted = {"limit": args.limit, "seed": args.seed} | ({"suite": args.suite} if args.suite else {}) | (
            {"tasks": names} if names else {})
        check_settings(wanted, dense.config, what=f"scores in --dense {dense_file}")

    timer = Timer()
    with timer("load"):
        model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, home="cpu",
                                      max_memory=args.max_gpu_memory)
    dtype = dtype_name(next(model.parameters()).dtype)  # the dense model is scored in the same dtype
    suite = args.suite or default_suite(model)
    if args.engine == "calmix" and not (tasks or args.suite):
        _sandbox_check(suite, tasks, args.allow_unsafe_exec)
    with timer("eval"), on_device(model, args.device, args.max_gpu_memory):
        scores = _score(args.engine, model, tokenizer, args, suite, tasks)
    if args.dense and dense is None:
        del model
        with timer("dense"):
            if args.engine == "calmix":
                dense = dense_scores(args.dense, suite=suite, limit=args.limit, seed=args.seed, tasks=tasks,
                                     device=args.device, batch_size=args.batch_size, cache=not args.no_cache,
                                     dtype=dtype, allow_unsafe_exec=args.allow_unsafe_exec)
            else:
                dmodel, dtok = load_model(args.dense, device=args.device, dtype=dtype, home="cpu",
                                          max_memory=args.max_gpu_memory)
                with on_device(dmodel, args.device, args.max_gpu_memory):
                    dense = _score(args.engine, dmodel, dtok, args, suite, tasks)
    ret = retention(scores, dense) if dense is not None else None
    config = args_dict(args) | {"suite": suite}
    payload = {"model": args.model, "suite": suite, "engine": args.engine, "scores": scores.to_dict(),
               "dense": dense.to_dict() if dense is not None else None, "retention": ret}
    write_json_atomic(out, payload)
    record = run_record("eval", config, timer.times, outputs=[str(out)],
                        failed_tasks=scores.failed(), dimensions=scores.dimensions, retention=ret)
    write_json_atomic(out.with_name(out.stem + ".run.json"), record)
    print_table(scores, ret)
    failed = scores.failed()
    for name, err in failed.items():
        print(f"calmix: task {name} failed: {err}", file=sys.stderr)
    if failed and len(failed) == len(scores.tasks):
        return 2
    return 1 if failed else 0
