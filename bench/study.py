"""Timings and headline table of a study folder (e.g. the quick preset): wall and CPU seconds per stage.

    python bench/study.py runs/quick            # after `calmix study run quick --out runs/quick`

CPU seconds matter on a shared machine: the wall time of a dedicated 2-core machine is about CPU / (2 * efficiency),
with the efficiency of torch's 2-thread CPU kernels measured here as CPU / wall of the same process (when the
machine is not oversubscribed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()

    from calmix.study import analysis as A
    from calmix.study.grid import build_grid, cell_key
    from calmix.study.folder import load_study_config
    from calmix.study.store import Store

    out = Path(args.dir)
    cfg = load_study_config(out)
    with Store(out) as st:
        keys = [cell_key(cfg, c) for c in build_grid(cfg)]
        rows = [r for r in st.cells(keys) if r["status"] == "done"]
        calib = st.conn.execute("SELECT spec, seed, seconds, card FROM calib").fetchall()
        dense = st.conn.execute("SELECT seconds FROM dense").fetchall()
    print(f"study {cfg.name}: {len(rows)}/{len(keys)} cells done")
    stage = {"prune": [], "prune_cpu": [], "eval": [], "eval_cpu": []}
    for r in rows:
        for k in stage:
            v = (r["result"] or {}).get("timings", {}).get(k)
            if v is not None:
                stage[k].append(v)
    cal_wall = [c["seconds"] for c in calib]
    cal_cpu = [json.loads(c["card"] or "{}").get("study_build", {}).get("cpu_s") for c in calib]
    cal_cpu = [c for c in cal_cpu if c is not None]
    tot_wall = sum(cal_wall) + sum(d[0] for d in dense) + sum(stage["prune"]) + sum(stage["eval"])
    tot_cpu = sum(cal_cpu) + sum(stage["prune_cpu"]) + sum(stage["eval_cpu"])
    print(f"dense evaluation: {sum(d[0] for d in dense):.0f} s wall")
    print(f"calibration sets: {len(calib)}, mean {statistics.mean(cal_wall or [0]):.1f} s wall, "
          f"{statistics.mean(cal_cpu or [0]):.1f} s CPU each")
    for k in ("prune", "eval"):
        if stage[k]:
            print(f"{k}: mean {statistics.mean(stage[k]):.1f} s wall, {statistics.mean(stage[k + '_cpu'] or [0]):.1f} s "
                  "CPU per cell")
    print(f"sum of stages: {tot_wall / 60:.1f} min wall, {tot_cpu / 60:.1f} min CPU (dense eval CPU not included) -> "
          f"about {tot_cpu / args.cores / 60:.1f} min on {args.cores} dedicated cores at full efficiency")
    runs = sorted((out / "runs").glob("run-*.json"))
    for p in runs:
        rec = json.loads(p.read_text())
        t = rec.get("timings_s", {})
        print(f"{p.name}: {rec.get('cells_run')} cells, {t.get('total', 0) / 60:.1f} min wall, "
              f"{t.get('cpu', 0) / 60:.1f} min CPU")
    df = A.cells_frame(rows)
    st_tab = A.strategy_table(df, cfg.reference)
    if not st_tab.empty:
        print("\nheadline table (total retention %, mean ± std over seeds):")
        for _, r in st_tab.iterrows():
            print(f"  {r.role:<20} {r.strategy:<20} {r.Total:6.1f} ± {r.Total_std:4.1f}   gap {r.gap_to_reference:+.1f}")
    sp = A.seed_spread(df)
    for _, s in sp.iterrows():
        print(f"seed spread: mean std {s.seed_std_mean:.2f}, max {s.seed_std_max:.2f}; strategy range "
              f"{s.strategy_range:.2f} points")


if __name__ == "__main__":
    main()
