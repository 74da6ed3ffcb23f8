"""Options every command that loads a model shares: the model spec, --device, --dtype and --max-gpu-memory,
checked up front."""

from __future__ import annotations

import argparse

DTYPE_HELP = "auto (the checkpoint's own dtype, the default) | float32 | bfloat16 | float16"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--device, --dtype and --max-gpu-memory, as every command that loads a model takes them."""
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument("--max-gpu-memory", default=None, metavar="SIZE",
                   help="memory the model may take on --device, such as 20GiB (default: what is free there); a model "
                        "over it is spread over the device and CPU memory for evaluation and generation")


def check_model_args(args: argparse.Namespace) -> None:
    """Fail on a device that does not exist here or an unknown dtype, before anything is loaded or written."""
    from calmix.devices import check_device
    from calmix.models import check_dtype_name
    from calmix.placement import parse_memory

    check_device(args.device)
    check_dtype_name(args.dtype)
    parse_memory(getattr(args, "max_gpu_memory", None))


def model_help() -> str:
    """Help text of a --model option, naming the built-in models from their registry."""
    from calmix.models import BUILTIN_MODELS

    return f"model spec: a local HF folder, a hub id, a .gguf file, or {', '.join(BUILTIN_MODELS)}"
