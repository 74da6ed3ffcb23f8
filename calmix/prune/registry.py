"""Registry of pruning methods and one uniform way to call them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from torch import Tensor

from calmix.errors import CalmixError
from calmix.prune.magnitude import magnitude_prune
from calmix.prune.masks import PruneResult
from calmix.prune.sparsegpt import hessian_factor, sparsegpt_prune, sparsegpt_prune_group
from calmix.prune.wanda import wanda_prune


@dataclass(frozen=True)
class Pruner:
    """A pruning method: its name, the input statistic it needs, and its pure function."""

    name: str
    stats: Literal["hessian", "xnorm", None]
    fn: Callable[..., PruneResult]
    description: str
    prepare: Callable[..., object] | None = None  # turns the statistic into what fn takes, once per input group
    group_fn: Callable[..., list[PruneResult]] | None = None  # prunes weights sharing one input in one pass


PRUNERS: dict[str, Pruner] = {
    "sparsegpt": Pruner("sparsegpt", "hessian", sparsegpt_prune,
                        "SparseGPT: OBS pruning with weight reconstruction, needs H = 2XXᵀ/n",
                        prepare=lambda H, percdamp=0.01, **_: hessian_factor(H, percdamp),
                        group_fn=sparsegpt_prune_group),
    "wanda": Pruner("wanda", "xnorm", wanda_prune,
                    "Wanda: |W|·||X_j||, lowest per output row, no weight update"),
    "magnitude": Pruner("magnitude", None, magnitude_prune,
                        "Magnitude: |W|, one threshold per layer, no calibration data"),
}


def get_pruner(name: str) -> Pruner:
    """The registered pruner called name; CalmixError naming the choices otherwise."""
    try:
        return PRUNERS[name]
    except (KeyError, TypeError):
        raise CalmixError(f"unknown pruning method {name!r}: choose one of {', '.join(sorted(PRUNERS))}") from None


def apply_pruner(pruner: Pruner, W: Tensor, stat: Tensor | None, sparsity: float, n: int = 0, m: int = 0,
                 **opts) -> PruneResult:
    """Call pruner on W with its statistic (H, xnorm_sq or None); opts (blocksize, percdamp) go to sparsegpt."""
    if pruner.stats is None:
        return pruner.fn(W, sparsity, n, m)
    if stat is None:
        raise CalmixError(f"pruning method {pruner.name!r} needs the '{pruner.stats}' input statistic: "
                          f"collect calibration statistics first")
    if pruner.stats == "hessian":
        return pruner.fn(W, stat, sparsity, n, m, **opts)
    return pruner.fn(W, stat, sparsity, n, m)


def apply_pruner_group(pruner: Pruner, Ws: list[Tensor], stat, sparsity: float, n: int = 0, m: int = 0,
                       **opts) -> list[PruneResult]:
    """apply_pruner on weights that read the same input, in one pass where the pruner has one."""
    if pruner.group_fn is None or stat is None:
        return [apply_pruner(pruner, W, stat, sparsity, n, m, **opts) for W in Ws]
    return pruner.group_fn(Ws, stat, sparsity, n, m, **opts)


def prepare_stat(pruner: Pruner, stat: Tensor | None, **opts):
    """The statistic in the form pruner.fn takes, computed once for all linears sharing an input (or as is)."""
    if pruner.prepare is None or stat is None:
        return stat
    return pruner.prepare(stat, **opts)
