"""Fused mixture-of-experts weights: each expert pruned with the statistics of its routed tokens (checked against
an oracle that routes through the model's own router), unsupported layouts refused, coverage over all parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from calmix.cli import main
from calmix.errors import CalmixError
from calmix.prune.coverage import parameter_coverage
from calmix.prune.engine import PruneConfig, prune_model


def tiny_qwen3_moe(seed: int = 0) -> nn.Module:
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(vocab_size=256, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         num_experts=4, num_experts_per_tok=2, max_position_embeddings=256, use_cache=False,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    return Qwen3MoeForCausalLM(cfg).eval()


def tiny_mixtral(seed: int = 0) -> nn.Module:
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(vocab_size=256, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=256, use_cache=False)
    torch.manual_seed(seed)
    return MixtralForCausalLM(cfg).eval()


def _ids(n=4, length=24, seed=0):
    return torch.randint(3, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def _routed_inputs(model: nn.Module, ids: torch.Tensor) -> list[dict]:
    """Oracle: per layer and expert, the MoE block's inputs the model's own router sends to that expert, read from
    a plain forward of the dense model (a hook on the block, routing recomputed through block.gate)."""
    out = []
    for layer in model.model.layers:
        block = layer.mlp
        seen: dict = {}

        def hook(mod, inp, _o, seen=seen):
            x = inp[0].reshape(-1, inp[0].shape[-1])
            _, _, idx = mod.gate(x)
            for e in range(mod.experts.gate_up_proj.shape[0]):
                seen[e] = x[(idx == e).any(-1)]
        out.append((block, seen, block.register_forward_hook(hook)))
    with torch.no_grad():
        model(input_ids=ids)
    for _b, _s, h in out:
        h.remove()
    return [seen for _b, seen, _h in out]


def _wanda_mask(W: torch.Tensor, X: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Oracle Wanda mask: per row the int(sparsity * cols) lowest |W| * ||X_j||."""
    score = W.abs() * X.pow(2).sum(0).sqrt()
    k = int(sparsity * W.shape[1])
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask.scatter_(1, score.argsort(dim=1)[:, :k], True)
    return mask


@pytest.mark.parametrize("build", [tiny_qwen3_moe, tiny_mixtral])
def test_wanda_prunes_each_expert_with_its_routed_tokens(build):
    model = build()
    dense = copy.deepcopy(model)
    ids = _ids()
    routed = _routed_inputs(dense, ids)[0]  # layer 0: its inputs do not depend on pruning
    report = prune_model(model, ids, PruneConfig(method="wanda", sparsity=0.5, batch_size=2), progress=False)
    experts, dense_experts = model.model.layers[0].mlp.experts, dense.model.layers[0].mlp.experts
    names = {r.name for r in report.layers}
    for e in range(experts.gate_up_proj.shape[0]):
        assert f"model.layers.0.mlp.experts.gate_up_proj[{e}]" in names
        X = routed[e]
        assert X.shape[0] > 0
        W = dense_experts.gate_up_proj[e].detach()
        assert torch.equal(experts.gate_up_proj[e] == 0, _wanda_mask(W, X, 0.5))
        gate, up = (X @ W.t()).chunk(2, dim=-1)
        Xd = dense_experts.act_fn(gate) * up
        assert torch.equal(experts.down_proj[e] == 0, _wanda_mask(dense_experts.down_proj[e].detach(), Xd, 0.5))
    # the router is no linear and stays dense; attention linears are pruned as before
    assert torch.equal(model.model.layers[0].mlp.gate.weight, dense.model.layers[0].mlp.gate.weight)
    assert float((model.model.layers[1].self_attn.q_proj.weight == 0).float().mean()) == 0.5


def test_sparsegpt_prunes_experts_with_finite_results_and_errors():
    model = tiny_qwen3_moe(seed=1)
    report = prune_model(model, _ids(seed=1), PruneConfig(method="sparsegpt", sparsity=0.6, batch_size=2),
                         progress=False)
    recs = [r for r in report.layers if "experts" in r.name]
    assert len(recs) == 2 * 2 * 4  # layers x (gate_up, down) x experts
    for r in recs:
        assert r.sparsity == pytest.approx(0.6, abs=0.02)
        assert r.rel_error is not None and 0 <= r.rel_error < 1 or r.info.get("fallback")
    for layer in model.model.layers:
        assert torch.isfinite(layer.mlp.experts.gate_up_proj).all()


def test_an_expert_no_token_reaches_is_pruned_by_magnitude():
    model = tiny_qwen3_moe(seed=2)
    with torch.no_grad():  # a zero router ties every expert for every token: the same two win everywhere
        model.model.layers[0].mlp.gate.weight.zero_()
    dense = model.model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    report = prune_model(model, _ids(), PruneConfig(method="wanda", sparsity=0.5, batch_size=2), progress=False)
    rec = {r.name: r for r in report.layers}
    starved = [e for e in range(4) if rec[f"model.layers.0.mlp.experts.gate_up_proj[{e}]"].info["tokens"] == 0]
    assert len(starved) == 2
    for e in range(4):
        r = rec[f"model.layers.0.mlp.experts.gate_up_proj[{e}]"]
        assert ("fallback" in r.info) == (e in starved) and r.sparsity == 0.5
    for e in starved:  # magnitude: the int(0.5 * numel) smallest |W| of the matrix
        W = dense[e]
        want = torch.zeros(W.numel(), dtype=torch.bool)
        want[W.abs().flatten().argsort()[: W.numel() // 2]] = True
        want = want.reshape(W.shape)
        assert torch.equal(model.model.layers[0].mlp.experts.gate_up_proj[e] == 0, want)


def test_unsupported_fused_layout_is_refused_before_anything_changes():
    model = tiny_qwen3_moe()
    before = copy.deepcopy(model.state_dict())
    model.model.layers[1].mlp.experts.is_transposed = True
    with pytest.raises(CalmixError, match="model.layers.1.mlp.experts .*fused layout calmix cannot prune yet"):
        prune_model(model, _ids(), PruneConfig(method="wanda"), progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # excluding the experts prunes the rest and leaves them dense
    model.model.layers[1].mlp.experts.is_transposed = False
    prune_model(model, _ids(), PruneConfig(method="wanda", exclude=("*.mlp.experts.*",)), progress=False)
    assert float((model.model.layers[1].mlp.experts.gate_up_proj == 0).float().mean()) == 0.0


def test_coverage_counts_all_parameters_and_names_what_stayed_dense():
    model = tiny_qwen3_moe()
    cov = parameter_coverage(model)
    assert cov["coverage"] == 0.0 and set(cov["not_pruned"]) >= {"fused experts", "decoder linear"}
    prune_model(model, _ids(), PruneConfig(method="magnitude", sparsity=0.5), progress=False)
    cov = parameter_coverage(model)
    params = {n: p for n, p in model.named_parameters()}
    total = sum(p.numel() for p in params.values())
    zeros = sum(int((p == 0).sum()) for p in params.values())
    in_pruned = sum(p.numel() for n, p in params.items() if n.startswith("model.layers.") and
                    (n.endswith("proj.weight") or n.endswith("_proj")))
    assert cov["n_params"] == total and cov["sparsity_all"] == pytest.approx(zeros / total)
    assert cov["coverage"] == pytest.approx(in_pruned / total)
    assert cov["kinds"]["fused experts"]["pruned_tensors"] == 4
    assert set(cov["not_pruned"]) == {"embedding", "head", "norm", "router"}
    assert cov["dense_decoder_tensors"] == []


def test_sparsity_command_reports_coverage(tmp_path, capsys, tiny_tokenizer):
    model = tiny_qwen3_moe()
    prune_model(model, _ids(), PruneConfig(method="magnitude", sparsity=0.5, exclude=("*.layers.1.mlp.*",)),
                progress=False)
    model.save_pretrained(tmp_path / "moe")
    tiny_tokenizer.save_pretrained(tmp_path / "moe")
    assert main(["sparsity", str(tmp_path / "moe")]) == 0
    out = capsys.readouterr().out
    assert "of them in pruned tensors" in out and "not pruned: embedding, fused experts, head, norm, router" in out
    assert "model.layers.1.mlp.experts.gate_up_proj" in out
