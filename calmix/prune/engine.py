"""Sequential layer-by-layer pruning: capture decoder-layer inputs, collect statistics, prune, replay."""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from calmix.errors import CalmixError
from calmix.models import decoder_layers, decoder_layers_name

log = logging.getLogger(__name__)


@dataclass
class PruneConfig:
    """What to prune and how; every field is recorded in the run's JSON record."""

    method: str = "sparsegpt"
    sparsity: float = 0.5
    pattern: str = "unstructured"  # or "N:M", e.g. "2:4"
    blocksize: int = 128
    percdamp: float = 0.01
    true_sequential: bool = True  # inputs of layer i+1 = outputs of the *pruned* layer i
    include: tuple[str, ...] = ("*",)  # fnmatch patterns on full linear names, e.g. "*.mlp.*"
    exclude: tuple[str, ...] = ()
    offload: str = "auto"  # where activations live: "auto" (device if it fits), "device", "cpu"
    batch_size: int = 8  # calibration windows per layer forward (the CLI default too)
    err_samples: int = 4  # samples on which the per-linear output reconstruction error is measured

    def nm(self) -> tuple[int, int]:
        """(n, m) of the pattern, (0, 0) for unstructured."""
        from calmix.prune.masks import parse_pattern

        return parse_pattern(self.pattern)

    def target_sparsity(self) -> float:
        """Fraction of weights pruned in each target linear."""
        n, m = self.nm()
        return n / m if m else self.sparsity


@dataclass
class LayerRecord:
    """Per-linear outcome of pruning."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    rel_error: float | None
    seconds: float
    info: dict = field(default_factory=dict)


@dataclass
class PruneReport:
    """Outcome of prune_model: per-linear records, overall sparsity, timings."""

    config: PruneConfig
    layers: list[LayerRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    nsamples: int = 0
    seqlen: int = 0
    ntokens: int = 0
    device: str = "cpu"

    @property
    def sparsity(self) -> float:
        """Overall sparsity of the pruned linears (weighted by size)."""
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        return sum(r.sparsity * r.shape[0] * r.shape[1] for r in self.layers) / max(total, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["overall_sparsity"] = self.sparsity
        return d


class _StopForward(Exception):
    pass


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


def _dedupe(obj: Any, pool: list[torch.Tensor]) -> Any:
    """Replace tensors equal to one already in pool by that one (kwargs repeat across layers and batches)."""
    if isinstance(obj, torch.Tensor):
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
        for key, p in list(module._parameters.items()):
            if p is not None and p.device != device:
                p.data = p.data.to(device)
        for key, b in list(module._buffers.items()):
            if b is not None and b.device != device:
                module._buffers[key] = b.to(device)


def _as_calib(calib) -> tuple[torch.Tensor, torch.Tensor | None]:
    ids = getattr(calib, "input_ids", calib)
    mask = getattr(calib, "attention_mask", None)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.numel() == 0:
        raise CalmixError("calibration data must be a non-empty [nsamples, seqlen] tensor of token ids")
    return ids.long(), (mask.long() if mask is not None else None)


def target_linears(layer: nn.Module, layer_prefix: str, cfg: PruneConfig) -> dict[str, nn.Linear]:
    """Linears of one decoder layer selected by the include/exclude patterns (full dotted names)."""
    out = {}
    for name, module in layer.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        full = f"{layer_prefix}.{name}"
        if any(fnmatch.fnmatchcase(full, p) for p in cfg.include) and not any(
            fnmatch.fnmatchcase(full, p) for p in cfg.exclude
        ):
            out[name] = module
    return out


def validate_config(model: nn.Module, cfg: PruneConfig) -> None:
    """Check method, sparsity and pattern against every target linear before anything is changed."""
    from calmix.prune.masks import validate_pattern
    from calmix.prune.registry import get_pruner

    get_pruner(cfg.method)
    n, m = cfg.nm()
    if cfg.offload not in ("auto", "device", "cpu"):
        raise CalmixError(f"unknown offload '{cfg.offload}': choose auto, device or cpu")
    if cfg.blocksize < 1 or cfg.batch_size < 1:
        raise CalmixError("blocksize and batch size must be positive integers")
    layers = decoder_layers(model)
    prefix = decoder_layers_name(model)
    ntargets = 0
    for i, layer in enumerate(layers):
        for name, lin in target_linears(layer, f"{prefix}.{i}", cfg).items():
            validate_pattern(cfg.sparsity, n, m, lin.in_features)
            ntargets += 1
    if ntargets == 0:
        raise CalmixError(f"no linear layer matches --include {list(cfg.include)} minus --exclude {list(cfg.exclude)}")


def _groups_by_input(layer: nn.Module, linears: dict[str, nn.Linear], args: tuple, kwargs: dict) -> list[list[str]]:
    """Group linears that read the same input tensor (q/k/v, gate/up) by one probing forward."""
    seen: dict[str, tuple] = {}
    alive: list[torch.Tensor] = []  # hold every input so no freed buffer is reused under the same address
    hooks = []

    def make(name):
        def hook(_mod, inp, _out):
            alive.append(inp[0])
            seen[name] = (inp[0].data_ptr(), tuple(inp[0].shape), tuple(inp[0].stride()))
        return hook

    try:
        for name, lin in linears.items():
            hooks.append(lin.register_forward_hook(make(name)))
        with torch.no_grad():
            layer(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    groups: dict[tuple, list[str]] = {}
    for name in linears:
        key = seen.get(name, ("unused", name))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _layer_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def prune_model(model: nn.Module, calib, cfg: PruneConfig, device: str | torch.device | None = None,
                progress: bool = True) -> PruneReport:
    """Prune the decoder linears of `model` in place, one decoder layer at a time, on `calib` token windows."""
    from calmix.prune.registry import apply_pruner_group, get_pruner, prepare_stat
    from calmix.prune.sparsegpt import HessianAccumulator
    from calmix.prune.wanda import XNormAccumulator

    t_start = time.perf_counter()
    validate_config(model, cfg)
    pruner = get_pruner(cfg.method)
    n, m = cfg.nm()
    ids, mask = _as_calib(calib)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    layers = decoder_layers(model)
    layers_name = decoder_layers_name(model)
    report = PruneReport(config=cfg, nsamples=ids.shape[0], seqlen=ids.shape[1],
                         ntokens=int(mask.sum()) if mask is not None else ids.numel(), device=str(device))
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False

    # 1. Capture: run the model with every decoder layer replaced by a recorder; keep each layer's call.
    t0 = time.perf_counter()
    batches = [(ids[i:i + cfg.batch_size], None if mask is None else mask[i:i + cfg.batch_size])
               for i in range(0, ids.shape[0], cfg.batch_size)]
    calls: list[list[tuple[tuple, dict]]] = [[] for _ in layers]  # calls[layer][batch] = (extra args, kwargs)
    inps: list[torch.Tensor] = []
    pool: list[torch.Tensor] = []
    offload = torch.device("cpu") if cfg.offload == "cpu" else device
    if cfg.offload == "auto" and device.type == "cuda":
        hidden = getattr(model.config, "hidden_size", 4096)
        need = 2 * ids.numel() * hidden * torch.finfo(next(model.parameters()).dtype).bits // 8
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.5 * free:
            offload = torch.device("cpu")
            log.info("activations (%.1f GiB) spill to CPU memory", need / 2**30)

    def sink(index: int, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if index == 0:
            inps.append(hidden.to(offload))
        calls[index].append((_dedupe(tuple(args[1:]), pool), _dedupe(kwargs, pool)))

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
    if len(inps) != len(batches) or any(len(c) != len(batches) for c in calls):
        raise CalmixError(f"{type(model).__name__} did not call every decoder layer once per batch: "
                          "calmix supports decoder-only models that run their layers in order")
    report.timings["capture"] = time.perf_counter() - t0

    # 2. Layer by layer: statistics → prune → outputs feed the next layer.
    bar = tqdm(range(len(layers)), desc=f"{cfg.method} {cfg.pattern if m else f'{cfg.sparsity:.0%}'}",
               unit="layer", disable=not progress)
    for li in bar:
        layer = layers[li]
        layer_home = next(layer.parameters()).device
        layer.to(device)
        prefix = f"{layers_name}.{li}"
        linears = target_linears(layer, prefix, cfg)

        def run(b: int, x: torch.Tensor) -> torch.Tensor:
            args, kwargs = calls[li][b]
            return _layer_output(layer(x.to(device), *args, **kwargs))

        t0 = time.perf_counter()
        groups = _groups_by_input(layer, linears, (inps[0].to(device),) + calls[li][0][0], calls[li][0][1]) \
            if linears else []
        stats: dict[str, Any] = {}
        hooks = []
        current_mask: list[torch.Tensor | None] = [None]
        if pruner.stats is not None:
            for group in groups:
                lead = group[0]
                lin = linears[lead]
                acc = (HessianAccumulator(lin.in_features, device) if pruner.stats == "hessian"
                       else XNormAccumulator(lin.in_features, device))
                stats[lead] = acc
                hooks.append(lin.register_forward_hook(
                    lambda _m, inp, _o, acc=acc: acc.add(inp[0].detach(), current_mask[0])))
        dense_outs: list[torch.Tensor] = []
        try:
            for b in range(len(batches)):
                current_mask[0] = None if batches[b][1] is None else batches[b][1].to(device)
                out = run(b, inps[b])
                if not cfg.true_sequential:
                    dense_outs.append(out.to(offload))
        finally:
            for h in hooks:
                h.remove()
        t_stats = time.perf_counter() - t0

        # Keep dense copies of the weights for the output-error measurement.
        dense_w = {name: lin.weight.detach().clone() for name, lin in linears.items()}
        records: dict[str, LayerRecord] = {}
        for group in groups:
            stat = None
            if pruner.stats == "hessian":
                stat = stats[group[0]].H
            elif pruner.stats == "xnorm":
                stat = stats[group[0]].xnorm_sq
            stat = prepare_stat(pruner, stat, percdamp=cfg.percdamp)  # one factorisation per shared input
            t1 = time.perf_counter()
            results = apply_pruner_group(pruner, [linears[name].weight.data for name in group], stat, cfg.sparsity,
                                         n, m, blocksize=cfg.blocksize, percdamp=cfg.percdamp)
            seconds = (time.perf_counter() - t1) / len(group) + t_stats / max(len(linears), 1)
            for name, res in zip(group, results):
                lin = linears[name]
                lin.weight.data.copy_(res.weight.to(lin.weight.dtype))
                sp = float((lin.weight.data == 0).float().mean())
                records[name] = LayerRecord(f"{prefix}.{name}", tuple(lin.weight.shape), sp, None, seconds,
                                            {k: v for k, v in res.info.items() if isinstance(v, (int, float, str))})
            del stat
        stats.clear()

        # Outputs of the pruned layer (next inputs), and the relative output error of each linear.
        errs = {name: [0.0, 0.0] for name in linears}
        err_batches = max(1, -(-cfg.err_samples // cfg.batch_size))

        def err_hook(name, dense):
            def hook(_mod, inp, out):
                x, out = inp[0][: cfg.err_samples], out[: cfg.err_samples]
                ref = nn.functional.linear(x, dense.to(x.dtype), None if _mod.bias is None else _mod.bias)
                errs[name][0] += float((out.float() - ref.float()).pow(2).sum())
                errs[name][1] += float(ref.float().pow(2).sum())
            return hook

        t0 = time.perf_counter()
        hooks = [lin.register_forward_hook(err_hook(name, dense_w[name])) for name, lin in linears.items()]
        try:
            for b in range(len(batches)):
                if b == err_batches:
                    for h in hooks:
                        h.remove()
                    hooks = []
                if cfg.true_sequential:
                    inps[b] = run(b, inps[b]).to(offload)
                elif b < err_batches:
                    run(b, inps[b])
        finally:
            for h in hooks:
                h.remove()
        if not cfg.true_sequential:
            inps = dense_outs
        for name, rec in records.items():
            num, den = errs[name]
            rec.rel_error = num / den if den > 0 else 0.0
            report.layers.append(rec)
        report.timings[f"layer_{li}"] = t_stats + time.perf_counter() - t0
        layer.to(layer_home)
        del dense_w
        if device.type == "cuda":
            torch.cuda.empty_cache()
        for v in inps:
            if not torch.isfinite(v).all():
                raise CalmixError(f"non-finite activations after pruning layer {li}: lower the sparsity or raise "
                                  f"--percdamp")
    model.config.use_cache = use_cache
    report.timings["total"] = time.perf_counter() - t_start
    return report


def model_sparsity(model: nn.Module, include: tuple[str, ...] = ("*",)) -> dict:
    """Fraction of zero weights in each decoder-layer linear and overall (weighted by size)."""
    layers = decoder_layers(model)
    prefix = decoder_layers_name(model)
    per, zeros, total = {}, 0, 0
    for i, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                full = f"{prefix}.{i}.{name}"
                if not any(fnmatch.fnmatchcase(full, p) for p in include):
                    continue
                z = int((module.weight == 0).sum())
                per[full] = z / module.weight.numel()
                zeros += z
                total += module.weight.numel()
    return {"overall": zeros / max(total, 1), "linears": per, "n_linears": len(per), "n_weights": total}
