"""The grid of a study: one cell per strategy x pruner x sparsity x pattern x seed, with stable keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from calmix.fingerprint import digest
from calmix.study.config import StudyConfig, legacy_bos_key, legacy_prune_key, profile_key

KEY_LENGTH = 20  # hex characters of the keys of cells, calibration sets and dense evaluations


@dataclass(frozen=True)
class Cell:
    """One unit of work: calibrate with `spec` (seed), prune with `pruner`, evaluate, compare to dense."""

    strategy: str
    kind: str
    spec: str
    pruner: str
    sparsity: float
    pattern: str
    seed: int

    @property
    def name(self) -> str:
        """Human-readable id, e.g. `c4/sparsegpt/unstructured/0.6/seed0`."""
        return f"{self.strategy}/{self.pruner}/{self.pattern}/{self.sparsity:g}/seed{self.seed}"

    def to_dict(self) -> dict:
        """The grid fields (what rebuilds the cell: `Cell(**d)`)."""
        return asdict(self)

    def row(self) -> dict:
        """The grid fields and the name, as the store records a cell."""
        return {**self.to_dict(), "name": self.name}


def calib_key(cfg: StudyConfig, spec: str, seed: int) -> str:
    """Key of a calibration set and its metrics: model, spec, seed and sizes define it."""
    return digest({"model": cfg.model, "dtype": cfg.dtype, "spec": spec, "seed": seed,
                   "nsamples": cfg.nsamples, "seqlen": cfg.seqlen, **legacy_bos_key(cfg.calib_bos)}, KEY_LENGTH)


def dense_key(cfg: StudyConfig) -> str:
    """Key of the dense model's evaluation: model, dtype, suite, tasks, limit, eval seed."""
    return digest({"model": cfg.model, "dtype": cfg.dtype, "suite": cfg.suite, "tasks": cfg.tasks,
                   "limit": cfg.limit, "seed": cfg.eval_seed}, KEY_LENGTH)


def prune_params(cfg: StudyConfig, cell: Cell) -> dict:
    """Keyword arguments of PruneConfig for a cell (the sparsity profile for unstructured cells only)."""
    profile = cfg.sparsity_profile if cell.pattern == "unstructured" else "uniform"
    return {"method": cell.pruner, "sparsity": cell.sparsity, "pattern": cell.pattern,
            "blocksize": cfg.blocksize, "percdamp": cfg.percdamp, "dense_inputs": cfg.dense_inputs,
            "sequential": cfg.sequential, "sparsity_profile": profile, "owl_lambda": cfg.owl_lambda,
            "owl_m": cfg.owl_m}


def prune_key(cfg: StudyConfig, cell: Cell) -> dict:
    """The pruning parameters as cache keys hold them (see legacy_prune_key)."""
    params = prune_params(cfg, cell)
    legacy = legacy_prune_key(params.pop("dense_inputs"), params.pop("sequential"))
    legacy.update(profile_key(params.pop("sparsity_profile"), params.pop("owl_lambda"), params.pop("owl_m")))
    return {**params, **legacy}


def cell_key(cfg: StudyConfig, cell: Cell) -> str:
    """Key of a cell's result: its calibration set, pruning parameters and dense evaluation."""
    return digest({"strategy": cell.strategy, "calib": calib_key(cfg, cell.spec, cell.seed),
                   "prune": prune_key(cfg, cell),
                   "dense": dense_key(cfg)}, KEY_LENGTH)


def build_grid(cfg: StudyConfig) -> list[Cell]:
    """All cells of a config; an N:M pattern fixes the sparsity to N/M, so it yields one cell per seed."""
    cells: list[Cell] = []
    seen: set[Cell] = set()
    for st in cfg.strategies:
        for pruner in cfg.methods:
            for pattern in cfg.patterns:
                if pattern == "unstructured":
                    sps = cfg.sparsities
                else:
                    n, m = (int(x) for x in pattern.split(":"))
                    sps = [round(n / m, 6)]
                for sp in sps:
                    for seed in cfg.seeds:
                        cell = Cell(st.label, st.kind, st.spec, pruner, sp, pattern, seed)
                        if cell not in seen:
                            seen.add(cell)
                            cells.append(cell)
    return cells
