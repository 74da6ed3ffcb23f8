"""Self-Cal on the tiny in-process model: shape, determinism, packing with EOS, stop-word first tokens."""

from __future__ import annotations

import math

import pytest
import torch

from calmix.calib.generated import generate_set
from calmix.calib.generated.common import stopword_token_ids
from calmix.calib.generated.sampling import generate
from calmix.errors import CalmixError


def test_generation_with_no_tokens_is_an_error(eos_model, tiny_tokenizer):
    with pytest.raises(CalmixError, match="generation returned no tokens"):
        generate_set("selfcal", eos_model, tiny_tokenizer, 2, 8)


def test_stopword_ids_of_the_default_tokenizer(default_tokenizer):
    ids = stopword_token_ids(default_tokenizer)
    assert default_tokenizer.encode("The", add_special_tokens=False)[0] in ids


def test_stopword_first_token(tiny_model, tiny_tokenizer):
    ids = stopword_token_ids(tiny_tokenizer)
    # byte-level, no merges: the only one-token stop words are "a" and "i", in STOPWORDS order, each cased twice
    assert ids == tiny_tokenizer.convert_tokens_to_ids(["a", "A", "i", "I"])
    out = generate(tiny_model, tiny_tokenizer, [[1]] * 6, 3, first_token_ids=ids, batch_size=6, seed=1)
    assert all(o[0] in ids for o in out)
    s = generate_set("selfcal", tiny_model, tiny_tokenizer, 2, 12,
                     params={"stopword_first": "1", "gen_len": "6", "batch_size": "4"})
    assert s.card["first_token_ids"] == ids
    words = {tiny_tokenizer.decode([i]) for i in ids}
    assert all(any(t.startswith(w) for w in words) for t in s.card["texts"])


def test_selfcal_shape_determinism_and_packing(tiny_model, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    a = generate_set("selfcal", tiny_model, tiny_tokenizer, 3, 16, seed=0, params={"gen_len": 5})
    b = generate_set("selfcal", tiny_model, tiny_tokenizer, 3, 16, seed=0, params={"gen_len": 5})
    c = generate_set("selfcal", tiny_model, tiny_tokenizer, 3, 16, seed=1, params={"gen_len": 5})
    assert a.input_ids.shape == (3, 16)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    flat = a.input_ids.flatten()
    # 5-token generations joined with EOS: every 6th token is EOS
    assert (flat[5::6] == eos).all()
    card = a.card
    assert card["kind"] == "selfcal" and card["params"]["t_initial"] == 1.0 and card["params"]["n"] == 10
    assert card["params"]["gen_len"] == 5 and card["ngenerations"] == math.ceil(48 / 5)
    assert len(card["texts"]) == card["ngenerations"]


def test_large_seed(tiny_model, tiny_tokenizer):
    big = 3046529978703555959  # builders pass hashed seeds near 2**63
    assert generate_set("selfcal", tiny_model, tiny_tokenizer, 1, 8, seed=big).input_ids.shape == (1, 8)
