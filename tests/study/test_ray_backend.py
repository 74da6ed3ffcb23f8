"""Ray backend on the tiny model: the same results as the local backend; a clear error without Ray."""

from __future__ import annotations

import pytest
import torch

from calmix.calib.calibset import CalibSet
from calmix.cli import main
from calmix.errors import CalmixError
from calmix.study.config import load_config
from calmix.study.grid import build_grid
from calmix.study.runner import run_study
from calmix.study.store import Store


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install 'calmix[ray]')")
def test_ray_backend_matches_local(tmp_path, tiny_dir, write_tiny_config):
    # magnitude pruning: the engine's SparseGPT/Wanda grouping of linears by input data_ptr can vary from run to
    # run (allocator address reuse), which would make even two local runs differ; magnitude is order-free.
    cfg_path = write_tiny_config(tmp_path / "tiny.toml", tiny_dir, ["stdlib"],
                            'mixes = { mix = "mix:stdlib=1,gsm-symbolic=1" }', methods='["magnitude"]')
    cfg, text = load_config(cfg_path)
    local = run_study(cfg, text, tmp_path / "local", progress=False)
    # same torch thread count as this process (conftest: 2) so that float sums match bit for bit
    ray = run_study(cfg, text, tmp_path / "ray", backend="ray", progress=False, num_cpus=2, threads=2)
    assert local["status"]["done"] == ray["status"]["done"] == len(build_grid(cfg)) == 4
    with Store(tmp_path / "local") as a, Store(tmp_path / "ray") as b:
        ra = {r["key"]: r["result"] for r in a.cells()}
        rb = {r["key"]: r["result"] for r in b.cells()}
        for row in a.cells():
            ca = CalibSet.from_bytes(a.get_calib(row["calib_key"])["data"])
            cb = CalibSet.from_bytes(b.get_calib(row["calib_key"])["data"])
            assert torch.equal(ca.input_ids, cb.input_ids)
        da = a.get_dense(row["dense_key"])["result"]
        db = b.get_dense(row["dense_key"])["result"]
        assert da["dimensions"] == db["dimensions"]
    assert set(ra) == set(rb)
    for k in ra:
        for dim in ("Code", "Math"):
            assert rb[k]["retention"][dim] == pytest.approx(ra[k]["retention"][dim], rel=1e-9)
        # the tiny study scores Code and Math only: General and Commonsense, hence Total, are not measured
        assert ra[k]["retention"]["Total"] is None and rb[k]["retention"]["Total"] is None
        assert rb[k]["calib_metrics"] == ra[k]["calib_metrics"]


def test_ray_missing_is_a_clear_error(monkeypatch, tmp_path, tiny_dir, write_tiny_config):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    cfg_path = write_tiny_config(tmp_path / "tiny.toml", tiny_dir, ["stdlib"])
    assert main(["study", "run", str(cfg_path), "--out", str(tmp_path / "o"), "--backend", "ray"]) == 2
    cfg, text = load_config(cfg_path)
    with pytest.raises(CalmixError, match=r"pip install 'calmix\[ray\]'"):
        run_study(cfg, text, tmp_path / "o", backend="ray")
    assert not (tmp_path / "o").exists()
