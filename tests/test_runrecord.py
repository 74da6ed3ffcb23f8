"""The hardware record: CPU model, flags and core counts from /proc/cpuinfo, and the line reports print."""

from __future__ import annotations

from calmix.runrecord import CPU_FLAGS, cpu_info, hardware, hardware_line, run_record

CPUINFO = """processor	: 0
physical id	: 0
core id	: 0
model name	: Test CPU 9000
flags		: fpu sse avx2 avx512f avx512_bf16
processor	: 1
physical id	: 0
core id	: 0
model name	: Test CPU 9000
flags		: fpu sse avx2 avx512f avx512_bf16
processor	: 2
physical id	: 0
core id	: 1
model name	: Test CPU 9000
flags		: fpu sse avx2 avx512f avx512_bf16
"""


def test_cpu_info_reads_model_flags_and_physical_cores(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    model, flags, cores = cpu_info(str(path))
    assert model == "Test CPU 9000" and cores == 2  # three threads on two cores
    assert {"avx2", "avx512f", "avx512_bf16"} <= flags and "amx_tile" not in flags
    assert cpu_info(str(tmp_path / "missing")) == (None, set(), None)


def test_hardware_record_and_its_line():
    hw = hardware()
    assert hw["cpu"]["threads"] >= 1 and hw["torch"] and hw["transformers"]
    if hw["cpu"]["flags"] is not None:
        assert set(hw["cpu"]["flags"]) == set(CPU_FLAGS)
    fake = {"cpu": {"model": "Test CPU", "cores": 8, "threads": 16,
                    "flags": {f: f in ("avx2", "amx_bf16") for f in CPU_FLAGS}},
            "gpu": {"name": "H200", "count": 1, "memory_gib": 139.8, "cuda": "12.8"},
            "torch": "2.13", "transformers": "5.2"}
    assert hardware_line(fake) == ("Test CPU, 8 cores / 16 threads (avx2, amx_bf16); GPU 1 x H200 (139.8 GiB, "
                                   "CUDA 12.8); torch 2.13, transformers 5.2")
    assert run_record("x", {})["hardware"]["cpu"] == hw["cpu"]
