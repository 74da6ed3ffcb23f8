"""calmix.placement: memory sizes, the fit check before loading, and on_device (CUDA parts skipped without CUDA)."""

from __future__ import annotations

import json

import pytest
import torch

from calmix.cli import main
from calmix.errors import CalmixError
from calmix.models import load_model, tiny_llama
from calmix.placement import check_fits, config_bytes, model_bytes, on_device, parse_memory

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("text,nbytes", [("20GiB", 20 * 2**30), ("18GB", 18 * 10**9), ("512MiB", 512 * 2**20),
                                         ("1.5", int(1.5 * 2**30)), (None, None)])
def test_parse_memory(text, nbytes):
    assert parse_memory(text) == nbytes


@pytest.mark.parametrize("text", ["lots", "20 parsecs", "-3GiB", "0"])
def test_parse_memory_refuses_nonsense(text):
    with pytest.raises(CalmixError, match="memory size"):
        parse_memory(text)


def test_config_bytes_on_meta_equals_the_built_model():
    model = tiny_llama()
    by_hand = 4 * (sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()))
    assert config_bytes(model.config, torch.float32) == by_hand == model_bytes(model)
    assert config_bytes(model.config, torch.bfloat16) < by_hand


def test_check_fits_counts_cpu_and_device_together():
    check_fits(10, "cpu", "m", cpu_free=10)
    with pytest.raises(CalmixError, match="cannot fit even with offload"):
        check_fits(11, "cpu", "m", cpu_free=10)


def _huge_folder(tmp_path):
    """A model folder whose config describes ~3 TB of bf16 weights (no weight files: they are never read)."""
    folder = tmp_path / "huge"
    folder.mkdir()
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16384,
           "intermediate_size": 53248, "num_hidden_layers": 400, "num_attention_heads": 128,
           "num_key_value_heads": 8, "vocab_size": 128256, "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_a_model_too_large_for_this_machine_is_refused_before_loading(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["prune", "--model", str(_huge_folder(tmp_path)), "--calib", "c4", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot fit even with offload" in err[0]
    assert not out.exists()


def test_bad_max_gpu_memory_is_a_cli_error(tiny_dir, tmp_path, capsys):
    rc = main(["ppl", "--model", str(tiny_dir), "--max-gpu-memory", "plenty"])
    assert rc == 2 and "memory size" in capsys.readouterr().err


def test_home_cpu_and_on_device_cpu_leave_the_model_alone(tiny_dir):
    model, _ = load_model(str(tiny_dir), device="cpu", home="cpu")
    before = {n: p for n, p in model.named_parameters()}
    with on_device(model, "cpu") as how:
        assert how == "home"
    assert all(p is before[n] and p.device.type == "cpu" for n, p in model.named_parameters())


@cuda
@pytest.mark.parametrize("limit", [None, 1])
def test_on_device_whole_or_offloaded_gives_the_cpu_logits_and_goes_home(limit):
    model = tiny_llama(seed=1)
    ids = torch.randint(3, 256, (2, 16))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    params = {n: (p, p.data.clone()) for n, p in model.named_parameters()}
    with on_device(model, "cuda", max_memory=limit) as how:
        assert how == ("device" if limit is None else "offload")
        with torch.no_grad():
            got = model(input_ids=ids.to("cuda")).logits.cpu()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for n, p in model.named_parameters():
        assert p is params[n][0] and p.device.type == "cpu" and torch.equal(p.data, params[n][1])
    assert "hf_device_map" not in model.__dict__ and "to" not in model.__dict__


@cuda
def test_prune_on_cuda_streams_layers_from_a_cpu_home():
    from calmix.prune import PruneConfig, prune_model

    model = tiny_llama(layers=8, hidden=128, intermediate=256)  # home: CPU
    ids = torch.randint(3, 256, (4, 32))
    torch.cuda.reset_peak_memory_stats()
    report = prune_model(model, ids, PruneConfig(sparsity=0.5), device="cuda", progress=False)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert torch.cuda.max_memory_allocated() < model_bytes(model) / 2  # one layer at a time, never the model
    assert report.sparsity == pytest.approx(0.5, abs=0.02)
