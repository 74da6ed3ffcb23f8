"""Build calibration sets from parsed specs: tokenize + join with EOS, seeded windows, mixing, the disk cache."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from calmix import fingerprint
from calmix.calib.calibset import CalibSet
from calmix.calib.generated import generate_set
from calmix.calib.generated.common import generated_version
from calmix.calib.sources import Source
from calmix.calib.spec import ParsedSpec, SpecPart, largest_remainder, parse_spec
from calmix.errors import CalmixError
from calmix.lm import bos_prefix, join_token

BUILD_VERSION = 1  # bump when the window-drawing convention changes (invalidates the cache)
TOKEN_BUDGET_FACTOR = 4  # tokenize documents until the stream holds this many times the requested tokens
BOS_CHOICES = ("auto", "yes", "no")
DEFAULT_BOS = "auto"  # measured: see bench/bos.py (SparseGPT 60%, default model and gemma3-270m)


@dataclass
class _Built:
    ids: torch.Tensor
    mask: torch.Tensor | None
    info: dict = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ parsing

def resolve_bos(bos: str, tokenizer) -> int | None:
    """The BOS id that starts every document window (None: plain windows) for --bos auto|yes|no: auto = where
    the tokenizer itself adds BOS (calmix.lm.bos_prefix), yes = the tokenizer's BOS token always."""
    if bos not in BOS_CHOICES:
        raise CalmixError(f"calibration bos must be one of {', '.join(BOS_CHOICES)}, got {bos!r}")
    if bos == "no":
        return None
    if bos == "auto":
        prefix = bos_prefix(tokenizer)
        return prefix[0] if prefix else None
    tid = getattr(tokenizer, "bos_token_id", None)
    if not isinstance(tid, int):
        raise CalmixError("calibration bos=yes but the tokenizer has no BOS token: use bos=auto or bos=no")
    return tid


def derive_seed(seed: int, label: str) -> int:
    """A per-component seed from the set seed and the component's label (stable across mixes)."""
    return fingerprint.seed_from(seed, label)


_TOK_INFO: dict[int, tuple[object, dict]] = {}


def tokenizer_info(tokenizer) -> dict:
    """Identity of a tokenizer for cache keys: name, vocab size, hash of its vocabulary, EOS id."""
    hit = _TOK_INFO.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    vocab = tokenizer.get_vocab()
    digest = fingerprint.digest(json.dumps(sorted(vocab.items()), ensure_ascii=False), 16)
    info = {"name": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
            "vocab_size": len(tokenizer), "vocab_sha256": digest, "eos_token_id": join_token(tokenizer)}
    _TOK_INFO[id(tokenizer)] = (tokenizer, info)
    return info


def model_info(model) -> dict:
    """Identity of a model for cache keys of generated sets: name, parameter count, digest of a few weights."""
    params = list(model.parameters())
    # a weight offloaded by an accelerate device map is a meta tensor while the model runs: not read
    sample = (p.detach().float().cpu().flatten()[:4096].numpy().tobytes()
              for p in (params[0], params[len(params) // 2], params[-1]) if not p.is_meta)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return {"name": name, "params": sum(p.numel() for p in params), "digest": fingerprint.digest_bytes(sample, 16)}


def token_stream(src: Source, tokenizer, budget: int, seed: int, batch: int = 64) -> tuple[torch.Tensor, dict]:
    """Documents of `src` in a seed-shuffled order, tokenized (no special tokens) and joined with EOS,
    stopping once the stream holds at least `budget` tokens."""
    docs = src.documents()
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    eos = join_token(tokenizer)
    chunks: list[list[int]] = []
    total = used = 0
    for start in range(0, len(order), batch):
        texts = [docs[j] for j in order[start:start + batch]]
        enc = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in enc:
            chunks.append(list(ids) + [eos])
            total += len(ids) + 1
            used += 1
            if total >= budget:
                break
        if total >= budget:
            break
    stream = torch.tensor([t for c in chunks for t in c], dtype=torch.long)
    return stream, {"docs_used": used, "docs_total": len(docs), "stream_tokens": int(stream.numel())}


def draw_windows(stream: torch.Tensor, count: int, seqlen: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """`count` windows of `seqlen` tokens at uniform random start offsets (torch.Generator seeded)."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seqlen + 1, (count,), generator=gen)
    idx = starts[:, None] + torch.arange(seqlen)[None, :]
    return stream[idx], starts.tolist()


def _build_docs_part(part: SpecPart, tokenizer, count: int, seqlen: int, seed: int, bos: int | None) -> _Built:
    src = part.source()
    ok, why = src.available()
    if not ok:
        raise CalmixError(f"source {part.label} is not available here: {why}")
    budget = max(TOKEN_BUDGET_FACTOR * count * seqlen, seqlen)
    stream, info = token_stream(src, tokenizer, budget, seed)
    if stream.numel() < seqlen:
        raise CalmixError(f"source {part.label} has only {stream.numel()} tokens ({info['docs_total']} documents); "
                          f"a window needs {seqlen}: lower --seqlen or add data")
    ids, starts = draw_windows(stream, count, seqlen, seed)
    if bos is not None:
        # the same draws as without BOS, first token replaced: the two sets differ only in their BOS
        ids[:, 0] = bos
    info.update(origin=src.origin(), where=why, version=src.version,
                overlap=bool(count * seqlen > stream.numel()))
    return _Built(ids, None, info, starts)


def _build_gen_part(part: SpecPart, model, tokenizer, count: int, seqlen: int, seed: int, device) -> _Built:
    if model is None:
        raise CalmixError(f"{part.name} generates its calibration data with the model: it needs --model")
    got = generate_set(part.name, model, tokenizer, count, seqlen, seed=seed, device=device, params=dict(part.params))
    if got is None or not isinstance(got, CalibSet) or got.nsamples == 0:
        raise CalmixError(f"{part.name} generation returned nothing: check the model and its parameters")
    if got.seqlen != seqlen or got.nsamples != count:
        raise CalmixError(f"{part.name} returned {got.nsamples}x{got.seqlen} tokens, expected {count}x{seqlen}")
    return _Built(got.input_ids, got.attention_mask, {"origin": "model", "generator_card": got.card})


def cache_key(parsed: ParsedSpec, counts: list[int], tokenizer, nsamples: int, seqlen: int, seed: int,
              model=None, device="cpu", bos: int | None = None) -> str:
    """Hash of everything that defines a built set (bos only when windows start with it, so that plain sets
    keep the keys they had before the option existed)."""
    comps = []
    for (part, w), c in zip(parsed.parts, counts):
        ver = generated_version(part.name) if part.kind == "gen" else part.source().version
        comps.append([part.label, str(w), c, ver])
    key = {"build": BUILD_VERSION, "spec": parsed.canonical, "components": comps, "tokenizer": tokenizer_info(tokenizer),
           "nsamples": nsamples, "seqlen": seqlen, "seed": seed}
    if parsed.needs_model:
        key["model"] = model_info(model) if model is not None else None
        key["device"] = str(device)
    if bos is not None:
        key["bos"] = bos
    return fingerprint.digest(key, 24)


def build_calib(spec: str | ParsedSpec, tokenizer, nsamples: int, seqlen: int, seed: int = 0, model=None,
                cache_dir=None, device="cpu", use_cache: bool = True, bos: str = DEFAULT_BOS) -> CalibSet:
    """Build the calibration set a spec describes (nsamples x seqlen token windows), using the disk cache;
    bos (auto|yes|no, resolve_bos) says whether document windows start with BOS (generators start their own)."""
    parsed = spec if isinstance(spec, ParsedSpec) else parse_spec(spec)
    if parsed.kind == "set":
        return CalibSet.load(parsed.path)
    if not (isinstance(nsamples, int) and nsamples > 0 and isinstance(seqlen, int) and seqlen > 0):
        raise CalmixError(f"nsamples and seqlen must be positive integers, got {nsamples} and {seqlen}")
    if parsed.needs_model and model is None:
        gen = next(p.name for p, _ in parsed.parts if p.kind == "gen")
        raise CalmixError(f"{gen} generates its calibration data with the model: it needs --model")
    bos_id = resolve_bos(bos, tokenizer)
    counts = largest_remainder([w for _, w in parsed.parts], nsamples)
    key = cache_key(parsed, counts, tokenizer, nsamples, seqlen, seed, model, device, bos_id)
    path = None
    if use_cache:
        from calmix.paths import cache_dir as default_cache

        root = Path(cache_dir) if cache_dir is not None else default_cache("calib")
        path = root / f"{key}.pt"
        if path.is_file():
            try:
                return CalibSet.load(path)
            except CalmixError:
                pass  # unreadable cache entry: rebuild and overwrite
    t0 = time.perf_counter()
    built: list[tuple[SpecPart, int, _Built]] = []
    todo = [(part, count) for (part, _w), count in zip(parsed.parts, counts) if count > 0]
    for part, count in tqdm(todo, desc="calibration sources", unit="source", disable=None if len(todo) > 1 else True):
        sub = derive_seed(seed, part.label)
        if part.kind == "gen":
            b = _build_gen_part(part, model, tokenizer, count, seqlen, sub, device)
        else:
            b = _build_docs_part(part, tokenizer, count, seqlen, sub, bos_id)
        built.append((part, count, b))
    ids = torch.cat([b.ids.long() for _, _, b in built])
    mask = None
    if any(b.mask is not None for _, _, b in built):
        mask = torch.cat([b.mask.long() if b.mask is not None else torch.ones_like(b.ids, dtype=torch.long)
                          for _, _, b in built])
    import calmix

    card = {
        "spec": parsed.text,
        "canonical": parsed.canonical,
        "preset": parsed.preset,
        "nsamples": nsamples,
        "seqlen": seqlen,
        "seed": seed,
        "bos": {"option": bos, "token": bos_id},
        "components": [{"label": p.label, "kind": p.kind, "dimension": p.source().dimension if p.kind != "gen" else "Self",
                        "weight": str(w), "windows": c, **({k: v for k, v in b.info.items()} if b else {})}
                       for (p, w), c, b in _with_built(parsed, counts, built)],
        "window_counts": {p.label: c for (p, _), c in zip(parsed.parts, counts)},
        "row_sources": [p.label for p, c, _ in built for _ in range(c)],
        "row_starts": [s for _, _, b in built for s in (b.starts or [None] * b.ids.shape[0])],
        "tokenizer": tokenizer_info(tokenizer),
        "model": model_info(model) if parsed.needs_model else None,
        "build_version": BUILD_VERSION,
        "cache_key": key,
        "build_seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "calmix_version": calmix.__version__,
    }
    result = CalibSet(ids, mask, card)
    if path is not None:
        result.save(path)
    return result


def _with_built(parsed: ParsedSpec, counts: list[int], built: list):
    by_label = {p.label: b for p, _, b in built}
    for (p, w), c in zip(parsed.parts, counts):
        yield (p, w), c, by_label.get(p.label)
