"""Study config: presets load, every malformed or inconsistent value raises CalmixError naming its key."""

from __future__ import annotations

import re

import pytest

from calmix.errors import CalmixError
from calmix.study.config import load_config, parse_config, preset_names, preset_text

def _with(base, section, key, value):
    data = {k: dict(v) for k, v in base.items()}
    if value is _DEL:
        data[section].pop(key)
    else:
        data[section][key] = value
    return data


_DEL = object()


def test_presets_load_from_the_package_and_from_a_file(tmp_path):
    assert {"quick", "standard", "paper"} <= set(preset_names())
    quick, _ = load_config("quick")
    assert quick.model == "default" and quick.methods == ["sparsegpt"] and quick.sparsities == [0.5]
    assert len(quick.sources) >= 11 and len(quick.seeds) == 2 and quick.suite == "small-offline"
    assert {"igsp", "selfcal", "sgs"} <= {s.spec.split(":")[0] for s in quick.strategies if s.kind == "generated"}
    assert any(s.kind == "mix" for s in quick.strategies)
    paper, _ = load_config("paper")
    assert len(paper.sources) == 15 and set(paper.methods) == {"sparsegpt", "wanda"}
    assert paper.sparsities == [0.3, 0.4, 0.5, 0.6] and len(paper.seeds) == 3 and paper.suite == "paper"
    assert paper.nsamples == 128 and paper.seqlen == 2048
    copy = tmp_path / "my-quick.toml"
    copy.write_text(preset_text("quick"))
    same, _ = load_config(copy)
    assert same.fingerprint() == quick.fingerprint()


def test_quick_sources_need_no_hub_and_no_shared_data():
    from calmix.calib import get_source

    quick, _ = load_config("quick")
    for name in quick.sources:
        src = get_source(name)
        assert "package" in src.origins() and not src.local and src.hub is None, name
    from calmix.calib.sources import SOURCES

    package_only = {n for n, s in SOURCES.items() if s.origins() == ["package"]}
    assert len(package_only) >= 11 and set(quick.sources) == package_only  # every package-only source


def test_round_trip_through_toml_dict(grid_config):
    cfg = parse_config(grid_config)
    assert parse_config(cfg.to_toml_dict()) == cfg


def test_calib_bos_is_read_recorded_and_keyed(grid_config):
    from calmix.calib.build import DEFAULT_BOS
    from calmix.study.grid import calib_key

    cfg = parse_config(grid_config)
    assert cfg.calib_bos == DEFAULT_BOS
    keys = {}
    for bos in ("auto", "yes", "no"):
        other = parse_config(_with(grid_config, "calib", "bos", bos))
        assert other.calib_bos == bos and parse_config(other.to_toml_dict()) == other
        keys[bos] = (other.fingerprint(), calib_key(other, "stdlib", 0))
    assert len(set(keys.values())) == 3  # each option its own study and its own calibration sets


@pytest.mark.parametrize("section,key,value,named", [
    ("study", "seeds", [], "study.seeds"),
    ("study", "seeds", [0, 0], "study.seeds"),
    ("study", "seeds", "0", "study.seeds"),
    ("study", "dtype", "int8", "study.dtype"),
    ("study", "reference", "c4", "study.reference"),
    ("study", "colour", "red", "study.colour"),
    ("study", "max_gpu_memory", "lots", "study.max_gpu_memory"),
    ("calib", "nsamples", 0, "calib.nsamples"),
    ("calib", "seqlen", "long", "calib.seqlen"),
    ("calib", "bos", "maybe", "calib.bos"),
    ("calib", "sources", ["no-such-source"], "calib.sources"),
    ("calib", "sources", ["mix:stdlib=1"], "calib.sources[0]"),
    ("calib", "sources", ["stdlib", "igsp"], "calib.sources[1]"),
    ("calib", "generated", ["stdlib"], "calib.generated.stdlib"),
    ("calib", "mixes", 3, "calib.mixes"),
    ("prune", "sparsities", [1.5], "prune.sparsities[0]"),
    ("prune", "sparsities", [0.6, 0.6], "prune.sparsities"),
    ("prune", "patterns", ["4:2"], "prune.patterns[0]"),
    ("prune", "methods", ["obs"], "prune.methods"),
    ("prune", "percdamp", 0, "prune.percdamp"),
    ("prune", "true_sequential", "yes", "prune.true_sequential"),
    ("prune", "dense_inputs", 1, "prune.dense_inputs"),
    ("prune", "sequential", "group", "prune.sequential"),
    ("eval", "limit", -1, "eval.limit"),
    ("eval", "tasks", [], "eval.tasks"),
    ("eval", "tasks", ["no_such_task"], "eval.tasks"),
    ("eval", "suite", "huge", "eval.suite"),
    ("calib", "mixes", {"m": "mix:stdlib=1,nope=2"}, "calib.mixes.m"),
])
def test_bad_values_name_the_key(section, key, value, named, grid_config):
    with pytest.raises(CalmixError, match=re.escape(f"`{named}`")):
        parse_config(_with(grid_config, section, key, value))


def test_structure_errors_name_the_key(tmp_path, grid_config):
    base = grid_config
    with pytest.raises(CalmixError, match="`model`"):
        parse_config({**base, "model": {"x": 1}})
    with pytest.raises(CalmixError, match="`eval`"):
        parse_config({**base, "eval": 3})
    with pytest.raises(CalmixError, match="`calib`"):
        parse_config({**base, "calib": {**base["calib"], "mixes": {"stdlib": "uniform-offline"}}})
    with pytest.raises(CalmixError, match="`calib.sources`"):
        parse_config({**base, "calib": {"sources": []}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname=1")
    with pytest.raises(CalmixError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(CalmixError, match="neither a file nor a preset"):
        load_config("no-such-preset")


def test_presets_and_dtypes_come_from_their_registries(grid_config):
    from calmix.study.config import PRESETS

    assert PRESETS.names() == preset_names() == ["paper", "quick", "standard"]
    with pytest.raises(CalmixError, match="unknown study preset 'quik'.*did you mean 'quick'"):
        PRESETS.get("quik")
    # the canonical dtype names of calmix.models.DTYPES; its aliases (bf16, fp32, fp16) are not study dtypes
    for alias in ("bf16", "fp32", "fp16"):
        with pytest.raises(CalmixError, match=r"`study.dtype` must be float32, bfloat16 or float16, got"):
            parse_config(_with(grid_config, "study", "dtype", alias))
    assert parse_config(_with(grid_config, "study", "dtype", "bfloat16")).dtype == "bfloat16"
    for mix in ("uniform", "uniform-offline", "all"):
        with pytest.raises(CalmixError, match=re.escape(f"'{mix}' is a mix")):
            parse_config(_with(grid_config, "calib", "sources", [mix]))


def test_dtype_auto_is_the_default_and_names_the_checkpoint_dtype(grid_config, tmp_path, tiny_model, tiny_tokenizer):
    import torch

    assert parse_config(grid_config).dtype == "float32"  # the default model's folder is float32: keys unchanged
    assert parse_config(_with(grid_config, "study", "dtype", "auto")).dtype == "float32"
    path = tmp_path / "bf16"
    tiny_model.to(torch.bfloat16).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    assert parse_config(_with(grid_config, "study", "model", str(path))).dtype == "bfloat16"
    assert parse_config(_with(_with(grid_config, "study", "model", str(path)), "study", "dtype", "float32")).dtype == \
        "float32"
    # a model that cannot be found keeps 'auto' (loading it later says why)
    assert parse_config(_with(grid_config, "study", "model", str(tmp_path / "nope"))).dtype == "auto"


def test_true_sequential_is_the_older_name_of_not_dense_inputs(grid_config):
    base = parse_config(grid_config)
    older = parse_config(_with(grid_config, "prune", "true_sequential", False))
    newer = parse_config(_with(grid_config, "prune", "dense_inputs", True))
    assert not base.dense_inputs and older.dense_inputs and newer.dense_inputs
    assert older.fingerprint() == newer.fingerprint() != base.fingerprint()
    assert parse_config(_with(grid_config, "prune", "true_sequential", True)).fingerprint() == base.fingerprint()
    with pytest.raises(CalmixError, match="contradicts"):
        parse_config(_with(_with(grid_config, "prune", "true_sequential", True), "prune", "dense_inputs", True))
    assert base.sequential == "linear"  # the engine's default
    layer = parse_config(_with(grid_config, "prune", "sequential", "layer"))
    assert layer.sequential == "layer" and layer.fingerprint() != base.fingerprint()
    assert parse_config(layer.to_toml_dict()) == layer


def test_max_gpu_memory_is_kept_but_changes_no_fingerprint(grid_config):
    base = parse_config(grid_config)
    capped = parse_config(_with(grid_config, "study", "max_gpu_memory", "20GiB"))
    assert capped.max_gpu_memory == "20GiB" and base.max_gpu_memory is None
    assert capped.fingerprint() == base.fingerprint()
    assert parse_config(capped.to_toml_dict()) == capped


def test_standard_has_the_papers_shape():
    std, _ = load_config("standard")
    kinds = [s.kind for s in std.strategies]
    assert len(std.sources) >= 15 and std.reference == "c4"
    assert {"uniform", "all"} <= set(std.mixes.values())
    assert {"selfcal", "sgs", "igsp"} <= {s.spec for s in std.strategies if s.kind == "generated"}
    assert len(std.sparsities) >= 2 and len(std.seeds) >= 2 and kinds.count("source") == len(std.sources)
