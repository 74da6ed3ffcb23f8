"""Report from a stored fixture study: files, tables, plots, headline; CLI status and report."""

from __future__ import annotations

import base64
import re

from calmix.cli import main
from calmix.study.report import report_study

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_from_fixture_study(tmp_path, capsys, fake_study):
    out = tmp_path / "study"
    fake_study(out)
    paths = report_study(out)
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    names = {p.name for p in paths["plots"]}
    assert {"strategies_sparsegpt_unstructured_50.png", "retention_sparsegpt_unstructured_50.png",
            "spearman_sparsegpt_unstructured_50.png"} <= names
    for p in paths["plots"]:
        assert p.read_bytes().startswith(PNG)
    # headline: best single source, per-dimension winners, mix vs best single, IGSP vs Self-Cal
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert "Math is kept best by `pydoc-topics`" in head and "Code is kept best by `stdlib`" in head
    assert "Best single source:" in head
    # by hand from the fixture's base values: stdlib (45 + 81 + 30 + 48) / 4 + 5 (sparsity 0.5) = 56.0, seeds at
    # -0.5 / +0.5 give std sqrt(0.5) = 0.7; the next best source, rg-logic, keeps 50.25
    assert "Best single source: `stdlib` with 56.0 ± 0.7% total retention" in head
    assert "The mix `uniform` keeps" in head and "IGSP keeps" in head and "Seed spread" in head
    assert "vs Self-Cal" in head  # SGS has a failed seed but its other seed still counts
    # every claim comes with its paired bootstrap interval; no verdict from the span of all strategies
    assert "Best single source: `stdlib` with 56.0 ± 0.7% total retention (95% CI " in head
    assert "seed-to-seed noise" not in head and "headline differences" in head
    assert re.search(r"\| IGSP − Self-Cal \| `igsp` − `selfcal` \| \+5\.0 \| \[[-+0-9.]+, [-+0-9.]+\] \| significant \|", md)
    assert "paired bootstrap" in md
    # the strategy table shows mean ± std over seeds and the gap to the reference
    assert re.search(r"\| reference source \| `pydoc-topics` \| 45\.0 ± 0\.7 \|", md)
    assert "gap to pydoc-topics" in md
    # the Spearman table states n, ppl vs Math is -1 over 5 sources
    assert "n = 5 single sources" in md
    ppl_row = next(line for line in md.splitlines() if line.startswith("| ppl |"))
    assert "**-1.00**" in ppl_row
    assert "failed 1" in md
    # the HTML embeds every plot
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(imgs) == len(paths["plots"]) and all(base64.b64decode(i).startswith(PNG) for i in imgs)
    assert (out / "cells.csv").read_text().count("\n") == 1 + 9 * 2 - 1  # header + cells, the failed one absent
    # markdown references the plots beside it
    for name in names:
        assert f"(report_files/{name})" in md

    assert main(["study", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "18 cells: 17 done, 0 pending, 1 failed" in text and "RuntimeError: boom" in text
    assert main(["study", "report", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out


def test_report_with_sparsity_sweep(tmp_path, fake_study):
    out = tmp_path / "sweep"
    fake_study(out, with_failed=False, sparsities=(0.3, 0.6))
    paths = report_study(out)
    names = {p.name for p in paths["plots"]}
    assert "sparsity_sparsegpt.png" in names
    md = paths["markdown"].read_text()
    assert "## sparsegpt unstructured 30%" in md and "## sparsegpt unstructured 60%" in md
    assert "Retention vs sparsity" in md


def test_report_of_missing_or_empty_study(tmp_path):
    from calmix.errors import CalmixError
    import pytest

    with pytest.raises(CalmixError, match="holds no study"):
        report_study(tmp_path / "nothing")
    assert main(["study", "report", str(tmp_path / "nothing")]) == 2


def test_report_says_a_dimension_is_at_the_floor_instead_of_ranking_it(tmp_path, fake_study):
    out = tmp_path / "study"
    fake_study(out, floored=("General",))
    md = report_study(out)["markdown"].read_text()
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert ("**General is not measured: the dense model is at the floor on every General task** (`t_General` "
            "chance-corrected score 0.010 [-0.020, 0.040]; above the floor needs more than 0.05 with the interval "
            "above 0), so strategies are not ranked on it.") in head
    assert "Total is not measured (it needs all four dimensions); compare strategies on Commonsense, Code, Math." in head
    assert "General is kept best by" not in head and "Math is kept best by `pydoc-topics`" in head
    assert "Best single source" not in head  # it ranks on Total, which a floored dimension leaves unmeasured
    assert re.search(r"\| `pydoc-topics` \| source \| at the floor \| 85\.0 ± 0\.7 \[77\.7, 92\.3\] \|", md)
    assert "vs General" not in head
    # the dense section lists every task's floor verdict
    assert re.search(r"\| `t_General` \| General \| 0\.5000 \| 0\.010 \(chance-corrected score\) \| \[-0\.020, 0\.040\] "
                     r"\| 0\.05 \| at the floor \|", md)
    assert "| `t_Math` | Math | 0.2000 | 0.200 (chance-corrected score) | [0.200, 0.200] | 0.05 | above |" in md


def test_report_prints_the_machines_that_computed_the_cells(tmp_path, fake_study):
    from calmix.runrecord import hardware, hardware_line
    from calmix.study.folder import HARDWARE_META
    from calmix.study.store import Store

    out = tmp_path / "study"
    fake_study(out)
    md = report_study(out)["markdown"].read_text()
    section = md.split("## Hardware")[1].split("\n## ")[0]
    assert "Cells computed on this machine" in section and hardware_line(hardware()) in section
    other = {"cpu": {"model": "Other CPU", "cores": 4, "threads": 8, "flags": None}, "gpu": None,
             "torch": "2.0", "transformers": "4.0"}
    with Store(out) as store:
        store.set_meta(HARDWARE_META, store.get_meta(HARDWARE_META) + [other])
    md = report_study(out)["markdown"].read_text()
    assert "Cells computed on 2 machines" in md and "Other CPU, 4 cores / 8 threads; no GPU" in md
