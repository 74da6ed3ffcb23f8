"""`calmix doctor`: what this machine gives the code-execution sandbox, layer by layer, and whether it is enough."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    """Add the `doctor` subcommand."""
    p = subparsers.add_parser("doctor", help="check the code-execution sandbox on this machine",
                              description="Probe the sandbox with a trivial program and print the layers that are "
                                          "active here; exit 1 where code execution would be refused.")
    p.add_argument("--json", action="store_true", help="print the protections as JSON")
    p.set_defaults(func=run)


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return "absent"


def run(args: argparse.Namespace) -> int:
    """Handler of `calmix doctor`."""
    from calmix.evals.sandbox import active_protections, describe

    prot = active_protections()
    if args.json:
        print(json.dumps(prot, indent=2, sort_keys=True))
        return 0 if prot["isolated"] else 1
    print(f"sandbox: {describe(prot)}")
    print(f"kernel: user.max_user_namespaces={_read('/proc/sys/user/max_user_namespaces')}, "
          f"kernel.unprivileged_userns_clone={_read('/proc/sys/kernel/unprivileged_userns_clone')}")
    for key in ("namespaces", "tmpfs", "uid", "capabilities", "no_new_privs", "landlock", "seccomp", "rlimits",
                "private_proc", "guard"):
        if key in prot:
            print(f"  {key:<14}{prot[key]}")
    if not prot["isolated"]:
        print(f"calmix: code execution will be refused: {prot['refused']}", file=sys.stderr)
        return 1
    return 0
