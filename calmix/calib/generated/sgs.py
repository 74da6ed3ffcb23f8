"""SGS, self-generating then sampling (Ji et al. 2025): continue short document prefixes, drop the generations of
highest perplexity, draw random windows from the rest."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from calmix.batching import batched
from calmix.calib.calibset import CalibSet
from calmix.calib.generated.common import GENERATORS, decode, join_eos, model_name, no_tokens_error, seconds_card
from calmix.calib.generated.params import check_fraction, check_positive, parse_generator_params
from calmix.calib.generated.sampling import generate
from calmix.calib.sources import get_source
from calmix.errors import CalmixError
from calmix.lm import bos_prefix, join_token, sequence_perplexities

SGS_DEFAULT_SOURCES = ("wikitext2", "pydoc-topics")  # Wikipedia-like first, then prose shipped with Python


@dataclass
class SGSParams:
    """SGS parameters; the defaults are those of Ji et al. (2025)."""

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
        check_positive(kind, prefix_len=self.prefix_len, gen_len=self.gen_len, batch_size=self.batch_size,
                       ngen=self.ngen, repetition_penalty=self.repetition_penalty, oversample=self.oversample)
        check_fraction(kind, "drop", self.drop)
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0 or self.temperature < 0:
            raise CalmixError(f"{kind}: need 0 < top_p <= 1, top_k >= 0, temperature >= 0")


def sgs_prefix_documents(source: str | None) -> tuple[str, list[str]]:
    """Documents for SGS prefixes from a registered source (default: wikitext2 if available, else prose)."""
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
        ok, why = src.available()
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


def draw_prefixes(tokenizer, docs: Sequence[str], prefix_len: int, ngen: int, seed: int) -> list[list[int]]:
    """ngen prefixes: the first prefix_len tokens of documents in a seeded order, cycled when there are fewer."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    prefixes: list[list[int]] = []
    for i in order:
        ids = tokenizer.encode(docs[i], add_special_tokens=False)
        if len(ids) >= prefix_len:
            prefixes.append(ids[:prefix_len])
        if len(prefixes) == ngen:
            break
    if not prefixes:
        raise CalmixError(f"sgs: no prefix document has {prefix_len} tokens: give a source with text")
    return [prefixes[i % len(prefixes)] for i in range(ngen)]


@GENERATORS.register("sgs")
def sgs_set(model, tokenizer, nsamples: int, seqlen: int, seed: int = 0, device: str | torch.device = "cpu",
            params: dict | None = None, prefix_docs: Sequence[str] | None = None) -> CalibSet:
    """SGS: continue 2-token document prefixes, drop the highest-perplexity generations, draw random windows."""
    p = parse_generator_params(SGSParams, params, "sgs", seqlen)
    gen_len = p.gen_len
    t0 = time.perf_counter()
    if prefix_docs is None:
        source_name, prefix_docs = sgs_prefix_documents(p.source)
        p.source = source_name
    else:
        source_name = "prefix_docs (given)"
    ngen = p.ngen or math.ceil(p.oversample * nsamples * seqlen / gen_len / (1.0 - p.drop))
    if p.paragraphs:
        prefix_docs = prefix_paragraphs(prefix_docs)
    prefixes = draw_prefixes(tokenizer, prefix_docs, p.prefix_len, ngen, seed)
    new = generate(model, tokenizer, prefixes, max(1, gen_len - p.prefix_len), seed=seed,
                   temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, repetition_penalty=p.repetition_penalty,
                   batch_size=p.batch_size, device=device, desc="sgs generate")
    if not any(new):
        raise no_tokens_error("sgs")
    seqs = [pre + g for pre, g in zip(prefixes, new)]
    ppl = batched(lambda rows: sequence_perplexities(model, seqs, batch_size=rows, device=device,
                                                     prefix=bos_prefix(tokenizer)),
                  model, p.batch_size, max(map(len, seqs)) + 1, device, "sgs perplexity")
    ndrop = int(p.drop * len(seqs))
    by_ppl = sorted(range(len(seqs)), key=lambda i: (-ppl[i], i))
    dropped = set(by_ppl[:ndrop])
    kept = [seqs[i] for i in range(len(seqs)) if i not in dropped]
    stream = join_eos(kept, join_token(tokenizer, model))
    if len(stream) < seqlen:
        raise CalmixError(f"sgs: kept generations hold {len(stream)} tokens, fewer than seqlen={seqlen}: "
                          f"raise ngen or gen_len, or lower seqlen")
    wrng = random.Random(seed + 1)
    starts = [wrng.randint(0, len(stream) - seqlen) for _ in range(nsamples)]
    ids = torch.tensor([stream[s:s + seqlen] for s in starts], dtype=torch.long)
    ntok = sum(len(g) for g in new)
    card = {"source": "sgs", "kind": "sgs", "method": "SGS self-generating then sampling (Ji et al. 2025)",
            "model": model_name(model), "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
            "params": {**dataclasses.asdict(p), "ngen": ngen}, "prefix_source": source_name,
            "ndropped": ndrop, "dropped_fraction": ndrop / len(seqs),
            "ppl_threshold": ppl[by_ppl[ndrop - 1]] if ndrop else None,
            "packing": "kept generations (prefix + continuation) joined with EOS; nsamples random windows (seed+1)",
            "window_starts": starts, "ntokens_generated": ntok, **seconds_card(ntok, time.perf_counter() - t0),
            "generations": [{"text": decode(tokenizer, s), "ids": s, "prefix": prefixes[i], "ppl": ppl[i],
                             "kept": i not in dropped} for i, s in enumerate(seqs)]}
    return CalibSet(ids, None, card)
