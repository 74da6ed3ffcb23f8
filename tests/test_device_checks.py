"""Devices that do not exist here and dtypes a device cannot compute in: one-line errors, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch

from calmix.cli import main
from calmix.devices import check_device, check_dtype
from calmix.errors import CalmixError

HAVE_CUDA = torch.cuda.is_available()


def test_cpu_is_there_and_computes_in_every_calmix_dtype():
    assert check_device("cpu") == torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):  # torch >= 2.1 runs fp16 matmuls on CPU
        check_dtype("cpu", dtype)


@pytest.mark.parametrize("device,needle", [
    ("tpu", "unknown device 'tpu'"),
    ("gpu0", "unknown device 'gpu0'"),
    ("meta", "holds no data"),
    ("mps", "device 'mps' is not available here"),
])
def test_devices_that_do_not_exist(device, needle):
    with pytest.raises(CalmixError, match=needle) as err:
        check_device(device)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(HAVE_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_where_torch_has_none(device):
    with pytest.raises(CalmixError, match=rf"device '{device}' is not available here .*use --device cpu"):
        check_device(device)


@pytest.mark.skipif(not HAVE_CUDA, reason="needs CUDA")
def test_a_cuda_ordinal_past_the_last_gpu():
    n = torch.cuda.device_count()
    assert check_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(CalmixError, match=rf"device 'cuda:{n}' does not exist: this machine has {n} cuda device"):
        check_device(f"cuda:{n}")


def test_a_dtype_the_device_cannot_compute_in():
    # float8 tensors exist on CPU but its matmul has no CPU kernel: the probe reports the real failure
    with pytest.raises(CalmixError, match=r"device 'cpu' cannot compute in float8_e4m3fn .*--dtype float32"):
        check_dtype("cpu", torch.float8_e4m3fn)


def test_load_model_checks_before_reading_weights(tiny_dir):
    from calmix.models import load_model

    with pytest.raises(CalmixError, match="unknown device 'tpu'"):
        load_model(str(tiny_dir), device="tpu")
    with pytest.raises(CalmixError, match="unknown dtype 'int8'"):
        load_model(str(tiny_dir), dtype="int8")


@pytest.mark.parametrize("extra,needle", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "mps"], "device 'mps' is not available"),
    (["--device", "cuda:7"], "device 'cuda:7'"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
    (["--dtype", "bf32"], "unknown dtype 'bf32'"),
])
def test_prune_refuses_bad_device_or_dtype_without_output(extra, needle, tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["prune", "--model", str(tiny_dir), "--calib", "stdlib", "--nsamples", "2", "--seqlen", "16",
               "--out", str(out), *extra])
    errors = [line for line in capsys.readouterr().err.splitlines() if "calmix: error:" in line]
    assert rc == 2 and len(errors) == 1 and needle in errors[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [tiny_dir]  # no temporary folder either


@pytest.mark.parametrize("argv", [
    ["ppl", "--model", "{m}", "--device", "tpu", "--out", "{o}/p.json"],
    ["eval", "--model", "{m}", "--device", "tpu", "--out", "{o}/e.json"],
    ["calib", "build", "stdlib", "--model", "{m}", "--device", "tpu", "--out", "{o}/c.pt"],
    ["calib", "metrics", "stdlib", "--model", "{m}", "--dtype", "int8", "--out", "{o}/c.json"],
])
def test_other_commands_refuse_them_too(argv, tiny_dir, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    rc = main([a.format(m=tiny_dir, o=out) for a in argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "calmix: error:" in line]
    assert rc == 2 and len(errors) == 1 and ("unknown device 'tpu'" in errors[0] or "unknown dtype" in errors[0])
    assert list(out.iterdir()) == []


def test_study_run_refuses_a_missing_device_before_its_folder_exists(tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["study", "run", "quick", "--out", str(out), "--device", "tpu"])
    assert rc == 2 and "unknown device 'tpu'" in capsys.readouterr().err and not out.exists()
