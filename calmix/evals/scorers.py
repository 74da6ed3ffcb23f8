"""Scorers: log-likelihood of continuations (calmix.evals.loglik), multiple choice, probes, greedy generation, GSM8K extraction."""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from tqdm.auto import tqdm

from calmix.errors import CalmixError
from calmix.evals.loglik import ContScore, loglikelihood_groups, max_context
from calmix.lm import bos_prefix, context_ids, pad_rows, pad_token, start_token


# ---------------------------------------------------------------------------------------------- tokenisation
def require_tokenizer(tokenizer) -> None:
    """Fail clearly when the model came without a tokenizer."""
    if tokenizer is None or not callable(getattr(tokenizer, "encode", None)):
        raise CalmixError("the model has no tokenizer: save one beside it (tokenizer.save_pretrained(DIR)) or load it with "
                          "calmix.models.load_model, which returns (model, tokenizer)")


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of text without special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_pair(tokenizer, context: str, continuation: str,
                bos: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Context and continuation ids; trailing spaces of the context move to the continuation (as lm-eval); the
    context starts with BOS where the tokenizer adds one (calmix.lm.context_ids; bos: bos_prefix computed once)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    return context_ids(tokenizer, context, bos), encode(tokenizer, continuation)


# ---------------------------------------------------------------------------------------------- log-likelihood
def loglikelihood(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                  device: str | torch.device = "cpu", progress: bool = False) -> list[ContScore]:
    """Log-likelihood of each continuation string given its context string (contexts shared where equal)."""
    require_tokenizer(tokenizer)
    grouped, where = mc_item_groups(tokenizer, [c for c, _ in pairs], [t for _, t in pairs])
    res = loglikelihood_groups(model, grouped, batch_size=batch_size, device=device, progress=progress)
    return [res[g][j] for g, j in where]


# ---------------------------------------------------------------------------------------------- multiple choice
def mc_item_groups(tokenizer, contexts: Sequence[str], continuations: Sequence[str]) -> tuple[list, list[tuple[int, int]]]:
    """Encode one MC item's (context, continuation) pairs into groups sharing a context; return groups and positions."""
    groups: list[tuple[list[int], list[list[int]]]] = []
    seen: dict[tuple[int, ...], int] = {}
    where = []
    bos = bos_prefix(tokenizer)
    for ctx_s, cont_s in zip(contexts, continuations):
        ctx, cont = encode_pair(tokenizer, ctx_s, cont_s, bos)
        k = tuple(ctx)
        if k not in seen:
            seen[k] = len(groups)
            groups.append((ctx, []))
        where.append((seen[k], len(groups[seen[k]][1])))
        groups[seen[k]][1].append(cont)
    return groups, where


def mc_predictions(logprobs: Sequence[float], norm_lens: Sequence[int]) -> tuple[int, int]:
    """Predicted choice by raw log-likelihood (acc) and by log-likelihood per character of the choice (acc_norm)."""
    acc_pred = max(range(len(logprobs)), key=lambda j: (logprobs[j], -j))
    normed = [lp / max(1, n) for lp, n in zip(logprobs, norm_lens)]
    norm_pred = max(range(len(normed)), key=lambda j: (normed[j], -j))
    return acc_pred, norm_pred


def score_mc_items(model, tokenizer, items: Sequence[dict], batch_size: int = 16, device="cpu",
                   progress: bool = False, desc: str = "mc") -> list[dict]:
    """Per-item MC results: item = {contexts, continuations, gold, norm_lens}; returns logprobs, acc, acc_norm."""
    require_tokenizer(tokenizer)
    all_groups, index = [], []
    for item in items:
        groups, where = mc_item_groups(tokenizer, item["contexts"], item["continuations"])
        base = len(all_groups)
        all_groups.extend(groups)
        index.append([(base + g, j) for g, j in where])
    res = loglikelihood_groups(model, all_groups, batch_size=batch_size, device=device, progress=progress, desc=desc)
    out = []
    for item, where in zip(items, index):
        lps = [res[g][j].logprob for g, j in where]
        acc_pred, norm_pred = mc_predictions(lps, item["norm_lens"])
        gold = item["gold"]
        out.append({"logprobs": lps, "pred": acc_pred, "pred_norm": norm_pred, "acc": float(acc_pred == gold),
                    "acc_norm": float(norm_pred == gold), "chance": 1.0 / len(lps)})
    return out


# ---------------------------------------------------------------------------------------------- likelihood probes
def score_probe_items(model, tokenizer, items: Sequence[dict], batch_size: int = 16, device="cpu",
                      progress: bool = False, desc: str = "probe") -> list[dict]:
    """Per-item NLL of item['reference'] given item['context'] (reference tokens only): nll sum and token count."""
    require_tokenizer(tokenizer)
    bos = bos_prefix(tokenizer)
    groups = [(ctx, [cont]) for ctx, cont in (encode_pair(tokenizer, it["context"], it["reference"], bos)
                                              for it in items)]
    res = loglikelihood_groups(model, groups, batch_size=batch_size, device=device, progress=progress, desc=desc)
    return [{"nll": -r[0].logprob, "ntokens": r[0].ntokens} for r in res]


def probe_score(per_item: Sequence[dict]) -> tuple[float, float]:
    """Token-weighted mean NLL per token and its score exp(-NLL) (so score ratios are exp(NLL_a - NLL_b))."""
    tokens = sum(r["ntokens"] for r in per_item)
    if tokens == 0:
        raise CalmixError("no reference tokens to score: the probe items are empty")
    nll = sum(r["nll"] for r in per_item) / tokens
    return nll, math.exp(-nll)


# ---------------------------------------------------------------------------------------------- generation
def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the earliest stop sequence."""
    cut = len(text)
    for s in stop:
        k = text.find(s)
        if k != -1:
            cut = min(cut, k)
    return text[:cut]


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: Sequence[str], stop: Sequence[str] = (), max_new_tokens: int = 256,
                    batch_size: int = 8, device="cpu", progress: bool = False, desc: str = "generate") -> list[str]:
    """Greedy completions of prompts, batched with left padding (length-sorted), cut at the first stop sequence."""
    require_tokenizer(tokenizer)
    device = torch.device(device)
    bos = bos_prefix(tokenizer)
    enc = [context_ids(tokenizer, p, bos) for p in prompts]
    max_len = max_context(model)
    enc = [e[-max(1, max_len - max_new_tokens):] for e in enc]
    pad = pad_token(tokenizer, start_token(tokenizer))
    eos = getattr(tokenizer, "eos_token_id", None)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    outs: list[str] = [""] * len(enc)
    bar = tqdm(total=len(enc), desc=desc, disable=None if progress else True, leave=False)
    for start in range(0, len(order), batch_size):
        idxs = order[start:start + batch_size]
        ids, mask = pad_rows([enc[i] for i in idxs], pad, left=True)
        width = ids.shape[1]
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos,
                      num_beams=1, use_cache=True)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        for r, i in enumerate(idxs):
            new = gen[r, width:].tolist()
            if eos is not None and eos in new:
                new = new[:new.index(eos)]
            outs[i] = cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), stop)
        bar.update(len(idxs))
    bar.close()
    return outs


# ---------------------------------------------------------------------------------------------- GSM8K extraction
_NUM = r"-?[$0-9.,]*[0-9]+(?:\.[0-9]+)?"
_STRICT = [re.compile(r"####\s*(" + _NUM + ")"), re.compile(r"[Tt]he (?:final )?answer is:?\s*\$?\s*(" + _NUM + ")")]
_FLEX = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def normalize_number(text: str | None) -> str | None:
    """Canonical form of a numeric answer: no commas, $ or trailing period, no trailing .0; None if not a number."""
    if text is None:
        return None
    s = text.strip().replace(",", "").replace("$", "").rstrip(".")
    s = s.strip()
    try:
        value = float(s)
    except ValueError:
        return None
    if math.isinf(value) or math.isnan(value):
        return None
    if value == int(value) and abs(value) < 1e18:
        return str(int(value))
    return repr(value)


def extract_strict(text: str) -> str | None:
    """The answer after '#### ' or 'The answer is', normalised; None when neither marker is present."""
    for pattern in _STRICT:
        m = pattern.search(text)
        if m:
            return normalize_number(m.group(1))
    return None


def extract_flexible(text: str) -> str | None:
    """The last number in the text (lm-eval's flexible-extract pattern), normalised; None when there is none."""
    for m in reversed(list(_FLEX.finditer(text))):
        value = normalize_number(m.group(1) or m.group(2))
        if value is not None:
            return value
    return None


def gsm8k_gold(answer: str) -> str:
    """Gold number of a GSM8K reference answer (the text after '####')."""
    value = extract_strict(answer)
    if value is None:
        raise CalmixError(f"GSM8K answer without '#### N': {answer[-60:]!r}")
    return value
