"""Layer-wise sparsity profiles: how the target sparsity is spread over the decoder layers.

`uniform` prunes every layer at the target; `owl` is OWL (Yin et al. 2023, outlier-weighted layerwise sparsity):
layers with more outliers of |W_ij|·||X_j|| keep more weights; a FILE lists one sparsity per decoder layer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from calmix.errors import CalmixError
from calmix.fingerprint import digest
from calmix.registry import Registry

PROFILES: Registry[str] = Registry("sparsity profile")
PROFILES.add("uniform", "every decoder layer at the target sparsity")
PROFILES.add("owl", "OWL: layers with more |W|·||X|| outliers pruned less, mean sparsity = target")

OWL_LAMBDA = 0.08  # OWL's defaults (paper and code): sparsities span 2λ, outliers are scores above M × the mean
OWL_M = 5.0


def is_file_profile(profile: str) -> bool:
    """True when the profile names a file of per-layer sparsities rather than a built-in profile."""
    return profile not in PROFILES


def check_profile(profile: str, pattern_m: int, owl_lambda: float, owl_m: float) -> None:
    """CalmixError for a profile that cannot run: an unknown name or unreadable file, N:M with a profile other
    than uniform, or OWL parameters out of range; checked before anything loads."""
    if profile == "uniform":
        return
    if pattern_m:
        raise CalmixError(f"--sparsity-profile {profile} needs --pattern unstructured: an N:M pattern fixes "
                          "every layer's sparsity")
    if profile == "owl":
        if not (isinstance(owl_lambda, (int, float)) and 0 <= owl_lambda < 0.5):
            raise CalmixError(f"--owl-lambda must be a number in [0, 0.5), got {owl_lambda!r}")
        if not (isinstance(owl_m, (int, float)) and owl_m > 0 and math.isfinite(owl_m)):
            raise CalmixError(f"--owl-m must be a positive number, got {owl_m!r}")
        return
    read_profile_file(profile)


def read_profile_file(path: str | Path, nlayers: int | None = None) -> list[float]:
    """Per-layer sparsities from a JSON list (or {"sparsities": [...]}) or a text file of one number a line
    (blank lines and # comments skipped); each in [0, 1), one per decoder layer when nlayers is given."""
    p = Path(path)
    if not p.is_file():
        raise CalmixError(f"sparsity profile {str(path)!r} is neither {' nor '.join(PROFILES)} nor a file: give a "
                          "JSON list or a text file of one sparsity per decoder layer")
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalmixError(f"sparsity profile {p}: not valid JSON ({exc.msg} at line {exc.lineno}): give a "
                              "list of numbers") from None
        if isinstance(data, dict):
            data = data.get("sparsities")
        if not isinstance(data, list):
            raise CalmixError(f"sparsity profile {p}: expected a JSON list of numbers (or {{\"sparsities\": "
                              "[...]}})")
        values = [(f"item {i}", v) for i, v in enumerate(data)]
    else:
        values = []
        for no, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                values.append((f"line {no}", line))
    out = []
    for where, v in values:
        try:
            x = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if not 0 <= x < 1:
            raise CalmixError(f"sparsity profile {p}, {where}: {v!r} is not a sparsity in [0, 1)")
        out.append(x)
    if not out:
        raise CalmixError(f"sparsity profile {p} lists no sparsity: give one per decoder layer")
    if nlayers is not None and len(out) != nlayers:
        raise CalmixError(f"sparsity profile {p} lists {len(out)} sparsities but the model has {nlayers} decoder "
                          "layers: give one per layer")
    return out


def owl_sparsities(outlier_ratios: Sequence[float], target: float, lam: float = OWL_LAMBDA) -> list[float]:
    """OWL's allocation: the outlier ratios mapped linearly (min-max) onto a span of 2·lam, reversed (more
    outliers, lower sparsity), shifted so the mean is exactly the target; all equal when the ratios are."""
    r = [float(x) for x in outlier_ratios]
    if not r:
        raise CalmixError("OWL needs at least one decoder layer")
    lo, hi = min(r), max(r)
    if hi == lo:
        return [float(target)] * len(r)
    scaled = [(x - lo) / (hi - lo) * 2 * lam for x in r]
    mean = math.fsum(scaled) / len(scaled)
    out = [target - (s - mean) for s in scaled]
    if min(out) < 0 or max(out) >= 1:
        raise CalmixError(f"OWL with --owl-lambda {lam} at sparsity {target} gives a layer sparsity outside [0, 1) "
                          f"({min(out):.3f}..{max(out):.3f}): lower --owl-lambda")
    return out


def profile_key(profile: str, owl_lambda: float, owl_m: float) -> dict:
    """How a profile enters study fingerprints and cache keys: nothing for uniform (older keys keep meaning), the
    OWL parameters for owl, the file's content digest for a FILE."""
    if profile == "uniform":
        return {}
    if profile == "owl":
        return {"sparsity_profile": "owl", "owl_lambda": owl_lambda, "owl_m": owl_m}
    return {"sparsity_profile": "file", "profile_digest": digest(read_profile_file(profile))}


def layer_sparsities(model, profile: str, target: float, nlayers: int, batches, linears_of, device, offload,
                     owl_lambda: float = OWL_LAMBDA, owl_m: float = OWL_M) -> list[float]:
    """Each decoder layer's sparsity under the profile (OWL runs one dense pass over the calibration batches)."""
    if profile == "uniform":
        return [float(target)] * nlayers
    if profile == "owl":
        from calmix.prune.owl import layer_outlier_ratios

        ratios = layer_outlier_ratios(model, batches, linears_of, owl_m, device, offload)
        return owl_sparsities(ratios, target, owl_lambda)
    return read_profile_file(profile, nlayers)
