"""Outputs users can publish: the Hugging Face model card of a pruned folder, bit-packed masks, the hub upload."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from calmix.errors import CalmixError
from calmix.models import BUILTIN_MODELS

MASKS_FILE = "masks.safetensors"
MASKS_FORMAT = "calmix-masks-packbits"
CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_CACHE_DIR = re.compile(r"models--([\w.-]+)--([\w.-]+)$")

SERVING_NOTE = (
    "The zeros are stored in dense tensors: this checkpoint is as large as the base model and, served as it is, "
    "exactly as fast. Unstructured or 2:4 sparsity saves no memory or time when served by vLLM today: vLLM removed "
    "its 2:4 sparse kernels, and compressed-tensors 0.15 and later removed its sparse compressors. So calmix writes "
    "dense checkpoints, and quantization (e.g. int8/fp8 weights or 4-bit GPTQ/AWQ) is the deployment lever; the "
    "sparsity is a research result (what the model keeps of its capabilities with these weights zeroed).")


@dataclass
class PruneCard:
    """What a pruned model's card says: the base, the pruning, the calibration, what was measured, how to redo it."""

    model: str  # the model spec as given
    method: str
    sparsity: float  # the target
    pattern: str
    measured_sparsity: float  # over the pruned decoder linears
    n_linears: int
    dtype: str  # the dtype the model was loaded, pruned and saved in
    calib: dict  # spec, nsamples, seqlen, seed, card (the CalibSet provenance card)
    command: str
    calmix_version: str
    options: dict = field(default_factory=dict)  # further pruning options (blocksize, percdamp, ...)
    ppl: dict | None = None  # {"dense": {...}, "pruned": {...}} as dataset_perplexity returns them
    retention: dict | None = None  # per dimension and Total, where measured
    masks_file: str | None = None


def base_model_id(spec: str) -> str | None:
    """The hub id a model spec stands for (a bundled model's source, a hub id, a hub-cache folder), else None."""
    spec = str(spec)
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS.get(spec).base_model
    path = Path(spec).expanduser()
    if path.exists():
        for part in (path.resolve(), *path.resolve().parents):  # .../models--org--name/snapshots/<sha>
            if m := _HF_CACHE_DIR.search(part.name):
                return f"{m.group(1)}/{m.group(2)}"
        return None
    return spec if _HUB_ID.match(spec) else None


def _pattern_tag(pattern: str) -> str:
    return "unstructured-sparsity" if pattern == "unstructured" else f"{pattern}-sparsity"


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _quality(card: PruneCard) -> list[str]:
    lines = ["## Quality", ""]
    if card.ppl:
        dense, pruned = card.ppl.get("dense") or {}, card.ppl.get("pruned") or {}
        where = f"{pruned.get('windows', '?')} windows × {pruned.get('seqlen', '?')} tokens of {pruned.get('data', '?')}"
        lines += ["| perplexity | dense | pruned |", "| --- | ---: | ---: |",
                  f"| {where} | {_fmt(dense.get('ppl'))} | {_fmt(pruned.get('ppl'))} |", ""]
    else:
        lines += ["Perplexity: not measured (`calmix prune --ppl` measures WikiText-2, dense and pruned).", ""]
    if card.retention:
        lines += ["| retention % | value |", "| --- | ---: |"]
        lines += [f"| {k} | {_fmt(v, 1)} |" for k, v in card.retention.items() if isinstance(v, (int, float))]
        lines.append("")
    else:
        lines += [f"Retention: not measured here (`calmix eval --model THIS_FOLDER --dense {card.model} --out r.json` "
                  f"scores it per capability against the dense model).", ""]
    return lines


def card_text(card: PruneCard) -> str:
    """The model card (README.md with YAML metadata) of a pruned model."""
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model_id(card.model)
    data = ModelCardData(base_model=base, library_name="transformers", pipeline_tag="text-generation",
                         tags=["pruned", card.method, _pattern_tag(card.pattern), "calmix"])
    what = f"{card.sparsity:.0%} unstructured" if card.pattern == "unstructured" else f"{card.pattern} semi-structured"
    calib = card.calib
    body = [
        f"# {Path(base or card.model).name} pruned with {card.method} ({what})", "",
        f"`{base or card.model}` with the weights of its decoder linears pruned by calmix {card.calmix_version}: method `{card.method}`, pattern `{card.pattern}`, calibrated on "
        f"`{calib.get('spec')}` ({calib.get('nsamples')} × {calib.get('seqlen')} tokens, seed {calib.get('seed')}).",
        "", "## Serving: the checkpoint is dense", "", SERVING_NOTE, "",
        "## Pruning", "", "| | |", "| --- | --- |",
        f"| base model | `{base or card.model}` |", f"| method | {card.method} |",
        f"| target sparsity | {card.sparsity} |", f"| pattern | {card.pattern} |",
        f"| measured sparsity | {card.measured_sparsity:.4f} over {card.n_linears} decoder linears |",
        f"| dtype | {card.dtype} (saved as loaded; statistics and the solve in float32) |",
        *[f"| {k} | {v} |" for k, v in card.options.items()], "",
        "## Calibration", "",
        f"Spec `{calib.get('spec')}`: {calib.get('nsamples')} windows of {calib.get('seqlen')} tokens, seed "
        f"{calib.get('seed')}. Its provenance card:", "",
        "```json", json.dumps(calib.get("card") or {}, indent=2, sort_keys=True, default=str), "```", "",
        *_quality(card),
    ]
    if card.masks_file:
        body += ["## Masks", "", f"`{card.masks_file}` holds the pruning masks (True = pruned), bit-packed "
                 "(`numpy.packbits`) with their shapes in the metadata: `calmix.publish.load_masks(path)` reads them "
                 "back as boolean tensors.", ""]
    body += ["## Reproduce", "", "```bash", card.command, "```", "",
             f"calmix {card.calmix_version}; the run record with per-layer errors and timings is `calmix.json`.", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))


def write_card(folder: str | os.PathLike, card: PruneCard) -> Path:
    """Write the model card as README.md into folder (a folder being assembled: atomic_dir's temporary one)."""
    path = Path(folder) / CARD_FILE
    path.write_text(card_text(card), encoding="utf-8")
    return path


def pruned_masks(model: nn.Module, linears: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Masks of the named linears (True = pruned): the zeros of their weights, by weight name, one at a time."""
    for name in linears:
        yield f"{name}.weight", (model.get_submodule(name).weight.detach() == 0).cpu()


def save_masks(path: str | os.PathLike,
               masks: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> Path:
    """Write boolean masks bit-packed (numpy.packbits, 8 per byte) to a safetensors file, shapes in its metadata.

    Each mask is packed as it comes, so an iterator of masks never holds more than one unpacked."""
    from safetensors.numpy import save_file

    packed, shapes = {}, {}
    for name, m in (masks.items() if isinstance(masks, Mapping) else masks):
        packed[name] = np.packbits(m.numpy().astype(bool).reshape(-1))
        shapes[name] = list(m.shape)
    path = Path(path)
    save_file(packed, str(path), metadata={"format": MASKS_FORMAT, "shapes": json.dumps(shapes)})
    return path


def load_masks(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read masks written by save_masks back as boolean tensors of their recorded shapes."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
        if meta.get("format") != MASKS_FORMAT:
            raise CalmixError(f"{path} is not a calmix masks file (format {meta.get('format')!r}): "
                              f"pass the {MASKS_FILE} of a `calmix prune --save-masks` folder")
        shapes = json.loads(meta["shapes"])
        out = {}
        for name in f.keys():
            shape = shapes[name]
            bits = np.unpackbits(f.get_tensor(name), count=int(np.prod(shape, dtype=np.int64)))
            out[name] = torch.from_numpy(bits.astype(bool).reshape(shape))
    return out


def _hub_errors() -> tuple[type[BaseException], ...]:
    """The errors a hub call raises for a refused or failed request (the hub's own and its HTTP library's)."""
    from huggingface_hub.errors import HfHubHTTPError

    transport = [c for c in HfHubHTTPError.__mro__ if c.__name__ == "HTTPError"]  # httpx's or requests' base
    return (OSError, ValueError, HfHubHTTPError, *transport)


def check_repo_id(repo_id: str) -> str:
    """Fail (CalmixError) unless repo_id looks like a hub model id, `user/name` or `org/name`."""
    if not _HUB_ID.match(repo_id or ""):
        raise CalmixError(f"--push-to-hub {repo_id!r} is not a hub repo id: pass USER/NAME or ORG/NAME")
    return repo_id


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool | None = None,
                token: str | None = None) -> str:
    """Create the model repo (if new) and upload the folder in one commit; returns the commit URL.

    The token is the usual one (HF_TOKEN, or `hf auth login`); HF_ENDPOINT is read at call time."""
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise CalmixError(f"no Hugging Face token to push {repo_id}: run `hf auth login` or set HF_TOKEN "
                          f"(the pruned model is saved in {folder})")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message="Upload a model pruned with calmix")
    except _hub_errors() as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CalmixError(f"pushing to {repo_id} failed ({first}): the pruned model is saved in {folder}; "
                          f"retry with `hf upload {repo_id} {folder}`") from None
    return str(info.commit_url)
