"""The pruner interface (each method owns its input statistic) and the registry of pruning methods.

A pruner says three things, and the engine asks nothing else:
- ``accumulator(in_features, device)``: a fresh streaming accumulator of the statistic it needs from the
  inputs of one linear (``add(x, attention_mask)``), or None when it needs no calibration data;
- ``prepare(acc, **opts)``: that statistic in the form its pure function takes, computed once for all
  linears that read the same input (SparseGPT's factorisation of H);
- ``prune(W, stat, ...)`` / ``prune_group([W, ...], stat, ...)``: prune one weight, or weights sharing one input;
- optionally ``reconstruction_error(acc, W, W_pruned, info)``: the relative output error from the statistic alone.
The pure math stays in plain functions (``sparsegpt_prune``, ``wanda_prune``, ``magnitude_prune``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from calmix.errors import CalmixError
from calmix.prune.masks import PruneResult
from calmix.registry import Registry


class Accumulator(Protocol):
    """Streaming statistic of one linear's inputs."""

    def add(self, x: Tensor, attention_mask: Tensor | None = None) -> None: ...


class Pruner:
    """A pruning method: the statistic it collects, how it reads it, and how it prunes (one subclass per method)."""

    name: str = ""
    description: str = ""
    stats: str | None = None  # the statistic's name, for messages ("hessian", "xnorm"); None: no calibration data
    accumulator_options: tuple[str, ...] = ()  # PruneConfig fields handed to accumulator() as keywords

    def accumulator(self, in_features: int, device: str | torch.device = "cpu", **opts) -> Accumulator | None:
        """A fresh accumulator of this method's input statistic, or None when it needs no data; opts: the
        accumulator_options fields of the run's PruneConfig."""
        return None

    def prepare(self, acc: Accumulator | None, **opts) -> object:
        """The accumulated statistic in the form prune takes, read once per group of linears sharing an input."""
        return None

    def prune(self, W: Tensor, stat: object, sparsity: float, n: int = 0, m: int = 0, **opts) -> PruneResult:
        """Prune W [out, in] with its statistic (raw or prepared); opts (blocksize, percdamp) reach SparseGPT."""
        raise NotImplementedError

    def prune_group(self, Ws: list[Tensor], stat: object, sparsity: float, n: int = 0, m: int = 0,
                    **opts) -> list[PruneResult]:
        """Prune weights that read the same input; one by one unless the method has a joint pass."""
        return [self.prune(W, stat, sparsity, n, m, **opts) for W in Ws]

    def reconstruction_error(self, acc: Accumulator | None, W: Tensor, W_pruned: Tensor,
                             info: dict | None = None) -> float | None:
        """Relative output error of W_pruned against W computed from the statistic alone, or None when the
        statistic cannot tell it (the engine then measures it on a forward)."""
        return None

    def require(self, stat: object) -> None:
        """CalmixError when this method needs a statistic and got none."""
        if self.stats is not None and stat is None:
            raise CalmixError(f"pruning method {self.name!r} needs the '{self.stats}' input statistic: "
                              f"collect calibration statistics first")


PRUNERS: Registry[Pruner] = Registry("pruning method")


def register_pruner(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: register one instance of a Pruner subclass under its ``name``."""
    PRUNERS.add(cls.name, cls())
    return cls
