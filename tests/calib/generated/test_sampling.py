"""The batched KV-cache sampler and its pieces: temperature schedule, logit filters, repetition penalty, draws."""

from __future__ import annotations

import pytest
import torch

from calmix.calib.generated.sampling import (TempSchedule, apply_repetition_penalty, filter_logits, generate,
                                             sample_rows)


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


def test_sample_rows_follows_probs_and_skips_zeros():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    idx = sample_rows(probs, g)
    first, second = idx[0::2], idx[1::2]
    assert set(second.tolist()) == {0}
    assert not ((first == 0) | (first == 2)).any()
    freq = torch.bincount(first, minlength=5).double() / len(first)
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.5, 0.0, 0.25, 0.25], dtype=torch.float64), atol=0.03, rtol=0)
    assert torch.equal(idx, sample_rows(probs, torch.Generator().manual_seed(0)))  # seeded


def test_left_padding_matches_single_rows(tiny_model, tiny_tokenizer):
    a, b = [72, 101, 108], [17]
    batched = generate(tiny_model, tiny_tokenizer, [a, b], 6, temperature=0.0, batch_size=2)
    single = [generate(tiny_model, tiny_tokenizer, [p], 6, temperature=0.0, batch_size=1)[0] for p in (a, b)]
    assert batched == single
    assert all(len(x) == 6 for x in batched)


def test_generate_deterministic_and_schedule_called(tiny_model, tiny_tokenizer):
    steps = []

    def sched(i):
        steps.append(i)
        return 1.0

    one = generate(tiny_model, tiny_tokenizer, [[1]] * 3, 5, seed=3, temperature=sched, batch_size=3)
    assert steps == [0, 1, 2, 3, 4]
    assert one == generate(tiny_model, tiny_tokenizer, [[1]] * 3, 5, seed=3, batch_size=3)
    assert one != generate(tiny_model, tiny_tokenizer, [[1]] * 3, 5, seed=4, batch_size=3)
    # a schedule at temperature 0 is greedy
    greedy = generate(tiny_model, tiny_tokenizer, [[1]], 4, temperature=0.0)
    assert generate(tiny_model, tiny_tokenizer, [[1]], 4, temperature=TempSchedule(0.0, 0.0, 2)) == greedy


def test_stop_at_eos_and_first_token_restriction(eos_model, tiny_tokenizer):
    assert generate(eos_model, tiny_tokenizer, [[1], [1, 5]], 8, batch_size=2) == [[], []]
    # forcing the first token: it is kept, then the model stops at EOS
    out = generate(eos_model, tiny_tokenizer, [[1], [1]], 8, first_token_ids=[100], batch_size=2)
    assert out == [[100], [100]]
