"""Self-Cal (Williams et al. 2025): sample from BOS with a temperature schedule, join with EOS, cut into windows."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from calmix.calib.calibset import CalibSet
from calmix.calib.generated.common import (GENERATORS, decode, join_eos, model_name, no_tokens_error, seconds_card,
                                           stopword_token_ids, subseed)
from calmix.calib.generated.params import check_positive, check_schedule, parse_generator_params
from calmix.calib.generated.sampling import TEMPERATURE_RULE, TempSchedule, generate
from calmix.errors import CalmixError
from calmix.lm import join_token, start_token

MAX_ROUNDS = 8  # generation rounds before giving up on a model that stops too early


@dataclass
class SelfCalParams:
    """Self-Cal parameters; the defaults are those of Williams et al. (2025)."""

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
        check_positive(kind, gen_len=self.gen_len, batch_size=self.batch_size,
                       repetition_penalty=self.repetition_penalty)
        check_schedule(kind, self)


@GENERATORS.register("selfcal")
def selfcal_set(model, tokenizer, nsamples: int, seqlen: int, seed: int = 0, device: str | torch.device = "cpu",
                params: dict | None = None) -> CalibSet:
    """Self-Cal: sample from BOS with a temperature schedule, join generations with EOS, cut nsamples x seqlen."""
    p = parse_generator_params(SelfCalParams, params, "selfcal", seqlen)
    gen_len = p.gen_len
    t0 = time.perf_counter()
    bos, eos = start_token(tokenizer, model), join_token(tokenizer, model)
    first = stopword_token_ids(tokenizer) if p.stopword_first else None
    need = nsamples * seqlen
    gens: list[list[int]] = []
    stream: list[int] = []
    for rnd in range(MAX_ROUNDS):
        count = max(1, math.ceil((need - len(stream)) / gen_len))
        new = generate(model, tokenizer, [[bos]] * count, gen_len, seed=subseed(seed, rnd),
                       temperature=TempSchedule(p.t_initial, p.t_final, p.n), top_p=p.top_p, top_k=p.top_k,
                       repetition_penalty=p.repetition_penalty, batch_size=p.batch_size, device=device,
                       first_token_ids=first, desc=f"selfcal round {rnd + 1}")
        if not any(new):
            raise no_tokens_error("selfcal")
        gens.extend(new)
        stream = join_eos(gens, eos)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise CalmixError(f"selfcal: generations gave {len(stream)} tokens, fewer than nsamples*seqlen = {need}: "
                          f"the model stops too early; lower nsamples or seqlen")
    ids = torch.tensor(stream[:need], dtype=torch.long).view(nsamples, seqlen)
    ntok = sum(len(g) for g in gens)
    card = {"source": "selfcal", "kind": "selfcal", "method": "Self-Cal (Williams et al. 2025)",
            "model": model_name(model), "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
            "params": dataclasses.asdict(p), "temperature_rule": f"{TEMPERATURE_RULE} for new token i = 0, 1, ...",
            "prompt": "BOS only", "first_token_ids": first, "ngenerations": len(gens), "ntokens_generated": ntok,
            "packing": "generations joined with EOS, cut into consecutive nsamples x seqlen windows",
            **seconds_card(ntok, time.perf_counter() - t0),
            "texts": [decode(tokenizer, g) for g in gens]}
    return CalibSet(ids, None, card)
