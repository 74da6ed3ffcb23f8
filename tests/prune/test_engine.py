"""Integration tests of the sequential pruning engine on a tiny in-process LLaMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from calmix.errors import CalmixError
from calmix.models import decoder_layers, tiny_llama
from calmix.prune.engine import PruneConfig, model_sparsity, prune_model, target_linears

VOCAB = 256


def _calib(n=6, L=24, seed=0):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


def _n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "magnitude"])
@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.6), ("2:4", 0.0), ("4:8", 0.0)])
def test_every_target_linear_reaches_target_sparsity(method, pattern, sparsity):
    model = tiny_llama(vocab_size=VOCAB, seed=1)
    hooks_before = _n_hooks(model)
    cfg = PruneConfig(method=method, sparsity=sparsity, pattern=pattern, batch_size=2)
    report = prune_model(model, _calib(), cfg, progress=False)
    target = cfg.target_sparsity()
    per = model_sparsity(model)["linears"]
    assert len(per) == 2 * 7 and len(report.layers) == 14
    for layer in decoder_layers(model):
        for name, lin in target_linears(layer, "x", cfg).items():
            rows, cols = lin.weight.shape
            expected = rows * int(target * cols) if method == "wanda" else int(target * rows * cols)  # Wanda: per row
            assert int((lin.weight == 0).sum()) == expected, name
    for name, sp in per.items():
        assert sp == pytest.approx(target, abs=1 / 64), name  # per-row rounding on 64 columns
    if pattern != "unstructured":
        n, m = cfg.nm()
        for layer in decoder_layers(model):
            for lin in target_linears(layer, "x", cfg).values():
                groups = (lin.weight == 0).reshape(lin.out_features, -1, m).sum(-1)
                assert bool((groups == n).all())
    assert _n_hooks(model) == hooks_before  # no hooks left behind
    assert all(isinstance(layer, type(decoder_layers(model)[0])) for layer in decoder_layers(model))
    logits = model(_calib(2, 16, seed=5)).logits
    assert torch.isfinite(logits).all()
    assert all(r.rel_error is not None and 0 <= r.rel_error < 1.5 for r in report.layers)


def test_same_seed_same_mask_and_weights():
    outs = []
    for _ in range(2):
        model = tiny_llama(vocab_size=VOCAB, seed=3)
        prune_model(model, _calib(seed=7), PruneConfig("sparsegpt", 0.5), progress=False)
        outs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_calibration_changes_the_result_for_sparsegpt_but_not_magnitude():
    def run(method, seed):
        model = tiny_llama(vocab_size=VOCAB, seed=3)
        prune_model(model, _calib(seed=seed), PruneConfig(method, 0.5), progress=False)
        return decoder_layers(model)[1].mlp.down_proj.weight.detach().clone()

    assert not torch.equal(run("sparsegpt", 1), run("sparsegpt", 2))
    assert torch.equal(run("magnitude", 1), run("magnitude", 2))


def test_first_layer_matches_a_direct_sparsegpt_call():
    """Layer 0 of the engine equals sparsegpt_prune on H computed by hand from the captured layer-0 inputs."""
    from calmix.prune.sparsegpt import hessian_from_inputs, sparsegpt_prune

    model = tiny_llama(vocab_size=VOCAB, seed=4)
    calib = _calib(4, 20, seed=2)
    layer0 = decoder_layers(model)[0]
    with torch.no_grad():
        x = layer0.input_layernorm(model.model.embed_tokens(calib)).reshape(-1, model.config.hidden_size)
    H, _ = hessian_from_inputs(x)
    expected = sparsegpt_prune(layer0.self_attn.q_proj.weight.detach(), H, 0.5).weight
    prune_model(model, calib, PruneConfig("sparsegpt", 0.5, batch_size=3), progress=False)
    torch.testing.assert_close(layer0.self_attn.q_proj.weight.detach(), expected, rtol=1e-4, atol=1e-5)


def test_dense_inputs_switch_changes_later_layers_only():
    def run(dense_inputs):
        model = tiny_llama(vocab_size=VOCAB, seed=5)
        prune_model(model, _calib(seed=3), PruneConfig("sparsegpt", 0.6, dense_inputs=dense_inputs), progress=False)
        return [layer.mlp.down_proj.weight.detach().clone() for layer in decoder_layers(model)]

    seq, dense = run(False), run(True)
    assert torch.equal(seq[0], dense[0])
    assert not torch.equal(seq[1], dense[1])


def test_padding_mask_excludes_tokens_from_statistics():
    """Windows padded at the end give the same pruned weights as the unpadded windows' statistics... for layer 0."""
    from calmix.calib.calibset import CalibSet

    calib = _calib(2, 16, seed=9)
    padded = torch.cat([calib, torch.zeros(2, 8, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 16), torch.zeros(2, 8)], dim=1).long()
    a, b = tiny_llama(vocab_size=VOCAB, seed=6), tiny_llama(vocab_size=VOCAB, seed=6)
    prune_model(a, calib, PruneConfig("wanda", 0.5), progress=False)
    prune_model(b, CalibSet(padded, mask), PruneConfig("wanda", 0.5), progress=False)
    wa, wb = decoder_layers(a)[0].self_attn.q_proj.weight, decoder_layers(b)[0].self_attn.q_proj.weight
    assert torch.equal(wa == 0, wb == 0)


def test_include_exclude_patterns_select_linears():
    model = tiny_llama(vocab_size=VOCAB, seed=1)
    report = prune_model(model, _calib(), PruneConfig("magnitude", 0.5, include=("*.mlp.*",), exclude=("*.down_proj",)),
                         progress=False)
    names = sorted(r.name.split(".")[-1] for r in report.layers)
    assert names == ["gate_proj", "gate_proj", "up_proj", "up_proj"]
    assert float((decoder_layers(model)[0].self_attn.q_proj.weight == 0).float().mean()) < 0.01


def test_bf16_model_prunes_with_fp32_statistics():
    model = tiny_llama(vocab_size=VOCAB, seed=1).to(torch.bfloat16)
    prune_model(model, _calib(), PruneConfig("sparsegpt", 0.5), progress=False)
    lin = decoder_layers(model)[0].self_attn.o_proj
    assert lin.weight.dtype == torch.bfloat16
    assert float((lin.weight == 0).float().mean()) == pytest.approx(0.5)


@pytest.mark.parametrize("cfg,msg", [
    (PruneConfig("obs", 0.5), "unknown pruning method"),
    (PruneConfig("sparsegpt", 1.0), "sparsity"),
    (PruneConfig("sparsegpt", -0.1), "sparsity"),
    (PruneConfig("sparsegpt", 0.5, pattern="4:2"), "N:M"),
    (PruneConfig("sparsegpt", 0.5, pattern="2:7"), "divide"),
    (PruneConfig("sparsegpt", 0.5, include=("nothing",)), "no linear layer"),
])
def test_bad_configs_fail_before_touching_the_model(cfg, msg):
    model = tiny_llama(vocab_size=VOCAB, seed=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(CalmixError, match=msg):
        prune_model(model, _calib(), cfg, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_linears_reading_one_input_form_one_group():
    from functools import partial

    from calmix.prune.capture import batches_of, capture_layer_calls
    from calmix.prune.engine import groups_by_input

    model = tiny_llama(vocab_size=VOCAB, seed=1)
    captured = capture_layer_calls(model, batches_of(_calib(2, 12), None, 2), torch.device("cpu"),
                                   torch.device("cpu"))
    layer = decoder_layers(model)[1]
    linears = target_linears(layer, "model.layers.1", PruneConfig())
    assert groups_by_input(linears, partial(captured.replay, layer, 1, 0)) == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    assert groups_by_input({}, lambda: pytest.fail("no probe without linears")) == []


@pytest.mark.parametrize("sequential", ["layer", "linear"])
def test_the_engine_takes_any_registered_pruners_statistic(sequential):
    """A pruner registered from outside: the engine builds one accumulator per input group, feeds it every
    non-padding token of every batch, reads it once per group and prunes the group with it."""
    from calmix.calib.calibset import CalibSet
    from calmix.prune import PRUNERS, Pruner
    from calmix.prune.magnitude import magnitude_prune

    seen = {"accumulators": [], "prepared": [], "groups": []}

    class Count:
        def __init__(self, in_features):
            self.in_features, self.ntokens = in_features, 0

        def add(self, x, attention_mask=None):
            assert x.shape[-1] == self.in_features
            self.ntokens += int(attention_mask.sum()) if attention_mask is not None else x.shape[:-1].numel()

    class Counting(Pruner):
        name, stats = "counting", "token count"

        def accumulator(self, in_features, device="cpu"):
            seen["accumulators"].append(Count(in_features))
            return seen["accumulators"][-1]

        def prepare(self, acc, **opts):
            seen["prepared"].append((acc, opts["percdamp"]))
            return acc.ntokens

        def prune_group(self, Ws, stat, sparsity, n=0, m=0, **opts):
            seen["groups"].append((len(Ws), stat, opts["blocksize"]))
            return [magnitude_prune(W, sparsity, n, m) for W in Ws]

    calib = _calib(5, 16, seed=4)
    mask = torch.ones_like(calib)
    mask[1, 10:] = 0
    mask[4, 3:] = 0
    PRUNERS.add("counting", Counting())
    try:
        model = tiny_llama(vocab_size=VOCAB, seed=2)
        report = prune_model(model, CalibSet(calib, mask), PruneConfig("counting", 0.5, batch_size=2,
                                                                       blocksize=32, percdamp=0.2,
                                                                       sequential=sequential), progress=False)
    finally:
        PRUNERS.remove("counting")
    ntokens = int(mask.sum())
    assert len(seen["accumulators"]) == 2 * 4  # two layers, four input groups each
    assert [a.ntokens for a in seen["accumulators"]] == [ntokens] * 8
    assert [acc for acc, _ in seen["prepared"]] == seen["accumulators"]
    assert {d for _, d in seen["prepared"]} == {0.2}
    assert seen["groups"] == [(3, ntokens, 32), (1, ntokens, 32), (2, ntokens, 32), (1, ntokens, 32)] * 2
    assert len(report.layers) == 14 and report.sparsity == pytest.approx(0.5)


def test_peak_memory_is_recorded_for_every_layer():
    model = tiny_llama(vocab_size=VOCAB, seed=1)
    report = prune_model(model, _calib(), PruneConfig("sparsegpt", 0.5), progress=False)
    peaks = list(report.peak_memory_mb.values())
    assert list(report.peak_memory_mb) == [f"model.layers.{i}" for i in range(len(decoder_layers(model)))]
    assert report.memory_kind == "rss_high_water"
    assert all(p > 0 for p in peaks) and peaks == sorted(peaks)  # a high-water mark never goes down
    assert report.to_dict()["peak_memory_mb"] == report.peak_memory_mb
