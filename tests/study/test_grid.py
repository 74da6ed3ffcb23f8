"""Grid: one cell per strategy x pruner x pattern x sparsity x seed, N:M dedup, and keys that never change."""

from __future__ import annotations

import hashlib
import json

from calmix.study.config import parse_config
from calmix.study.grid import build_grid, calib_key, cell_key, dense_key

def _with(base, section, key, value):
    data = {k: dict(v) for k, v in base.items()}
    data[section][key] = value
    return data


def _sha(obj, n):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def test_grid_keys_and_nm_dedup(grid_config):
    base = grid_config
    cfg = parse_config(base)
    cells = build_grid(cfg)
    # 4 strategies x (2 unstructured sparsities + one 2:4 cell) x 2 seeds
    assert len(cells) == 4 * 3 * 2
    assert {c.sparsity for c in cells if c.pattern == "2:4"} == {0.5}
    keys = [cell_key(cfg, c) for c in cells]
    assert len(set(keys)) == len(keys)
    # keys are stable and depend on what defines the result
    assert keys == [cell_key(parse_config(base), c) for c in build_grid(parse_config(base))]
    other = parse_config(_with(base, "calib", "nsamples", 4))
    assert cell_key(other, cells[0]) != keys[0]
    assert parse_config(_with(base, "study", "device", "cuda")).fingerprint() == cfg.fingerprint()
    assert other.fingerprint() != cfg.fingerprint()


def test_keys_are_the_sha256_of_their_sorted_json(grid_config):
    # the store's keys: computed here by hand so that a change of hashing shows up as a failure
    cfg = parse_config(grid_config)
    cell = build_grid(cfg)[0]
    assert (cell.strategy, cell.pruner, cell.pattern, cell.sparsity, cell.seed) == ("stdlib", "sparsegpt",
                                                                                   "unstructured", 0.5, 0)
    # calib.bos: the default auto enters the keys (only the former plain windows, "no", stay out of them)
    ck = _sha({"model": "default", "dtype": "float32", "spec": "stdlib", "seed": 0, "nsamples": 2, "seqlen": 32,
               "calib_bos": "auto"}, 20)
    dk = _sha({"model": "default", "dtype": "float32", "suite": "small-offline", "tasks": None, "limit": 3,
               "seed": 0}, 20)
    prune = {"method": "sparsegpt", "sparsity": 0.5, "pattern": "unstructured", "blocksize": 128, "percdamp": 0.01,
             "true_sequential": True, "sequential": "linear"}
    assert calib_key(cfg, "stdlib", 0) == ck and dense_key(cfg) == dk
    assert cell_key(cfg, cell) == _sha({"strategy": "stdlib", "calib": ck, "prune": prune, "dense": dk}, 20)
    # the config fingerprint: every field but device and name, 16 characters
    fields = {"model": "default", "dtype": "float32", "seeds": [0, 1], "reference": "stdlib", "nsamples": 2,
              "seqlen": 32, "calib_bos": "auto", "sources": ["stdlib", "gsm-symbolic"], "mixes": {"uniform-offline": "uniform-offline"},
              "generated": {"igsp": "igsp"}, "methods": ["sparsegpt"], "sparsities": [0.5, 0.6],
              "patterns": ["unstructured", "2:4"], "blocksize": 128, "percdamp": 0.01, "true_sequential": True,
              "sequential": "linear", "suite": "small-offline", "limit": 3, "tasks": None, "eval_seed": 0}
    assert cfg.fingerprint() == _sha(fields, 16)
    # and as literals (what the store of an existing study folder holds): the layer mode and windows without BOS,
    # the settings every study had before those options, keep the keys those folders hold
    cfg = parse_config(_with(_with(grid_config, "prune", "sequential", "layer"), "calib", "bos", "no"))
    assert cell_key(cfg, cell) == "f1b55b2c9c1070f12dab" and cfg.fingerprint() == "9a75ae0e087c910f"
