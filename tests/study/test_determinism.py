"""Same config on the same machine -> bit-identical numbers: a tiny study run twice into two folders stores the
same calibration token ids, metrics, sparsities, scores and retentions (only clocks may differ)."""

from __future__ import annotations

import torch

from calmix.calib.calibset import CalibSet
from calmix.study.config import load_config
from calmix.study.grid import build_grid, calib_key, cell_key, dense_key
from calmix.study.runner import run_study
from calmix.study.store import Store

# what a clock or a calendar writes: the only values allowed to differ between two runs
CLOCK_KEYS = {"seconds", "timings", "created", "build_seconds", "study_build"}


def numbers(obj):
    """obj without the values a clock writes (keys in CLOCK_KEYS or ending in _s / _seconds), floats kept exact."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items()
                if k not in CLOCK_KEYS and not k.endswith(("_s", "_seconds", "_per_s"))}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    return obj


def stored(cfg, out) -> dict:
    with Store(out) as store:
        cells = {c.name: store.cells([cell_key(cfg, c)])[0] for c in build_grid(cfg)}
        calibs = {c.name: store.get_calib(calib_key(cfg, c.spec, c.seed)) for c in build_grid(cfg)}
        dense = store.get_dense(dense_key(cfg))["result"]
    return {"cells": cells, "calibs": calibs, "dense": dense}


def test_a_tiny_study_run_twice_stores_bit_identical_numbers(tmp_path, tiny_dir, write_tiny_config):
    path = write_tiny_config(tmp_path / "tiny.toml", tiny_dir, ["stdlib", "gsm-symbolic"])
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    cfg, text = load_config(path)
    runs = []
    for name in ("one", "two"):
        summary = run_study(cfg, text, tmp_path / name, progress=False)
        assert summary["status"]["done"] == len(build_grid(cfg)) == 2, summary
        runs.append(stored(cfg, tmp_path / name))
    one, two = runs
    assert numbers(one["dense"]) == numbers(two["dense"])
    for name, cell in one["cells"].items():
        a, b = cell["result"], two["cells"][name]["result"]
        assert a["retention"] == b["retention"] and numbers(a["scores"]) == numbers(b["scores"])
        assert a["prune"]["sparsity"] == b["prune"]["sparsity"]
        assert a["prune"]["mean_rel_error"] == b["prune"]["mean_rel_error"]  # the same masks and updated weights
        assert a["calib_metrics"] == b["calib_metrics"]
        ca, cb = (CalibSet.from_bytes(r[name]["data"]) for r in (one["calibs"], two["calibs"]))
        assert torch.equal(ca.input_ids, cb.input_ids)
        assert numbers(one["calibs"][name]["card"]) == numbers(two["calibs"][name]["card"])
        assert numbers(a) == numbers(b)  # and every other stored field of the cell, clocks aside
