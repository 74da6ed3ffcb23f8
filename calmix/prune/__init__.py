"""Pruning: pure per-matrix methods (sparsegpt, wanda, magnitude), each behind a pruner that owns its input
statistic, and the sequential engine."""

# Importing a method's module registers its pruner; this order is the order PRUNERS lists them in.
from calmix.prune import sparsegpt, wanda, magnitude  # noqa: F401, I001
from calmix.prune.engine import PruneConfig, PruneReport, model_sparsity, prune_model
from calmix.prune.registry import PRUNERS, Pruner

__all__ = ["PRUNERS", "PruneConfig", "PruneReport", "Pruner", "model_sparsity", "prune_model"]
