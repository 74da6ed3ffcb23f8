"""Layer-wise sparsity profiles: OWL's allocation and outlier ratios against hand oracles, profile files, the
engine honouring each layer's target, the CLI and study config options."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from calmix.cli import main
from calmix.errors import CalmixError
from calmix.models import tiny_llama
from calmix.prune.config import target_linears
from calmix.prune.engine import PruneConfig, prune_model
from calmix.prune.owl import layer_outlier_ratios, outlier_ratio
from calmix.prune.profile import check_profile, owl_sparsities, profile_key, read_profile_file


def test_owl_allocation_matches_the_hand_computed_case():
    # ratios 0.01, 0.03, 0.02, 0.0 -> min-max onto [0, 0.16]: 0.0533, 0.16, 0.1067, 0; mean 0.08;
    # sparsity = 0.6 - (scaled - 0.08)
    out = owl_sparsities([0.01, 0.03, 0.02, 0.0], 0.6, 0.08)
    assert out == pytest.approx([0.6 + 0.08 - 0.16 / 3, 0.52, 0.6 + 0.08 - 0.32 / 3, 0.68], abs=1e-12)
    assert math.fsum(out) / 4 == pytest.approx(0.6, abs=1e-12)
    assert max(out) - min(out) == pytest.approx(0.16, abs=1e-12)
    assert all(0.6 - 0.16 <= s <= 0.6 + 0.16 for s in out)
    # more outliers, lower sparsity: the order is exactly the reverse of the ratios'
    assert sorted(range(4), key=out.__getitem__) == sorted(range(4), key=[0.01, 0.03, 0.02, 0.0].__getitem__)[::-1]


@pytest.mark.parametrize("ratios", [[0.2, 0.1, 0.4, 0.3, 0.05, 0.9], [1.0, 2.0], [0.3, 0.3, 0.31]])
def test_owl_mean_is_exactly_the_target_and_span_is_two_lambda(ratios):
    for target, lam in ((0.5, 0.08), (0.7, 0.05), (0.6, 0.0)):
        out = owl_sparsities(ratios, target, lam)
        assert math.fsum(out) / len(out) == pytest.approx(target, abs=1e-12)
        assert max(out) - min(out) == pytest.approx(2 * lam, abs=1e-12)


def test_owl_equal_ratios_give_the_target_and_out_of_range_is_refused():
    assert owl_sparsities([0.1, 0.1, 0.1], 0.7) == [0.7, 0.7, 0.7]
    with pytest.raises(CalmixError, match="outside \\[0, 1\\).*lower --owl-lambda"):
        owl_sparsities([0.0, 1.0], 0.95, 0.2)


def test_outlier_ratio_of_a_hand_built_layer():
    W1 = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    W2 = torch.tensor([[1.0, 1.0, 1.0, 10.0]])
    ones = torch.ones(4)
    # scores: seven 1s and one 10, mean 17/8; M=2 -> threshold 4.25: one of eight above
    assert outlier_ratio([W1, W2], [ones, ones], 2.0) == 1 / 8
    # a column norm of 4 (xnorm_sq 16) makes that column's |W| scores 4: above 2 x mean (=2 x 20/8) none but the 40
    assert outlier_ratio([W1, W2], [ones, torch.tensor([1.0, 1.0, 1.0, 16.0])], 2.0) == 1 / 8
    assert outlier_ratio([W1], [ones], 0.5) == 1.0


def _oracle_ratios(model: nn.Module, ids: torch.Tensor, m: float) -> list[float]:
    """Outlier ratios from one plain forward of the dense model with a hook on every decoder linear."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.model.layers.named_modules():
        if isinstance(mod, nn.Linear):
            def hook(_m, inp, _o, name=name):
                x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                sums[name] = sums.get(name, 0) + (x * x).sum(0)
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    ratios = []
    for i, layer in enumerate(model.model.layers):
        scores = torch.cat([(mod.weight.double().abs() * sums[f"{i}.{n}"].sqrt()).flatten()
                            for n, mod in layer.named_modules() if isinstance(mod, nn.Linear)])
        ratios.append(float((scores > m * scores.mean()).double().mean()))
    return ratios


def test_layer_outlier_ratios_match_a_plain_forward():
    model = tiny_llama(layers=3, seed=3)
    ids = torch.randint(3, 256, (4, 24), generator=torch.Generator().manual_seed(0))
    got = layer_outlier_ratios(model, [(ids[:2], None), (ids[2:], None)],
                               lambda layer, prefix: target_linears(layer, prefix, PruneConfig()), 2.0,
                               torch.device("cpu"), torch.device("cpu"))
    want = _oracle_ratios(model, ids, 2.0)
    assert got == pytest.approx(want, abs=1e-6) and len(set(want)) == 3


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_engine_prunes_each_layer_at_its_owl_target(method):
    model = tiny_llama(layers=3, seed=3)
    ids = torch.randint(3, 256, (4, 24), generator=torch.Generator().manual_seed(0))
    want = owl_sparsities(_oracle_ratios(model, ids, 2.0), 0.6, 0.1)
    cfg = PruneConfig(method=method, sparsity=0.6, sparsity_profile="owl", owl_lambda=0.1, owl_m=2.0, batch_size=2)
    report = prune_model(model, ids, cfg, progress=False)
    assert report.layer_sparsities == pytest.approx(want, abs=1e-6)
    for i, layer in enumerate(model.model.layers):
        for name, mod in layer.named_modules():
            if isinstance(mod, nn.Linear):  # Wanda prunes int(s * cols) per row; the others a share of the tensor
                cols = mod.in_features
                expect = int(want[i] * cols) / cols if method == "wanda" else want[i]
                assert float((mod.weight == 0).float().mean()) == pytest.approx(expect, abs=1e-3)


def test_profile_file_sets_each_layer(tmp_path):
    path = tmp_path / "profile.txt"
    path.write_text("# layer sparsities\n0.25\n\n0.75  # the last\n")
    model = tiny_llama(layers=2, seed=1)
    ids = torch.randint(3, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    report = prune_model(model, ids, PruneConfig(method="sparsegpt", sparsity_profile=str(path)), progress=False)
    assert report.layer_sparsities == [0.25, 0.75]
    q = [layer.self_attn.q_proj.weight for layer in model.model.layers]
    assert [float((w == 0).float().mean()) for w in q] == [0.25, 0.75]


def test_profile_files_json_and_text(tmp_path):
    (tmp_path / "a.json").write_text("[0.5, 0.6, 0.0]")
    (tmp_path / "b.json").write_text('{"sparsities": [0.1]}')
    (tmp_path / "c.txt").write_text("0.3\n0.4\n")
    assert read_profile_file(tmp_path / "a.json", 3) == [0.5, 0.6, 0.0]
    assert read_profile_file(tmp_path / "b.json") == [0.1]
    assert read_profile_file(tmp_path / "c.txt") == [0.3, 0.4]


@pytest.mark.parametrize("text, match", [
    ("[0.5, 1.0]", "item 1: 1.0 is not a sparsity in \\[0, 1\\)"),
    ("[0.5, true]", "item 1: True is not a sparsity"),
    ("[0.5,", "not valid JSON"),
    ('{"layers": [0.5]}', "expected a JSON list"),
    ("0.5\nhalf\n", "line 2: 'half' is not a sparsity"),
    ("# nothing\n\n", "lists no sparsity"),
    ("0.5\n0.5\n0.5\n", "lists 3 sparsities but the model has 2 decoder layers"),
])
def test_bad_profile_files_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(CalmixError, match=match) as err:
        read_profile_file(path, 2)
    assert "\n" not in str(err.value)


def test_profile_checks_before_anything_loads(tmp_path):
    with pytest.raises(CalmixError, match="neither uniform nor owl nor a file"):
        check_profile(str(tmp_path / "missing.json"), 0, 0.08, 5.0)
    with pytest.raises(CalmixError, match="needs --pattern unstructured"):
        check_profile("owl", 4, 0.08, 5.0)
    with pytest.raises(CalmixError, match="--owl-lambda"):
        check_profile("owl", 0, 0.6, 5.0)
    with pytest.raises(CalmixError, match="--owl-m"):
        check_profile("owl", 0, 0.08, 0.0)
    check_profile("uniform", 4, 0.08, 5.0)


def test_profile_key_keeps_uniform_keys_and_follows_file_content(tmp_path):
    assert profile_key("uniform", 0.08, 5.0) == {}
    assert profile_key("owl", 0.08, 5.0) != profile_key("owl", 0.1, 5.0)
    path = tmp_path / "p.txt"
    path.write_text("0.5\n")
    first = profile_key(str(path), 0.08, 5.0)
    path.write_text("0.6\n")
    assert profile_key(str(path), 0.08, 5.0) != first


def test_cli_records_the_profile(tiny_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(100)))
    out = tmp_path / "owl"
    rc = main(["prune", "--model", str(tiny_dir), "--method", "wanda", "--sparsity", "0.5", "--calib", str(corpus),
               "--nsamples", "4", "--seqlen", "32", "--sparsity-profile", "owl", "--owl-lambda", "0.05",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "calmix.json").read_text())
    assert rec["config"]["sparsity_profile"] == "owl" and rec["config"]["owl_lambda"] == 0.05
    assert rec["config"]["owl_m"] == 5.0
    assert math.fsum(rec["layer_sparsities"]) / len(rec["layer_sparsities"]) == pytest.approx(0.5, abs=1e-9)
    assert "owl (lambda 0.05, M 5)" in (out / "README.md").read_text()
    capsys.readouterr()
    rc = main(["prune", "--model", str(tiny_dir), "--sparsity-profile", str(tmp_path / "nope.txt"), "--calib",
               str(corpus), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "neither uniform nor owl nor a file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
