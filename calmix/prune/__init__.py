"""Pruning: pure per-matrix methods (sparsegpt, wanda, magnitude) behind a registry, and the sequential engine."""

from calmix.prune.engine import PruneConfig, PruneReport, model_sparsity, prune_model
from calmix.prune.registry import PRUNERS, get_pruner

__all__ = ["PRUNERS", "PruneConfig", "PruneReport", "get_pruner", "model_sparsity", "prune_model"]
