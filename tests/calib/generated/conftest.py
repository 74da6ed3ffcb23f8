"""Fixtures of the generator tests: a tiny model that ends every sequence at once, and prefix documents."""

from __future__ import annotations

import pytest
import torch
from torch import nn

DOCS = ["The cat sat on the mat all day long.", "A quick brown fox jumps over the lazy dog.",
        "Paris is the capital of France.", "Water boils at one hundred degrees.", "x",
        "Numbers like 12 and 15 add up to 27.", "In the beginning there was nothing.",
        "Rivers flow into the sea.", "She wrote a letter to her friend.", "Trees grow slowly in winter."]


@pytest.fixture()
def prefix_docs() -> list[str]:
    """Ten short documents for SGS prefixes (one of them, "x", too short for a 2-token prefix)."""
    return list(DOCS)


@pytest.fixture()
def eos_model(tiny_model, tiny_tokenizer) -> nn.Module:
    """The tiny model with all its mass on EOS: zero head weights, a large EOS bias."""
    hidden, vocab = tiny_model.lm_head.in_features, tiny_model.lm_head.out_features
    head = nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tiny_tokenizer.eos_token_id] = 100.0
    tiny_model.lm_head = head
    return tiny_model
