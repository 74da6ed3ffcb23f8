"""The study's progress lines: elapsed from the start, the ETA paced by the cells alone."""

from __future__ import annotations

from calmix.study import progress as P
from calmix.study.grid import Cell


def test_eta_is_paced_by_cells_after_restart(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: now[0])
    bar = P.Progress(total=3, enabled=True)
    now[0] += 600.0  # a 10-minute calibration phase
    bar.restart()
    now[0] += 60.0  # the first cell takes 1 minute
    cell = Cell(strategy="s", kind="source", spec="s", pruner="sparsegpt", sparsity=0.5, pattern="unstructured",
                seed=0)
    bar.cell_done(cell, {"retention": {"Total": 50.0}}, 60.0)
    bar.close()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "elapsed 11.0 min" in line and "ETA 2.0 min" in line  # 2 cells left at 1 min each, not 22 min
