"""Information metrics of calibration samples and sets: n-gram aggregation, diversity, entropy, perplexity."""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from calmix.calib.calibset import CalibSet
from calmix.errors import CalmixError
from calmix.lm import bos_prefix, pad_rows, perplexities, with_prefix

DEFINITIONS = {
    "ntokens": "number of real (attention_mask=1) tokens",
    "agg4": "4-gram aggregation: fraction of 4-gram occurrences that repeat an earlier 4-gram = 1 - distinct_4 "
            "(per sample: within the sample; set: 4-grams of all samples pooled, none across sample borders)",
    "repetition": "fraction of tokens already seen earlier in the same sample (set: token-weighted over samples)",
    "distinct_n": "distinct n-grams / total n-grams, n = 1..4 (set: n-grams of all samples pooled)",
    "vocab_coverage": "distinct token ids / vocabulary size (set: over all samples)",
    "entropy": "unigram entropy in bits of the token frequency distribution (set: pooled counts)",
    "zipf": "Zipf exponent s > 0: minus the least-squares slope of log(frequency) vs log(rank), "
            "ranks 1..V of the distinct tokens by decreasing frequency (set: pooled counts)",
    "compression": "zlib (level 9) compression ratio: UTF-8 bytes of the decoded text / compressed bytes "
                   "(set: decoded samples joined with newlines); needs a tokenizer",
    "ppl": "dense-model perplexity: exp(mean next-token NLL) over predicted tokens whose token and context token "
           "are real, each sample scored after BOS where the tokenizer adds one (a sample that starts with BOS "
           "as is); set 'ppl' is token-pooled exp(sum NLL / sum count), 'ppl_mean' the mean of per-sample values",
}


def ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """All contiguous n-grams of a token sequence, in order."""
    ids = list(ids)
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def _pooled_ngrams(samples: Sequence[Sequence[int]], n: int) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    for s in samples:
        out.extend(ngrams(s, n))
    return out


def distinct_n(ids: Sequence[int], n: int) -> float:
    """Distinct n-grams / total n-grams of one sequence (nan when it has no n-gram)."""
    grams = ngrams(ids, n)
    return len(set(grams)) / len(grams) if grams else float("nan")


def distinct_n_pooled(samples: Sequence[Sequence[int]], n: int) -> float:
    """Distinct / total n-grams over a set, n-grams taken within each sample and pooled."""
    grams = _pooled_ngrams(samples, n)
    return len(set(grams)) / len(grams) if grams else float("nan")


def agg4(ids: Sequence[int]) -> float:
    """4-gram aggregation of one sequence: fraction of 4-gram occurrences repeating an earlier one (1 - distinct_4)."""
    d = distinct_n(ids, 4)
    return 1.0 - d if not math.isnan(d) else float("nan")


def agg4_pooled(samples: Sequence[Sequence[int]]) -> float:
    """4-gram aggregation of a set: 1 - distinct_4 over the pooled within-sample 4-grams."""
    d = distinct_n_pooled(samples, 4)
    return 1.0 - d if not math.isnan(d) else float("nan")


def repetition(ids: Sequence[int]) -> float:
    """Fraction of tokens that already occurred earlier in the sequence (nan when empty)."""
    seen: set[int] = set()
    repeats = 0
    for t in ids:
        if t in seen:
            repeats += 1
        seen.add(t)
    return repeats / len(ids) if len(ids) else float("nan")


def vocab_coverage(ids: Sequence[int], vocab_size: int) -> float:
    """Distinct token ids / vocabulary size."""
    if vocab_size <= 0:
        raise CalmixError(f"vocab_size must be positive, got {vocab_size}")
    return len(set(ids)) / vocab_size


def unigram_entropy(ids: Sequence[int]) -> float:
    """Shannon entropy (bits) of the unigram frequency distribution (nan when empty)."""
    counts = np.array(list(Counter(ids).values()), dtype=np.float64)
    if counts.size == 0:
        return float("nan")
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def zipf_exponent(ids: Sequence[int]) -> float:
    """Zipf exponent s: minus the least-squares slope of log(freq) against log(rank) (nan if < 2 distinct)."""
    freqs = np.array(sorted(Counter(ids).values(), reverse=True), dtype=np.float64)
    if freqs.size < 2:
        return float("nan")
    ranks = np.arange(1, freqs.size + 1, dtype=np.float64)
    slope, _ = np.polyfit(np.log(ranks), np.log(freqs), 1)
    return float(-slope)


def compression_ratio(text: str) -> float:
    """UTF-8 bytes of the text / zlib (level 9) compressed bytes (nan for empty text)."""
    raw = text.encode("utf-8")
    if not raw:
        return float("nan")
    return len(raw) / len(zlib.compress(raw, 9))


def sample_metrics(ids: Sequence[int], vocab_size: int, text: str | None = None) -> dict:
    """All token-level metrics of one sample (compression only when its decoded text is given)."""
    ids = list(ids)
    out = {"ntokens": len(ids), "agg4": agg4(ids), "repetition": repetition(ids)}
    for n in range(1, 5):
        out[f"distinct_{n}"] = distinct_n(ids, n)
    out["vocab_coverage"] = vocab_coverage(ids, vocab_size)
    out["entropy"] = unigram_entropy(ids)
    out["zipf"] = zipf_exponent(ids)
    out["compression"] = compression_ratio(text) if text is not None else None
    return out


def pooled_metrics(samples: Sequence[Sequence[int]], vocab_size: int, texts: Sequence[str] | None = None) -> dict:
    """Set-level metrics: n-gram metrics pooled within samples, unigram statistics over all tokens."""
    flat = [t for s in samples for t in s]
    total = sum(len(s) for s in samples)
    reps = sum(repetition(s) * len(s) for s in samples if len(s))
    out = {"ntokens": total, "agg4": agg4_pooled(samples), "repetition": reps / total if total else float("nan")}
    for n in range(1, 5):
        out[f"distinct_{n}"] = distinct_n_pooled(samples, n)
    out["vocab_coverage"] = vocab_coverage(flat, vocab_size)
    out["entropy"] = unigram_entropy(flat)
    out["zipf"] = zipf_exponent(flat)
    out["compression"] = compression_ratio("\n".join(texts)) if texts is not None else None
    return out


def _vocab_size(model, tokenizer, rows: Sequence[Sequence[int]]) -> tuple[int, str]:
    if tokenizer is not None:
        return len(tokenizer), "len(tokenizer)"
    if model is not None and getattr(getattr(model, "config", None), "vocab_size", None):
        return int(model.config.vocab_size), "model.config.vocab_size"
    return max((max(r) for r in rows if r), default=0) + 1, "max token id + 1 (no tokenizer or model given)"


def real_rows(calib: CalibSet) -> list[list[int]]:
    """The real (mask 1) token ids of each row of a calibration set."""
    if calib.attention_mask is None:
        return calib.input_ids.tolist()
    return [ids[m.bool()].tolist() for ids, m in zip(calib.input_ids, calib.attention_mask)]


def set_metrics(calib: CalibSet, model=None, tokenizer=None, device: str | torch.device = "cpu",
                batch_size: int = 8) -> dict:
    """Per-set and per-sample information metrics of a calibration set (perplexity only when a model is given)."""
    rows = real_rows(calib)
    vocab, vocab_from = _vocab_size(model, tokenizer, rows)
    texts = [tokenizer.decode(r) for r in rows] if tokenizer is not None else None
    samples = [sample_metrics(r, vocab, texts[i] if texts is not None else None) for i, r in enumerate(rows)]
    set_ = pooled_metrics(rows, vocab, texts)
    set_["nsamples"] = calib.nsamples
    set_["seqlen"] = calib.seqlen
    set_["agg4_mean"] = float(np.nanmean([s["agg4"] for s in samples])) if any(
        not math.isnan(s["agg4"]) for s in samples) else float("nan")
    if model is not None:
        prefix = bos_prefix(tokenizer) if tokenizer is not None else []
        if prefix:
            ids, mask = pad_rows([with_prefix(r, prefix) for r in rows])
        else:
            ids, mask = calib.input_ids, calib.attention_mask
        pp = perplexities(model, ids, mask, batch_size=batch_size, device=device)
        for s, p in zip(samples, pp["per_sample"]):
            s["ppl"] = p
        set_["ppl"] = pp["ppl"]
        set_["ppl_mean"] = pp["ppl_mean"]
    definitions = dict(DEFINITIONS)
    definitions["vocab_size"] = f"{vocab} ({vocab_from})"
    definitions["agg4_mean"] = "mean of per-sample agg4"
    return {"set": set_, "samples": samples, "definitions": definitions}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
    return lines


def format_metrics(result: dict) -> str:
    """An aligned text table of set metrics followed by per-sample metrics."""
    set_ = result["set"]
    lines = ["set metrics"]
    lines += _table(["metric", "value"], [[k, _fmt(v)] for k, v in set_.items()])
    samples = result.get("samples") or []
    if samples:
        keys = [k for k in samples[0] if any(s.get(k) is not None for s in samples)]
        lines.append("")
        lines.append("per-sample metrics")
        lines += _table(["#"] + keys, [[str(i)] + [_fmt(s.get(k)) for k in keys] for i, s in enumerate(samples)])
    return "\n".join(lines)
