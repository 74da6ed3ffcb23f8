"""OWL's statistic: each decoder layer's outlier ratio, the share of its Wanda scores |W_ij|·||X_j|| above M times
their mean over the layer's target linears, from one pass of the dense model over the calibration windows."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from calmix.models import decoder_layers, decoder_layers_name
from calmix.prune.capture import Batch, LayerCalls, capture_layer_calls


def outlier_ratio(weights: list[Tensor], xnorm_sq: list[Tensor], m: float) -> float:
    """Share of the scores |W_ij|·sqrt(xnorm_sq_j) of all weights above m × the mean score over all of them."""
    scores = [w.detach().float().abs() * x.to(w.device, torch.float32).sqrt().reshape(1, -1)
              for w, x in zip(weights, xnorm_sq)]
    total = sum(s.numel() for s in scores)
    if total == 0:
        return 0.0
    mean = sum(float(s.double().sum()) for s in scores) / total
    above = sum(int((s > m * mean).sum()) for s in scores)
    return above / total


@torch.no_grad()
def layer_outlier_ratios(model: nn.Module, batches: list[Batch], linears_of, m: float,
                         device: torch.device, offload: torch.device) -> list[float]:
    """The outlier ratio of every decoder layer, its inputs from the dense layers below it (as OWL measures);
    `linears_of(layer, prefix)` names the target linears of a layer."""
    from calmix.prune.wanda import XNormAccumulator

    captured: LayerCalls = capture_layer_calls(model, batches, device, offload)
    layers, name = decoder_layers(model), decoder_layers_name(model)
    ratios = []
    for li, layer in enumerate(layers):
        home = next(layer.parameters()).device
        layer.to(device)
        linears = linears_of(layer, f"{name}.{li}")
        accs = {n: XNormAccumulator(lin.in_features, device) for n, lin in linears.items()}
        mask: list[Tensor | None] = [None]
        hooks = [lin.register_forward_hook(lambda _m, inp, _o, acc=accs[n]: acc.add(inp[0], mask[0]))
                 for n, lin in linears.items()]
        try:
            for b, b_mask in enumerate(captured.masks):
                mask[0] = None if b_mask is None else b_mask.to(device)
                captured.hidden[b] = captured.replay(layer, li, b).to(offload)
        finally:
            for h in hooks:
                h.remove()
        ratios.append(outlier_ratio([lin.weight for lin in linears.values()],
                                    [accs[n].xnorm_sq for n in linears], m))
        layer.to(home)
    return ratios
