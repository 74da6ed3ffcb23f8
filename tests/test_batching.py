"""calmix.batching: bytes per row from a model config, batch sizes from free memory, halve-and-retry."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from calmix.batching import (LOGIT_BYTES, fit_batch, head_dim, kv_bytes_per_token, memory_batch, row_bytes)
from calmix.calib.generated.sampling import generate
from calmix.errors import CalmixError
from calmix.models import tiny_llama

# LLaMA-3.1-8B's attention shape
LLAMA8B = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=32,
                      intermediate_size=14336, vocab_size=128256)


def test_kv_bytes_of_llama_8b_by_hand():
    # keys + values, 32 layers, 8 KV heads of 4096 / 32 = 128, 2 bytes in bf16
    assert head_dim(LLAMA8B) == 128
    assert kv_bytes_per_token(LLAMA8B, torch.bfloat16) == 2 * 32 * 8 * 128 * 2 == 131072
    # a 2048-token row: 256 MiB of cache; 64 rows (the old fixed batch) 16 GiB
    assert 64 * 2048 * kv_bytes_per_token(LLAMA8B, torch.bfloat16) == 16 * 2**30


def test_head_dim_explicit_and_kv_heads_default():
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=None, num_hidden_layers=3,
                      head_dim=32)
    assert kv_bytes_per_token(cfg, torch.float32) == 2 * 3 * 4 * 32 * 4


def test_row_bytes_adds_cache_logits_and_scores():
    base = row_bytes(LLAMA8B, torch.bfloat16, 100, logit_positions=0)
    assert base == 100 * (4 * 4096 + 3 * 14336) * 2
    assert row_bytes(LLAMA8B, torch.bfloat16, 100, cache=True, logit_positions=1) == (
        base + 100 * 131072 + 128256 * LOGIT_BYTES)
    assert row_bytes(LLAMA8B, torch.bfloat16, 100, logit_positions=0, attention_scores=True) == (
        base + 32 * 100 * 100 * LOGIT_BYTES)


def test_fit_batch_caps_floors_and_unknown_memory():
    assert fit_batch(64, 100, 10**9) == 64  # ample memory: the caller's batch
    assert fit_batch(64, 100, 1000, share=0.8) == 8  # 800 bytes / 100 per row
    assert fit_batch(64, 10**6, 10) == 1  # never below one row
    assert fit_batch(8, 100, None) == 8
    with pytest.raises(CalmixError):
        fit_batch(0, 100, 1000)


def test_memory_batch_is_the_cap_on_this_cpu_for_a_tiny_model():
    model = tiny_llama()
    assert memory_batch(model, 64, 128, "cpu", cache=True, logit_positions=1) == 64


class OOMAbove(LlamaForCausalLM):
    """A tiny LLaMA that fails like a full device when a forward gets more than `limit` rows."""

    limit = 3
    rows_seen: list

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        self.rows_seen.append(int(input_ids.shape[0]))
        if input_ids.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep,
                               **kwargs)


def test_generation_halves_on_out_of_memory_and_says_so_once(tiny_tokenizer, caplog):
    model = tiny_llama(seed=3)
    prompts = [[1, 40 + i, 50 + i] for i in range(7)]
    reference = generate(model, tiny_tokenizer, prompts, 5, seed=11, batch_size=2)
    small = tiny_llama(seed=3)
    small.__class__ = OOMAbove
    small.rows_seen = []
    with caplog.at_level(logging.WARNING, logger="calmix.batching"):
        got = generate(small, tiny_tokenizer, prompts, 5, seed=11, batch_size=8)
    assert got == reference  # batches of 8 (7 rows) -> 4 -> 2: the output of batches of 2 from the start
    assert small.rows_seen[0] == 7 and 4 in small.rows_seen and small.rows_seen[-1] <= 2
    warnings = [r for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == 1 and "batches of 8" in warnings[0].getMessage()


def test_out_of_memory_at_one_row_is_a_one_line_error(tiny_tokenizer):
    model = tiny_llama(seed=3)
    model.__class__ = OOMAbove
    model.rows_seen, model.limit = [], 0
    with pytest.raises(CalmixError, match="out of memory even one row at a time"):
        generate(model, tiny_tokenizer, [[1, 40]], 3, batch_size=4)


def test_other_errors_are_not_retried(tiny_tokenizer):
    from calmix.batching import halving

    calls = []

    def run(rows):
        calls.append(rows)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        halving(run, 8, "x")
    assert calls == [8]
