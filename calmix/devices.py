"""Check that a torch device exists here and can compute in a dtype, before any model is loaded or file written."""

from __future__ import annotations

import torch

from calmix.errors import CalmixError

# Device types with an availability query and a device count in torch (torch.<type>.is_available / device_count).
_COUNTED = ("cuda", "xpu", "mps")


def _parse(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise CalmixError(f"unknown device '{device}': use cpu, cuda, cuda:N, mps or xpu") from None


def _backend(kind: str):
    """torch's module of a device type (torch.cuda, torch.xpu, torch.mps), or None where this torch has none."""
    return getattr(torch, kind, None)


def _available(kind: str) -> tuple[bool, int]:
    """(available, number of devices) of a device type in this process."""
    if kind == "mps":
        ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return ok, int(ok)
    backend = _backend(kind)
    if backend is None or not backend.is_available():
        return False, 0
    return True, int(backend.device_count())


def check_device(device: str | torch.device) -> torch.device:
    """The torch.device for `device`, or a one-line CalmixError if it does not exist on this machine."""
    dev = _parse(device)
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise CalmixError("device 'meta' holds no data and cannot run a model: use cpu, cuda or mps")
    if dev.type in _COUNTED:
        ok, count = _available(dev.type)
        if not ok:
            why = (f"this torch ({torch.__version__}) was built without {dev.type.upper()}"
                   if dev.type == "cuda" and torch.version.cuda is None else f"no {dev.type} device is visible")
            raise CalmixError(f"device '{device}' is not available here ({why}): use --device cpu")
        if dev.index is not None and dev.index >= count:
            have = f"{dev.type}:0" if count == 1 else f"{dev.type}:0 to {dev.type}:{count - 1}"
            raise CalmixError(f"device '{device}' does not exist: this machine has {count} {dev.type} device"
                              f"{'s' if count != 1 else ''} ({have})")
        return dev
    try:  # any other backend torch knows by name: it exists here only if a tensor can live there
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError, NotImplementedError) as err:
        raise CalmixError(f"device '{device}' is not available here ({str(err).splitlines()[0][:120]}): "
                          f"use --device cpu") from None
    return dev


def check_dtype(device: str | torch.device, dtype: torch.dtype) -> None:
    """Raise a one-line CalmixError if `device` cannot run a model's kernels (matmul, softmax, norm) in `dtype`."""
    dev = check_device(device)
    try:
        x = torch.ones(4, 8, device=dev, dtype=dtype)
        w = torch.ones(8, 8, device=dev, dtype=dtype)
        y = torch.nn.functional.linear(x, w).softmax(-1)
        torch.nn.functional.layer_norm(y, (8,)).sum().item()
    except (RuntimeError, TypeError, NotImplementedError) as err:
        name = str(dtype).removeprefix("torch.")
        raise CalmixError(f"device '{device}' cannot compute in {name} ({str(err).splitlines()[0][:120]}): "
                          f"pass --dtype float32 (or another device)") from None
