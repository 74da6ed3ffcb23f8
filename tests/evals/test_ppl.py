"""Dataset perplexity: windows start with BOS where the tokenizer adds one, with the same windows and targets."""

from __future__ import annotations

import math

import pytest
import torch

from calmix.evals.ppl import dataset_perplexity


def _oracle(model, windows: list[list[int]]) -> float:
    """exp(mean NLL of tokens 2..L of each window), from log_softmax of plain forwards (fp64)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logp = torch.log_softmax(model(input_ids=torch.tensor([w])).logits[0].double(), -1)
            total -= sum(float(logp[t - 1, w[t]]) for t in range(1, len(w)))
            count += len(w) - 1
    return math.exp(total / count)


def test_file_perplexity_with_and_without_bos(tmp_path, tiny_model, tiny_tokenizer, tiny_bos_tokenizer):
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 4)
    ids = tiny_tokenizer.encode(path.read_text(), add_special_tokens=False)
    windows = [ids[k * 16:(k + 1) * 16] for k in range(len(ids) // 16)]
    plain = dataset_perplexity(tiny_model, tiny_tokenizer, str(path), seqlen=16, progress=False)
    bos = dataset_perplexity(tiny_model, tiny_bos_tokenizer, str(path), seqlen=16, progress=False)
    off = dataset_perplexity(tiny_model, tiny_bos_tokenizer, str(path), seqlen=16, progress=False, bos=False)
    assert plain["bos"] is None and off["bos"] is None and bos["bos"] == 1
    assert plain["windows"] == bos["windows"] == len(windows) and plain["tokens"] == bos["tokens"] == 15 * len(windows)
    assert plain["ppl"] == pytest.approx(_oracle(tiny_model, windows), rel=1e-5) == off["ppl"]
    assert bos["ppl"] == pytest.approx(_oracle(tiny_model, [[1] + w[1:] for w in windows]), rel=1e-5)
