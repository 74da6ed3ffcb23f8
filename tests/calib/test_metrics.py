"""Information metrics against hand-computed values on toy sequences (perplexity itself: tests/test_lm.py)."""

from __future__ import annotations

import math

import pytest
import torch

from calmix.calib.calibset import CalibSet
from calmix.calib.metrics import (agg4, agg4_pooled, compression_ratio, distinct_n, distinct_n_pooled,
                                  format_metrics, ngrams, repetition, set_metrics, unigram_entropy, vocab_coverage,
                                  zipf_exponent)
from calmix.errors import CalmixError

# Toy sequence used throughout: counts {1: 3, 2: 3, 3: 2}, 8 tokens.
TOY = [1, 2, 3, 1, 2, 3, 1, 2]


def test_ngrams_and_distinct_by_hand():
    assert ngrams([1, 2, 3], 2) == [(1, 2), (2, 3)]
    # unigrams: 8 total, 3 distinct
    assert distinct_n(TOY, 1) == pytest.approx(3 / 8)
    # bigrams: 12 23 31 12 23 31 12 -> 7 total, 3 distinct
    assert distinct_n(TOY, 2) == pytest.approx(3 / 7)
    # trigrams: 123 231 312 123 231 312 -> 6 total, 3 distinct
    assert distinct_n(TOY, 3) == pytest.approx(3 / 6)
    # 4-grams: 1231 2312 3123 1231 2312 -> 5 total, 3 distinct
    assert distinct_n(TOY, 4) == pytest.approx(3 / 5)
    assert math.isnan(distinct_n([1, 2, 3], 4))


def test_agg4_by_hand():
    # 5 four-gram occurrences, the 4th (1231) and 5th (2312) repeat earlier ones -> 2/5
    assert agg4(TOY) == pytest.approx(0.4)
    assert agg4([1, 2, 3, 4, 5, 6]) == 0.0
    assert agg4([7] * 10) == pytest.approx(6 / 7)  # 7 four-grams, all equal: 6 repeat the first


def test_agg4_pooled_stays_inside_samples():
    a, b = [1, 2, 3, 4, 5], [1, 2, 3, 4, 6]
    # pooled 4-grams: 1234 2345 | 1234 2346 -> 4 total, 3 distinct -> agg4 = 1/4
    assert agg4_pooled([a, b]) == pytest.approx(0.25)
    assert agg4(a) == 0.0 and agg4(b) == 0.0
    # the concatenation would add 4-grams across the border (3451, 4512, 5123), which pooling must not do
    assert agg4(a + b) == pytest.approx(1 / 7)
    assert distinct_n_pooled([a, b], 1) == pytest.approx(6 / 10)


def test_repetition_by_hand():
    # tokens 4..8 (1,2,3,1,2) were seen before -> 5/8
    assert repetition(TOY) == pytest.approx(5 / 8)
    assert repetition([4, 5, 6]) == 0.0
    assert math.isnan(repetition([]))


def test_vocab_coverage_by_hand():
    assert vocab_coverage(TOY, 10) == pytest.approx(0.3)
    with pytest.raises(CalmixError):
        vocab_coverage(TOY, 0)


def test_unigram_entropy_by_hand():
    # p = (3/8, 3/8, 2/8): H = -2*(3/8)log2(3/8) - (1/4)log2(1/4) = 0.75*1.4150375 + 0.5 = 1.5612781
    assert unigram_entropy(TOY) == pytest.approx(1.5612781244591327, abs=1e-9)
    assert unigram_entropy([5, 5, 5]) == 0.0
    assert unigram_entropy([1, 2, 3, 4]) == pytest.approx(2.0)


def test_zipf_exponent_by_hand():
    # freqs by rank: 3, 3, 2 -> x = ln(1,2,3), y = ln(3,3,2); slope = cov(x,y)/var(x)
    x = [0.0, math.log(2), math.log(3)]
    y = [math.log(3), math.log(3), math.log(2)]
    mx, my = sum(x) / 3, sum(y) / 3
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
    assert zipf_exponent(TOY) == pytest.approx(-slope, abs=1e-9)
    assert zipf_exponent(TOY) == pytest.approx(0.3293, abs=1e-4)  # worked out by hand: 0.20328 / 0.61727
    # an exact power law f = 12/r over ranks 1..4 (12, 6, 4, 3) has s = 1
    ids = [0] * 12 + [1] * 6 + [2] * 4 + [3] * 3
    assert zipf_exponent(ids) == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(zipf_exponent([4, 4, 4]))


def test_compression_ratio_by_hand():
    # zlib of b"abc": 2-byte header + deflate fixed block (3 header bits + 3*8 literal bits + 7 EOB bits = 34 bits
    # -> 5 bytes) + 4-byte adler32 = 11 bytes -> 3/11
    assert compression_ratio("abc") == pytest.approx(3 / 11)
    assert compression_ratio("ab" * 500) > compression_ratio("the quick brown fox jumps")
    assert math.isnan(compression_ratio(""))


def test_set_metrics_without_tokenizer(tiny_model_small_vocab):
    calib = CalibSet(torch.tensor([TOY, [1, 2, 3, 4, 5, 6, 7, 8]]), None, {})
    res = set_metrics(calib, model=tiny_model_small_vocab)
    assert set(res) == {"set", "samples", "definitions"}
    s0 = res["samples"][0]
    assert s0["agg4"] == pytest.approx(0.4)
    assert s0["repetition"] == pytest.approx(5 / 8)
    assert s0["vocab_coverage"] == pytest.approx(3 / 256)
    assert s0["compression"] is None
    # pooled 4-grams: 5 from TOY (3 distinct) + 5 all new -> 10 total, 8 distinct
    assert res["set"]["agg4"] == pytest.approx(0.2)
    assert res["set"]["agg4_mean"] == pytest.approx(0.2)
    # repetition over the set: (5 + 0) / 16
    assert res["set"]["repetition"] == pytest.approx(5 / 16)
    assert res["set"]["vocab_coverage"] == pytest.approx(8 / 256)
    assert res["set"]["ppl"] > 1 and len(res["samples"]) == 2 and "ppl" in s0
    table = format_metrics(res)
    assert "agg4" in table and "per-sample" in table and len(table.splitlines()) > 10


def test_set_metrics_respects_mask_and_decodes(tiny_tokenizer):
    ids = torch.tensor([TOY, [1, 2, 3, 4, 5, 6, 0, 0]])
    mask = torch.tensor([[1] * 8, [1] * 6 + [0, 0]])
    res = set_metrics(CalibSet(ids, mask, {}), tokenizer=tiny_tokenizer)
    assert res["samples"][1]["ntokens"] == 6
    assert res["samples"][1]["distinct_1"] == 1.0  # padding zeros ignored
    text = tiny_tokenizer.decode(TOY)
    assert res["samples"][0]["compression"] == pytest.approx(compression_ratio(text))
    assert res["samples"][0]["vocab_coverage"] == pytest.approx(3 / len(tiny_tokenizer))


def _oracle_ppl(model, ids: list[int]) -> float:
    """exp(mean next-token NLL) of one unpadded sequence: log_softmax of a plain forward (fp64)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return math.exp(-sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)) / (len(ids) - 1))


def test_set_perplexity_scores_samples_after_bos(tiny_model, tiny_tokenizer, tiny_bos_tokenizer):
    rows = [[40, 41, 42, 43, 44, 45], [1, 50, 51, 52, 53, 54]]  # the second already starts with BOS
    mask = torch.tensor([[1] * 6, [1] * 6])
    calib = CalibSet(torch.tensor(rows), mask, {})
    with_bos = set_metrics(calib, model=tiny_model, tokenizer=tiny_bos_tokenizer)
    plain = set_metrics(calib, model=tiny_model, tokenizer=tiny_tokenizer)
    assert with_bos["samples"][0]["ppl"] == pytest.approx(_oracle_ppl(tiny_model, [1] + rows[0]), rel=1e-5)
    assert with_bos["samples"][1]["ppl"] == pytest.approx(_oracle_ppl(tiny_model, rows[1]), rel=1e-5)
    assert plain["samples"][0]["ppl"] == pytest.approx(_oracle_ppl(tiny_model, rows[0]), rel=1e-5)
    assert with_bos["samples"][0]["ntokens"] == plain["samples"][0]["ntokens"] == 6  # BOS is not sample text
