"""Capture and replay of the decoder layers' own calls: replays equal the model's own forward, exactly."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import nn

from calmix.errors import CalmixError
from calmix.models import decoder_layers, tiny_llama
from calmix.prune.capture import activation_device, batches_of, capture_layer_calls

CPU = torch.device("cpu")


class _Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, hidden_states, scale, *, shift=None, note=""):
        out = torch.tanh(self.proj(hidden_states)) * scale
        return (out + shift if shift is not None else out,)


class _Toy(nn.Module):
    """Calls its blocks with the hidden states as a keyword, a positional tensor and keyword extras per layer."""

    def __init__(self, d=8, layers=3, skip_last=False):
        super().__init__()
        self.embed = nn.Embedding(20, d)
        self.layers = nn.ModuleList(_Block(d) for _ in range(layers))
        self.skip_last = skip_last

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        h = self.embed(input_ids)
        n = len(self.layers) - 1 if self.skip_last else len(self.layers)
        for i, layer in enumerate(self.layers[:n]):
            shift = None if attention_mask is None else attention_mask[..., None].float() * (i + 1)
            scale = torch.tensor(1.0 + i)
            if i % 2:  # everything by keyword, the hidden states included
                h = layer(hidden_states=h, scale=scale, shift=shift, note=f"layer {i}")[0]
            else:
                h = layer(h, scale, shift=shift, note=f"layer {i}")[0]
        return h


def _ids(n=5, L=7, seed=0, high=20):
    return torch.randint(0, high, (n, L), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_toy_replay_equals_the_models_own_layer_calls():
    """Every layer replayed on its direct input, with the args and kwargs the model passed, gives the same output."""
    torch.manual_seed(0)
    model = _Toy().eval()
    ids, mask = _ids(), (_ids(seed=1) > 4).long()
    seen: list[list[tuple]] = [[] for _ in model.layers]  # (input, output) of every direct call
    hooks = [layer.register_forward_hook(
        lambda _m, a, kw, o, i=i: seen[i].append((a[0] if a else kw["hidden_states"], o[0])), with_kwargs=True)
        for i, layer in enumerate(model.layers)]
    for b_ids, b_mask in batches_of(ids, mask, 2):
        model(b_ids, b_mask)
    for h in hooks:
        h.remove()

    captured = capture_layer_calls(model, batches_of(ids, mask, 2), CPU, CPU)
    assert len(captured.hidden) == 3 and all(len(c) == 3 for c in captured.calls)
    assert [int(m.shape[0]) for m in captured.masks] == [2, 2, 1]
    for i, layer in enumerate(model.layers):
        for b in range(3):
            x, y = seen[i][b]
            if i == 0:
                assert torch.equal(captured.hidden[b], x)
            args, kwargs = captured.calls[i][b]
            assert float(args[0] if args else kwargs["scale"]) == 1.0 + i and kwargs["note"] == f"layer {i}"
            assert "hidden_states" not in kwargs and len(args) == (0 if i % 2 else 1)
            assert torch.equal(captured.replay(layer, i, b, hidden=x), y)
    assert all(isinstance(layer, _Block) for layer in model.layers)  # recorders are gone


def test_a_model_that_skips_a_layer_is_refused():
    model = _Toy(skip_last=True).eval()
    with pytest.raises(CalmixError, match="did not call every decoder layer once per batch"):
        capture_layer_calls(model, batches_of(_ids(), None, 2), CPU, CPU)
    assert all(isinstance(layer, _Block) for layer in model.layers)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@torch.no_grad()
def test_replay_chain_reproduces_the_models_hidden_states(arch):
    """Replaying layer after layer from the captured layer-0 input gives the model's own hidden states
    (gemma3: different sliding/full attention masks per layer come from the captured kwargs)."""
    if arch == "llama":
        model = tiny_llama(vocab_size=128, layers=3, seed=2)
    else:
        torch.manual_seed(0)
        model = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
            vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, max_position_embeddings=256, head_dim=16, sliding_window=8,
            sliding_window_pattern=2)).eval()
        assert len(set(model.config.layer_types)) == 2  # sliding and full attention layers
    ids = _ids(3, 24, seed=3, high=128)
    mask = torch.ones_like(ids)
    mask[0, 18:] = 0
    own = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    captured = capture_layer_calls(model, batches_of(ids, mask, 3), CPU, CPU)
    layers = decoder_layers(model)
    h = captured.hidden[0]
    torch.testing.assert_close(h, own[0], rtol=0, atol=0)
    for i, layer in enumerate(layers):
        h = captured.replay(layer, i, 0, hidden=h)
        last = i + 1 == len(layers)  # the model's last hidden state is the final norm's output
        torch.testing.assert_close(model.model.norm(h) if last else h, own[i + 1], rtol=1e-6, atol=1e-6)


def test_batches_and_activation_device():
    ids, mask = _ids(5, 4), torch.ones(5, 4, dtype=torch.long)
    batches = batches_of(ids, mask, 2)
    assert [b.shape[0] for b, _ in batches] == [2, 2, 1] and torch.equal(torch.cat([b for b, _ in batches]), ids)
    assert all(m is None for _, m in batches_of(ids, None, 3))
    model = tiny_llama(vocab_size=32)
    assert activation_device(model, ids.numel(), CPU, "cpu") == CPU
    assert activation_device(model, ids.numel(), CPU, "auto") == CPU
    assert activation_device(model, ids.numel(), torch.device("meta"), "device") == torch.device("meta")
    assert activation_device(model, ids.numel(), torch.device("meta"), "cpu") == CPU
