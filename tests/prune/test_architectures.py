"""The engine prunes tiny random models of several decoder architectures, found by structure alone."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from calmix.models import decoder_layers
from calmix.prune.engine import PruneConfig, model_sparsity, prune_model

COMMON = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=256)

ARCHS = {
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**COMMON, num_key_value_heads=2)),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**COMMON, num_key_value_heads=2)),
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=8)),
    "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=16,
                                                            sliding_window=8)),
    "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**COMMON, num_key_value_heads=2, head_dim=16,
                                                                sliding_window=8, sliding_window_pattern=2)),
    "opt": lambda: tf.OPTForCausalLM(tf.OPTConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, ffn_dim=128, word_embed_proj_dim=64,
                                                   max_position_embeddings=256)),
    "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**COMMON)),
}


@pytest.mark.parametrize("sequential", ["layer", "linear"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_engine_prunes_architecture(arch, sequential):
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    model.config.use_cache = False
    calib = torch.randint(3, 128, (4, 24), generator=torch.Generator().manual_seed(0))
    before = model(calib).logits
    report = prune_model(model, calib, PruneConfig("sparsegpt", 0.5, batch_size=2, sequential=sequential),
                          progress=False)
    layers = decoder_layers(model)
    assert len(layers) == 2
    assert report.layers and all(abs(r.sparsity - 0.5) < 0.02 for r in report.layers)
    assert model_sparsity(model)["overall"] == pytest.approx(0.5, abs=0.02)
    after = model(calib).logits
    assert torch.isfinite(after).all() and not torch.equal(before, after)


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_replayed_inputs_equal_the_models_own_hidden_states(arch):
    """Layer 1 is pruned from inputs replayed through layer 0 with its captured kwargs (gemma3: per-layer
    sliding/full masks); the result equals SparseGPT on H built from the model's own hidden states."""
    from calmix.prune.sparsegpt import hessian_from_inputs, sparsegpt_prune

    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    calib = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    layer1 = decoder_layers(model)[1]
    with torch.no_grad():
        hidden = model(calib, output_hidden_states=True).hidden_states[1]
        x = layer1.input_layernorm(hidden).reshape(-1, hidden.shape[-1])
    H, _ = hessian_from_inputs(x)
    expected = sparsegpt_prune(layer1.self_attn.q_proj.weight.detach(), H, 0.5).weight
    prune_model(model, calib, PruneConfig("sparsegpt", 0.5, include=("*.layers.1.*",)), progress=False)
    torch.testing.assert_close(layer1.self_attn.q_proj.weight.detach(), expected, rtol=1e-4, atol=1e-5)
