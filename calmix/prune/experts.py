"""Fused mixture-of-experts weights (transformers 5 stores a layer's experts as 3-D parameters, gate_up_proj
[E, 2I, H] and down_proj [E, H, I]): each expert's slice is pruned with the statistics of the tokens the router
sent to that expert, taken from one forward of the dense layer.

A hook on the experts module reads what the router decided (hidden states, top-k expert indices) and feeds, per
expert, the pruner's accumulator of the gate/up input (the routed tokens) and of the down input (act(gate)·up of
those tokens under the dense weights). Layouts other than concatenated, untransposed, gated and bias-free are
refused with a one-line error rather than left silently unpruned.
"""

from __future__ import annotations

import fnmatch
import time

import torch
from torch import Tensor, nn

from calmix.errors import CalmixError
from calmix.models import decoder_layers, decoder_layers_name
from calmix.prune.capture import LayerCalls
from calmix.prune.config import LayerRecord, PruneConfig
from calmix.prune.masks import validate_pattern
from calmix.prune.registry import PRUNERS, Pruner

WEIGHTS = ("gate_up_proj", "down_proj")


def fused_experts(layer: nn.Module) -> dict[str, nn.Module]:
    """Modules of one decoder layer that hold 3-D (fused per-expert) parameters, by name inside the layer."""
    return {name: mod for name, mod in layer.named_modules()
            if any(p.dim() == 3 for p in mod.parameters(recurse=False))}


def check_experts(module: nn.Module, where: str) -> None:
    """CalmixError unless the fused experts have the layout calmix prunes (see the module docstring)."""
    gu, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    flags = {"has_bias": False, "is_transposed": False, "is_concatenated": True, "has_gate": True,
             "has_post_expert_norm": False}
    ok = (isinstance(gu, Tensor) and isinstance(down, Tensor) and gu.dim() == 3 and down.dim() == 3
          and callable(getattr(module, "act_fn", None))
          and all(getattr(module, k, v) == v for k, v in flags.items())
          and gu.shape[0] == down.shape[0] and gu.shape[1] == 2 * down.shape[2] and gu.shape[2] == down.shape[1])
    if not ok:
        raise CalmixError(f"{where} ({type(module).__name__}) stores its experts in a fused layout calmix cannot "
                          "prune yet: exclude it with --exclude, or use a model with gate_up_proj [E, 2I, H] and "
                          "down_proj [E, H, I] experts")


def target_experts(layer: nn.Module, prefix: str, cfg: PruneConfig) -> dict[str, nn.Module]:
    """The fused experts of a layer whose weights the include/exclude patterns select (checked for layout)."""
    out = {}
    for name, mod in fused_experts(layer).items():
        full = f"{prefix}.{name}"
        names = [f"{full}.{w}" for w in WEIGHTS]
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in cfg.include) and not any(
                fnmatch.fnmatchcase(n, p) for n in names for p in cfg.exclude):
            check_experts(mod, full)
            out[name] = mod
    return out


def validate_experts(model: nn.Module, cfg: PruneConfig) -> None:
    """Check the layout of every selected fused-experts module and the pattern against its inputs, before any
    weight changes."""
    n, m = cfg.nm()
    name = decoder_layers_name(model)
    for i, layer in enumerate(decoder_layers(model)):
        for mod in target_experts(layer, f"{name}.{i}", cfg).values():
            for w in WEIGHTS:
                validate_pattern(cfg.sparsity, n, m, getattr(mod, w).shape[2])


class _RoutedStats:
    """Per-expert accumulators of one experts module, fed by a forward pre-hook from the routing decision."""

    def __init__(self, pruner: Pruner, module: nn.Module, device: torch.device) -> None:
        E, two_i, H = module.gate_up_proj.shape
        self.module = module
        self.gate_up = [pruner.accumulator(H, device) for _ in range(E)]
        self.down = [pruner.accumulator(two_i // 2, device) for _ in range(E)]
        self.mask: Tensor | None = None  # the batch's attention mask (0 = padding), flattened like the tokens

    def hook(self, _mod: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        top_k = args[1] if len(args) > 1 else kwargs["top_k_index"]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        keep = None if self.mask is None else self.mask.reshape(-1).to(hidden.device) != 0
        for e in range(len(self.gate_up)):
            routed = (top_k.reshape(hidden.shape[0], -1) == e).any(dim=-1)
            if keep is not None and keep.shape == routed.shape:
                routed &= keep
            if not routed.any() or self.gate_up[e] is None:
                continue
            x = hidden[routed]
            gate, up = nn.functional.linear(x, self.module.gate_up_proj[e].to(x.dtype)).chunk(2, dim=-1)
            self.gate_up[e].add(x)
            self.down[e].add(self.module.act_fn(gate) * up)


def _ntokens(acc) -> int:
    return int(getattr(acc, "ntokens", 1))


@torch.no_grad()
def prune_experts(pruner: Pruner, layer: nn.Module, index: int, captured: LayerCalls, cfg: PruneConfig,
                  prefix: str) -> list[LayerRecord]:
    """Prune every selected fused-experts module of decoder layer `index` in place, expert by expert, with the
    statistics of the tokens routed to each expert in one forward of the dense layer; one record per slice.
    An expert no calibration token reached is pruned by magnitude (recorded in its info)."""
    experts = target_experts(layer, prefix, cfg)
    if not experts:
        return []
    stats = {name: _RoutedStats(pruner, mod, captured.device) for name, mod in experts.items()}
    hooks = [mod.register_forward_pre_hook(stats[name].hook, with_kwargs=True) for name, mod in experts.items()]
    try:
        for b, b_mask in enumerate(captured.masks):
            for st in stats.values():
                st.mask = b_mask
            captured.replay(layer, index, b)
    finally:
        for h in hooks:
            h.remove()
    n, m = cfg.nm()
    magnitude = PRUNERS.get("magnitude")
    records = []
    for name, st in stats.items():
        for weight_name, accs in (("gate_up_proj", st.gate_up), ("down_proj", st.down)):
            param = getattr(st.module, weight_name)
            for e, acc in enumerate(accs):
                t0 = time.perf_counter()
                W = param.data[e]
                dense = W.detach().clone()
                use, info = pruner, {}
                if acc is not None and _ntokens(acc) == 0:
                    use, acc, info = magnitude, None, {"fallback": "magnitude (no calibration token routed here)"}
                stat = use.prepare(acc, percdamp=cfg.percdamp)
                res = use.prune_group([W.float()], stat, cfg.sparsity, n, m, blocksize=cfg.blocksize,
                                      percdamp=cfg.percdamp)[0]
                W.copy_(res.weight.to(W.dtype))
                err = use.reconstruction_error(acc, dense.float(), W.float(), res.info)
                info.update({k: v for k, v in res.info.items() if isinstance(v, (int, float, str))})
                info["tokens"] = _ntokens(acc) if acc is not None else 0
                records.append(LayerRecord(f"{prefix}.{name}.{weight_name}[{e}]", tuple(W.shape),
                                           float((W == 0).float().mean()), err, time.perf_counter() - t0, info))
    return records
