"""calmix.models: dtype 'auto' is the checkpoint's own dtype (config, else safetensors, else float32)."""

from __future__ import annotations

import json

import pytest
import torch

from calmix.errors import CalmixError
from calmix.models import checkpoint_dtype, dtype_name, load_model, resolve_dtype


@pytest.fixture()
def bf16_dir(tmp_path, tiny_model, tiny_tokenizer):
    """The tiny model saved in bfloat16 with its tokenizer."""
    path = tmp_path / "tiny-bf16"
    tiny_model.to(torch.bfloat16).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def _safetensors_dtypes(folder) -> set[str]:
    import struct

    with open(folder / "model.safetensors", "rb") as fh:  # the header, read by hand: an independent check
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_auto_is_the_dtype_in_the_config(tiny_dir, bf16_dir):
    assert checkpoint_dtype(str(tiny_dir)) == torch.float32
    assert checkpoint_dtype(str(bf16_dir)) == torch.bfloat16
    assert resolve_dtype("auto", str(bf16_dir)) == torch.bfloat16 and resolve_dtype("fp16") == torch.float16


def test_auto_falls_back_to_the_safetensors_dtype(bf16_dir):
    cfg_path = bf16_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("dtype", None)
    cfg.pop("torch_dtype", None)
    cfg_path.write_text(json.dumps(cfg))
    assert _safetensors_dtypes(bf16_dir) == {"BF16"}
    assert checkpoint_dtype(str(bf16_dir)) == torch.bfloat16


def test_bundled_models_are_float32_without_converting():
    # the GGUF built-ins are dequantized to float32 folders: answered without finding or converting the file
    assert checkpoint_dtype("default") == torch.float32 and checkpoint_dtype("gemma3-270m") == torch.float32
    assert checkpoint_dtype("/nowhere/model.gguf") == torch.float32


def test_load_model_defaults_to_the_checkpoint_dtype(bf16_dir):
    model, _ = load_model(str(bf16_dir))
    assert next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_model(str(bf16_dir), dtype="float32")
    assert dtype_name(next(model.parameters()).dtype) == "float32"


def test_auto_needs_a_model_and_unknown_names_fail():
    with pytest.raises(CalmixError, match="needs a model"):
        resolve_dtype("auto")
    with pytest.raises(CalmixError, match="unknown dtype 'float8'.*auto.*float32, bfloat16, float16"):
        resolve_dtype("float8")


def test_prune_saves_in_the_dtype_it_loaded(bf16_dir, tmp_path, capsys):
    from calmix.cli import main

    for dtype, stored in (("auto", "BF16"), ("float32", "F32")):
        out = tmp_path / f"out-{dtype}"
        rc = main(["prune", "--model", str(bf16_dir), "--method", "magnitude", "--calib", "stdlib", "--nsamples", "1",
                   "--seqlen", "8", "--dtype", dtype, "--out", str(out)])
        assert rc == 0, capsys.readouterr().err
        assert _safetensors_dtypes(out) == {stored}
        rec = json.loads((out / "calmix.json").read_text())
        assert rec["dtype"] == dtype and rec["loaded_dtype"] == {"BF16": "bfloat16", "F32": "float32"}[stored]
