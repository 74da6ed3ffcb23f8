"""How much of a model pruning reached: every parameter by kind (decoder linear, fused experts, router, norm,
embedding, head, ...), the share of parameters in pruned tensors, the sparsity over all parameters, and what
was left dense."""

from __future__ import annotations

from torch import nn

from calmix.models import decoder_layers_name

PRUNABLE = ("decoder linear", "fused experts")
PRUNED_MIN_ZEROS = 0.01  # a tensor counts as pruned when at least 1% of it is exactly zero (dense weights are not)


def parameter_kind(module_name: str, module: nn.Module, param_name: str, dim: int, in_layers: bool,
                   head: nn.Module | None) -> str:
    """The kind of one parameter, by where it sits and what holds it."""
    cls = type(module).__name__.lower()
    if head is not None and module is head:
        return "head"
    if isinstance(module, nn.Embedding) or "embed" in cls:
        return "embedding"
    if "norm" in cls:
        return "norm"
    if in_layers and dim == 3:
        return "fused experts"
    if in_layers and isinstance(module, nn.Linear) and param_name == "weight":
        return "decoder linear"
    if "router" in cls or module_name.rsplit(".", 1)[-1] in ("gate", "router"):
        return "router"
    if param_name == "bias":
        return "bias"
    return "other"


def parameter_coverage(model: nn.Module) -> dict:
    """Every parameter (tied ones once) by kind: tensors, parameters, zeros, pruned tensors; the share of all
    parameters in pruned tensors (`coverage`), the sparsity over all parameters, and the dense kinds and
    decoder tensors."""
    prefix = decoder_layers_name(model) + "."
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    kinds: dict[str, dict] = {}
    dense_targets: list[str] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{param_name}" if module_name else param_name
            kind = parameter_kind(module_name, module, param_name, p.dim(), full.startswith(prefix), head)
            zeros, numel = int((p.detach() == 0).sum()), p.numel()
            pruned = kind in PRUNABLE and zeros >= PRUNED_MIN_ZEROS * numel
            k = kinds.setdefault(kind, {"tensors": 0, "params": 0, "zeros": 0, "pruned_tensors": 0,
                                        "pruned_params": 0})
            k["tensors"] += 1
            k["params"] += numel
            k["zeros"] += zeros
            k["pruned_tensors"] += int(pruned)
            k["pruned_params"] += numel if pruned else 0
            if kind in PRUNABLE and not pruned:
                dense_targets.append(full)
    total = sum(k["params"] for k in kinds.values())
    for k in kinds.values():
        k["sparsity"] = k["zeros"] / max(k["params"], 1)
    return {"n_params": total, "sparsity_all": sum(k["zeros"] for k in kinds.values()) / max(total, 1),
            "coverage": sum(k["pruned_params"] for k in kinds.values()) / max(total, 1), "kinds": kinds,
            "not_pruned": sorted(name for name, k in kinds.items() if k["pruned_tensors"] < k["tensors"]),
            "dense_decoder_tensors": dense_targets}


def coverage_lines(cov: dict, limit: int = 8) -> list[str]:
    """The human summary of parameter_coverage: coverage, sparsity over all, and what stayed dense."""
    lines = [f"all parameters: {cov['n_params']:,}, {cov['coverage']:.1%} of them in pruned tensors, sparsity over "
             f"all {cov['sparsity_all']:.4f}"]
    for name in sorted(cov["kinds"], key=lambda n: -cov["kinds"][n]["params"]):
        k = cov["kinds"][name]
        lines.append(f"  {name}: {k['tensors']} tensors, {k['params']:,} parameters, {k['pruned_tensors']} pruned, "
                     f"sparsity {k['sparsity']:.4f}")
    if cov["not_pruned"]:
        lines.append(f"not pruned: {', '.join(cov['not_pruned'])}")
    dense = cov["dense_decoder_tensors"]
    if dense:
        more = f" and {len(dense) - limit} more" if len(dense) > limit else ""
        lines.append(f"dense decoder tensors: {', '.join(dense[:limit])}{more}")
    return lines
