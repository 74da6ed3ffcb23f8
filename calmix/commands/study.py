"""`calmix study run|status|report`: the calibration-data study (grid, resumable store, analysis, report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calmix.errors import CalmixError
from calmix.runrecord import args_dict
from calmix.study.config import preset_names
from calmix.study.folder import CONFIG_FILE
from calmix.study.runner import BACKENDS


def _run(args: argparse.Namespace) -> int:
    from calmix.study.config import load_config
    from calmix.study.runner import run_study

    out = Path(args.out)
    if args.config is None:
        if not (out / CONFIG_FILE).is_file():
            raise CalmixError(f"give a CONFIG (a .toml file or a preset: {', '.join(preset_names())}); "
                              f"{out} holds no study yet")
        cfg, text = load_config(out / CONFIG_FILE)
    else:
        cfg, text = load_config(args.config)
    if args.backend == "local":  # a ray cluster's workers may have devices this machine lacks
        from calmix.devices import check_device

        check_device(args.device or cfg.device)
    if args.max_gpu_memory is not None:
        import dataclasses

        from calmix.placement import parse_memory

        parse_memory(args.max_gpu_memory)
        cfg = dataclasses.replace(cfg, max_gpu_memory=args.max_gpu_memory)
    options = args_dict(args)
    kw = {name: options[name] for name in BACKENDS.get(args.backend).options}
    summary = run_study(cfg, text, out, backend=args.backend, force=args.force, device=args.device,
                        progress=not args.quiet, **kw)
    c = summary["status"]
    print(f"study {cfg.name}: {c['done']} done, {c['failed']} failed, {c['pending']} pending "
          f"({summary['ran']} run now in {summary['seconds'] / 60:.1f} min); results in {out / 'study.db'}")
    for name, err in summary["failed"]:
        print(f"  FAILED {name}: {err}")
    if args.report:
        return _report(args)
    print(f"next: calmix study report {out}")
    return 1 if c["failed"] else 0


def _status(args: argparse.Namespace) -> int:
    from calmix.study.folder import study_status

    st = study_status(args.dir)
    c = st["counts"]
    live = " (a run is in progress)" if st["running_now"] else ""
    print(f"study {st['name']} in {args.dir}{live}: {st['total']} cells: {c['done']} done, {c['pending']} pending, "
          f"{c['failed']} failed" + (f", {c['running']} running" if c["running"] else ""))
    if st["mean_cell_seconds"]:
        left = (c["pending"] + c["failed"] + c["running"]) * st["mean_cell_seconds"]
        print(f"mean time per cell {st['mean_cell_seconds']:.0f}s; about {left / 60:.1f} min of work left")
    for f in st["failed"]:
        print(f"  FAILED {f['cell']} (attempts {f['attempts']}): {f['error']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from calmix.study.report import report_study

    out = Path(getattr(args, "dir", None) or args.out)
    paths = report_study(out)
    print(f"report: {paths['markdown']} and {paths['html']} ({len(paths['plots'])} plots)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run the calibration-data study grid, show its status, write its report")
    sub = p.add_subparsers(dest="study_command", metavar="ACTION")
    r = sub.add_parser("run", help="run (or resume) every cell of a study config into a folder")
    r.add_argument("config", nargs="?", help=f"study TOML file or preset name ({', '.join(preset_names())}); "
                                             "omit to resume the study saved in --out")
    r.add_argument("--out", required=True, help="study folder (holds study.toml, study.db, report)")
    r.add_argument("--backend", choices=BACKENDS.names(), default="local", help="where cells run (default local)")
    r.add_argument("--device", default=None, help="override the config's device (cpu, cuda, ...)")
    r.add_argument("--max-gpu-memory", default=None, metavar="SIZE",
                   help="device memory evaluation may use, e.g. 20GiB (default: what is free); the rest is offloaded")
    r.add_argument("--force", action="store_true", help="switch a folder holding a different study to this config")
    r.add_argument("--report", action="store_true", help="write the report when the run ends")
    r.add_argument("--num-cpus", type=int, default=None, help="ray backend: CPUs of the local Ray instance")
    r.add_argument("--address", default=None, help="ray backend: address of an existing Ray cluster")
    r.add_argument("--threads", type=int, default=1, help="ray backend on CPU: torch threads (and Ray CPUs) per task")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=_run)
    s = sub.add_parser("status", help="done / pending / failed cells of a study folder")
    s.add_argument("dir")
    s.set_defaults(func=_status)
    rep = sub.add_parser("report", help="write report.md and report.html (tables, plots) of a study folder")
    rep.add_argument("dir")
    rep.set_defaults(func=_report)
    p.set_defaults(func=lambda a: (p.print_help(file=sys.stderr), 2)[1])
