"""Batched sampling with a KV cache: temperature schedule, top-k / nucleus filter, repetition penalty, draws."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from calmix.batching import halving, memory_batch
from calmix.errors import CalmixError
from calmix.lm import eos_tokens, pad_rows, pad_token, positions


TEMPERATURE_RULE = "t(i) = t_initial + (t_final - t_initial) * min(i / (n - 1), 1)"  # as written in cards


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


def sample_rows(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row of probs [rows, vocab] by inverse CDF (one uniform per row; far cheaper than multinomial)."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=gen, device=probs.device, dtype=torch.float64) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1)


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


def generate(model, tokenizer, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int, seed: int = 0,
             temperature: float | Callable[[int], float] = 1.0, top_p: float = 1.0, top_k: int = 0,
             repetition_penalty: float = 1.0, batch_size: int = 8, device: str | torch.device = "cpu",
             first_token_ids: Sequence[int] | None = None, eos_ids: set[int] | None = None,
             desc: str = "generate") -> list[list[int]]:
    """Sample continuations of each prompt (left-padded batches, KV cache); returns new tokens, stopping before EOS.

    `temperature` is a float or a schedule step -> temperature (step 0 = first new token); a temperature <= 0
    means greedy. `first_token_ids` restricts the first new token. Same seed and batch_size -> same output.
    The batch is smaller where batch_size rows (their KV cache and activations) do not fit the free memory of the
    device, and halved on out-of-memory (calmix.batching): the output is then that of the smaller batch size.
    """
    if max_new_tokens < 1:
        raise CalmixError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise CalmixError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(p) == 0 for p in prompts_ids):
        raise CalmixError("every generation prompt needs at least one token (use the BOS token for an empty prompt)")
    longest = max((len(p) for p in prompts_ids), default=1) + max_new_tokens
    size = memory_batch(model, batch_size, longest, device, cache=True, logit_positions=1)

    def run(rows: int) -> list[list[int]]:
        return _sample(model, tokenizer, prompts_ids, max_new_tokens, seed, temperature, top_p, top_k,
                       repetition_penalty, rows, device, first_token_ids, eos_ids, desc)

    return halving(run, size, desc)


def _sample(model, tokenizer, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int, seed: int,
            temperature: float | Callable[[int], float], top_p: float, top_k: int, repetition_penalty: float,
            batch_size: int, device: str | torch.device, first_token_ids: Sequence[int] | None,
            eos_ids: set[int] | None, desc: str) -> list[list[int]]:
    """generate's sampling in batches of batch_size rows, from the seed."""
    schedule = temperature if callable(temperature) else (lambda _step, t=float(temperature): t)
    eos = eos_ids if eos_ids is not None else eos_tokens(model, tokenizer)
    pad_id = pad_token(tokenizer, min(eos) if eos else 0)
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed) % 2**63)
    step_kw, cache_kw = _step_kwargs(model)
    eos_t = torch.tensor(sorted(eos), dtype=torch.long, device=dev) if eos else None
    first_mask = None
    outputs: list[list[int]] = []
    bar = tqdm(total=len(prompts_ids) * max_new_tokens, desc=desc, unit="tok", disable=None, leave=False)
    with torch.inference_mode():
        for start in range(0, len(prompts_ids), batch_size):
            ids, mask = pad_rows(prompts_ids[start:start + batch_size], pad_id, left=True)
            b = ids.shape[0]
            ids, mask = ids.to(dev), mask.to(dev)
            vocab = None
            seen = None
            done = torch.zeros(b, dtype=torch.bool, device=dev)
            new = torch.zeros((b, max_new_tokens), dtype=torch.long, device=dev)
            lengths = torch.full((b,), max_new_tokens, dtype=torch.long, device=dev)
            cache = _new_cache(model)
            step_ids, step_pos = ids, positions(mask)
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
