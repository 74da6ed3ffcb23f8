"""The study config's sparsity profile: parsed, round-tripped, in the keys of unstructured cells only."""

from __future__ import annotations

import pytest

from calmix.errors import CalmixError


def test_study_config_takes_the_profile(grid_config, tmp_path):
    from calmix.study.config import parse_config
    from calmix.study.grid import build_grid, prune_key, prune_params

    base = parse_config(grid_config)
    owl_cfg = {**grid_config, "prune": {**grid_config["prune"], "sparsity_profile": "owl", "owl_m": 7}}
    cfg = parse_config(owl_cfg)
    assert cfg.sparsity_profile == "owl" and cfg.owl_m == 7.0 and cfg.fingerprint() != base.fingerprint()
    assert parse_config(cfg.to_toml_dict()) == cfg
    cells = build_grid(cfg)
    nm = next(c for c in cells if c.pattern != "unstructured")
    un = next(c for c in cells if c.pattern == "unstructured")
    assert prune_params(cfg, un)["sparsity_profile"] == "owl" and prune_params(cfg, nm)["sparsity_profile"] == "uniform"
    assert prune_key(cfg, nm) == prune_key(base, nm) and prune_key(cfg, un) != prune_key(base, un)
    bad = {**grid_config, "prune": {**grid_config["prune"], "sparsity_profile": str(tmp_path / "none.json")}}
    with pytest.raises(CalmixError, match="`prune.sparsity_profile` is not usable"):
        parse_config(bad)
