"""The hardware a benchmark ran on, for its JSON record: calmix's run-record hardware plus memory and load."""

from __future__ import annotations

import os

from calmix.runrecord import hardware as machine
from calmix.runrecord import hardware_line


def hardware() -> dict:
    """CPU model and flags, cores, threads, GPU, torch/transformers (calmix.runrecord.hardware), memory (GB) and
    the load average when the record was taken."""
    info = machine()
    info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    try:
        with open("/proc/meminfo") as fh:
            info["mem_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def describe(info: dict) -> str:
    """One line: the machine, then the load average."""
    return f"{hardware_line(info)}; load average {info.get('load_avg')}"
