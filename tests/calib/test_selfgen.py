"""Batched sampler, Self-Cal and SGS on the tiny in-process model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from calmix.calib.selfgen import (TempSchedule, apply_repetition_penalty, filter_logits, generate, generate_set,
                                  parse_params, prefix_paragraphs, SelfCalParams, stopword_token_ids)
from calmix.errors import CalmixError

DOCS = ["The cat sat on the mat all day long.", "A quick brown fox jumps over the lazy dog.",
        "Paris is the capital of France.", "Water boils at one hundred degrees.", "x",
        "Numbers like 12 and 15 add up to 27.", "In the beginning there was nothing.",
        "Rivers flow into the sea.", "She wrote a letter to her friend.", "Trees grow slowly in winter."]


def _eos_model(model, eos: int) -> nn.Module:
    """Make the model put all its mass on EOS: zero head weights, a large EOS bias."""
    hidden, vocab = model.lm_head.in_features, model.lm_head.out_features
    head = nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[eos] = 100.0
    model.lm_head = head
    return model


def test_temperature_schedule_values():
    s = TempSchedule(2.0, 1.0, 5)  # linear over tokens 0..4, then flat
    assert [s(i) for i in range(7)] == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0, 1.0, 1.0])
    assert TempSchedule(1.0, 1.0, 10)(3) == 1.0
    assert [TempSchedule(0.5, 1.5, 1)(i) for i in range(3)] == [0.5, 1.5, 1.5]
    assert TempSchedule(0.5, 1.5, 0)(0) == 1.5


def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isinf(out).tolist() == [[True, False, False, True]]
    probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # mass of better tokens: 0, 0.5, 0.8, 0.95 -> with top_p=0.7 keep the first two
    assert torch.isfinite(filter_logits(probs, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(probs, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(probs, top_p=0.01)).sum() == 1


def test_repetition_penalty_ctrl_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def test_left_padding_matches_single_rows(tiny_model, default_tokenizer):
    a, b = [504, 2644, 314], [17]
    batched = generate(tiny_model, default_tokenizer, [a, b], 6, temperature=0.0, batch_size=2)
    single = [generate(tiny_model, default_tokenizer, [p], 6, temperature=0.0, batch_size=1)[0] for p in (a, b)]
    assert batched == single
    assert all(len(x) == 6 for x in batched)


def test_generate_deterministic_and_schedule_called(tiny_model, default_tokenizer):
    steps = []

    def sched(i):
        steps.append(i)
        return 1.0

    one = generate(tiny_model, default_tokenizer, [[1]] * 3, 5, seed=3, temperature=sched, batch_size=3)
    assert steps == [0, 1, 2, 3, 4]
    assert one == generate(tiny_model, default_tokenizer, [[1]] * 3, 5, seed=3, batch_size=3)
    assert one != generate(tiny_model, default_tokenizer, [[1]] * 3, 5, seed=4, batch_size=3)
    # a schedule at temperature 0 is greedy
    greedy = generate(tiny_model, default_tokenizer, [[1]], 4, temperature=0.0)
    assert generate(tiny_model, default_tokenizer, [[1]], 4, temperature=TempSchedule(0.0, 0.0, 2)) == greedy


def test_stop_at_eos_and_first_token_restriction(tiny_model, default_tokenizer):
    eos = default_tokenizer.eos_token_id
    model = _eos_model(tiny_model, eos)
    assert generate(model, default_tokenizer, [[1], [1, 5]], 8, batch_size=2) == [[], []]
    # forcing the first token: it is kept, then the model stops at EOS
    out = generate(model, default_tokenizer, [[1], [1]], 8, first_token_ids=[504], batch_size=2)
    assert out == [[504], [504]]


def test_generation_with_no_tokens_is_an_error(tiny_model, default_tokenizer):
    model = _eos_model(tiny_model, default_tokenizer.eos_token_id)
    with pytest.raises(CalmixError, match="generation returned no tokens"):
        generate_set("selfcal", model, default_tokenizer, 2, 8)
    with pytest.raises(CalmixError, match="generation returned no tokens"):
        generate_set("sgs", model, default_tokenizer, 2, 8, prefix_docs=DOCS)


def test_stopword_first_token(tiny_model, default_tokenizer):
    ids = stopword_token_ids(default_tokenizer)
    assert default_tokenizer.encode("The", add_special_tokens=False)[0] in ids
    out = generate(tiny_model, default_tokenizer, [[1]] * 6, 3, first_token_ids=ids, batch_size=6, seed=1)
    assert all(o[0] in ids for o in out)
    s = generate_set("selfcal", tiny_model, default_tokenizer, 2, 12,
                     params={"stopword_first": "1", "gen_len": "6", "batch_size": "4"})
    assert s.card["first_token_ids"] == ids
    words = {default_tokenizer.decode([i]) for i in ids}
    assert all(any(t.startswith(w) for w in words) for t in s.card["texts"])


def test_selfcal_shape_determinism_and_packing(tiny_model, default_tokenizer):
    eos = default_tokenizer.eos_token_id
    a = generate_set("selfcal", tiny_model, default_tokenizer, 3, 16, seed=0, params={"gen_len": 5})
    b = generate_set("selfcal", tiny_model, default_tokenizer, 3, 16, seed=0, params={"gen_len": 5})
    c = generate_set("selfcal", tiny_model, default_tokenizer, 3, 16, seed=1, params={"gen_len": 5})
    assert a.input_ids.shape == (3, 16)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    flat = a.input_ids.flatten()
    # 5-token generations joined with EOS: every 6th token is EOS
    assert (flat[5::6] == eos).all()
    card = a.card
    assert card["kind"] == "selfcal" and card["params"]["t_initial"] == 1.0 and card["params"]["n"] == 10
    assert card["params"]["gen_len"] == 5 and card["ngenerations"] == math.ceil(48 / 5)
    assert len(card["texts"]) == card["ngenerations"]


def _manual_ppl(model, ids):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    nll = -sum(logp[t, ids[t + 1]].item() for t in range(len(ids) - 1))
    return math.exp(nll / (len(ids) - 1))


def test_sgs_drops_exactly_the_top_fraction_by_perplexity(tiny_model, default_tokenizer):
    s = generate_set("sgs", tiny_model, default_tokenizer, 4, 12, seed=0,
                     params={"ngen": "10", "gen_len": "8", "batch_size": "4"}, prefix_docs=DOCS)
    gens = s.card["generations"]
    assert len(gens) == 10 and s.card["ndropped"] == 2
    ppl = [_manual_ppl(tiny_model, g["ids"]) for g in gens]
    for g, p in zip(gens, ppl):
        assert g["ppl"] == pytest.approx(p, rel=1e-4)
    worst = sorted(range(10), key=lambda i: -ppl[i])[:2]
    assert sorted(i for i, g in enumerate(gens) if not g["kept"]) == sorted(worst)
    # prefixes: the first 2 tokens of source documents (never the 1-token doc "x")
    firsts = {tuple(default_tokenizer.encode(d, add_special_tokens=False)[:2]) for d in DOCS if d != "x"}
    assert all(tuple(g["prefix"]) in firsts and g["ids"][:2] == g["prefix"] for g in gens)
    # windows come from the kept generations joined with EOS
    eos = default_tokenizer.eos_token_id
    stream = [t for g in gens if g["kept"] for t in g["ids"] + [eos]]
    for row, start in zip(s.input_ids.tolist(), s.card["window_starts"]):
        assert row == stream[start:start + 12]
    assert s.input_ids.shape == (4, 12)
    again = generate_set("sgs", tiny_model, default_tokenizer, 4, 12, seed=0,
                         params={"ngen": "10", "gen_len": "8", "batch_size": "4"}, prefix_docs=DOCS)
    assert torch.equal(s.input_ids, again.input_ids)
    assert s.card["params"]["temperature"] == 0.6 and s.card["params"]["top_k"] == 50
    # default generation count: oversample * nsamples * seqlen / gen_len / (1 - drop) = 2 * 4 * 12 / 8 / 0.8 = 15
    more = generate_set("sgs", tiny_model, default_tokenizer, 4, 12, params={"gen_len": "8", "oversample": "2"},
                        prefix_docs=DOCS)
    assert len(more.card["generations"]) == 15 and more.card["ndropped"] == 3


def test_params_parsing_and_errors():
    p = parse_params(SelfCalParams, {"t_initial": "1.5", "n": "4", "stopword_first": "yes", "gen_len": "none"}, "x")
    assert p.t_initial == 1.5 and p.n == 4 and p.stopword_first is True and p.gen_len is None
    with pytest.raises(CalmixError, match="valid keys: t_initial"):
        parse_params(SelfCalParams, {"bogus": "1"}, "selfcal")
    with pytest.raises(CalmixError, match="not a valid int"):
        parse_params(SelfCalParams, {"n": "ten"}, "selfcal")
    with pytest.raises(CalmixError, match="top_p"):
        parse_params(SelfCalParams, {"top_p": "0"}, "selfcal")
    with pytest.raises(CalmixError, match="unknown self-generated set"):
        generate_set("nope", None, None, 1, 8)


def test_large_seed_and_registered_prefix_source(tiny_model, default_tokenizer):
    big = 3046529978703555959  # builders pass hashed seeds near 2**63
    s = generate_set("sgs", tiny_model, default_tokenizer, 2, 8, seed=big,
                     params={"source": "pydoc-topics", "ngen": "3", "gen_len": "6", "drop": "0.34"})
    assert s.input_ids.shape == (2, 8) and s.card["prefix_source"] == "pydoc-topics" and s.card["ndropped"] == 1
    assert generate_set("selfcal", tiny_model, default_tokenizer, 1, 8, seed=big).input_ids.shape == (1, 8)
    with pytest.raises(CalmixError):
        generate_set("sgs", tiny_model, default_tokenizer, 2, 8, params={"source": "no-such-source", "ngen": "2"})


def test_prefix_paragraphs_skip_headings_and_rules():
    doc = " \n = Homarus gammarus = \n \n Homarus gammarus , known as the lobster\n****\n2 lobsters\n"
    assert prefix_paragraphs([doc, "Plain text."]) == ["Homarus gammarus , known as the lobster", "2 lobsters",
                                                       "Plain text."]


def test_sample_rows_follows_probs_and_skips_zeros():
    from calmix.calib.selfgen import sample_rows

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    idx = sample_rows(probs, g)
    first, second = idx[0::2], idx[1::2]
    assert set(second.tolist()) == {0}
    assert not ((first == 0) | (first == 2)).any()
    freq = torch.bincount(first, minlength=5).double() / len(first)
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.5, 0.0, 0.25, 0.25], dtype=torch.float64), atol=0.03, rtol=0)
    assert torch.equal(idx, sample_rows(probs, torch.Generator().manual_seed(0)))  # seeded
