"""IGSP, calmix's information-guided self-calibration protocol: self-generate a pool of candidates in several
modes, score them, drop degenerate ones, balance perplexity strata, pick greedily on unseen 4-grams, pack."""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from calmix.batching import batched
from calmix.calib.calibset import CalibSet
from calmix.calib.generated.common import (GENERATORS, decode, join_eos, model_name, no_tokens_error, seconds_card,
                                           subseed)
from calmix.calib.generated.params import check_fraction, check_positive, check_schedule, parse_generator_params
from calmix.calib.generated.sampling import TEMPERATURE_RULE, TempSchedule, generate
from calmix.calib.metrics import agg4_pooled, ngrams, sample_metrics
from calmix.errors import CalmixError
from calmix.lm import bos_prefix, join_token, sequence_perplexities, start_token
from calmix.registry import Registry


@dataclass(frozen=True)
class Mode:
    """A generation mode: a short generic opener after BOS ("" = BOS only), aimed at one capability dimension."""

    name: str
    opener: str
    dimension: str


MODES: Registry[Mode] = Registry("igsp mode")
for _m in (Mode("bos", "", "General"),
           Mode("question", "Question:", "Commonsense"),
           Mode("qa", "Q:", "Commonsense"),
           Mode("code", "def", "Code"),  # no trailing space: BPE joins the space to the next word (" name")
           Mode("math", "Solve step by step:", "Math"),
           Mode("instruction", "Instruction:", "Instruction")):
    MODES.add(_m.name, _m)
del _m

STRATIFY = ("ppl", "mode")


@dataclass
class IGSPParams:
    """IGSP parameters; every step can be switched off for ablations (the defaults are calmix's design choices)."""

    pool: float = 4.0  # pool size P = ceil(pool * nsamples) candidates
    modes: str = "bos+question+code+math+qa"  # '+'-separated names from MODES
    t_initial: float = 1.0  # Self-Cal temperature schedule, applied in every mode
    t_final: float = 1.0
    n: int = 10
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    min_tokens: int | None = None  # shorter candidates are discarded first; None = gen_len // 4
    filter: bool = True  # drop the `drop` fraction with the highest 4-gram aggregation
    drop: float = 0.2
    balance: bool = True  # equal share per stratum
    strata: int = 4  # K quantile bins of perplexity (by=ppl)
    by: str = "ppl"  # ppl (K quantile bins) or mode (one stratum per mode)
    greedy: bool = True  # inside a stratum pick the candidate adding most unseen 4-grams (else seeded random)
    gen_len: int | None = None  # tokens per candidate including the opener; None = seqlen
    batch_size: int = 64

    def validate(self, kind: str) -> None:
        check_positive(kind, pool=self.pool, strata=self.strata, gen_len=self.gen_len, batch_size=self.batch_size,
                       repetition_penalty=self.repetition_penalty)
        check_fraction(kind, "drop", self.drop)
        if self.by not in STRATIFY:
            raise CalmixError(f"{kind}: by={self.by} is not valid; choose one of {', '.join(STRATIFY)}")
        names = self.mode_list()
        bad = [m for m in names if m not in MODES]
        if bad or not names:
            raise CalmixError(f"{kind}: unknown mode(s) {', '.join(bad) or '(none given)'}; "
                              f"valid modes: {', '.join(MODES)} (join with '+')")
        check_schedule(kind, self)

    def mode_list(self) -> list[str]:
        """The chosen mode names, in the given order."""
        return [m.strip() for m in self.modes.replace(",", "+").split("+") if m.strip()]


# ----------------------------------------------------------------------------------------------- pure steps

def four_gram_set(ids: Sequence[int]) -> frozenset:
    """The distinct 4-grams of a token sequence."""
    return frozenset(ngrams(ids, 4))


class GreedyPicker:
    """Lazy greedy over a group of candidates: next() returns the one adding most grams unseen so far (ties: lowest
    index). Exact, because a candidate's gain can only shrink as the seen set grows."""

    def __init__(self, sets: Sequence[frozenset], indices: Sequence[int]):
        self.sets = sets
        self.heap = [(-len(sets[i]), i) for i in indices]
        heapq.heapify(self.heap)

    def __len__(self) -> int:
        return len(self.heap)

    def next(self, seen: set) -> tuple[int, int]:
        """(index, gain) of the best remaining candidate; the caller adds its grams to `seen`."""
        while True:
            _, i = heapq.heappop(self.heap)
            gain = len(self.sets[i] - seen)
            if not self.heap or (-gain, i) <= self.heap[0]:
                return i, gain
            heapq.heappush(self.heap, (-gain, i))


def select_greedy(candidates_4gram_sets: Sequence[frozenset | set], k: int, seen: set | None = None) -> list[int]:
    """Pick k candidates one by one, each adding the most 4-grams not yet in the set (ties: lowest index)."""
    sets = [frozenset(s) for s in candidates_4gram_sets]
    seen = set() if seen is None else set(seen)
    picker = GreedyPicker(sets, range(len(sets)))
    out = []
    for _ in range(min(k, len(sets))):
        i, _ = picker.next(seen)
        seen |= sets[i]
        out.append(i)
    return out


def drop_highest(values: Sequence[float], indices: Sequence[int], fraction: float) -> tuple[list[int], list[int]]:
    """(kept, dropped): drop floor(fraction * len) of `indices` with the highest values (ties: later index first)."""
    ndrop = int(fraction * len(indices))
    order = sorted(indices, key=lambda i: (-values[i], -i))
    dropped = set(order[:ndrop])
    return [i for i in indices if i not in dropped], sorted(dropped)


def quantile_strata(values: Sequence[float], indices: Sequence[int], k: int) -> list[list[int]]:
    """Split `indices` into k quantile bins of `values` (sorted, near-equal sizes, lowest values first)."""
    order = sorted(indices, key=lambda i: (values[i], i))
    k = max(1, min(k, len(order)))
    return [list(map(int, part)) for part in np.array_split(np.array(order, dtype=np.int64), k)]


def round_robin_select(strata: Sequence[Sequence[int]], lengths: Sequence[int], budget: int,
                       sets: Sequence[frozenset], greedy: bool = True, seed: int = 0) -> list[tuple[int, int]]:
    """Pick (candidate, stratum) in turns, one per stratum per turn, until the picked lengths reach `budget`.

    Inside a stratum the pick is greedy on unseen 4-grams (shared across strata) or, with greedy=False, a seeded
    random order. An exhausted stratum is skipped."""
    rng = random.Random(seed)
    if greedy:
        pickers = [GreedyPicker(sets, s) for s in strata]
    else:
        orders = [list(s) for s in strata]
        for o in orders:
            rng.shuffle(o)
    seen: set = set()
    picked: list[tuple[int, int]] = []
    total = 0
    while total < budget:
        progressed = False
        for j in range(len(strata)):
            if total >= budget:
                break
            if greedy:
                if not len(pickers[j]):
                    continue
                i, _ = pickers[j].next(seen)
            else:
                if not orders[j]:
                    continue
                i = orders[j].pop(0)
            seen |= sets[i]
            picked.append((i, j))
            total += lengths[i]
            progressed = True
        if not progressed:
            break
    return picked


# ----------------------------------------------------------------------------------------------- protocol

def _summary(values: list[float]) -> dict:
    if not values:
        return {"min": None, "max": None, "mean": None}
    return {"min": float(min(values)), "max": float(max(values)), "mean": float(np.mean(values))}


@GENERATORS.register("igsp")
def igsp_set(model, tokenizer, nsamples: int, seqlen: int, seed: int = 0, device: str | torch.device = "cpu",
             params: dict | None = None) -> CalibSet:
    """IGSP: self-generate a pool in several modes, score, drop degenerate, balance perplexity, greedy-pick, pack."""
    p = parse_generator_params(IGSPParams, params, "igsp", seqlen)
    gen_len = p.gen_len
    min_tokens = p.min_tokens if p.min_tokens is not None else max(2, gen_len // 4)
    t0 = time.perf_counter()
    bos, eos = start_token(tokenizer, model), join_token(tokenizer, model)
    modes = [MODES[m] for m in p.mode_list()]
    pool = math.ceil(p.pool * nsamples)
    schedule = TempSchedule(p.t_initial, p.t_final, p.n)

    # 1. pool: candidates assigned to modes in turn and sampled together (left-padded openers: one batch of all
    #    modes decodes ~2x more tokens per second than mode-by-mode batches on CPU), each cut to gen_len tokens
    mode_of = [modes[i % len(modes)].name for i in range(pool)]
    openers = {m.name: tokenizer.encode(m.opener, add_special_tokens=False) if m.opener else [] for m in modes}
    for name, opener in openers.items():
        if len(opener) >= gen_len:
            raise CalmixError(f"igsp: gen_len={gen_len} leaves no room after the opener of mode {name}")
    budget = [gen_len - len(openers[mode_of[i]]) for i in range(pool)]
    new = generate(model, tokenizer, [[bos] + openers[mode_of[i]] for i in range(pool)], max(budget),
                   seed=subseed(seed, 0), temperature=schedule, top_p=p.top_p, top_k=p.top_k,
                   repetition_penalty=p.repetition_penalty, batch_size=p.batch_size, device=device,
                   desc="igsp pool")
    cands = [openers[mode_of[i]] + g[:budget[i]] for i, g in enumerate(new)]
    ngenerated = sum(len(c) - len(openers[mode_of[i]]) for i, c in enumerate(cands))
    if ngenerated == 0:
        raise no_tokens_error("igsp")

    # 2. score every candidate
    ppl = batched(lambda rows: sequence_perplexities(model, cands, batch_size=rows, device=device,
                                                     prefix=bos_prefix(tokenizer)),
                  model, p.batch_size, max(map(len, cands)) + 1, device, "igsp perplexity")
    texts = [decode(tokenizer, c) for c in cands]
    vocab = len(tokenizer)
    scores = [sample_metrics(c, vocab, t) for c, t in zip(cands, texts)]
    agg = [s["agg4"] if not math.isnan(s["agg4"]) else 1.0 for s in scores]
    sets = [four_gram_set(c) for c in cands]

    # 3. drop degenerate candidates: too short, then the highest 4-gram aggregation
    eligible = [i for i in range(pool) if len(cands[i]) >= min_tokens]
    short = [i for i in range(pool) if len(cands[i]) < min_tokens]
    if p.filter:
        survivors, dropped = drop_highest(agg, eligible, p.drop)
    else:
        survivors, dropped = list(eligible), []
    if not survivors:
        raise CalmixError(f"igsp: no candidate has >= {min_tokens} tokens: lower min_tokens or check the model's EOS")

    # 4. balance perplexity: strata, equal share, greedy on unseen 4-grams
    if not p.balance:
        strata, strata_names = [survivors], ["all"]
    elif p.by == "mode":
        strata = [[i for i in survivors if mode_of[i] == m.name] for m in modes]
        strata_names = [m.name for m in modes]
        keep = [j for j, s in enumerate(strata) if s]
        strata, strata_names = [strata[j] for j in keep], [strata_names[j] for j in keep]
    else:
        strata = quantile_strata(ppl, survivors, p.strata)
        strata_names = [f"ppl-q{j + 1}" for j in range(len(strata))]
    lengths = [len(c) + 1 for c in cands]  # + EOS separator
    need = nsamples * seqlen
    picked = round_robin_select(strata, lengths, need, sets, greedy=p.greedy, seed=seed)
    total = sum(lengths[i] for i, _ in picked)
    if total < need:
        raise CalmixError(f"igsp: the filtered pool holds {total} tokens, fewer than nsamples*seqlen = {need}: "
                          f"raise pool (now {p.pool}) or lower drop/min_tokens")

    # 5. pack: selected candidates joined with EOS, cut into nsamples x seqlen
    order = [i for i, _ in picked]
    stream = join_eos([cands[i] for i in order], eos)
    ids = torch.tensor(stream[:need], dtype=torch.long).view(nsamples, seqlen)

    stratum_of = {i: j for j, s in enumerate(strata) for i in s}
    picked_set = set(order)
    strata_stats = []
    for j, s in enumerate(strata):
        chosen = [i for i, jj in picked if jj == j]
        strata_stats.append({"name": strata_names[j], "candidates": len(s), "picked": len(chosen),
                             "ppl": _summary([ppl[i] for i in s]), "ppl_picked": _summary([ppl[i] for i in chosen]),
                             "modes_picked": {m.name: sum(mode_of[i] == m.name for i in chosen) for m in modes}})
    status = {i: "short" for i in short} | {i: "dropped" for i in dropped}
    generations = []
    for i in range(pool):
        st = status.get(i, "selected" if i in picked_set else "kept")
        generations.append({"text": texts[i], "ids": cands[i], "mode": mode_of[i], "ppl": ppl[i],
                            "status": st, "stratum": strata_names[stratum_of[i]] if i in stratum_of else None,
                            **{k: v for k, v in scores[i].items() if k != "vocab_coverage"}})
    card = {
        "source": "igsp", "kind": "igsp", "method": "IGSP information-guided self-calibration (calmix)",
        "model": model_name(model), "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
        "params": {**dataclasses.asdict(p), "min_tokens": min_tokens},
        "temperature_rule": f"{TEMPERATURE_RULE}, new token i = 0, 1, ...",
        "modes": {m.name: {"opener": m.opener, "dimension": m.dimension, "candidates": mode_of.count(m.name),
                           "selected": sum(mode_of[i] == m.name for i in order)} for m in modes},
        "pool_size": pool, "short": len(short), "ndropped": len(dropped),
        "dropped_fraction": len(dropped) / len(eligible) if eligible else 0.0,
        "agg4_threshold": min((agg[i] for i in dropped), default=None),
        "strata": strata_stats, "selected_order": order,
        "agg4_set": {"pool": agg4_pooled(cands), "after_filter": agg4_pooled([cands[i] for i in survivors]),
                     "selected": agg4_pooled([cands[i] for i in order]), "packed_rows": agg4_pooled(ids.tolist())},
        "ppl_set": {"pool_mean": float(np.mean([ppl[i] for i in eligible])) if eligible else None,
                    "selected_mean": float(np.mean([ppl[i] for i in order]))},
        "packing": "selected candidates (opener + continuation) joined with EOS in pick order, "
                   "cut into consecutive nsamples x seqlen windows",
        "ntokens_generated": ngenerated, **seconds_card(ngenerated, time.perf_counter() - t0),
        "generations": generations,
    }
    return CalibSet(ids, None, card)


igsp_set.version = 2  # 2: the pool is sampled in one batch across modes (cache keys of older sets differ)
