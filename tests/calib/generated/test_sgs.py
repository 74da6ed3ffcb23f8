"""SGS on the tiny in-process model: prefixes, the perplexity drop, windows of the kept generations."""

from __future__ import annotations

import math

import pytest
import torch

from calmix.calib.generated import generate_set
from calmix.calib.generated.sgs import prefix_paragraphs
from calmix.errors import CalmixError


def _manual_ppl(model, ids):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    nll = -sum(logp[t, ids[t + 1]].item() for t in range(len(ids) - 1))
    return math.exp(nll / (len(ids) - 1))


def test_generation_with_no_tokens_is_an_error(eos_model, tiny_tokenizer, prefix_docs):
    with pytest.raises(CalmixError, match="generation returned no tokens"):
        generate_set("sgs", eos_model, tiny_tokenizer, 2, 8, prefix_docs=prefix_docs)


def test_sgs_drops_exactly_the_top_fraction_by_perplexity(tiny_model, tiny_tokenizer, prefix_docs):
    s = generate_set("sgs", tiny_model, tiny_tokenizer, 4, 12, seed=0,
                     params={"ngen": "10", "gen_len": "8", "batch_size": "4"}, prefix_docs=prefix_docs)
    gens = s.card["generations"]
    assert len(gens) == 10 and s.card["ndropped"] == 2
    ppl = [_manual_ppl(tiny_model, g["ids"]) for g in gens]
    for g, p in zip(gens, ppl):
        assert g["ppl"] == pytest.approx(p, rel=1e-4)
    worst = sorted(range(10), key=lambda i: -ppl[i])[:2]
    assert sorted(i for i, g in enumerate(gens) if not g["kept"]) == sorted(worst)
    # prefixes: the first 2 tokens of source documents (never the 1-token doc "x")
    firsts = {tuple(tiny_tokenizer.encode(d, add_special_tokens=False)[:2]) for d in prefix_docs if d != "x"}
    assert all(tuple(g["prefix"]) in firsts and g["ids"][:2] == g["prefix"] for g in gens)
    # windows come from the kept generations joined with EOS
    eos = tiny_tokenizer.eos_token_id
    stream = [t for g in gens if g["kept"] for t in g["ids"] + [eos]]
    for row, start in zip(s.input_ids.tolist(), s.card["window_starts"]):
        assert row == stream[start:start + 12]
    assert s.input_ids.shape == (4, 12)
    again = generate_set("sgs", tiny_model, tiny_tokenizer, 4, 12, seed=0,
                         params={"ngen": "10", "gen_len": "8", "batch_size": "4"}, prefix_docs=prefix_docs)
    assert torch.equal(s.input_ids, again.input_ids)
    assert s.card["params"]["temperature"] == 0.6 and s.card["params"]["top_k"] == 50
    # default generation count: oversample * nsamples * seqlen / gen_len / (1 - drop) = 2 * 4 * 12 / 8 / 0.8 = 15
    more = generate_set("sgs", tiny_model, tiny_tokenizer, 4, 12, params={"gen_len": "8", "oversample": "2"},
                        prefix_docs=prefix_docs)
    assert len(more.card["generations"]) == 15 and more.card["ndropped"] == 3


def test_large_seed_and_registered_prefix_source(tiny_model, tiny_tokenizer):
    big = 3046529978703555959  # builders pass hashed seeds near 2**63
    s = generate_set("sgs", tiny_model, tiny_tokenizer, 2, 8, seed=big,
                     params={"source": "pydoc-topics", "ngen": "3", "gen_len": "6", "drop": "0.34"})
    assert s.input_ids.shape == (2, 8) and s.card["prefix_source"] == "pydoc-topics" and s.card["ndropped"] == 1
    with pytest.raises(CalmixError):
        generate_set("sgs", tiny_model, tiny_tokenizer, 2, 8, params={"source": "no-such-source", "ngen": "2"})


def test_prefix_paragraphs_skip_headings_and_rules():
    doc = " \n = Homarus gammarus = \n \n Homarus gammarus , known as the lobster\n****\n2 lobsters\n"
    assert prefix_paragraphs([doc, "Plain text."]) == ["Homarus gammarus , known as the lobster", "2 lobsters",
                                                       "Plain text."]
