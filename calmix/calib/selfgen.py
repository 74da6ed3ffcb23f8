"""Self-generated calibration sets: a batched KV-cache sampler, Self-Cal (Williams et al. 2025) and SGS (Ji et al. 2025)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from calmix.calib.calibset import CalibSet
from calmix.calib.metrics import perplexities
from calmix.errors import CalmixError

# Common English stop words for Self-Cal's optional first-token restriction (kept if they are one token).
STOPWORDS = ("the", "a", "an", "in", "on", "at", "of", "to", "for", "with", "and", "but", "or", "as", "by", "from",
             "this", "that", "these", "those", "it", "he", "she", "they", "we", "you", "i", "there", "here", "when",
             "while", "if", "after", "before", "my", "his", "her", "their", "our", "one", "some", "many", "most",
             "all", "what", "how", "why", "who", "is", "it's", "once", "today", "in")


# ----------------------------------------------------------------------------------------------- sampling

@dataclass(frozen=True)
class TempSchedule:
    """Self-Cal temperature: linear from t_initial (token 0) to t_final (token n-1), then constant t_final."""

    t_initial: float = 1.0
    t_final: float = 1.0
    n: int = 10

    def __call__(self, step: int) -> float:
        if self.n <= 1:
            return self.t_initial if step < self.n else self.t_final
        frac = min(step / (self.n - 1), 1.0)
        return self.t_initial + (self.t_final - self.t_initial) * frac


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask (to -inf) all but the top_k logits and outside the smallest top_p nucleus; keeps >= 1 token per row."""
    logits = logits.clone()
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # mass of strictly better tokens
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on already-seen tokens: divide positive logits by `penalty`, multiply negative ones."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _step_kwargs(model) -> tuple[dict, str]:
    """Keyword arguments of a cached decoding step for this model's forward (transformers 5 renamed the cache)."""
    params = inspect.signature(model.forward).parameters
    kw = {"use_cache": True}
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    return kw, ("cache" if "cache" in params else "past_key_values")


def _new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()


def eos_ids_of(model, tokenizer) -> set[int]:
    """Token ids that end a generation: the tokenizer's EOS and the model's configured EOS ids."""
    out: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "config", None), "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if src is None:
            continue
        out.update([src] if isinstance(src, int) else list(src))
    return out


def generate(model, tokenizer, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int, seed: int = 0,
             temperature: float | Callable[[int], float] = 1.0, top_p: float = 1.0, top_k: int = 0,
             repetition_penalty: float = 1.0, batch_size: int = 8, device: str | torch.device = "cpu",
             first_token_ids: Sequence[int] | None = None, eos_ids: set[int] | None = None,
             desc: str = "generate") -> list[list[int]]:
    """Sample continuations of each prompt (left-padded batches, KV cache); returns new tokens, stopping before EOS.

    `temperature` is a float or a schedule step -> temperature (step 0 = first new token); a temperature <= 0
    means greedy. `first_token_ids` restricts the first new token. Same seed and batch_size -> same output.
    """
    if max_new_tokens < 1:
        raise CalmixError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise CalmixError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(p) == 0 for p in prompts_ids):
        raise CalmixError("every generation prompt needs at least one token (use the BOS token for an empty prompt)")
    schedule = temperature if callable(temperature) else (lambda _step, t=float(temperature): t)
    eos = eos_ids if eos_ids is not None else eos_ids_of(model, tokenizer)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = pad_id if pad_id is not None else (min(eos) if eos else 0)
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed) % 2**63)
    step_kw, cache_kw = _step_kwargs(model)
    eos_t = torch.tensor(sorted(eos), dtype=torch.long, device=dev) if eos else None
    first_mask = None
    outputs: list[list[int]] = []
    bar = tqdm(total=len(prompts_ids) * max_new_tokens, desc=desc, unit="tok", disable=None, leave=False)
    with torch.inference_mode():
        for start in range(0, len(prompts_ids), batch_size):
            batch = [list(p) for p in prompts_ids[start:start + batch_size]]
            b, width = len(batch), max(len(p) for p in batch)
            ids = torch.full((b, width), pad_id, dtype=torch.long)
            mask = torch.zeros((b, width), dtype=torch.long)
            for i, p in enumerate(batch):
                ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[i, width - len(p):] = 1
            ids, mask = ids.to(dev), mask.to(dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            vocab = None
            seen = None
            done = torch.zeros(b, dtype=torch.bool, device=dev)
            new = torch.zeros((b, max_new_tokens), dtype=torch.long, device=dev)
            lengths = torch.full((b,), max_new_tokens, dtype=torch.long, device=dev)
            cache = _new_cache(model)
            step_ids, step_pos = ids, pos
            for step in range(max_new_tokens):
                out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, **step_kw,
                            **{cache_kw: cache})
                logits = out.logits[:, -1, :].float()
                if vocab is None:
                    vocab = logits.shape[-1]
                    counts = torch.zeros((b, vocab), dtype=torch.long, device=dev)
                    seen = counts.scatter_add_(1, ids.clamp(max=vocab - 1), mask) > 0
                logits = apply_repetition_penalty(logits, seen, repetition_penalty)
                if step == 0 and first_token_ids is not None:
                    if first_mask is None or first_mask.shape[-1] != vocab:
                        first_mask = torch.ones(vocab, dtype=torch.bool, device=dev)
                        first_mask[torch.tensor(list(first_token_ids), dtype=torch.long, device=dev)] = False
                    logits = logits.masked_fill(first_mask, float("-inf"))
                t = float(schedule(step))
                if t <= 0:
                    nxt = logits.argmax(-1)
                else:
                    probs = torch.softmax(filter_logits(logits / t, top_k, top_p), dim=-1)
                    nxt = sample_rows(probs, gen)
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
                new[:, step] = nxt
                hit = ~done & (torch.isin(nxt, eos_t) if eos_t is not None else torch.zeros_like(done))
                lengths = torch.where(hit, torch.full_like(lengths, step), lengths)
                bar.update(int((~done).sum()))
                done = done | hit
                if bool(done.all()):
                    break
                seen.scatter_(1, nxt.unsqueeze(-1), True)
                step_ids = nxt.unsqueeze(-1)
                step_pos = step_pos[:, -1:] + 1
                mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long, device=dev)], dim=-1)
            new, lengths = new.cpu(), lengths.cpu()
            outputs.extend(new[i, :int(lengths[i])].tolist() for i in range(b))
    bar.close()
    return outputs


def sample_rows(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row of probs [rows, vocab] drawn by inverse CDF (one uniform per row; far cheaper than multinomial)."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=gen, device=probs.device, dtype=torch.float64) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1)


def stopword_token_ids(tokenizer, words: Sequence[str] = STOPWORDS) -> list[int]:
    """Ids of the stop words (lower-case and capitalised, no leading space) that the tokenizer encodes as one token."""
    out: list[int] = []
    for w in words:
        for form in (w, w.capitalize()):
            ids = tokenizer.encode(form, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in out:
                out.append(ids[0])
    if not out:
        raise CalmixError("no English stop word is a single token in this tokenizer: use stopword_first=0")
    return out


# ----------------------------------------------------------------------------------------------- parameters

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _convert(kind: str, key: str, value, typ):
    if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "auto")):
            return None
        typ = args[0]
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() not in _TRUE | _FALSE:
                    raise ValueError
                return value.lower() in _TRUE
            return bool(value)
        if typ is int and isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        return typ(value)
    except (TypeError, ValueError):
        raise CalmixError(f"{kind}: parameter {key}={value!r} is not a valid {typ.__name__}") from None


def parse_params(cls, params: dict | None, kind: str):
    """Build the params dataclass `cls` from a dict of (string or typed) values; unknown keys are an error."""
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise CalmixError(f"{kind}: unknown parameter(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: _convert(kind, k, v, hints[k]) for k, v in params.items()}
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(kind)
    return obj


def _positive(kind: str, **values) -> None:
    for k, v in values.items():
        if v is not None and v <= 0:
            raise CalmixError(f"{kind}: {k} must be > 0, got {v}")


def _fraction(kind: str, key: str, v: float, upper_open: bool = True) -> None:
    if not (0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0):
        raise CalmixError(f"{kind}: {key} must be in [0, 1{')' if upper_open else ']'}, got {v}")


@dataclass
class SelfCalParams:
    """Self-Cal parameters (defaults of Williams et al. 2025 as read in method.md §3)."""

    t_initial: float = 1.0
    t_final: float = 1.0
    n: int = 10
    stopword_first: bool = False
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    gen_len: int | None = None  # tokens per generation; None = seqlen
    batch_size: int = 64

    def validate(self, kind: str) -> None:
        _positive(kind, gen_len=self.gen_len, batch_size=self.batch_size, repetition_penalty=self.repetition_penalty)
        if self.n < 0 or self.t_initial < 0 or self.t_final < 0 or self.top_k < 0:
            raise CalmixError(f"{kind}: n, t_initial, t_final and top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise CalmixError(f"{kind}: top_p must be in (0, 1], got {self.top_p}")


@dataclass
class SGSParams:
    """SGS parameters (Ji et al. 2025 as read in method.md §3)."""

    source: str | None = None  # prefix source; None = wikitext2 if available, else a bundled prose source
    prefix_len: int = 2
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.2
    drop: float = 0.2
    ngen: int | None = None  # generations; None = oversample * enough for nsamples*seqlen tokens after the drop
    oversample: float = 1.0  # > 1 makes the random windows overlap less (set-level agg4 counts the overlap)
    paragraphs: bool = True  # prefixes from paragraph starts (lines starting with a letter or digit)
    gen_len: int | None = None
    batch_size: int = 64

    def validate(self, kind: str) -> None:
        _positive(kind, prefix_len=self.prefix_len, gen_len=self.gen_len, batch_size=self.batch_size,
                  ngen=self.ngen, repetition_penalty=self.repetition_penalty, oversample=self.oversample)
        _fraction(kind, "drop", self.drop)
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0 or self.temperature < 0:
            raise CalmixError(f"{kind}: need 0 < top_p <= 1, top_k >= 0, temperature >= 0")


# ----------------------------------------------------------------------------------------------- helpers

def subseed(seed: int, i: int) -> int:
    """A derived seed for step i of a seeded procedure (fits torch's 64-bit seeds)."""
    return (int(seed) * 1_000_003 + i) % 2**63


def model_name(model) -> str:
    """A short name of the model for provenance cards."""
    return str(getattr(model, "calmix_spec", None) or getattr(getattr(model, "config", None), "_name_or_path", "")
               or type(model).__name__)


def bos_id(tokenizer, model=None) -> int:
    """The BOS token id (falling back to the model's BOS, then EOS) used as the empty prompt."""
    for v in (getattr(tokenizer, "bos_token_id", None), getattr(getattr(model, "config", None), "bos_token_id", None),
              getattr(tokenizer, "eos_token_id", None)):
        if isinstance(v, int):
            return v
    raise CalmixError("the tokenizer has neither a BOS nor an EOS token: self-generation needs one as the prompt")


def join_eos(seqs: Sequence[Sequence[int]], eos: int) -> list[int]:
    """Concatenate token sequences, each followed by EOS (empty sequences are skipped)."""
    out: list[int] = []
    for s in seqs:
        if len(s):
            out.extend(s)
            out.append(eos)
    return out


def sequence_perplexities(model, seqs: Sequence[Sequence[int]], batch_size: int = 8,
                          device: str | torch.device = "cpu") -> list[float]:
    """Dense perplexity of each token sequence (right-padded batches; < 2 tokens -> inf)."""
    out = [math.inf] * len(seqs)
    idx = [i for i, s in enumerate(seqs) if len(s) >= 2]
    if not idx:
        return out
    width = max(len(seqs[i]) for i in idx)
    ids = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        ids[r, :len(seqs[i])] = torch.tensor(list(seqs[i]), dtype=torch.long)
        mask[r, :len(seqs[i])] = 1
    per = perplexities(model, ids, mask, batch_size=batch_size, device=device)["per_sample"]
    for r, i in enumerate(idx):
        out[i] = per[r]
    return out


def _eos_for_join(tokenizer, model) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        return eos
    ids = eos_ids_of(model, tokenizer)
    if not ids:
        raise CalmixError("the tokenizer has no EOS token to join generations: set tokenizer.eos_token")
    return min(ids)


def _no_tokens(kind: str) -> CalmixError:
    return CalmixError(f"{kind}: generation returned no tokens (the model ended every sequence at once): "
                       f"check the model and its EOS token, or raise the temperature")


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False)


# ----------------------------------------------------------------------------------------------- Self-Cal

def selfcal_set(model, tokenizer, nsamples: int, seqlen: int, seed: int = 0, device: str | torch.device = "cpu",
                params: dict | None = None) -> CalibSet:
    """Self-Cal: sample from BOS with a temperature schedule, join generations with EOS, cut nsamples x seqlen."""
    p = parse_params(SelfCalParams, params, "selfcal")
    gen_len = p.gen_len or seqlen
    p.gen_len = gen_len
    t0 = time.perf_counter()
    bos, eos = bos_id(tokenizer, model), _eos_for_join(tokenizer, model)
    first = stopword_token_ids(tokenizer) if p.stopword_first else None
    need = nsamples * seqlen
    gens: list[list[int]] = []
    stream: list[int] = []
    for rnd in range(8):
        count = max(1, math.ceil((need - len(stream)) / gen_len))
        new = generate(model, tokenizer, [[bos]] * count, gen_len, seed=subseed(seed, rnd),
                       temperature=TempSchedule(p.t_initial, p.t_final, p.n), top_p=p.top_p, top_k=p.top_k,
                       repetition_penalty=p.repetition_penalty, batch_size=p.batch_size, device=device,
                       first_token_ids=first, desc=f"selfcal round {rnd + 1}")
        if not any(new):
            raise _no_tokens("selfcal")
        gens.extend(new)
        stream = join_eos(gens, eos)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise CalmixError(f"selfcal: generations gave {len(stream)} tokens, fewer than nsamples*seqlen = {need}: "
                          f"the model stops too early; lower nsamples or seqlen")
    ids = torch.tensor(stream[:need], dtype=torch.long).view(nsamples, seqlen)
    secs = time.perf_counter() - t0
    ntok = sum(len(g) for g in gens)
    card = {"source": "selfcal", "kind": "selfcal", "method": "Self-Cal (Williams et al. 2025)",
            "model": model_name(model), "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
            "params": dataclasses.asdict(p), "temperature_rule": "t(i) = t_initial + (t_final - t_initial) * "
            "min(i / (n - 1), 1) for new token i = 0, 1, ...", "prompt": "BOS only",
            "first_token_ids": first, "ngenerations": len(gens), "ntokens_generated": ntok,
            "packing": "generations joined with EOS, cut into consecutive nsamples x seqlen windows",
            "seconds": round(secs, 3), "tokens_per_s": round(ntok / secs, 2) if secs > 0 else None,
            "texts": [_decode(tokenizer, g) for g in gens]}
    return CalibSet(ids, None, card)


# ----------------------------------------------------------------------------------------------- SGS

SGS_DEFAULT_SOURCES = ("wikitext2", "pydoc-topics")  # Wikipedia-like first, then prose shipped with Python


def sgs_prefix_documents(source: str | None) -> tuple[str, list[str]]:
    """Documents for SGS prefixes from a registered source (default: wikitext2 if available, else prose)."""
    try:
        from calmix.calib.sources import get_source
    except ImportError:
        raise CalmixError("sgs needs calmix.calib.sources for prefix documents: pass prefix_docs=[...] in Python") from None
    names = [source] if source else list(SGS_DEFAULT_SOURCES)
    tried = []
    for name in names:
        try:
            src = get_source(name)
        except CalmixError:
            if source:
                raise
            tried.append(f"{name} (not registered)")
            continue
        status = src.available() if hasattr(src, "available") else True
        ok, why = status if isinstance(status, tuple) else (bool(status), "")
        if source or ok:
            return name, src.documents()
        tried.append(f"{name} ({why or 'not available'})")
    raise CalmixError(f"sgs: no default prefix source is available ({', '.join(tried)}): pass source=NAME")


def prefix_paragraphs(docs: Sequence[str]) -> list[str]:
    """Paragraph starts of documents: stripped lines that begin with a letter or digit (skips headings, rules)."""
    out = []
    for doc in docs:
        for line in doc.split("\n"):
            line = line.strip()
            if line and line[0].isalnum():
                out.append(line)
    return out


def sgs_set(model, tokenizer, nsamples: int, seqlen: int, seed: int = 0, device: str | torch.device = "cpu",
            params: dict | None = None, prefix_docs: Sequence[str] | None = None) -> CalibSet:
    """SGS: continue 2-token document prefixes, drop the highest-perplexity generations, draw random windows."""
    p = parse_params(SGSParams, params, "sgs")
    gen_len = p.gen_len or seqlen
    p.gen_len = gen_len
    t0 = time.perf_counter()
    if prefix_docs is None:
        source_name, prefix_docs = sgs_prefix_documents(p.source)
        p.source = source_name
    else:
        source_name = "prefix_docs (given)"
    ngen = p.ngen or math.ceil(p.oversample * nsamples * seqlen / gen_len / (1.0 - p.drop))
    if p.paragraphs:
        prefix_docs = prefix_paragraphs(prefix_docs)
    rng = random.Random(seed)
    order = list(range(len(prefix_docs)))
    rng.shuffle(order)
    prefixes: list[list[int]] = []
    for i in order:
        ids = tokenizer.encode(prefix_docs[i], add_special_tokens=False)
        if len(ids) >= p.prefix_len:
            prefixes.append(ids[:p.prefix_len])
        if len(prefixes) == ngen:
            break
    if not prefixes:
        raise CalmixError(f"sgs: no prefix document has {p.prefix_len} tokens: give a source with text")
    prefixes = [prefixes[i % len(prefixes)] for i in range(ngen)]  # cycle when there are fewer documents
    new = generate(model, tokenizer, prefixes, max(1, gen_len - p.prefix_len), seed=seed,
                   temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, repetition_penalty=p.repetition_penalty,
                   batch_size=p.batch_size, device=device, desc="sgs generate")
    if not any(new):
        raise _no_tokens("sgs")
    seqs = [pre + g for pre, g in zip(prefixes, new)]
    ppl = sequence_perplexities(model, seqs, batch_size=p.batch_size, device=device)
    ndrop = int(p.drop * len(seqs))
    by_ppl = sorted(range(len(seqs)), key=lambda i: (-ppl[i], i))
    dropped = set(by_ppl[:ndrop])
    kept = [seqs[i] for i in range(len(seqs)) if i not in dropped]
    stream = join_eos(kept, _eos_for_join(tokenizer, model))
    if len(stream) < seqlen:
        raise CalmixError(f"sgs: kept generations hold {len(stream)} tokens, fewer than seqlen={seqlen}: "
                          f"raise ngen or gen_len, or lower seqlen")
    wrng = random.Random(seed + 1)
    starts = [wrng.randint(0, len(stream) - seqlen) for _ in range(nsamples)]
    ids = torch.tensor([stream[s:s + seqlen] for s in starts], dtype=torch.long)
    secs = time.perf_counter() - t0
    ntok = sum(len(g) for g in new)
    card = {"source": "sgs", "kind": "sgs", "method": "SGS self-generating then sampling (Ji et al. 2025)",
            "model": model_name(model), "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
            "params": {**dataclasses.asdict(p), "ngen": ngen}, "prefix_source": source_name,
            "ndropped": ndrop, "dropped_fraction": ndrop / len(seqs),
            "ppl_threshold": ppl[by_ppl[ndrop - 1]] if ndrop else None,
            "packing": "kept generations (prefix + continuation) joined with EOS; nsamples random windows (seed+1)",
            "window_starts": starts, "ntokens_generated": ntok, "seconds": round(secs, 3),
            "tokens_per_s": round(ntok / secs, 2) if secs > 0 else None,
            "generations": [{"text": _decode(tokenizer, s), "ids": s, "prefix": prefixes[i], "ppl": ppl[i],
                             "kept": i not in dropped} for i, s in enumerate(seqs)]}
    return CalibSet(ids, None, card)


# ----------------------------------------------------------------------------------------------- dispatch

def _igsp(model, tokenizer, nsamples, seqlen, seed=0, device="cpu", params=None, **kw):
    from calmix.calib.igsp import igsp_set

    return igsp_set(model, tokenizer, nsamples, seqlen, seed=seed, device=device, params=params, **kw)


GENERATORS: dict[str, Callable[..., CalibSet]] = {"selfcal": selfcal_set, "sgs": sgs_set, "igsp": _igsp}


def generate_set(kind: str, model, tokenizer, nsamples: int, seqlen: int, seed: int = 0,
                 device: str | torch.device = "cpu", params: dict | None = None, **kwargs) -> CalibSet:
    """Build a self-generated calibration set of `kind` (selfcal, sgs, igsp) with the dense model."""
    if kind not in GENERATORS:
        raise CalmixError(f"unknown self-generated set '{kind}': choose one of {', '.join(GENERATORS)}")
    if model is None or tokenizer is None:
        raise CalmixError(f"{kind} needs the dense model and its tokenizer: pass --model")
    if nsamples < 1 or seqlen < 2:
        raise CalmixError(f"{kind}: need nsamples >= 1 and seqlen >= 2, got {nsamples} x {seqlen}")
    return GENERATORS[kind](model, tokenizer, nsamples, seqlen, seed=seed, device=device, params=params, **kwargs)
