"""Language-model primitives shared by calibration and evaluation: padding, special tokens, token NLL, perplexity."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from calmix.errors import CalmixError


# ----------------------------------------------------------------------------------------------- padding

def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = 0, left: bool = False,
             width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, width] token ids and 0/1 attention mask of rows, padded with pad_id on the right (or the left)."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n == 0:
            continue
        cols = slice(width - n, width) if left else slice(0, n)
        ids[i, cols] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding (left-padded rows start at 0 on their first real token)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


# ----------------------------------------------------------------------------------------------- special tokens

def _config_attr(model, name: str):
    return getattr(getattr(model, "config", None), name, None)


def start_token(tokenizer, model=None) -> int:
    """The token that stands for an empty context: the tokenizer's BOS, the model's BOS, else the EOS."""
    for v in (getattr(tokenizer, "bos_token_id", None), _config_attr(model, "bos_token_id"),
              getattr(tokenizer, "eos_token_id", None)):
        if isinstance(v, int):
            return v
    raise CalmixError("the tokenizer has neither a BOS nor an EOS token: an empty context needs one "
                      "(set tokenizer.bos_token or tokenizer.eos_token)")


def eos_tokens(model, tokenizer) -> set[int]:
    """Token ids that end a generation: the tokenizer's EOS and the model's configured EOS ids."""
    out: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), _config_attr(model, "eos_token_id"),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if src is None:
            continue
        out.update([src] if isinstance(src, int) else list(src))
    return out


def join_token(tokenizer, model=None) -> int:
    """The token placed between joined documents or generations: EOS, else SEP, else the model's EOS."""
    for attr in ("eos_token_id", "sep_token_id"):
        tid = getattr(tokenizer, attr, None)
        if isinstance(tid, int):
            return tid
    ids = eos_tokens(model, tokenizer) if model is not None else set()
    if ids:
        return min(ids)
    raise CalmixError("the tokenizer has no EOS token to join documents: use a tokenizer with eos_token")


def bos_prefix(tokenizer) -> list[int]:
    """[BOS id] if the tokenizer itself puts BOS before encoded text (so the model was trained on windows that
    start with it), else []: the one place that decides whether a scored window starts with BOS."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if not isinstance(bos, int):
        return []
    # the tokenizer's own behaviour is the ground truth; add_bos_token only when it cannot be probed
    probe = "a b"
    try:
        full = list(tokenizer.encode(probe, add_special_tokens=True))
        plain = list(tokenizer.encode(probe, add_special_tokens=False))
    except (TypeError, AttributeError, ValueError):
        return [bos] if getattr(tokenizer, "add_bos_token", False) is True else []
    return [bos] if full[:1] == [bos] and plain[:1] != [bos] else []


def with_prefix(seq: Sequence[int], prefix: Sequence[int]) -> list[int]:
    """seq with prefix in front, unless it already starts with it (a window built with BOS keeps one)."""
    seq = list(seq)
    n = len(prefix)
    return seq if n == 0 or seq[:n] == list(prefix) else list(prefix) + seq


def context_ids(tokenizer, text: str, prefix: Sequence[int] | None = None) -> list[int]:
    """Ids of a scored context: BOS (bos_prefix, or the given prefix) + text without special tokens; an empty
    context is the start token alone (BOS, else EOS, as lm-eval)."""
    ids = list(tokenizer.encode(text, add_special_tokens=False)) if text else []
    if not ids:
        return [start_token(tokenizer)]
    prefix = bos_prefix(tokenizer) if prefix is None else prefix
    return list(prefix) + ids


def pad_token(tokenizer, default: int) -> int:
    """The tokenizer's pad id, else default (padding is masked, so any id in the vocabulary works)."""
    pid = getattr(tokenizer, "pad_token_id", None)
    return int(pid) if pid is not None else int(default)


# ----------------------------------------------------------------------------------------------- NLL / perplexity

def output_vocab(model) -> int | None:
    """Width of the model's output head (its vocabulary), if it can be read."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "out_features"):
        return int(head.out_features)
    return _config_attr(model, "vocab_size")


def token_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, batch_size: int = 8,
              device: str | torch.device = "cpu", progress: bool = True,
              max_logit_bytes: int = 2**30) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (sum of next-token NLL in nats, number of predicted tokens); a target counts if it and its context
    token are both real (mask 1)."""
    if input_ids.dim() != 2:
        raise CalmixError(f"token_nll needs 2-D input_ids [n, L], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    n = input_ids.shape[0]
    sums = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.long)
    model_device = torch.device(device)
    # cap the rows per forward so the [rows, L, vocab] fp32 logits stay under max_logit_bytes
    vocab = output_vocab(model)
    if vocab:
        batch_size = max(1, min(batch_size, max_logit_bytes // (4 * vocab * input_ids.shape[1])))
    starts = range(0, n, max(1, batch_size))
    with torch.inference_mode():
        for s in tqdm(starts, desc="perplexity", unit="batch", disable=None if progress else True, leave=False):
            ids = input_ids[s:s + batch_size].to(model_device)
            mask = attention_mask[s:s + batch_size].to(model_device).long()
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).logits
            nll = torch.nn.functional.cross_entropy(logits.float()[:, :-1].transpose(1, 2), ids[:, 1:],
                                                    reduction="none")
            valid = (mask[:, 1:] * mask[:, :-1]).bool()
            sums[s:s + batch_size] = (nll * valid).sum(-1).double().cpu()
            counts[s:s + batch_size] = valid.sum(-1).cpu()
    return sums, counts


def perplexities(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, batch_size: int = 8,
                 device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Per-sample perplexities plus the token-pooled and the per-sample-mean set perplexity."""
    sums, counts = token_nll(model, input_ids, attention_mask, batch_size, device, progress)
    per = [math.exp(s / c) if c > 0 else float("nan") for s, c in zip(sums.tolist(), counts.tolist())]
    total = int(counts.sum())
    pooled = math.exp(float(sums.sum()) / total) if total else float("nan")
    finite = [p for p in per if not math.isnan(p)]
    return {"per_sample": per, "ppl": pooled, "ppl_mean": float(np.mean(finite)) if finite else float("nan"),
            "nll_sum": sums.tolist(), "count": counts.tolist()}


def sequence_perplexities(model, seqs: Sequence[Sequence[int]], batch_size: int = 8,
                          device: str | torch.device = "cpu", prefix: Sequence[int] = ()) -> list[float]:
    """Dense perplexity of each token sequence (right-padded batches; fewer than 2 tokens -> inf); with a prefix
    (bos_prefix) every sequence is scored after it, so its first token is predicted too."""
    out = [math.inf] * len(seqs)
    seqs = [with_prefix(s, prefix) if len(s) else [] for s in seqs]
    idx = [i for i, s in enumerate(seqs) if len(s) >= 2]
    if not idx:
        return out
    ids, mask = pad_rows([seqs[i] for i in idx])
    per = perplexities(model, ids, mask, batch_size=batch_size, device=device)["per_sample"]
    for r, i in enumerate(idx):
        out[i] = per[r]
    return out


@torch.no_grad()
def stream_perplexity(model, input_ids: torch.Tensor, seqlen: int, device: str | torch.device | None = None,
                      batch_size: int = 1, max_windows: int | None = None, progress: bool = True,
                      bos: Sequence[int] = ()) -> dict:
    """Perplexity over non-overlapping seqlen windows of a 1-D token stream (the tail is dropped), as SparseGPT.

    With bos=[id] (bos_prefix) the first token of every window is replaced by BOS: the windows, their count and
    the scored targets (tokens 2..seqlen of each window) are exactly those without BOS, only the context differs.
    """
    ids = input_ids.reshape(-1)
    nwin = ids.numel() // seqlen
    if max_windows is not None:
        nwin = min(nwin, max_windows)
    if nwin == 0:
        raise CalmixError(f"the text has {ids.numel()} tokens, fewer than one window of {seqlen}: lower --seqlen")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    windows = ids[: nwin * seqlen].view(nwin, seqlen).clone()
    if len(bos) > 1:
        raise CalmixError(f"a window starts with at most one BOS token, got {list(bos)}")
    if bos:
        windows[:, 0] = int(bos[0])
    nll_sum, count = 0.0, 0
    for i in tqdm(range(0, nwin, batch_size), desc="perplexity", unit="win", disable=not progress):
        batch = windows[i:i + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                reduction="sum")
        nll_sum += float(nll)
        count += batch[:, 1:].numel()
    mean = nll_sum / count
    return {"ppl": math.exp(mean), "nll": mean, "windows": nwin, "seqlen": seqlen, "tokens": count,
            "bos": int(bos[0]) if bos else None}
