"""calmix.lm against hand-written values and oracles: padding, position ids, special tokens, token NLL, perplexity."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from calmix.errors import CalmixError
from calmix.lm import (bos_prefix, context_ids, eos_tokens, join_token, output_vocab, pad_rows, pad_token,
                       perplexities, positions, sequence_perplexities, start_token, stream_perplexity, token_nll,
                       with_prefix)


def tok(**ids) -> SimpleNamespace:
    """A stand-in tokenizer with only the given special ids (others None)."""
    base = {"bos_token_id": None, "eos_token_id": None, "sep_token_id": None, "pad_token_id": None}
    return SimpleNamespace(**{**base, **ids})


def model_with(config: dict | None = None, generation: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(**(config or {})),
                           generation_config=SimpleNamespace(**(generation or {})))


# ----------------------------------------------------------------------------------------------- padding

def test_pad_rows_right_and_left_by_hand():
    ids, mask = pad_rows([[5, 6, 7], [8], []], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=9, left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows([(1, 2)], width=4)  # a fixed width wider than the rows; tuples work too
    assert ids.tolist() == [[1, 2, 0, 0]] and mask.tolist() == [[1, 1, 0, 0]]
    ids, mask = pad_rows([])
    assert ids.shape == (0, 0) and mask.shape == (0, 0)


def test_positions_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0]]


# ----------------------------------------------------------------------------------------------- special tokens

def test_start_token_prefers_tokenizer_bos_then_model_bos_then_eos():
    assert start_token(tok(bos_token_id=1, eos_token_id=2), model_with({"bos_token_id": 7})) == 1
    assert start_token(tok(eos_token_id=2), model_with({"bos_token_id": 7})) == 7
    assert start_token(tok(eos_token_id=2)) == 2
    with pytest.raises(CalmixError, match="neither a BOS nor an EOS"):
        start_token(tok())


def test_eos_tokens_collect_tokenizer_config_and_generation_ids():
    m = model_with({"eos_token_id": 3}, {"eos_token_id": [4, 5]})
    assert eos_tokens(m, tok(eos_token_id=2)) == {2, 3, 4, 5}
    assert eos_tokens(model_with(), tok()) == set()
    assert eos_tokens(SimpleNamespace(), tok(eos_token_id=2)) == {2}  # a model without configs


def test_join_token_eos_then_sep_then_model_eos():
    assert join_token(tok(eos_token_id=2, sep_token_id=9)) == 2
    assert join_token(tok(sep_token_id=9), model_with({"eos_token_id": 3})) == 9
    assert join_token(tok(), model_with({"eos_token_id": [6, 4]})) == 4
    with pytest.raises(CalmixError, match="no EOS token"):
        join_token(tok())
    with pytest.raises(CalmixError, match="no EOS token"):
        join_token(tok(), model_with())


def test_pad_token_or_default():
    assert pad_token(tok(pad_token_id=0), default=5) == 0  # 0 is a real id, not "missing"
    assert pad_token(tok(), default=5) == 5


def test_special_tokens_of_the_tiny_pair(tiny_model, tiny_tokenizer):
    assert start_token(tiny_tokenizer, tiny_model) == tiny_tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    assert eos_tokens(tiny_model, tiny_tokenizer) == {2}
    assert join_token(tiny_tokenizer, tiny_model) == 2 and pad_token(tiny_tokenizer, 9) == 2
    assert output_vocab(tiny_model) == len(tiny_tokenizer)


def test_bos_prefix_follows_what_the_tokenizer_does(tiny_tokenizer, tiny_bos_tokenizer):
    assert tiny_tokenizer.encode("ab")[:1] != [1] and bos_prefix(tiny_tokenizer) == []
    assert tiny_bos_tokenizer.encode("ab")[:1] == [1] and bos_prefix(tiny_bos_tokenizer) == [1]
    assert bos_prefix(tok(eos_token_id=2)) == []  # no BOS token at all


def test_bos_prefix_reads_add_bos_token_where_it_cannot_probe():
    assert bos_prefix(tok(bos_token_id=7, add_bos_token=True)) == [7]
    assert bos_prefix(tok(bos_token_id=7, add_bos_token=False)) == []


def test_with_prefix_adds_bos_once():
    assert with_prefix([5, 6], [1]) == [1, 5, 6]
    assert with_prefix([1, 5, 6], [1]) == [1, 5, 6]
    assert with_prefix([5, 6], []) == [5, 6]


def test_context_ids_start_with_bos_where_the_tokenizer_adds_one(tiny_tokenizer, tiny_bos_tokenizer):
    plain = tiny_tokenizer.encode("ab", add_special_tokens=False)
    assert context_ids(tiny_tokenizer, "ab") == plain
    assert context_ids(tiny_bos_tokenizer, "ab") == [1] + plain
    assert context_ids(tiny_bos_tokenizer, "") == [1] == context_ids(tiny_tokenizer, "")  # the start token alone
    assert context_ids(tiny_bos_tokenizer, "ab", prefix=[]) == plain


def test_default_tokenizer_adds_no_bos(default_tokenizer):
    assert bos_prefix(default_tokenizer) == []


# ----------------------------------------------------------------------------------------------- NLL / perplexity

def oracle_nll(model, ids: list[int]) -> tuple[float, int]:
    """Sum of next-token NLL of one unpadded sequence: a loop over log_softmax of a plain forward (fp64)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return -sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)), len(ids) - 1


def test_token_nll_matches_the_oracle_on_padded_rows(tiny_model_small_vocab):
    model = tiny_model_small_vocab
    rows = [[5, 9, 200, 17, 4, 4, 31], [8, 3], [100], [12, 13, 14, 15]]
    for left in (False, True):
        ids, mask = pad_rows(rows, pad_id=7, left=left)
        sums, counts = token_nll(model, ids, mask, batch_size=3, progress=False)
        assert counts.tolist() == [6, 1, 0, 3]
        assert sums.dtype == torch.float64
        for got, row in zip(sums.tolist(), rows):
            want = oracle_nll(model, row)[0] if len(row) > 1 else 0.0
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    with pytest.raises(CalmixError, match="2-D input_ids"):
        token_nll(model, torch.tensor([1, 2, 3]))


def test_perplexity_matches_manual_log_softmax_with_padding(tiny_model_small_vocab):
    model = tiny_model_small_vocab
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 256, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    pp = perplexities(model, ids, mask, batch_size=2, progress=False)
    manual = [oracle_nll(model, ids[i][mask[i].bool()].tolist()) for i in range(3)]
    for got, (s, c) in zip(pp["per_sample"], manual):
        assert got == pytest.approx(math.exp(s / c), rel=1e-4)
    assert pp["count"] == [9, 6, 5]
    pooled = math.exp(sum(s for s, _ in manual) / sum(c for _, c in manual))
    assert pp["ppl"] == pytest.approx(pooled, rel=1e-4)
    assert pp["ppl_mean"] == pytest.approx(sum(math.exp(s / c) for s, c in manual) / 3, rel=1e-4)
    # a logits-memory cap of one byte forces one row per forward: same sums
    sums, counts = token_nll(model, ids, mask, batch_size=3, progress=False, max_logit_bytes=1)
    assert sums.tolist() == pytest.approx([s for s, _ in manual], rel=1e-4) and counts.tolist() == [9, 6, 5]


def test_sequence_perplexities_by_the_oracle(tiny_model_small_vocab):
    model = tiny_model_small_vocab
    seqs = [[5, 9, 200, 17], [], [42], [8, 3]]
    got = sequence_perplexities(model, seqs, batch_size=2)
    assert got[1] == math.inf and got[2] == math.inf  # fewer than 2 tokens
    for i in (0, 3):
        s, c = oracle_nll(model, seqs[i])
        assert got[i] == pytest.approx(math.exp(s / c), rel=1e-5)


def test_stream_perplexity_over_windows_drops_the_tail(tiny_model_small_vocab):
    model = tiny_model_small_vocab
    stream = torch.randint(0, 256, (1, 35), generator=torch.Generator().manual_seed(1))
    res = stream_perplexity(model, stream, seqlen=8, batch_size=3, progress=False)
    windows = [stream[0, k * 8:(k + 1) * 8].tolist() for k in range(4)]  # 35 tokens: 4 windows, 3 dropped
    total = sum(oracle_nll(model, w)[0] for w in windows)
    assert res["windows"] == 4 and res["tokens"] == 28 and res["seqlen"] == 8
    assert res["nll"] == pytest.approx(total / 28, rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(total / 28), rel=1e-5)
    assert stream_perplexity(model, stream, seqlen=8, max_windows=2, progress=False)["windows"] == 2
    with pytest.raises(CalmixError, match="fewer than one window"):
        stream_perplexity(model, stream, seqlen=64, progress=False)


def test_stream_perplexity_with_bos_replaces_each_window_start(tiny_model_small_vocab):
    model = tiny_model_small_vocab
    stream = torch.randint(3, 256, (1, 35), generator=torch.Generator().manual_seed(1))
    res = stream_perplexity(model, stream, seqlen=8, progress=False, bos=[1])
    windows = [[1] + stream[0, k * 8 + 1:(k + 1) * 8].tolist() for k in range(4)]
    total = sum(oracle_nll(model, w)[0] for w in windows)
    assert res["windows"] == 4 and res["tokens"] == 28 and res["bos"] == 1  # same windows and targets as without
    assert res["nll"] == pytest.approx(total / 28, rel=1e-5)
    assert stream[0, 0] != 1  # the caller's stream is left as it was
    assert stream_perplexity(model, stream, seqlen=8, progress=False)["bos"] is None


def test_sequence_perplexities_after_a_prefix(tiny_model_small_vocab):
    model = tiny_model_small_vocab
    got = sequence_perplexities(model, [[5, 9, 200], [1, 8, 3], [42], []], prefix=[1])
    for i, seq in ((0, [1, 5, 9, 200]), (1, [1, 8, 3]), (2, [1, 42])):
        s, c = oracle_nll(model, seq)
        assert got[i] == pytest.approx(math.exp(s / c), rel=1e-5)
    assert got[3] == math.inf
