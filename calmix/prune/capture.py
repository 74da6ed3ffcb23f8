"""Capture every decoder layer's own call on the calibration batches, and replay it one layer at a time.

The model runs once with each decoder layer replaced by a recorder. For every batch the recorder keeps the
hidden states entering layer 0 and, for every layer, the other positional and keyword arguments the model
passed it (attention masks, which differ per layer in Gemma 2/3, positions, rotary embeddings, ...). A layer is
then replayed on any hidden states with exactly those arguments, so no model-specific code rebuilds masks or
positions. Where the activations live (device or CPU memory) is decided here too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from calmix.errors import CalmixError
from calmix.models import decoder_layers, decoder_layers_name

log = logging.getLogger(__name__)

Batch = tuple[Tensor, "Tensor | None"]  # (input ids, attention mask or None)


@dataclass
class LayerCalls:
    """The captured calls: hidden states entering the current layer per batch, and each layer's other arguments."""

    hidden: list[Tensor]  # hidden[batch], kept on `offload`
    calls: list[list[tuple[tuple, dict]]]  # calls[layer][batch] = (positional args after the hidden states, kwargs)
    masks: list[Tensor | None]  # masks[batch]: the attention mask the model got (0 = padding), on the CPU
    device: torch.device  # where layers run
    offload: torch.device  # where activations wait between layers

    def replay(self, layer: nn.Module, index: int, batch: int, hidden: Tensor | None = None) -> Tensor:
        """Run decoder layer `index` on batch `batch` as the model called it (on `hidden`, default the stored
        input) and return its hidden-state output."""
        args, kwargs = self.calls[index][batch]
        x = self.hidden[batch] if hidden is None else hidden
        return layer_output(layer(x.to(self.device), *args, **kwargs))


def layer_output(out: Any) -> Tensor:
    """The hidden states in a decoder layer's output (a tensor, or the first item of a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def batches_of(ids: Tensor, mask: Tensor | None, batch_size: int) -> list[Batch]:
    """Consecutive batches of batch_size windows (the last one may be shorter)."""
    return [(ids[i:i + batch_size], None if mask is None else mask[i:i + batch_size])
            for i in range(0, ids.shape[0], batch_size)]


def activation_device(model: nn.Module, ntokens: int, device: torch.device, offload: str) -> torch.device:
    """Where activations live: CPU for offload 'cpu'; for 'auto' on CUDA, CPU when two copies of the hidden
    states would take more than half the free device memory; the compute device otherwise."""
    if offload == "cpu":
        return torch.device("cpu")
    if offload == "auto" and device.type == "cuda":
        hidden = getattr(model.config, "hidden_size", 4096)
        need = 2 * ntokens * hidden * torch.finfo(next(model.parameters()).dtype).bits // 8
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.5 * free:
            log.info("activations (%.1f GiB) spill to CPU memory", need / 2**30)
            return torch.device("cpu")
    return device


@torch.no_grad()
def capture_layer_calls(model: nn.Module, batches: list[Batch], device: torch.device,
                        offload: torch.device) -> LayerCalls:
    """Run the model on every batch with its decoder layers replaced by recorders; return what each layer got.

    Only the modules outside the decoder layers (embeddings, rotary tables) move to `device`, and back after."""
    layers = decoder_layers(model)
    layers_name = decoder_layers_name(model)
    home = next(model.parameters()).device
    captured = LayerCalls(hidden=[], calls=[[] for _ in layers], masks=[b_mask for _, b_mask in batches],
                          device=device, offload=offload)
    pool: list[Tensor] = []

    def sink(index: int, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if index == 0:
            captured.hidden.append(hidden.to(offload))
        captured.calls[index].append((_dedupe(tuple(args[1:]), pool), _dedupe(kwargs, pool)))

    originals = list(layers)
    _move_outside_layers(model, layers_name, device)
    try:
        for i in range(len(layers)):
            layers[i] = _Recorder(i, sink, stop=(i == len(layers) - 1))
        for b_ids, b_mask in batches:
            try:
                model(input_ids=b_ids.to(device),
                      attention_mask=None if b_mask is None else b_mask.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
        if device != home:
            _move_outside_layers(model, layers_name, home)
    if len(captured.hidden) != len(batches) or any(len(c) != len(batches) for c in captured.calls):
        raise CalmixError(f"{type(model).__name__} did not call every decoder layer once per batch: "
                          "calmix supports decoder-only models that run their layers in order")
    return captured


class _StopForward(Exception):
    """Raised by the last recorder: nothing after the decoder layers needs to run."""


class _Recorder(nn.Module):
    """Stands in for a decoder layer during capture: records its call, passes hidden states through."""

    def __init__(self, index: int, sink: Callable[[int, tuple, dict], None], stop: bool):
        super().__init__()
        self.index, self.sink, self.stop = index, sink, stop

    def forward(self, *args, **kwargs):
        self.sink(self.index, args, kwargs)
        if self.stop:
            raise _StopForward
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden,)


def _dedupe(obj: Any, pool: list[Tensor]) -> Any:
    """Replace tensors equal to one already in pool by that one (kwargs repeat across layers and batches)."""
    if isinstance(obj, Tensor):
        for t in pool:
            if t.shape == obj.shape and t.dtype == obj.dtype and t.device == obj.device and torch.equal(t, obj):
                return t
        pool.append(obj)
        return obj
    if isinstance(obj, tuple):
        return tuple(_dedupe(o, pool) for o in obj)
    if isinstance(obj, list):
        return [_dedupe(o, pool) for o in obj]
    if isinstance(obj, dict):
        return {k: _dedupe(v, pool) for k, v in obj.items()}
    return obj


def _move_outside_layers(model: nn.Module, layers_name: str, device: torch.device) -> None:
    """Move every parameter and buffer that is not inside the decoder layers to device."""
    prefix = layers_name + "."
    for module_name, module in model.named_modules():
        if module_name == layers_name or module_name.startswith(prefix):
            continue
        for p in module._parameters.values():
            if p is not None and p.device != device:
                p.data = p.data.to(device)
        for key, b in list(module._buffers.items()):
            if b is not None and b.device != device:
                module._buffers[key] = b.to(device)
