"""What to prune and how (PruneConfig, checked against the model before anything changes), what came out
(PruneReport), and how sparse a model is."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

from torch import nn

from calmix.errors import CalmixError
from calmix.models import decoder_layers, decoder_layers_name
from calmix.prune.masks import parse_pattern, validate_pattern
from calmix.prune.profile import OWL_LAMBDA, OWL_M, check_profile, is_file_profile, read_profile_file
from calmix.prune.registry import PRUNERS
from calmix.registry import Registry

SEQUENTIAL: Registry[str] = Registry("sequential mode")
SEQUENTIAL.add("layer", "every linear's statistics from the dense layer's forward (each layer run twice, "
                        "once with dense_inputs)")
SEQUENTIAL.add("linear", "each linear's statistics from the outputs of the pruned linears before it in its "
                         "layer, as SparseGPT's --true-sequential (each layer run once)")

HESSIAN_DTYPES: Registry[str] = Registry("Hessian dtype")
HESSIAN_DTYPES.add("float32", "SparseGPT's XᵀX products in fp32")
HESSIAN_DTYPES.add("model", "XᵀX products in a 16-bit model's own dtype on its matrix units, summed in fp32")


@dataclass
class PruneConfig:
    """What to prune and how; every field is recorded in the run's JSON record."""

    method: str = "sparsegpt"
    sparsity: float = 0.5
    pattern: str = "unstructured"  # or "N:M", e.g. "2:4"
    blocksize: int = 128
    percdamp: float = 0.01
    dense_inputs: bool = False  # inputs of layer i+1 = outputs of the dense layer i (default: of the pruned one)
    sequential: str = "linear"  # statistics from the dense layer ("layer") or after the linears before ("linear")
    include: tuple[str, ...] = ("*",)  # fnmatch patterns on full linear names, e.g. "*.mlp.*"
    exclude: tuple[str, ...] = ()
    offload: str = "auto"  # where activations live: "auto" (device if it fits), "device", "cpu"
    batch_size: int = 8  # calibration windows per layer forward (the CLI default too)
    hessian_dtype: str = "float32"  # SparseGPT's XᵀX products: "float32", or "model" (the model's 16-bit units)
    err_samples: int = 4  # samples on which the per-linear output reconstruction error is measured
    sparsity_profile: str = "uniform"  # per-layer sparsity: "uniform", "owl" or a FILE (calmix.prune.profile)
    owl_lambda: float = OWL_LAMBDA  # OWL: layer sparsities span 2·owl_lambda around the target
    owl_m: float = OWL_M  # OWL: an outlier is a score above owl_m × its layer's mean score

    def nm(self) -> tuple[int, int]:
        """(n, m) of the pattern, (0, 0) for unstructured."""
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
    peak_memory_mb: dict[str, float] = field(default_factory=dict)  # per decoder layer, measured by memory_kind
    memory_kind: str = ""  # "cuda_max_memory_allocated" (since the layer began) or "rss_high_water" (so far)
    layer_sparsities: list[float] = field(default_factory=list)  # the target of each decoder layer (the profile)

    @property
    def sparsity(self) -> float:
        """Overall sparsity of the pruned linears (weighted by size)."""
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        return sum(r.sparsity * r.shape[0] * r.shape[1] for r in self.layers) / max(total, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["overall_sparsity"] = self.sparsity
        return d


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
    PRUNERS.get(cfg.method)
    n, m = cfg.nm()
    if cfg.offload not in ("auto", "device", "cpu"):
        raise CalmixError(f"unknown offload '{cfg.offload}': choose auto, device or cpu")
    SEQUENTIAL.get(cfg.sequential)
    HESSIAN_DTYPES.get(cfg.hessian_dtype)
    check_profile(cfg.sparsity_profile, m, cfg.owl_lambda, cfg.owl_m)
    if cfg.blocksize < 1 or cfg.batch_size < 1:
        raise CalmixError("blocksize and batch size must be positive integers")
    layers = decoder_layers(model)
    prefix = decoder_layers_name(model)
    per_layer = (read_profile_file(cfg.sparsity_profile, len(layers)) if is_file_profile(cfg.sparsity_profile)
                 else [cfg.sparsity] * len(layers))
    ntargets = 0
    for i, layer in enumerate(layers):
        for name, lin in target_linears(layer, f"{prefix}.{i}", cfg).items():
            validate_pattern(per_layer[i], n, m, lin.in_features)
            ntargets += 1
    if ntargets == 0:
        raise CalmixError(f"no linear layer matches --include {list(cfg.include)} minus --exclude {list(cfg.exclude)}")


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
