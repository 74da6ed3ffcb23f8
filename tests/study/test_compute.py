"""Compute steps: the calibration set survives the store's bytes, the dense model is loaded once per process."""

from __future__ import annotations

import torch

from calmix.calib.calibset import CalibSet
from calmix.study import compute
from calmix.study.config import StudyConfig


def test_calib_bytes_round_trip_and_match_save(tmp_path):
    ids = torch.arange(12).reshape(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    calib = CalibSet(ids, mask, {"source": "stdlib", "seed": 3})
    back = CalibSet.from_bytes(calib.to_bytes())
    assert torch.equal(back.input_ids, ids) and torch.equal(back.attention_mask, mask)
    assert back.card == {"source": "stdlib", "seed": 3} and back.ntokens == 9
    # the bytes hold what save writes: the same dict of ids, mask and card
    path = calib.save(tmp_path / "c.pt")
    saved = torch.load(path, weights_only=True)
    blob = torch.load(__import__("io").BytesIO(calib.to_bytes()), weights_only=True)
    assert saved.keys() == blob.keys() == {"input_ids", "attention_mask", "card"}
    assert torch.equal(saved["input_ids"], blob["input_ids"]) and saved["card"] == blob["card"]
    nomask = CalibSet.from_bytes(CalibSet(ids).to_bytes())
    assert nomask.attention_mask is None and nomask.card == {}


def test_dense_model_is_loaded_once_per_process(tiny_dir, monkeypatch):
    import calmix.models

    calls = []
    real = calmix.models.load_model

    def counting(spec, device="cpu", dtype="float32", **kw):
        calls.append((spec, str(device), dtype))
        return real(spec, device=device, dtype=dtype, **kw)

    monkeypatch.setattr(calmix.models, "load_model", counting)
    compute._load_dense.cache_clear()
    try:
        cfg = StudyConfig(model=str(tiny_dir))
        model, tok = compute.dense_model(cfg, "cpu")
        assert not model.training
        assert compute.dense_model(cfg, "cpu")[0] is model and len(calls) == 1
        compute.dense_model(StudyConfig(model=str(tiny_dir), dtype="bfloat16"), "cpu")
        assert len(calls) == 2 and compute.dense_model(cfg, "cpu")[0] is not model  # only the latest is kept
    finally:
        compute._load_dense.cache_clear()


def test_error_line_is_one_bounded_line():
    assert compute.error_line(ValueError("bad thing\nmore detail")) == "ValueError: bad thing"
    assert compute.error_line(RuntimeError()) == "RuntimeError: "
    assert len(compute.error_line(ValueError("x" * 1000))) == 500


def test_a_cell_gets_the_dense_weights_back_from_the_cpu_copy():
    from calmix.models import tiny_llama
    from calmix.prune import PruneConfig, prune_model

    model = tiny_llama(seed=2)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    weights = compute.dense_weights(model)
    prune_model(model, torch.randint(3, 256, (2, 16)), PruneConfig(sparsity=0.5), progress=False)
    assert any(not torch.equal(p, original[n]) for n, p in model.named_parameters())
    params = dict(model.named_parameters())
    compute.restore_weights(model, weights)
    assert all(torch.equal(p, original[n]) and p is params[n] for n, p in model.named_parameters())
