"""Log-likelihood of continuations given contexts, every continuation of a context scored in one forward.

Packed path (default where the model supports it): a row is a prefix tree of (context + continuation) sequences,
each distinct prefix once: a context and its continuations, continuations sharing leading tokens, and groups whose
contexts share a prefix (MMLU items with the same few-shot examples, Winogrande's two option-filled contexts) all
share a row. Each token attends to its ancestors only (a 4D additive mask) at the position it has in its own
sequence, so every score equals that of a plain forward of the sequence. The decoder runs once per row, and the
output head runs only on the positions whose next token is scored. Groups sharing a prefix too long for one row
(MMLU's five-shot examples) run it once as a stem: its KV cache is computed once and every row of what follows
attends to a copy of it. Models that cannot take such a row (a custom mask ignored, a sliding window shorter
than the row) use the cached path: the context runs once, its KV cache is copied to each continuation.
"""

from __future__ import annotations

import copy
import inspect
import logging
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from calmix.errors import CalmixError
from calmix.evals.packing import Group, fill_batches, length_batches, pack_groups, prefix_tree, stem_runs, tree_allow
from calmix.lm import pad_rows
from calmix.models import decoder_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContScore:
    """Log-likelihood of one continuation: sum of token log-probs, its token count, and whether greedy decoding gives it."""

    logprob: float
    ntokens: int
    greedy: bool


def max_context(model) -> int:
    """Longest sequence the model takes (its configured position limit, else 2048)."""
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


# ---------------------------------------------------------------------------------------------- packed rows
def _text_config(model):
    """The config of the language model (the text part of a multimodal config)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _parts(model):
    """(decoder body returning hidden states, output head, final logit soft-cap or None), or None if not split."""
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or head is None:
        return None
    return body, head, getattr(_text_config(model), "final_logit_softcapping", None)


def packed_limit(model) -> int:
    """Longest packed row the model scores exactly: its sliding window when it has one (a custom mask replaces
    the window), else its position limit."""
    window = getattr(_text_config(model), "sliding_window", None)
    limit = max_context(model)
    return min(limit, window) if isinstance(window, int) and window > 0 else limit


def _decoder_shape(model) -> tuple[int, int, int] | None:
    """(hidden size, decoder layers, weights in the decoder layers), or None where one of them is unknown."""
    cfg = _text_config(model)
    hidden, layers = getattr(cfg, "hidden_size", None), getattr(cfg, "num_hidden_layers", None)
    try:
        weights = sum(p.numel() for layer in decoder_layers(model) for p in layer.parameters())
    except CalmixError:  # no decoder layers found
        return None
    return (hidden, layers, weights) if hidden and layers and weights else None


def attention_width(model) -> int:
    """Widest packed row worth joining groups into: where a row's attention (4·hidden·layers FLOPs per token per
    token of width, computed densely under the tree mask) reaches a quarter of its linears' (2 FLOPs per decoder
    weight per token); past it, a group is cheaper in a row of its own even if that repeats a shared prefix.
    About 770 tokens for a 135M model, far above any row for an 8B one; no cap where the shape is unknown."""
    shape = _decoder_shape(model)
    if shape is None:
        return 1 << 30
    hidden, layers, weights = shape
    return max(256, int(weights / (8 * hidden * layers)))


def attention_ratio(model) -> float:
    """Cost of one query-key pair of attention (4·hidden FLOPs per layer) in tokens of linear work (2 FLOPs per
    decoder weight): 2·hidden·layers / decoder weights, about 3e-4 for a 135M model; 0 when the shape is unknown."""
    shape = _decoder_shape(model)
    if shape is None:
        return 0.0
    hidden, layers, weights = shape
    return 2 * hidden * layers / weights


def _score_positions(head, softcap, hidden: torch.Tensor, slots: torch.Tensor, targets: torch.Tensor,
                     max_elems: int = 1 << 26) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token under head(hidden[slot]) and whether it is that row's argmax; the head runs
    once per hidden row, in chunks of at most max_elems logits."""
    vocab = head.weight.shape[0]
    step = max(1, max_elems // vocab)
    slots, targets = slots.to(hidden.device), targets.to(hidden.device)
    lp = torch.empty(len(slots), device=hidden.device)
    hit = torch.empty(len(slots), dtype=torch.bool, device=hidden.device)
    for s in range(0, hidden.shape[0], step):
        logits = head(hidden[s:s + step]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        sel = (slots >= s) & (slots < s + step)
        k, t = slots[sel] - s, targets[sel]
        # One max pass gives both the argmax and logsumexp's shift; the exp runs in place: the chunk is far
        # larger than cache, so each pass over it saved is time (logsumexp + argmax took three more).
        top, arg = logits.max(-1)
        picked = logits[k, t]
        lse = logits.sub_(top[:, None]).exp_().sum(-1).log_().add_(top)
        lp[sel] = picked - lse[k]
        hit[sel] = arg[k] == t
    return lp.cpu(), hit.cpu()


@torch.no_grad()
def _score_packed_batch(model, parts, batch: Sequence[Sequence[Group]], device: torch.device,
                        trees: Sequence[tuple | None] | None = None, stem=None) -> list[list[list[ContScore]]]:
    """Scores of a batch of packed rows, each row several groups (trees: their prefix_tree, computed if not given):
    per row, per group, per continuation. stem = (KV cache, length) of a prefix every sequence of the batch starts
    with (stem_cache, one row); the groups' contexts then hold only what follows it."""
    body, head, softcap = parts
    trees = [tree if tree is not None else prefix_tree(row) for row, tree in zip(batch, trees or [None] * len(batch))]
    dtype = head.weight.dtype if head.weight.dtype.is_floating_point else torch.float32
    past = 0 if stem is None else stem[1]
    ids, _ = pad_rows([t[0] for t in trees])
    pos, _ = pad_rows([t[1] for t in trees])
    width = ids.shape[1]
    allow = torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1)  # padding attends to itself only
    for b, (rid, _, rend, _) in enumerate(trees):
        allow[b, :len(rid), :len(rid)] = tree_allow(rend)
    if past:  # every token sees the whole stem
        allow = torch.cat([torch.ones(len(trees), width, past, dtype=torch.bool), allow], dim=2)
    mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min).unsqueeze(1)
    cache = {} if stem is None else {_cache_kwarg(body): copy.deepcopy(stem[0])}  # the forward extends the cache
    hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=(pos + past).to(device),
                  use_cache=stem is not None, **cache).last_hidden_state
    # Targets in continuation order; each distinct (row, position) is one slot and goes through the head once,
    # however many continuations it scores (shared prefixes score every continuation that extends them).
    slot: dict[tuple[int, int], int] = {}
    slots, targets = [], []
    spans: list[list[list[tuple[int, int]]]] = []  # spans[b][g][j]: targets of continuation j of group g in row b
    for b, (row, tree) in enumerate(zip(batch, trees)):
        spans.append([])
        for (_, conts), at in zip(row, tree[3]):
            spans[-1].append([])
            for c, positions in zip(conts, at):
                start = len(targets)
                for p, t in zip(positions, c):
                    slots.append(slot.setdefault((b, p), len(slot)))
                    targets.append(t)
                spans[-1][-1].append((start, len(targets)))
    bidx = torch.tensor([b for b, _ in slot], device=hidden.device)
    pidx = torch.tensor([p for _, p in slot], device=hidden.device)
    lp, hit = _score_positions(head, softcap, hidden[bidx, pidx], torch.tensor(slots), torch.tensor(targets))
    return [[[ContScore(float(lp[a:e].sum()), e - a, bool(hit[a:e].all())) for a, e in group] for group in row]
            for row in spans]


@torch.no_grad()
def stem_cache(parts, ids: Sequence[int], device: torch.device):
    """KV cache of the decoder body over one row of token ids (positions 0..len-1), for _score_packed_batch's stem."""
    body = parts[0]
    return _returned_cache(body(input_ids=torch.tensor([list(ids)], device=device), use_cache=True))


def _returned_cache(out):
    """The KV cache a forward returned (transformers renamed past_key_values to cache)."""
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


_PACKED_OK: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()
_STEM_OK: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def _probe_exact(model, stem: int) -> bool:
    """Whether packed rows (on a cached stem of that many context tokens, if stem > 0) give a plain forward's
    log-likelihoods on a short row."""
    parts = _parts(model)
    if parts is None:
        return False
    was_training = model.training
    model.eval()  # dropout would make any two forwards disagree
    try:
        device = next(model.parameters()).device
        vocab = parts[1].weight.shape[0]
        ctx, conts = [1 % vocab, 7 % vocab, 3 % vocab], [[11 % vocab, 4 % vocab], [5 % vocab, 2 % vocab, 9 % vocab]]
        cached = (stem_cache(parts, ctx[:stem], device), stem) if stem else None
        got = _score_packed_batch(model, parts, [[(ctx[stem:], conts)]], device, stem=cached)[0][0]
        tol = 1e-3 if parts[1].weight.dtype in (torch.float32, torch.float64) else 5e-2
        ok = True
        for c, g in zip(conts, got):
            lp = torch.log_softmax(model(input_ids=torch.tensor([ctx + c], device=device)).logits[0].float(), -1)
            want = float(sum(lp[len(ctx) - 1 + k, t] for k, t in enumerate(c)))
            ok = ok and abs(want - g.logprob) <= tol * max(1.0, abs(g.logprob))
        return ok
    except Exception as exc:  # any model that rejects a custom mask, position ids or a cache with them
        log.debug("packed scoring (stem %d) unsupported: %s", stem, exc)
        return False
    finally:
        model.train(was_training)


def packed_supported(model) -> bool:
    """Whether this model scores packed rows as a plain forward does (checked once per model on a short row)."""
    if model not in _PACKED_OK:
        _PACKED_OK[model] = _probe_exact(model, stem=0)
        if not _PACKED_OK[model]:
            log.info("%s: continuations scored on a cached context (packed rows unsupported)", type(model).__name__)
    return _PACKED_OK[model]


def stems_supported(model) -> bool:
    """Whether packed rows on a cached shared prefix (a stem) score as a plain forward does: packed rows work, the
    model has no sliding window (a cache may drop what the window leaves) and the probe agrees."""
    if model not in _STEM_OK:
        _STEM_OK[model] = (packed_supported(model) and packed_limit(model) == max_context(model)
                           and _probe_exact(model, stem=2))
    return _STEM_OK[model]


def _score_stem_run(model, parts, groups: Sequence[Group], stem: int, width: int,
                    device: torch.device) -> list[list[ContScore]]:
    """Scores of groups whose contexts share their first stem tokens: the stem runs once, then what follows it in
    rows of at most width tokens, one row per forward on a copy of the stem's KV cache."""
    cache = (stem_cache(parts, groups[0][0][:stem], device), stem)
    rest = [(list(ctx[stem:]), conts) for ctx, conts in groups]
    order = sorted(range(len(rest)), key=lambda k: rest[k][0])  # text shared past the stem lands in one row
    rows: list[list[int]] = []
    size = 0
    for k in order:
        n = len(rest[k][0]) + sum(len(c) - 1 for c in rest[k][1])
        if rows and size + n <= width:
            rows[-1].append(k)
            size += n
        else:
            rows.append([k])
            size = n
    out: list[list[ContScore]] = [[] for _ in groups]
    for row in rows:
        for k, scores in zip(row, _score_packed_batch(model, parts, [[rest[k] for k in row]], device, stem=cache)[0]):
            out[k] = scores
    return out


# ---------------------------------------------------------------------------------------------- cached context
def _cache_kwarg(model) -> str:
    """Name of the forward argument that takes a KV cache (transformers renamed past_key_values to cache)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _forward(model, **kwargs):
    try:
        return model(**kwargs)
    except TypeError:  # a model without logits_to_keep: full logits
        kwargs.pop("logits_to_keep", None)
        return model(**kwargs)


@torch.no_grad()
def _score_cached_batch(model, batch: Sequence[Group], device: torch.device, cont_rows: int,
                        max_tokens: int) -> list[list[ContScore]]:
    ctxs = [ctx for ctx, _ in batch]
    lens = torch.tensor([len(c) for c in ctxs])
    lc = int(lens.max())
    ids, mask = pad_rows(ctxs)  # right padding: no query row is fully masked
    last = lens - 1
    uniq, where = torch.unique(last, return_inverse=True)
    out = _forward(model, input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True,
                   logits_to_keep=uniq.to(device))
    logits = out.logits
    if logits.shape[1] == lc and len(uniq) != lc:  # the model ignored logits_to_keep
        first_logits = logits[torch.arange(len(ctxs)), last.to(logits.device)]
    else:
        first_logits = logits[torch.arange(len(ctxs)), where.to(logits.device)]
    first_lp = torch.log_softmax(first_logits.float(), dim=-1)
    cache = _returned_cache(out)
    rows = [(r, c) for r, (_, conts) in enumerate(batch) for c in conts]
    row_group = torch.tensor([r for r, _ in rows])
    tails: dict[int, torch.Tensor] = {}  # row -> log-probs of its continuation tokens after the first
    # Continuations longer than one token run on the cached context, in length-sorted chunks (little padding).
    multi = sorted((r for r, (_, c) in enumerate(rows) if len(c) > 1), key=lambda r: -len(rows[r][1]))
    chunks = [[multi[k] for k in run] for run in length_batches([len(rows[r][1]) for r in multi], cont_rows,
                                                                 max_tokens)]
    for chunk in chunks:
        sub = copy.deepcopy(cache) if len(chunks) > 1 else cache
        gidx = row_group[chunk]
        sub.reorder_cache(gidx.to(device))
        lt = len(rows[chunk[0]][1]) - 1
        cids, cmask = pad_rows([rows[r][1][:-1] for r in chunk], width=lt)
        full_mask = torch.cat([mask[gidx], cmask], dim=1)
        pos = lens[gidx].unsqueeze(1) + torch.arange(lt).unsqueeze(0)
        out2 = model(input_ids=cids.to(device), attention_mask=full_mask.to(device), position_ids=pos.to(device),
                     use_cache=True, **{_cache_kwarg(model): sub})
        lp = torch.log_softmax(out2.logits.float(), dim=-1)
        for k, r in enumerate(chunk):
            tails[r] = lp[k, :len(rows[r][1]) - 1]
        del sub, out2, lp
    del cache, out
    scores: list[list[ContScore]] = [[] for _ in batch]
    for r, (g, c) in enumerate(rows):
        lp0 = first_lp[g]
        total = float(lp0[c[0]])
        greedy = bool(int(lp0.argmax()) == c[0])
        if len(c) > 1:
            lp = tails[r]
            tgt = torch.tensor(c[1:], device=lp.device)
            total += float(lp.gather(1, tgt.unsqueeze(1)).sum())
            greedy = greedy and bool((lp.argmax(-1) == tgt).all())
        scores[g].append(ContScore(total, len(c), greedy))
    return scores


# ---------------------------------------------------------------------------------------------- entry point
@torch.no_grad()
def loglikelihood_groups(model, groups: Sequence[Group], batch_size: int = 16, device: str | torch.device = "cpu",
                         progress: bool = False, desc: str = "loglik", cont_rows: int = 16, max_tokens: int = 2048,
                         packed: bool | None = None) -> list[list[ContScore]]:
    """Score every continuation of every (context ids, [continuation ids]) group; results in input order.

    Packed rows (groups sharing a context prefix share a row, see pack_groups) run widest first in batches of at
    most batch_size rows and max_tokens padded tokens, rows shorter than the batch's widest sharing one where
    padding would be (fill_batches). packed=None uses packed rows where the model supports them
    (see the module docstring); False forces the cached path, which runs batches of at most batch_size groups and
    their continuations in chunks of at most cont_rows rows.
    """
    device = torch.device(device)
    max_len = max_context(model)
    prepared: list[tuple[list[int], list[list[int]]]] = []
    for ctx, conts in groups:
        conts = [list(c) for c in conts]
        if not conts:
            raise ValueError("a group needs at least one continuation")
        if any(len(c) == 0 for c in conts):
            raise CalmixError("an empty continuation cannot be scored: check the task's choices")
        keep = max(1, max_len - max(len(c) for c in conts))
        prepared.append((list(ctx)[-keep:], conts))
    use_packed = packed_supported(model) if packed is None else packed
    parts = _parts(model) if use_packed else None
    if use_packed and parts is None:
        raise CalmixError(f"{type(model).__name__} has no separate output head: score it with packed=False")
    window = packed_limit(model)  # below max_len only for a sliding window
    limit = window if parts is not None else 0
    row_len = [len(ctx) + sum(len(c) - 1 for c in conts) for ctx, conts in prepared]
    packable = [i for i in range(len(prepared)) if row_len[i] <= limit]
    rest = sorted(set(range(len(prepared))) - set(packable))
    results: list[list[ContScore] | None] = [None] * len(prepared)
    bar = tqdm(total=len(prepared), desc=desc, disable=None if progress else True, leave=False)
    width = min(limit, max_tokens, attention_width(model)) if parts is not None else 0
    # Groups sharing a prefix of a quarter row or more (few-shot examples) run it once, as a stem.
    runs = stem_runs([prepared[i] for i in packable], min_stem=max(1, width // 4)) if parts is not None else []
    if runs and stems_supported(model):
        for stem, members in runs:
            idxs = [packable[k] for k in members]
            for i, res in zip(idxs, _score_stem_run(model, parts, [prepared[i] for i in idxs], stem, width, device)):
                results[i] = res
            bar.update(len(idxs))
        packable = [i for i in packable if results[i] is None]
    rows = [[packable[k] for k in row]
            for row in pack_groups([prepared[i] for i in packable], width, attention_ratio=attention_ratio(model))]
    trees = [prefix_tree([prepared[i] for i in row]) for row in rows]
    for bins in fill_batches([len(tree[0]) for tree in trees], batch_size, max_tokens):
        # rows too short to fill the batch's width share one (their trees are disjoint unless they share a prefix)
        batch = [[i for r in b for i in rows[r]] for b in bins]
        scored = _score_packed_batch(model, parts, [[prepared[i] for i in row] for row in batch], device,
                                     [trees[b[0]] if len(b) == 1 else None for b in bins])
        for row, res in zip(batch, scored):
            for i, r in zip(row, res):
                results[i] = r
        bar.update(sum(len(row) for row in batch))
    rest.sort(key=lambda i: (-len(prepared[i][0]), -max(len(c) for c in prepared[i][1])))
    runs = length_batches([len(prepared[i][0]) for i in rest], batch_size, max_tokens)
    if window < max_len:  # a sliding window counts padding as tokens: batch equal contexts only
        runs = [[k for k in run if len(prepared[rest[k]][0]) == n]
                for run in runs for n in sorted({len(prepared[rest[k]][0]) for k in run}, reverse=True)]
    for run in runs:
        idxs = [rest[k] for k in run]
        for i, res in zip(idxs, _score_cached_batch(model, [prepared[i] for i in idxs], device, cont_rows, max_tokens)):
            results[i] = res
        bar.update(len(idxs))
    bar.close()
    return results  # type: ignore[return-value]
