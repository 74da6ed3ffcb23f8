"""What a pruning run costs: wall time per stage (capture, statistics, solve, replay, error), summed over
layers, and the peak memory while each layer was pruned.

Stages nest: time spent in an inner stage (a statistic hook inside a layer's replay) is charged to the inner
stage only, so the stages add up to the time measured. On CUDA each switch synchronises, so that the time of
queued kernels lands in the stage that queued them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

from calmix.runrecord import peak_rss_mb

STAGES = ("capture", "statistics", "solve", "replay", "error")


class StageClock:
    """`with clock("solve"): ...` adds the wall time spent inside, less that of nested stages, to `totals`."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.totals: dict[str, float] = {stage: 0.0 for stage in STAGES}
        self._stack: list[str] = []
        self._sync = device is not None and device.type == "cuda"
        self._t = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._switch()
        self._stack.append(stage)
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()

    def _switch(self) -> None:
        if self._sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self._stack:
            top = self._stack[-1]
            self.totals[top] = self.totals.get(top, 0.0) + now - self._t
        self._t = now


class PeakMemory:
    """Peak memory per layer: on CUDA the allocator's max_memory_allocated since the layer began (reset at
    each start); elsewhere the process's RSS high-water mark so far (the kernel's, never reset)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.kind = "cuda_max_memory_allocated" if self.cuda else "rss_high_water"

    def start(self) -> None:
        """Begin a layer."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        """The peak since start() (CUDA) or since the process began (RSS), in MiB."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return peak_rss_mb()
