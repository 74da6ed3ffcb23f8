"""Study fixtures: a synthetic study stored through the store API (no model) with known retentions, per-item
scores and metrics per source/seed (`fake_study`, `fake_truth`), and the tiny model's study config (`write_tiny_config`)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from calmix.evals.itemscores import item_table
from calmix.study.config import parse_config
from calmix.study.folder import prepare_folder
from calmix.study.grid import build_grid, calib_key, cell_key, dense_key

GRID_CONFIG = {
    "study": {"name": "t", "model": "default", "seeds": [0, 1], "reference": "stdlib"},
    "calib": {"nsamples": 2, "seqlen": 32, "sources": ["stdlib", "gsm-symbolic"], "mixes": ["uniform-offline"],
              "generated": {"igsp": "igsp"}},
    "prune": {"methods": ["sparsegpt"], "sparsities": [0.5, 0.6], "patterns": ["unstructured", "2:4"]},
    "eval": {"suite": "small-offline", "limit": 3},
}


@pytest.fixture()
def grid_config() -> dict:
    """A small study config (TOML layout): 4 strategies, 2 seeds, sparsities 0.5 and 0.6 unstructured plus 2:4."""
    return copy.deepcopy(GRID_CONFIG)


SOURCES = ["pydoc-topics", "stdlib", "licences", "rg-logic", "gsm-symbolic"]
# per source: (ppl, agg4) and a base retention per dimension; Math falls with ppl, General rises with it
PPL = {"pydoc-topics": 10.0, "stdlib": 20.0, "licences": 30.0, "rg-logic": 40.0, "gsm-symbolic": 50.0}
AGG4 = {"pydoc-topics": 0.3, "stdlib": 0.1, "licences": 0.5, "rg-logic": 0.2, "gsm-symbolic": 0.4}
GENERAL = {"pydoc-topics": 40.0, "stdlib": 45.0, "licences": 50.0, "rg-logic": 58.0, "gsm-symbolic": 61.0}
MATH = {"pydoc-topics": 52.0, "stdlib": 48.0, "licences": 30.0, "rg-logic": 20.0, "gsm-symbolic": 5.0}
CODE = {"pydoc-topics": 1.0, "stdlib": 30.0, "licences": 10.0, "rg-logic": 20.0, "gsm-symbolic": 5.0}
COMMON = {"pydoc-topics": 80.0, "stdlib": 81.0, "licences": 82.0, "rg-logic": 83.0, "gsm-symbolic": 79.0}
EXTRA = {"uniform": 70.0, "selfcal": 50.0, "sgs": 48.0, "igsp": 55.0}


def config_dict(sources=SOURCES, sparsities=(0.5,)) -> dict:
    return {
        "study": {"name": "fixture", "model": "fake-model", "seeds": [0, 1], "reference": "pydoc-topics"},
        "calib": {"nsamples": 2, "seqlen": 8, "sources": list(sources), "mixes": {"uniform": "mix:pydoc-topics=1,stdlib=1"},
                  "generated": {"selfcal": "selfcal", "sgs": "sgs", "igsp": "igsp"}},
        "prune": {"methods": ["sparsegpt"], "sparsities": list(sparsities)},
        "eval": {"suite": "small-offline", "limit": 2},
    }


def _toml(d: dict) -> str:
    import json

    lines = []
    for sec, body in d.items():
        lines.append(f"[{sec}]")
        for k, v in body.items():
            if isinstance(v, dict):
                v = "{ " + ", ".join(f'{kk} = {json.dumps(vv)}' for kk, vv in v.items()) + " }"
            else:
                v = json.dumps(v)
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


def retention_of(strategy: str, seed: int, sparsity: float) -> dict:
    jitter = 0.5 if seed else -0.5
    shift = (0.6 - sparsity) * 50
    if strategy in GENERAL:
        d = {"General": GENERAL[strategy], "Commonsense": COMMON[strategy], "Code": CODE[strategy],
             "Math": MATH[strategy]}
    else:
        t = EXTRA[strategy]
        d = {"General": t, "Commonsense": t + 5, "Code": t - 5, "Math": t}
    d = {k: v + jitter + shift for k, v in d.items()}
    d["Total"] = sum(d.values()) / 4
    return d


DENSE_SCORE = {"General": 0.5, "Commonsense": 0.4, "Code": 0.3, "Math": 0.2}
N_ITEMS = 20


def _requests(dim: str) -> list[dict]:
    return [{"task": dim, "item": i} for i in range(N_ITEMS)]


def dense_result(floored: tuple[str, ...] = ()) -> dict:
    """One task per dimension, every item scored DENSE_SCORE[dim] by the dense model; the dimensions in `floored`
    carry a floor record saying the dense model is at the floor there, the others one saying it is above."""
    tasks = {f"t_{dim}": {"dimension": dim, "score": v, "metric": "acc", "n": N_ITEMS, "failures": [],
                          "items": item_table("mean", _requests(dim), value=[v] * N_ITEMS),
                          "floor": {"stat": "chance-corrected score", "value": 0.01 if dim in floored else v,
                                    "lo": -0.02 if dim in floored else v, "hi": 0.04 if dim in floored else v,
                                    "margin": 0.05, "above": dim not in floored}}
             for dim, v in DENSE_SCORE.items()}
    return {"suite": "small-offline", "tasks": tasks, "dimensions": dict(DENSE_SCORE), "config": {}}


def cell_scores(ret: dict) -> dict:
    """Per-item scores whose retention on all items is exactly `ret` per dimension: item i keeps ret * (1 ± 0.2)
    (alternating signs, so the item noise averages out on the full set and shows only in resamples)."""
    tasks = {}
    for dim, v in DENSE_SCORE.items():
        values = [v * ret[dim] / 100 * (1.2 if i % 2 else 0.8) for i in range(N_ITEMS)]
        tasks[f"t_{dim}"] = {"dimension": dim, "score": sum(values) / N_ITEMS, "metric": "acc", "n": N_ITEMS,
                             "failures": [], "items": item_table("mean", _requests(dim), value=values)}
    return {"suite": "small-offline", "tasks": tasks, "config": {}}


def build_fixture(out: Path, with_failed: bool = True, floored: tuple[str, ...] = (), **kw) -> dict:
    """Write study.toml and study.db holding every cell of the fixture config (one failed if asked)."""
    data = config_dict(**kw)
    cfg = parse_config(data)
    out.mkdir(parents=True, exist_ok=True)
    store = prepare_folder(cfg, _toml(data), out, force=False)
    store.put_dense(dense_key(cfg), {"model": cfg.model, "suite": cfg.suite}, dense_result(floored), 1.0)
    cells = build_grid(cfg)
    failed = None
    for i, cell in enumerate(cells):
        key = cell_key(cfg, cell)
        ck = calib_key(cfg, cell.spec, cell.seed)
        metrics = {"ppl": PPL.get(cell.strategy, 15.0) + cell.seed, "agg4": AGG4.get(cell.strategy, 0.2)}
        if with_failed and cell.strategy == "sgs" and cell.seed == 1 and failed is None:
            store.start_cell(key, {**cell.to_dict(), "name": cell.name}, ck, dense_key(cfg))
            store.fail_cell(key, "RuntimeError: boom", "Traceback...\nRuntimeError: boom", 0.1)
            failed = cell
            continue
        ret = retention_of(cell.strategy, cell.seed, cell.sparsity)
        store.put_cell(key, {**cell.to_dict(), "name": cell.name}, ck, dense_key(cfg),
                       {"retention": ret, "calib_metrics": metrics, "scores": cell_scores(ret)}, 1.0)
    store.close()
    return {"cfg": cfg, "cells": cells, "failed": failed}


@pytest.fixture()
def fake_study():
    """`fake_study(out, with_failed=True, sources=..., sparsities=...)` writes the synthetic study into out."""
    return build_fixture


@pytest.fixture()
def fake_truth():
    """The synthetic study's per-source values: PPL, AGG4 (metrics), GENERAL, MATH (base retentions)."""
    return SimpleNamespace(PPL=PPL, AGG4=AGG4, GENERAL=GENERAL, MATH=MATH)


TASKS = '["humaneval_probe_pkg", "gsm_symbolic_probe"]'


def write_config(path: Path, model: Path, sources: list[str], extra: str = "", methods: str = '["sparsegpt"]') -> Path:
    """A two-seed study TOML on the model folder `model` with two small offline tasks."""
    src = ", ".join(f'"{s}"' for s in sources)
    path.write_text(f"""
[study]
name = "tiny"
model = "{model}"
seeds = [0, 1]
[calib]
nsamples = 2
seqlen = 32
sources = [{src}]
{extra}
[prune]
methods = {methods}
sparsities = [0.5]
[eval]
suite = "small-offline"
tasks = {TASKS}
limit = 2
""")
    return path


@pytest.fixture()
def write_tiny_config():
    """`write_tiny_config(path, model_dir, sources, extra="", methods='["sparsegpt"]')` writes a tiny study TOML."""
    return write_config
