"""CLI: `calmix sources`, `calmix calib build SPEC ...`, `calmix calib metrics SET|SPEC ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calmix.errors import CalmixError


def register(subparsers) -> None:
    """Add the `sources` and `calib` subcommands."""
    p = subparsers.add_parser("sources", help="list calibration sources: dimension, origin, availability here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_sources)

    calib = subparsers.add_parser("calib", help="build calibration sets and measure them")
    sub = calib.add_subparsers(dest="calib_command", metavar="ACTION")

    b = sub.add_parser("build", help="build a calibration set from a spec and save it (.pt + .json card)")
    _common(b, "SPEC")
    b.add_argument("--out", required=True, help="output .pt file (a FILE.json card and FILE.run.json record go beside it)")
    b.set_defaults(func=cmd_build)

    m = sub.add_parser("metrics", help="information metrics of a built set or a spec")
    _common(m, "SET|SPEC")
    m.add_argument("--out", default=None, help="write the metrics JSON here (plus a .run.json record)")
    m.add_argument("--batch-size", type=int, default=8)
    m.set_defaults(func=cmd_metrics)
    calib.set_defaults(func=lambda args: (calib.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser, what: str) -> None:
    from calmix.calib.spec import PRESETS
    from calmix.commands.options import add_model_args, model_help
    from calmix.calib.build import BOS_CHOICES, DEFAULT_BOS
    from calmix.calib.generated import GENERATORS

    p.add_argument("spec", metavar=what, help="source name, file:PATH[:FIELD], hub:ID[:CONFIG][:SPLIT][:FIELD], "
                   f"mix:a=1,b=1, {', '.join(PRESETS)}, {'/'.join(GENERATORS)}[:k=v], or a saved .pt/.json set")
    p.add_argument("--model", default="default", help=model_help())
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bos", default=DEFAULT_BOS, choices=list(BOS_CHOICES),
                   help="document windows start with BOS: auto = where the tokenizer adds one (default "
                        f"{DEFAULT_BOS}), yes, no")
    add_model_args(p)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the calibration cache")


def _check_out(out: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(out).expanduser()
    if path.suffix not in suffixes:
        raise CalmixError(f"--out {out} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise CalmixError(f"--out {out} is a folder: give a file name")
    from calmix.runrecord import check_writable_dir

    probe = path.parent if str(path.parent) else Path(".")
    check_writable_dir(probe / ".probe")
    return path


def _load(args, need_model: bool):
    """(model or None, tokenizer) for the --model spec; the model's home is the CPU (see _placed)."""
    from calmix.models import load_model, load_tokenizer

    if need_model:
        return load_model(args.model, device=args.device, dtype=args.dtype, home="cpu",
                          max_memory=args.max_gpu_memory)
    return None, load_tokenizer(args.model)


def _placed(args, model):
    """The model on --device for the block (offloaded where too large); nothing to do without a model."""
    import contextlib

    from calmix.placement import on_device

    return on_device(model, args.device, args.max_gpu_memory) if model is not None else contextlib.nullcontext()


def _positive(args) -> None:
    from calmix.commands.options import check_model_args

    check_model_args(args)
    if args.nsamples <= 0 or args.seqlen <= 0:
        raise CalmixError(f"--nsamples and --seqlen must be positive, got {args.nsamples} and {args.seqlen}")


def cmd_sources(args) -> int:
    """Print the registry: name, dimension, origins, availability here and why."""
    from calmix.calib.spec import PRESETS
    from calmix.calib.generated import GENERATORS
    from calmix.calib.sources import SOURCES

    rows = []
    for name, src in SOURCES.items():
        ok, why = src.available()
        rows.append({"name": name, "dimension": src.dimension, "origins": "/".join(src.origins()),
                     "available": ok, "where": why, "description": src.description})
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'dimension':<11}  {'origins':<17}  here  where / why not")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['dimension']:<11}  {r['origins']:<17}  {'yes' if r['available'] else 'no ':<4}  {r['where']}")
    n_ok = sum(r["available"] for r in rows)
    print(f"{n_ok}/{len(rows)} sources available here; presets: {', '.join(PRESETS)}; "
          f"generic: file:PATH[:FIELD], hub:ID[:CONFIG][:SPLIT][:FIELD], mix:a=1,b=1; generated: {', '.join(GENERATORS)}")
    return 0


def _build(args):
    from calmix.calib import build_calib, parse_spec

    _positive(args)
    parsed = parse_spec(args.spec)
    model, tok = _load(args, parsed.needs_model)
    with _placed(args, model):
        calib = build_calib(parsed, tok, args.nsamples, args.seqlen, seed=args.seed, model=model,
                            device=args.device, use_cache=not args.no_cache, bos=args.bos)
    return parsed, model, tok, calib


def cmd_build(args) -> int:
    """Build a set, save FILE (.pt) + FILE.json card + FILE.run.json record, print a summary."""
    from calmix.runrecord import Timer, args_dict, run_record, write_json_atomic

    out = _check_out(args.out, (".pt",))
    timer = Timer()
    with timer("build"):
        parsed, _, _, calib = _build(args)
    with timer("save"):
        calib.save(out)
    write_json_atomic(out.with_suffix(".run.json"), run_record("calib build", args_dict(args), timer.times,
                                                              output=str(out), card=calib.card.get("window_counts")))
    counts = calib.card.get("window_counts") or {}
    print(f"calibration set {parsed.canonical}: {calib.nsamples} x {calib.seqlen} tokens -> {out}")
    for label, n in counts.items():
        print(f"  {label}: {n} windows")
    print(f"  built in {timer.times['build']:.1f} s; card {out}.json")
    return 0


def cmd_metrics(args) -> int:
    """Build or load a set, compute its information metrics with the model, print a table, write JSON."""
    from calmix.calib.metrics import format_metrics, set_metrics
    from calmix.runrecord import Timer, args_dict, run_record, write_json_atomic

    out = _check_out(args.out, (".json",)) if args.out else None
    timer = Timer()
    _positive(args)
    from calmix.models import load_model

    with timer("build"):
        from calmix.calib import build_calib, parse_spec

        parsed = parse_spec(args.spec)
        model, tok = load_model(args.model, device=args.device, dtype=args.dtype, home="cpu",
                                max_memory=args.max_gpu_memory)
        with _placed(args, model):
            calib = build_calib(parsed, tok, args.nsamples, args.seqlen, seed=args.seed, model=model,
                                device=args.device, use_cache=not args.no_cache, bos=args.bos)
    with timer("metrics"), _placed(args, model):
        result = set_metrics(calib, model=model, tokenizer=tok, device=args.device, batch_size=args.batch_size)
    print(f"metrics of {parsed.canonical} ({calib.nsamples} x {calib.seqlen}):")
    print(format_metrics(result))
    if out is not None:
        write_json_atomic(out, {"spec": args.spec, "card": calib.card, **result})
        write_json_atomic(out.with_suffix(".run.json"), run_record("calib metrics", args_dict(args), timer.times,
                                                                  output=str(out)))
        print(f"wrote {out}", file=sys.stderr)
    return 0

