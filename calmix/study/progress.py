"""Progress of a study run: one bar for the grid plus a line per finished cell with the ETA (visible in logs too)."""

from __future__ import annotations

import sys
import time

from calmix.study.grid import Cell


class Progress:
    """One progress bar for the study plus a line per finished cell with the ETA."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm

        self.total, self.done = total, 0
        self.t0 = self.t_eta = time.perf_counter()  # elapsed counts from t0, the ETA's pace from t_eta
        self.bar = tqdm(total=total, desc="study", unit="cell", disable=None if enabled else True,
                        dynamic_ncols=True)
        self.enabled = enabled

    def step(self, cell: Cell, status: str, seconds: float, detail: str = "") -> None:
        """One cell ended with `status`: advance the bar, print its line."""
        from tqdm import tqdm

        self.done += 1
        self.bar.update(1)
        elapsed = time.perf_counter() - self.t0
        eta = (time.perf_counter() - self.t_eta) / self.done * (self.total - self.done)
        if self.enabled:
            tqdm.write(f"[{self.done}/{self.total}] {cell.name}: {status} in {seconds:.0f}s{detail}"
                       f" | elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", file=sys.stderr)

    def restart(self) -> None:
        """Pace the ETA from now: the cells start after a phase (calibration sets) it must not average in."""
        self.t_eta = time.perf_counter()

    def cell_done(self, cell: Cell, result: dict, seconds: float) -> None:
        """A cell finished: its line shows the total retention."""
        tot = (result.get("retention") or {}).get("Total")
        self.step(cell, "done", seconds, f", total retention {tot:.1f}%" if isinstance(tot, (int, float)) else "")

    def cell_failed(self, cell: Cell, error: str, seconds: float, stage: str = "") -> None:
        """A cell failed (in `stage`, e.g. 'calibration: '): its line shows the error."""
        self.step(cell, "FAILED", seconds, f" ({stage}{error[:120]})")

    def note(self, text: str) -> None:
        """A status line (what runs now), shown as the bar's postfix and printed."""
        from tqdm import tqdm

        self.bar.set_postfix_str(text[:60])
        if self.enabled:
            tqdm.write(f"  {text}", file=sys.stderr)

    def close(self) -> None:
        """End the bar."""
        self.bar.close()
