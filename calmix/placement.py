"""Where a model's weights live (its home, the CPU for pruning and the study) and where it computes.

A model stays at home between uses. For inference (evaluation, generation, perplexity) `on_device` puts it on
the compute device while the block runs: whole where it fits the free memory (or `max_memory`), else spread by
accelerate's device map with the rest offloaded to CPU memory; afterwards every weight is back on its home
tensor, untouched. A model that cannot fit even with offload is refused before any weight is read
(`check_fits`)."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Iterator

import torch
from torch import nn

from calmix.batching import free_memory
from calmix.devices import check_device
from calmix.errors import CalmixError

log = logging.getLogger(__name__)

# share of the device budget the weights may take when the whole model moves (the rest: activations, KV cache)
WEIGHT_SHARE = 0.8
_UNITS = {"": 2**30, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
# methods accelerate's dispatch_model wraps on the instance (they warn on an offloaded model)
_WRAPPED = ("to", "cuda", "xpu", "npu", "mlu", "sdaa", "musa", "neuron")


def parse_memory(text: str | int | None) -> int | None:
    """Bytes of a memory size such as '20GiB', '18GB', '512MiB' or a bare number of GiB; None stays None."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise CalmixError(f"cannot read the memory size '{text}': write it like 20GiB, 18GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def gib(nbytes: float) -> str:
    """'12.3 GiB'."""
    return f"{nbytes / 2**30:.1f} GiB"


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def config_bytes(config: Any, dtype: torch.dtype) -> int | None:
    """Bytes of the weights of a causal LM built from `config` in `dtype`, counted on the meta device (no memory);
    None where transformers cannot build it from the config alone (loading will say why)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            empty = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except (ValueError, KeyError, TypeError, AttributeError, ImportError):
        return None
    return model_bytes(empty)


def device_budget(device: str | torch.device, max_memory: int | None = None) -> int | None:
    """Bytes the model may use on `device`: `max_memory` where given (at most what is free), else the free memory."""
    free = free_memory(device)
    if max_memory is None:
        return free
    return max_memory if free is None else min(max_memory, free)


def check_fits(need: int, device: str | torch.device, spec: str, max_memory: int | None = None,
               cpu_free: int | None = None) -> None:
    """Raise a one-line CalmixError when `need` bytes of weights fit neither the CPU memory nor, with offload, the
    device and the CPU together."""
    dev = torch.device(device)
    cpu = free_memory("cpu") if cpu_free is None else cpu_free
    on_device = device_budget(dev, max_memory) if dev.type != "cpu" else 0
    room = (cpu or 0) + (on_device or 0)
    if cpu is not None and need > room:
        where = f"{gib(cpu)} of free CPU memory" + (f" and {gib(on_device)} on {dev}" if on_device else "")
        raise CalmixError(f"model '{spec}' needs {gib(need)} for its weights but this machine has {where}: it cannot "
                          f"fit even with offload; use a smaller model or dtype (--dtype bfloat16)")


def device_map(model: nn.Module, device: str | torch.device, budget: int, cpu_free: int) -> dict[str, Any]:
    """accelerate's device map of `model`: decoder layers whole, `budget` bytes on `device`, the rest on the CPU;
    CalmixError where even that leaves weights over (they would go to disk)."""
    from accelerate import infer_auto_device_map

    dev = torch.device(device)
    key = dev.index if dev.type == "cuda" and dev.index is not None else (0 if dev.type == "cuda" else str(dev))
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    dmap = infer_auto_device_map(model, max_memory={key: int(budget), "cpu": int(cpu_free)},
                                 no_split_module_classes=no_split)
    if any(v == "disk" for v in dmap.values()):
        raise CalmixError(f"model ({gib(model_bytes(model))}) cannot fit even with offload: {gib(budget)} on {dev} "
                          f"and {gib(cpu_free)} of CPU memory: use a smaller model or dtype")
    return dmap


@contextlib.contextmanager
def on_device(model: nn.Module, device: str | torch.device, max_memory: int | str | None = None) -> Iterator[str]:
    """Run the block with `model` on `device` for inference, then put every weight back on its home tensor.

    Yields how it was placed: 'home' (already there, or device is the CPU), 'device' (whole), 'offload' (a device
    map with CPU offload, when the weights take more than WEIGHT_SHARE of the budget). Weights changed inside the
    block are not kept: use it for reading the model, not for changing it."""
    dev = check_device(device)
    limit = parse_memory(max_memory)
    homes = {(t.device.type, t.device.index or 0) for t in list(model.parameters()) + list(model.buffers())}
    if homes <= {(dev.type, dev.index or 0)} or dev.type == "cpu":
        yield "home"
        return
    saved = _home_tensors(model)
    attrs = {name: model.__dict__[name] for name in ("hf_device_map", *_WRAPPED) if name in model.__dict__}
    need, budget = model_bytes(model), device_budget(dev, limit)
    how = "device" if budget is None or need <= WEIGHT_SHARE * budget else "offload"
    try:
        if how == "device":
            model.to(dev)
        else:
            from accelerate import dispatch_model

            dmap = device_map(model, dev, int(WEIGHT_SHARE * budget), (free_memory("cpu") or 0) + need)
            on_dev = sum(1 for v in dmap.values() if v != "cpu")
            log.warning("model (%s) does not fit %s of %s: %d of %d blocks there, the rest offloaded to CPU memory",
                        gib(need), gib(budget), dev, on_dev, len(dmap))
            dispatch_model(model, dmap, main_device=dev)
        yield how
    finally:
        _go_home(model, saved, attrs)
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def _home_tensors(model: nn.Module) -> list[tuple[nn.Module, str, str, Any, Any]]:
    """(module, kind, name, the Parameter or buffer object, its data) of every tensor, to put back afterwards."""
    saved = []
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                saved.append((module, "_parameters", name, p, p.data))
        for name, b in module._buffers.items():
            if b is not None:
                saved.append((module, "_buffers", name, b, b))
    return saved


def _go_home(model: nn.Module, saved: list, attrs: dict[str, Any]) -> None:
    """Undo on_device: accelerate's hooks off, every module's tensors the home objects again, wrappers removed."""
    from accelerate.hooks import remove_hook_from_module

    remove_hook_from_module(model, recurse=True)
    for module, kind, name, obj, data in saved:
        if kind == "_parameters":
            obj.data = data
        getattr(module, kind)[name] = obj
    for name in ("hf_device_map", *_WRAPPED):
        if name in attrs:
            model.__dict__[name] = attrs[name]
        else:
            model.__dict__.pop(name, None)
