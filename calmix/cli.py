"""The `calmix` command line: each module in calmix/commands adds its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from calmix.errors import CalmixError


def build_parser() -> argparse.ArgumentParser:
    """Parser with every subcommand found in calmix.commands (each command module defines register(subparsers))."""
    import calmix
    import calmix.commands as commands

    parser = argparse.ArgumentParser(prog="calmix", description="Prune LLMs with the right calibration data.")
    parser.add_argument("--version", action="version", version=f"calmix {calmix.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"calmix.commands.{info.name}")
        if hasattr(module, "register"):  # shared helpers (options) register nothing
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and return exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except CalmixError as err:
        print(f"calmix: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("calmix: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
