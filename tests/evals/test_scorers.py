"""Scorers against hand-computed values on the tiny in-process model; GSM8K extraction on real answer formats."""

from __future__ import annotations

import json
import math

import pytest
import torch

from calmix.errors import CalmixError
from calmix.evals import scorers
from calmix.evals.scorers import (encode_pair, extract_flexible, extract_strict, generate_greedy, gsm8k_gold,
                                  loglikelihood, loglikelihood_groups, mc_predictions, normalize_number, probe_score,
                                  score_mc_items, score_probe_items)

PAIRS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " London, which is a big city"),
    ("The cat sat on the", " mat."),
    ("Hello", " world and everyone in it, said the long continuation"),
    ("", "Some text without any context."),
    ("A much longer context that goes on and on about many things, so that lengths differ a lot", " x"),
    ("Answer: ", "yes"),
]
# The same pairs split by hand as lm-eval splits them: trailing context whitespace opens the continuation.
SPLIT = {("Answer: ", "yes"): ("Answer:", " yes"), ("def add(a, b):\n", "    return a + b\n"):
         ("def add(a, b):", "\n    return a + b\n")}


def oracle_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a pair from the hand split above; an empty context is the BOS token alone."""
    context, continuation = SPLIT.get((context, continuation), (context, continuation))
    ctx = tokenizer.encode(context, add_special_tokens=False) if context else [tokenizer.bos_token_id]
    return ctx, tokenizer.encode(continuation, add_special_tokens=False)


def manual_logprob(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """Oracle: one full forward of ctx+cont, log_softmax, sum over the continuation positions."""
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    total, greedy = 0.0, True
    for k, tok in enumerate(cont):
        row = lp[len(ctx) - 1 + k]
        total += float(row[tok])
        greedy = greedy and int(row.argmax()) == tok
    return total, greedy


def test_loglikelihood_equals_manual_log_softmax_sum(tiny_model, tiny_tokenizer):
    res = loglikelihood(tiny_model, tiny_tokenizer, PAIRS, batch_size=4)
    for (c, t), r in zip(PAIRS, res):
        ctx, cont = oracle_ids(tiny_tokenizer, c, t)
        want, greedy = manual_logprob(tiny_model, ctx, cont)
        assert r.ntokens == len(cont)
        assert r.logprob == pytest.approx(want, abs=1e-4)
        assert r.greedy == greedy


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_batching_and_length_sorting_match_one_by_one(tiny_model, tiny_tokenizer, batch_size):
    one = [loglikelihood(tiny_model, tiny_tokenizer, [p], batch_size=1)[0].logprob for p in PAIRS]
    many = [r.logprob for r in loglikelihood(tiny_model, tiny_tokenizer, PAIRS, batch_size=batch_size)]
    assert many == pytest.approx(one, abs=1e-4)


@pytest.mark.parametrize("packed,cont_rows", [(None, 16), (False, 1), (False, 2), (False, 16)])
def test_groups_share_context_and_keep_input_order(tiny_model, packed, cont_rows):
    groups = [([5, 6, 7], [[8], [9, 10, 11], [12, 13]]), ([1], [[2, 3]]), ([4, 4, 4, 4, 4, 4], [[1], [2, 9, 9, 9], [3]])]
    res = loglikelihood_groups(tiny_model, groups, batch_size=2, cont_rows=cont_rows, packed=packed)
    for (ctx, conts), got in zip(groups, res):
        assert len(got) == len(conts)
        for cont, r in zip(conts, got):
            assert r.logprob == pytest.approx(manual_logprob(tiny_model, ctx, cont)[0], abs=1e-4)


def test_trailing_context_space_moves_to_continuation(default_tokenizer):
    ctx, cont = encode_pair(default_tokenizer, "Answer: ", "yes")
    assert default_tokenizer.decode(ctx) == "Answer:"
    assert default_tokenizer.decode(cont) == " yes"


def test_encode_pair_matches_the_hand_split(tiny_tokenizer):
    for c, t in [*PAIRS, *SPLIT]:
        assert encode_pair(tiny_tokenizer, c, t) == oracle_ids(tiny_tokenizer, c, t)


def test_contexts_start_with_bos_where_the_tokenizer_adds_one(tiny_model, tiny_tokenizer, tiny_bos_tokenizer):
    for c, t in PAIRS:
        ctx, cont = oracle_ids(tiny_tokenizer, c, t)
        assert encode_pair(tiny_bos_tokenizer, c, t) == ([1] + ctx if c.strip() else ctx, cont)
    assert encode_pair(tiny_bos_tokenizer, "", " yes")[0] == [1]  # an empty context is BOS alone, not BOS twice
    item = {"context": "The cat sat on the", "reference": " mat."}
    got = score_probe_items(tiny_model, tiny_bos_tokenizer, [item])[0]
    ctx, cont = oracle_ids(tiny_tokenizer, item["context"], item["reference"])
    ids = [1] + ctx + cont
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    want = -sum(float(logp[i - 1, ids[i]]) for i in range(len(ids) - len(cont), len(ids)))
    assert got["ntokens"] == len(cont) and got["nll"] == pytest.approx(want, rel=1e-4)


def test_mc_predictions_acc_and_acc_norm_by_characters():
    # raw: choice 0 wins (-10 > -12); per character: -10/5 = -2 < -12/12 = -1, so choice 1 wins.
    assert mc_predictions([-10.0, -12.0], [5, 12]) == (0, 1)
    assert mc_predictions([-3.0, -3.0, -9.0], [1, 1, 1]) == (0, 0)  # ties go to the first choice


def test_score_mc_items_matches_manual(tiny_model, tiny_tokenizer):
    item = {"contexts": ["Q: sky colour?\nA:"] * 3, "continuations": [" blue", " green grass", " red"],
            "norm_lens": [4, 11, 3], "gold": 1}
    wino = {"contexts": ["Sarah helped Maria so Sarah", "Sarah helped Maria so Maria"],
            "continuations": [" was thanked.", " was thanked."], "norm_lens": [12, 12], "gold": 0}
    res = score_mc_items(tiny_model, tiny_tokenizer, [item, wino], batch_size=2)
    for it, r in zip([item, wino], res):
        lps = [manual_logprob(tiny_model, *oracle_ids(tiny_tokenizer, c, t))[0]
               for c, t in zip(it["contexts"], it["continuations"])]
        assert r["logprobs"] == pytest.approx(lps, abs=1e-4)
        pred = max(range(len(lps)), key=lambda j: lps[j])
        pred_norm = max(range(len(lps)), key=lambda j: lps[j] / it["norm_lens"][j])
        assert r["acc"] == float(pred == it["gold"]) and r["acc_norm"] == float(pred_norm == it["gold"])
        assert r["chance"] == pytest.approx(1 / len(lps))


def test_probe_nll_is_reference_tokens_only(tiny_model, tiny_tokenizer):
    items = [{"context": "def add(a, b):\n", "reference": "    return a + b\n"},
             {"context": "", "reference": "Paris is the capital of France."}]
    res = score_probe_items(tiny_model, tiny_tokenizer, items, batch_size=2)
    total_nll, total_tok = 0.0, 0
    for it, r in zip(items, res):
        ctx, cont = oracle_ids(tiny_tokenizer, it["context"], it["reference"])
        assert r["ntokens"] == len(cont)
        assert r["nll"] == pytest.approx(-manual_logprob(tiny_model, ctx, cont)[0], abs=1e-4)
        total_nll += r["nll"]
        total_tok += r["ntokens"]
    nll, score = probe_score(res)
    assert nll == pytest.approx(total_nll / total_tok)
    assert score == pytest.approx(math.exp(-total_nll / total_tok))


def test_probe_score_is_token_weighted():
    nll, score = probe_score([{"nll": 6.0, "ntokens": 3}, {"nll": 2.0, "ntokens": 1}])
    assert nll == pytest.approx(2.0) and score == pytest.approx(math.exp(-2.0))
    with pytest.raises(CalmixError):
        probe_score([])


def manual_greedy(model, ids: list[int], n: int) -> list[int]:
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def test_generate_greedy_batched_left_padding_matches_manual_loop(tiny_model, tiny_tokenizer):
    prompts = ["def f(x):\n    return", "Once upon a time, in a land far away, there", "1 + 1 ="]
    got = generate_greedy(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, batch_size=3)
    for p, g in zip(prompts, got):
        toks = manual_greedy(tiny_model, tiny_tokenizer.encode(p, add_special_tokens=False), 6)
        eos = tiny_tokenizer.eos_token_id
        if eos in toks:
            toks = toks[:toks.index(eos)]
        assert g == tiny_tokenizer.decode(toks, skip_special_tokens=True)


def test_generation_stops_at_stop_sequences():
    assert scorers.cut_at_stop("x = 1\n\nQuestion: next", ["Question:", "\n\n"]) == "x = 1"
    assert scorers.cut_at_stop("no stop here", ["Question:"]) == "no stop here"


def test_missing_tokenizer_and_empty_continuation_are_clear_errors(tiny_model, tiny_tokenizer):
    with pytest.raises(CalmixError, match="no tokenizer"):
        loglikelihood(tiny_model, None, PAIRS)
    with pytest.raises(CalmixError, match="empty continuation"):
        loglikelihood_groups(tiny_model, [([1, 2], [[]])])


# ---------------------------------------------------------------------------------------------- GSM8K extraction
@pytest.mark.parametrize("text,strict,flexible", [
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18", "18"),
    ("So the total is 1,234.\n#### 1,234", "1234", "1234"),
    ("The answer is $1,000.", "1000", "1000"),
    ("The final answer is 7.0", "7", "7"),
    ("He pays 3.50 dollars, then 2 more, so 5.5", None, "5.5"),
    ("#### -4", "-4", "-4"),
    ("The answer is 12. Then I counted 13 sheep.", "12", "13"),
    ("no numbers at all", None, None),
    ("", None, None),
])
def test_gsm8k_extraction_hand_written(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


def test_normalize_number():
    assert normalize_number("$1,200.00") == "1200"
    assert normalize_number("18.") == "18"
    assert normalize_number("0.5") == "0.5"
    assert normalize_number("abc") is None


def test_gsm8k_extraction_on_real_answers(shared):
    rows = [json.loads(line) for line in (shared / "eval/gsm8k/test.jsonl").read_text().splitlines()]
    golds = [gsm8k_gold(r["answer"]) for r in rows]
    assert len(golds) == 1319 and all(g is not None for g in golds)
    assert all(float(g) == float(r["answer"].split("####")[-1].strip().replace(",", "")) for g, r in zip(golds, rows))
    # The reference solution itself: strict and flexible both recover the gold number.
    assert all(extract_strict(r["answer"]) == g for r, g in zip(rows, golds))
    assert sum(extract_flexible(r["answer"]) == g for r, g in zip(rows, golds)) == len(rows)
    # A generation that drops the '####' line: strict fails, flexible finds the last number.
    body = rows[0]["answer"].split("####")[0]
    assert extract_strict(body) is None
    assert extract_flexible(body) == golds[0]


def test_length_batches_rows_and_token_budget():
    from calmix.evals.packing import length_batches

    assert length_batches([10, 9, 8, 2, 2, 2, 1], max_rows=3, max_tokens=100) == [[0, 1, 2], [3, 4, 5], [6]]
    # 3 rows of 10 would pad to 30 > 25 tokens: a new run starts; a single row longer than the budget still runs
    assert length_batches([40, 10, 10, 10, 9], max_rows=16, max_tokens=25) == [[0], [1, 2], [3, 4]]
    # unsorted input: the budget counts the run's longest row
    assert length_batches([2, 2, 12], max_rows=8, max_tokens=24) == [[0, 1], [2]]
    assert length_batches([], 4, 10) == []
    flat = [i for run in length_batches([7, 5, 5, 3, 3, 3, 1], 2, 12) for i in run]
    assert flat == list(range(7))
