"""Both sequential modes against an oracle that collects every linear's inputs itself, by hooks on the whole
model's forward, in the order the mode defines; the Hessian reconstruction error against a measured one."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from calmix.errors import CalmixError
from calmix.models import decoder_layers, tiny_llama
from calmix.prune.engine import PruneConfig, prune_model
from calmix.prune.sparsegpt import hessian_from_inputs, sparsegpt_prune

VOCAB = 256
# the order in which a LLaMA layer reads its linears' inputs: each group shares one input
GROUPS = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
          ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]


def _calib(n=6, L=24, seed=2):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _inputs(model: nn.Module, calib: torch.Tensor, names: list[tuple[int, str]]) -> dict:
    """The inputs [tokens, in] of the named linears (layer, name) in one forward of the whole model."""
    got, hooks = {}, []
    for li, name in names:
        lin = decoder_layers(model)[li].get_submodule(name)
        hooks.append(lin.register_forward_hook(
            lambda _m, inp, _o, key=(li, name): got.__setitem__(key, inp[0].reshape(-1, inp[0].shape[-1]))))
    try:
        model(calib)
    finally:
        for h in hooks:
            h.remove()
    return got


@torch.no_grad()
def _oracle(model: nn.Module, calib: torch.Tensor, sequential: str, sparsity: float) -> nn.Module:
    """Prune a copy: layer by layer, in "layer" mode every linear on the inputs of the layer as it was before any
    of its linears was pruned; in "linear" mode group by group on the inputs after the groups before it."""
    model = copy.deepcopy(model)
    for li in range(len(decoder_layers(model))):
        stages = [sum(GROUPS, [])] if sequential == "layer" else GROUPS
        for names in stages:
            xs = _inputs(model, calib, [(li, n) for n in names])
            for name in names:
                lin = decoder_layers(model)[li].get_submodule(name)
                H, _ = hessian_from_inputs(xs[(li, name)])
                lin.weight.copy_(sparsegpt_prune(lin.weight.detach(), H, sparsity).weight)
    return model


@pytest.mark.parametrize("sequential", ["layer", "linear"])
def test_every_linear_matches_the_oracle(sequential):
    model, calib = tiny_llama(vocab_size=VOCAB, seed=4), _calib()
    expected = _oracle(model, calib, sequential, 0.6)
    prune_model(model, calib, PruneConfig("sparsegpt", 0.6, batch_size=4, sequential=sequential), progress=False)
    for li, (layer, ref) in enumerate(zip(decoder_layers(model), decoder_layers(expected))):
        for name in sum(GROUPS, []):
            got, want = layer.get_submodule(name).weight, ref.get_submodule(name).weight
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f"layer {li} {name}")


def test_modes_differ_after_the_first_group_only():
    calib = _calib()
    out = {}
    for sequential in ("layer", "linear"):
        model = tiny_llama(vocab_size=VOCAB, seed=4)
        prune_model(model, calib, PruneConfig("sparsegpt", 0.6, sequential=sequential), progress=False)
        out[sequential] = decoder_layers(model)[0]
    for name in sum(GROUPS, []):
        same = torch.equal(out["layer"].get_submodule(name).weight, out["linear"].get_submodule(name).weight)
        assert same == (name in GROUPS[0]), name


@pytest.mark.parametrize("sequential", ["layer", "linear"])
def test_hessian_error_equals_the_output_error_it_stands_for(sequential):
    """rel_error = tr(ΔW H ΔWᵀ)/tr(W H Wᵀ) equals ||X ΔWᵀ||² / ||X Wᵀ||² measured on the inputs H came from: in
    "linear" mode the pruned model's own inputs of every linear, in "layer" mode those of the layer before any
    of its linears was pruned (the first group reads them in the pruned model too)."""
    dense_model, calib = tiny_llama(vocab_size=VOCAB, seed=7), _calib(seed=5)
    model = copy.deepcopy(dense_model)
    report = prune_model(model, calib, PruneConfig("sparsegpt", 0.6, batch_size=4, sequential=sequential),
                         progress=False)
    names = GROUPS[0] if sequential == "layer" else sum(GROUPS, [])
    keys = [(li, name) for li in range(len(decoder_layers(model))) for name in names]
    xs = _inputs(model, calib, keys)
    errors = {r.name: r.rel_error for r in report.layers}
    for li, name in keys:
        x = xs[(li, name)].double()
        W = decoder_layers(dense_model)[li].get_submodule(name).weight.detach().double()
        Wp = decoder_layers(model)[li].get_submodule(name).weight.detach().double()
        measured = float((x @ (Wp - W).t()).pow(2).sum() / (x @ W.t()).pow(2).sum())
        assert errors[f"model.layers.{li}.{name}"] == pytest.approx(measured, rel=1e-3), (li, name)
    assert all(0 < e < 1 for e in errors.values())


def test_linear_mode_runs_each_layer_once():
    """One replay per batch per layer plus one probe of batch 0 for the layers' shared grouping (the layer mode
    needs two per batch)."""
    model, calib = tiny_llama(vocab_size=VOCAB, seed=1), _calib(8, 16)
    calls = [0]
    hooks = [layer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
             for layer in decoder_layers(model)]
    prune_model(model, calib, PruneConfig("sparsegpt", 0.5, batch_size=2, sequential="linear"), progress=False)
    for h in hooks:
        h.remove()
    assert calls[0] == 2 * 4 + 1


class _Failing(nn.Module):
    def forward(self, x):
        raise CalmixError("act failed")


def test_an_error_inside_a_paused_forward_reaches_the_caller_and_leaves_no_hook_or_thread():
    """The MLP activation fails in the first batch after gate/up were pruned, while the other batches wait."""
    model = tiny_llama(vocab_size=VOCAB, seed=1)
    mlp = decoder_layers(model)[1].mlp
    original = mlp.act_fn
    mlp.act_fn = _Failing()
    with pytest.raises(CalmixError, match="act failed"):
        prune_model(model, _calib(4, 12), PruneConfig("sparsegpt", 0.5, batch_size=2, sequential="linear"),
                    progress=False)
    mlp.act_fn = original
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("calmix-prune")]


def test_forwards_run_on_the_callers_thread():
    """Every batch's forward runs in the calling thread (greenlets, not threads): torch's thread pool, grad mode and
    malloc arena are the caller's, and the pruned result is the same as in layer-by-layer replays of the oracle."""
    model = tiny_llama(vocab_size=VOCAB, seed=3)
    seen = set()
    hooks = [lin.register_forward_hook(lambda *_: seen.add(threading.get_ident()))
             for lin in model.modules() if isinstance(lin, nn.Linear)]
    before = threading.active_count()
    prune_model(model, _calib(4, 12), PruneConfig("sparsegpt", 0.5, batch_size=1, sequential="linear"),
                progress=False)
    for h in hooks:
        h.remove()
    assert seen == {threading.get_ident()}
    assert threading.active_count() == before
