"""Wall time per pruning stage (capture, statistics, solve, replay, error), summed over layers.

Stages nest: time spent in an inner stage (a statistic hook inside a layer's replay) is charged to the inner
stage only, so the stages add up to the time measured. On CUDA each switch synchronises, so that the time of
queued kernels lands in the stage that queued them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

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
