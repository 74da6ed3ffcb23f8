"""Sequential layer-by-layer pruning: capture the decoder layers' calls, then for each layer collect the
pruner's statistics, prune the linears by groups sharing one input, and replay the pruned layer to measure
its error and feed the next layer."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from calmix.batching import memory_batch
from calmix.errors import CalmixError
from calmix.models import decoder_layers, decoder_layers_name
from calmix.prune.capture import LayerCalls, activation_device, batches_of, capture_layer_calls
from calmix.prune.clock import PeakMemory, StageClock
from calmix.prune.config import (SEQUENTIAL, LayerRecord, PruneConfig, PruneReport,  # noqa: F401 (the public API)
                                 model_sparsity, target_linears, validate_config)
from calmix.prune.experts import prune_experts, validate_experts
from calmix.prune.profile import layer_sparsities
from calmix.prune.registry import PRUNERS, Accumulator, Pruner
from calmix.prune.sequential import replay_group_by_group



def _as_calib(calib) -> tuple[torch.Tensor, torch.Tensor | None]:
    ids = getattr(calib, "input_ids", calib)
    mask = getattr(calib, "attention_mask", None)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.numel() == 0:
        raise CalmixError("calibration data must be a non-empty [nsamples, seqlen] tensor of token ids")
    return ids.long(), (mask.long() if mask is not None else None)


@torch.no_grad()
def prune_model(model: nn.Module, calib, cfg: PruneConfig, device: str | torch.device | None = None,
                progress: bool = True) -> PruneReport:
    """Prune the decoder linears of `model` in place, one decoder layer at a time, on `calib` token windows."""
    t_start = time.perf_counter()
    validate_config(model, cfg)
    validate_experts(model, cfg)
    pruner = PRUNERS.get(cfg.method)
    ids, mask = _as_calib(calib)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    # the calibration forwards' batch: the configured size, fewer windows where the device's free memory is short
    cfg = replace(cfg, batch_size=memory_batch(model, cfg.batch_size, ids.shape[1], device, logit_positions=0))
    report = PruneReport(config=cfg, nsamples=ids.shape[0], seqlen=ids.shape[1],
                         ntokens=int(mask.sum()) if mask is not None else ids.numel(), device=str(device))
    use_cache, model.config.use_cache = getattr(model.config, "use_cache", None), False
    clock = StageClock(device)
    memory = PeakMemory(device)
    report.memory_kind = memory.kind

    layers, layers_name = decoder_layers(model), decoder_layers_name(model)
    offload = activation_device(model, ids.numel(), device, cfg.offload)
    with clock("profile"):
        report.layer_sparsities = layer_sparsities(
            model, cfg.sparsity_profile, cfg.sparsity, len(layers), batches_of(ids, mask, cfg.batch_size),
            partial(target_linears, cfg=cfg), device, offload, cfg.owl_lambda, cfg.owl_m)
    with clock("capture"):
        captured = capture_layer_calls(model, batches_of(ids, mask, cfg.batch_size), device, offload)

    prune_layer = _prune_layer_by_linears if cfg.sequential == "linear" else _prune_layer_at_once
    known_groups: dict[tuple, list[list[str]]] = {}
    for li in tqdm(range(len(layers)), desc=_progress_label(cfg), unit="layer", disable=not progress):
        layer, prefix = layers[li], f"{layers_name}.{li}"
        layer_home = next(layer.parameters()).device
        memory.start()
        layer.to(device)
        linears = target_linears(layer, prefix, cfg)
        t0 = time.perf_counter()
        # layers of one class with the same linears route their inputs alike: probe the first of them only
        shape = (type(layer), tuple((name, lin.in_features, lin.out_features) for name, lin in linears.items()))
        if shape not in known_groups:
            with clock("replay"):
                known_groups[shape] = groups_by_input(linears, partial(captured.replay, layer, li, 0))
        groups = known_groups[shape]
        layer_cfg = replace(cfg, sparsity=report.layer_sparsities[li])
        with clock("solve"):  # fused experts first, on the dense layer's routing
            expert_records = prune_experts(pruner, layer, li, captured, layer_cfg, prefix)
        records = prune_layer(pruner, layer, li, linears, groups, captured, layer_cfg, prefix, clock)
        report.layers.extend(records[name] for name in linears)
        report.layers.extend(expert_records)
        report.timings[f"layer_{li}"] = time.perf_counter() - t0
        report.peak_memory_mb[prefix] = round(memory.peak_mb(), 1)
        layer.to(layer_home)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _check_finite(captured.hidden, li)
    model.config.use_cache = use_cache
    report.timings.update(clock.totals)
    report.timings["total"] = time.perf_counter() - t_start
    return report


def _prune_layer_at_once(pruner: Pruner, layer: nn.Module, index: int, linears: dict[str, nn.Linear],
                         groups: list[list[str]], captured: LayerCalls, cfg: PruneConfig, prefix: str,
                         clock: StageClock) -> dict[str, LayerRecord]:
    """sequential="layer": every group's statistic from one forward of the dense layer, then prune all groups,
    then replay the pruned layer for the next layer's inputs (and the errors a pruner cannot compute)."""
    t0 = time.perf_counter()
    accumulators, dense_outputs = collect_statistics(pruner, layer, index, linears, groups, captured,
                                                     keep_outputs=cfg.dense_inputs, clock=clock,
                                                     cfg=cfg)
    t_stats = time.perf_counter() - t0
    dense = {name: lin.weight.detach().clone() for name, lin in linears.items()}
    records: dict[str, LayerRecord] = {}
    for group in groups:
        records.update(prune_group(pruner, linears, group, accumulators.pop(group[0], None), dense, cfg, prefix,
                                   clock))
    for rec in records.values():
        rec.seconds += t_stats / max(len(linears), 1)
    unmeasured = {name: linears[name] for name, rec in records.items() if rec.rel_error is None}
    errors = replay_and_measure(layer, index, unmeasured, dense, captured, cfg, clock)
    if cfg.dense_inputs:  # the next layer reads the dense layer's outputs
        captured.hidden = dense_outputs
    for name, err in errors.items():
        records[name].rel_error = err
    return records


def _prune_layer_by_linears(pruner: Pruner, layer: nn.Module, index: int, linears: dict[str, nn.Linear],
                            groups: list[list[str]], captured: LayerCalls, cfg: PruneConfig, prefix: str,
                            clock: StageClock) -> dict[str, LayerRecord]:
    """sequential="linear": one replay of the layer in which each group's statistic comes from the inputs the
    already-pruned groups before it produce; its outputs feed the next layer (unless dense_inputs)."""
    dense_outputs = None
    if cfg.dense_inputs:
        with clock("replay"):
            dense_outputs = [captured.replay(layer, index, b).to(captured.offload)
                             for b in range(len(captured.hidden))]
    dense = {name: lin.weight.detach().clone() for name, lin in linears.items()}
    accumulators = _accumulators(pruner, linears, groups, captured, cfg)
    records: dict[str, LayerRecord] = {}
    batch: list[int | None] = [None]

    def feed(g: int, x: torch.Tensor, b: int) -> None:
        acc = accumulators.get(groups[g][0])
        if acc is not None:
            b_mask = captured.masks[b]
            with clock("statistics"):
                acc.add(x.detach(), None if b_mask is None else b_mask.to(captured.device))

    def prune(g: int) -> None:
        records.update(prune_group(pruner, linears, groups[g], accumulators.pop(groups[g][0], None), dense, cfg,
                                   prefix, clock))
        # errors the pruner cannot compute are measured on the pruned linears as the forwards go on
        unmeasured = {name: linears[name] for name in groups[g] if records[name].rel_error is None}
        hooks.extend(_error_hooks(unmeasured, dense, sums, cfg, clock,
                                  active=lambda: batch[0] is not None and batch[0] < err_batches))

    sums: dict[str, list[float]] = {}
    hooks: list = []
    err_batches = max(1, -(-cfg.err_samples // cfg.batch_size))
    calls = [linears[group[0]] for group in groups]
    try:
        with clock("replay"):
            outputs = replay_group_by_group(layer, index, captured, calls, feed, prune,
                                            on_batch=lambda b: batch.__setitem__(0, b))
    finally:
        for h in hooks:
            h.remove()
    for name, (num, den) in sums.items():
        records[name].rel_error = num / den if den > 0 else 0.0
    captured.hidden = dense_outputs if cfg.dense_inputs else [out.to(captured.offload) for out in outputs]
    return records


def groups_by_input(linears: dict[str, nn.Linear], probe: Callable[[], object]) -> list[list[str]]:
    """Group linears that read the same input tensor (q/k/v, gate/up), seen in one probing forward `probe()`;
    groups in the order the forward first calls them, linears never called last, one group each."""
    if not linears:
        return []
    seen: dict[str, tuple] = {}
    order: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # hold every input so no freed buffer is reused under the same address
    hooks = []

    def make(name):
        def hook(_mod, inp, _out):
            alive.append(inp[0])
            order.setdefault(name, len(order))
            seen[name] = (inp[0].data_ptr(), tuple(inp[0].shape), tuple(inp[0].stride()))
        return hook

    try:
        for name, lin in linears.items():
            hooks.append(lin.register_forward_hook(make(name)))
        probe()
    finally:
        for h in hooks:
            h.remove()
    groups: dict[tuple, list[str]] = {}
    for name in sorted(linears, key=lambda n: order.get(n, len(order))):
        key = seen.get(name, ("unused", name))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _accumulators(pruner: Pruner, linears: dict[str, nn.Linear], groups: list[list[str]],
                  captured: LayerCalls, cfg: PruneConfig | None = None) -> dict[str, Accumulator]:
    """A fresh accumulator per group (None-free), keyed by the group's first linear; the pruner's
    accumulator_options are read from cfg."""
    opts = {k: getattr(cfg or PruneConfig(), k) for k in pruner.accumulator_options}
    accumulators = {}
    for group in groups:
        acc = pruner.accumulator(linears[group[0]].in_features, captured.device, **opts)
        if acc is not None:
            accumulators[group[0]] = acc
    return accumulators


def collect_statistics(pruner: Pruner, layer: nn.Module, index: int, linears: dict[str, nn.Linear],
                       groups: list[list[str]], captured: LayerCalls, keep_outputs: bool,
                       clock: StageClock | None = None,
                       cfg: PruneConfig | None = None) -> tuple[dict[str, Accumulator], list[torch.Tensor]]:
    """Run the dense layer on every batch, feeding the pruner's accumulator on the first linear of each group
    (padding excluded); return the accumulators by that linear's name, and the outputs when keep_outputs."""
    clock = clock or StageClock()
    accumulators = _accumulators(pruner, linears, groups, captured, cfg)
    current_mask: list[torch.Tensor | None] = [None]  # the batch's attention mask, read by the hooks

    def feed(acc: Accumulator):
        def hook(_mod, inp, _out):
            with clock("statistics"):
                acc.add(inp[0].detach(), current_mask[0])
        return hook

    hooks = [linears[name].register_forward_hook(feed(acc)) for name, acc in accumulators.items()]
    outputs = []
    try:
        with clock("replay"):
            for b, b_mask in enumerate(captured.masks):
                current_mask[0] = None if b_mask is None else b_mask.to(captured.device)
                out = captured.replay(layer, index, b)
                if keep_outputs:
                    outputs.append(out.to(captured.offload))
    finally:
        for h in hooks:
            h.remove()
    return accumulators, outputs


def prune_group(pruner: Pruner, linears: dict[str, nn.Linear], group: list[str], acc: Accumulator | None,
                dense: dict[str, torch.Tensor], cfg: PruneConfig, prefix: str,
                clock: StageClock | None = None) -> dict[str, LayerRecord]:
    """Prune one group of linears sharing an input in place, its statistic read once; a record per linear, with
    the relative error where the pruner computes it from its statistic (None where it cannot)."""
    clock = clock or StageClock()
    n, m = cfg.nm()
    with clock("solve"):
        t1 = time.perf_counter()
        stat = pruner.prepare(acc, percdamp=cfg.percdamp)
        results = pruner.prune_group([linears[name].weight.data for name in group], stat, cfg.sparsity, n, m,
                                     blocksize=cfg.blocksize, percdamp=cfg.percdamp)
        seconds = (time.perf_counter() - t1) / len(group)
        del stat  # free the factorisation before the next group's
    records: dict[str, LayerRecord] = {}
    for name, res in zip(group, results):
        lin = linears[name]
        lin.weight.data.copy_(res.weight.to(lin.weight.dtype))
        sp = float((lin.weight.data == 0).float().mean())
        with clock("error"):
            err = pruner.reconstruction_error(acc, dense[name], lin.weight.data, res.info)
        records[name] = LayerRecord(f"{prefix}.{name}", tuple(lin.weight.shape), sp, err, seconds,
                                    {k: v for k, v in res.info.items() if isinstance(v, (int, float, str))})
    return records


def _error_hooks(linears: dict[str, nn.Linear], dense: dict[str, torch.Tensor], sums: dict[str, list[float]],
                 cfg: PruneConfig, clock: StageClock, active: Callable[[], bool] = lambda: True) -> list:
    """Forward hooks adding ||y - y_dense||² and ||y_dense||² of each linear on the first err_samples windows of
    a batch to sums[name] while active()."""
    def err_hook(name, weight):
        def hook(mod, inp, out):
            if not active():
                return
            with clock("error"):
                x, out = inp[0][: cfg.err_samples], out[: cfg.err_samples]
                ref = nn.functional.linear(x, weight.to(x.dtype), None if mod.bias is None else mod.bias)
                sums[name][0] += float((out.float() - ref.float()).pow(2).sum())
                sums[name][1] += float(ref.float().pow(2).sum())
        return hook

    for name in linears:
        sums[name] = [0.0, 0.0]
    return [lin.register_forward_hook(err_hook(name, dense[name])) for name, lin in linears.items()]


def replay_and_measure(layer: nn.Module, index: int, linears: dict[str, nn.Linear],
                       dense: dict[str, torch.Tensor], captured: LayerCalls, cfg: PruneConfig,
                       clock: StageClock | None = None) -> dict[str, float]:
    """Replay the pruned layer (its outputs become the next layer's inputs unless dense_inputs) and return each
    linear's relative output error ||y - y_dense||² / ||y_dense||² on the first err_samples windows."""
    clock = clock or StageClock()
    sums: dict[str, list[float]] = {}
    err_batches = max(1, -(-cfg.err_samples // cfg.batch_size))
    hooks = _error_hooks(linears, dense, sums, cfg, clock)
    try:
        with clock("replay"):
            for b in range(len(captured.hidden)):
                if b == err_batches:
                    for h in hooks:
                        h.remove()
                    hooks = []
                if not cfg.dense_inputs:
                    captured.hidden[b] = captured.replay(layer, index, b).to(captured.offload)
                elif b < err_batches and linears:
                    captured.replay(layer, index, b)
    finally:
        for h in hooks:
            h.remove()
    return {name: num / den if den > 0 else 0.0 for name, (num, den) in sums.items()}


def _progress_label(cfg: PruneConfig) -> str:
    """'sparsegpt 60%' or 'wanda 2:4'."""
    return f"{cfg.method} {cfg.pattern if cfg.nm()[1] else f'{cfg.sparsity:.0%}'}"


def _check_finite(inputs: list[torch.Tensor], index: int) -> None:
    """CalmixError when the inputs of the layer after `index` hold a NaN or an inf."""
    if not all(torch.isfinite(x).all() for x in inputs):
        raise CalmixError(f"non-finite activations after pruning layer {index}: lower the sparsity or raise "
                          f"--percdamp")
