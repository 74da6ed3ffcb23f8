"""Study configuration: a TOML file (or a preset name) read into validated dataclasses."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from calmix.errors import CalmixError
from calmix.fingerprint import digest
from calmix.registry import Registry

FINGERPRINT_LENGTH = 16
_PATTERN_RE = re.compile(r"^(\d+):(\d+)$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.+=,:\-]+$")


@dataclass(frozen=True)
class Strategy:
    """One calibration strategy of the grid: a label, its build_calib spec, and its kind."""

    label: str
    spec: str
    kind: str  # "source" | "mix" | "generated"


@dataclass
class StudyConfig:
    """Everything that defines a study grid (model, calibration, pruning, evaluation, seeds)."""

    name: str = "study"
    model: str = "default"
    dtype: str = "auto"  # the checkpoint's own; parse_config writes the dtype it names
    device: str = "cpu"
    max_gpu_memory: str | None = None  # study.max_gpu_memory: the device budget for evaluation (e.g. "20GiB")
    seeds: list[int] = field(default_factory=lambda: [0])
    reference: str | None = None
    nsamples: int = 16
    seqlen: int = 256
    calib_bos: str = field(default_factory=lambda: _default_bos())  # calib.bos: auto | yes | no (calib.build)
    sources: list[str] = field(default_factory=list)
    mixes: dict[str, str] = field(default_factory=dict)
    generated: dict[str, str] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["sparsegpt"])
    sparsities: list[float] = field(default_factory=lambda: [0.6])
    patterns: list[str] = field(default_factory=lambda: ["unstructured"])
    blocksize: int = 128
    percdamp: float = 0.01
    dense_inputs: bool = False  # prune.dense_inputs (or the older prune.true_sequential = not dense_inputs)
    sequential: str = "linear"  # prune.sequential: "linear" (the engine default) or "layer" (calmix.prune.engine.SEQUENTIAL)
    sparsity_profile: str = "uniform"  # prune.sparsity_profile: uniform, owl or a FILE (calmix.prune.profile)
    owl_lambda: float = 0.08  # prune.owl_lambda (calmix.prune.profile.OWL_LAMBDA)
    owl_m: float = 5.0  # prune.owl_m (calmix.prune.profile.OWL_M)
    suite: str = "small-offline"
    limit: int | None = None
    tasks: list[str] | None = None
    eval_seed: int = 0
    allow_unsafe_exec: bool = False  # run model-written code without kernel isolation (the user's explicit opt-in)

    @property
    def strategies(self) -> list[Strategy]:
        """Single sources, then mixes, then self-generated strategies, in config order."""
        out = [Strategy(s, s, "source") for s in self.sources]
        out += [Strategy(k, v, "mix") for k, v in self.mixes.items()]
        out += [Strategy(k, v, "generated") for k, v in self.generated.items()]
        return out

    def to_toml_dict(self) -> dict:
        """The config in the TOML layout that `parse_config` reads back to an equal config."""
        study = {"name": self.name, "model": self.model, "dtype": self.dtype, "device": self.device,
                 "seeds": list(self.seeds)}
        if self.reference is not None:
            study["reference"] = self.reference
        if self.max_gpu_memory is not None:
            study["max_gpu_memory"] = self.max_gpu_memory
        evald: dict[str, Any] = {"suite": self.suite, "seed": self.eval_seed}
        if self.limit is not None:
            evald["limit"] = self.limit
        if self.tasks is not None:
            evald["tasks"] = list(self.tasks)
        if self.allow_unsafe_exec:
            evald["allow_unsafe_exec"] = True
        return {
            "study": study,
            "calib": {"nsamples": self.nsamples, "seqlen": self.seqlen, "bos": self.calib_bos,
                      "sources": list(self.sources),
                      "mixes": dict(self.mixes), "generated": dict(self.generated)},
            "prune": {"methods": list(self.methods), "sparsities": list(self.sparsities),
                      "patterns": list(self.patterns), "blocksize": self.blocksize, "percdamp": self.percdamp,
                      "dense_inputs": self.dense_inputs, "sequential": self.sequential,
                      "sparsity_profile": self.sparsity_profile, "owl_lambda": self.owl_lambda,
                      "owl_m": self.owl_m},
            "eval": evald,
        }

    def fingerprint(self) -> str:
        """Hash of everything that changes results (device and name excluded): equal configs, equal hash."""
        d = dataclasses.asdict(self)
        d.pop("device")
        d.pop("max_gpu_memory")  # where the weights sit changes no score
        d.pop("name")
        d.pop("allow_unsafe_exec")  # where code may run changes no score
        d.update(legacy_prune_key(d.pop("dense_inputs"), d.pop("sequential")))
        d.update(profile_key(d.pop("sparsity_profile"), d.pop("owl_lambda"), d.pop("owl_m")))
        d.update(legacy_bos_key(d.pop("calib_bos")))
        return digest(d, FINGERPRINT_LENGTH)


# the calibration windows of every study hashed before calib.bos existed had no BOS: "no" stays out of keys
LEGACY_BOS = "no"


def _default_bos() -> str:
    from calmix.calib.build import DEFAULT_BOS

    return DEFAULT_BOS


def legacy_bos_key(bos: str) -> dict:
    """How calib.bos enters fingerprints and cache keys: only where it is not the plain windows of older keys."""
    return {} if bos == LEGACY_BOS else {"calib_bos": bos}


# the sequential mode of every study hashed before the option existed: it stays out of their keys
LEGACY_SEQUENTIAL = "layer"


def legacy_prune_key(dense_inputs: bool, sequential: str) -> dict:
    """How the two options enter fingerprints and cache keys: as the former `true_sequential` (its opposite),
    and the sequential mode only where it is not the one every older key meant, so older keys keep meaning."""
    key: dict[str, Any] = {"true_sequential": not dense_inputs}
    if sequential != LEGACY_SEQUENTIAL:
        key["sequential"] = sequential
    return key


def profile_key(profile: str, owl_lambda: float, owl_m: float) -> dict:
    """How the sparsity profile enters fingerprints and cache keys (nothing for uniform, so older keys hold)."""
    from calmix.prune.profile import profile_key as key

    return key(profile, owl_lambda, owl_m)


def generated_kinds() -> tuple[str, ...]:
    """Names of the self-generated calibration methods (the heads of their specs)."""
    from calmix.calib.generated import GENERATORS

    return tuple(GENERATORS)


def mix_preset_names() -> tuple[str, ...]:
    """Names of the calibration mix presets (uniform, uniform-offline, all)."""
    from calmix.calib.spec import PRESETS

    return tuple(PRESETS)


def dtype_names() -> list[str]:
    """The dtypes a study may run in: the canonical names of calmix.models.DTYPES (aliases such as bf16 left out)."""
    from calmix.models import dtype_names as names

    return names()


# key -> (section, field name, expected type description)
_SCHEMA: dict[str, dict[str, str]] = {
    "study": {"name": "name", "model": "model", "dtype": "dtype", "device": "device",
              "max_gpu_memory": "max_gpu_memory", "seeds": "seeds",
              "reference": "reference"},
    "calib": {"nsamples": "nsamples", "seqlen": "seqlen", "bos": "calib_bos", "sources": "sources", "mixes": "mixes",
              "generated": "generated"},
    "prune": {"methods": "methods", "sparsities": "sparsities", "patterns": "patterns", "blocksize": "blocksize",
              "percdamp": "percdamp", "dense_inputs": "dense_inputs", "true_sequential": "dense_inputs",
              "sequential": "sequential", "sparsity_profile": "sparsity_profile", "owl_lambda": "owl_lambda",
              "owl_m": "owl_m"},
    "eval": {"suite": "suite", "limit": "limit", "tasks": "tasks", "seed": "eval_seed",
             "allow_unsafe_exec": "allow_unsafe_exec"},
}


def _err(key: str, msg: str) -> CalmixError:
    return CalmixError(f"study config: `{key}` {msg}")


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(key, f"must be a non-empty string, got {v!r}")
    return v.strip()


def _int(key: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _err(key, f"must be an integer >= {lo}, got {v!r}")
    return v


def _list(key: str, v: Any, item, allow_empty: bool = False) -> list:
    if not isinstance(v, list):
        raise _err(key, f"must be a list, got {v!r}")
    if not v and not allow_empty:
        raise _err(key, "must not be empty")
    out = [item(f"{key}[{i}]", x) for i, x in enumerate(v)]
    dups = sorted({x for x in out if out.count(x) > 1}, key=str)
    if dups:
        raise _err(key, f"has duplicates: {dups}")
    return out


def _sparsity(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
        raise _err(key, f"must be a fraction strictly between 0 and 1 (e.g. 0.6), got {v!r}")
    return round(float(v), 6)


def _pattern(key: str, v: Any) -> str:
    v = _str(key, v)
    if v == "unstructured":
        return v
    m = _PATTERN_RE.match(v)
    if not m or not 0 < int(m.group(1)) < int(m.group(2)):
        raise _err(key, f"must be 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'), got {v!r}")
    return v


def _labelled(key: str, v: Any) -> dict[str, str]:
    """A list of specs (label = spec) or a table label -> spec."""
    if isinstance(v, list):
        specs = _list(key, v, _str, allow_empty=True)
        return {s: s for s in specs}
    if isinstance(v, dict):
        out = {}
        for label, spec in v.items():
            if not _LABEL_RE.match(label):
                raise _err(f"{key}.{label}", "is not a usable label: use letters, digits and - _ . only")
            out[label] = _str(f"{key}.{label}", spec)
        return out
    raise _err(key, f"must be a list of calibration specs or a table label = spec, got {v!r}")


def _sequential_modes() -> list[str]:
    from calmix.prune.engine import SEQUENTIAL

    return list(SEQUENTIAL)


def _parse_profile(cfg: StudyConfig, p: dict) -> None:
    """prune.sparsity_profile / owl_lambda / owl_m, checked as `calmix prune` checks them; the profile applies to
    the unstructured cells (an N:M pattern fixes every layer's sparsity)."""
    from calmix.prune.profile import check_profile

    if "sparsity_profile" in p:
        cfg.sparsity_profile = _str("prune.sparsity_profile", p["sparsity_profile"])
    for key in ("owl_lambda", "owl_m"):
        if key in p:
            if isinstance(p[key], bool) or not isinstance(p[key], (int, float)):
                raise _err(f"prune.{key}", f"must be a number, got {p[key]!r}")
            setattr(cfg, key, float(p[key]))
    try:
        check_profile(cfg.sparsity_profile, 0, cfg.owl_lambda, cfg.owl_m)
    except CalmixError as exc:
        raise _err("prune.sparsity_profile", f"is not usable: {exc}") from None


def _known_pruners() -> list[str]:
    from calmix.prune.registry import PRUNERS

    return sorted(PRUNERS)


def _known_sources() -> list[str]:
    from calmix.calib import SOURCES

    return sorted(SOURCES)


def _is_file_source(spec: str) -> bool:
    """A calibration source given as `file:PATH[:field]` or an existing file or folder."""
    return spec.startswith("file:") or Path(spec).expanduser().exists()


def parse_config(data: dict, where: str = "config") -> StudyConfig:
    """Validate a TOML dict into a StudyConfig; any problem raises CalmixError naming the key."""
    if not isinstance(data, dict):
        raise CalmixError(f"study config {where}: expected a TOML table")
    for section, value in data.items():
        if section not in _SCHEMA:
            raise _err(section, f"is not a known section (known: {', '.join(_SCHEMA)})")
        if not isinstance(value, dict):
            raise _err(section, "must be a table, e.g. [" + section + "]")
        for key in value:
            if key not in _SCHEMA[section]:
                raise _err(f"{section}.{key}", f"is not a known key (known in [{section}]: "
                                                f"{', '.join(_SCHEMA[section])})")
    s, c, p, e = (data.get(k, {}) for k in ("study", "calib", "prune", "eval"))
    cfg = StudyConfig()
    if "name" in s:
        cfg.name = _str("study.name", s["name"])
    if "model" in s:
        cfg.model = _str("study.model", s["model"])
    if "dtype" in s:
        cfg.dtype = _str("study.dtype", s["dtype"])
        dtypes = dtype_names()
        if cfg.dtype not in dtypes and cfg.dtype != "auto":
            raise _err("study.dtype", f"must be {', '.join(dtypes[:-1])} or {dtypes[-1]}, got {cfg.dtype!r} "
                                      f"(or auto, the checkpoint's own dtype, the default)")
    if "device" in s:
        cfg.device = _str("study.device", s["device"])
    if "max_gpu_memory" in s:
        from calmix.placement import parse_memory

        cfg.max_gpu_memory = _str("study.max_gpu_memory", s["max_gpu_memory"])
        try:
            parse_memory(cfg.max_gpu_memory)
        except CalmixError as err:
            raise _err("study.max_gpu_memory", str(err)) from None
    if "seeds" in s:
        cfg.seeds = _list("study.seeds", s["seeds"], lambda k, v: _int(k, v, lo=0))
    if "nsamples" in c:
        cfg.nsamples = _int("calib.nsamples", c["nsamples"])
    if "seqlen" in c:
        cfg.seqlen = _int("calib.seqlen", c["seqlen"], lo=2)
    if "bos" in c:
        from calmix.calib.build import BOS_CHOICES

        cfg.calib_bos = _str("calib.bos", c["bos"])
        if cfg.calib_bos not in BOS_CHOICES:
            raise _err("calib.bos", f"must be one of {', '.join(BOS_CHOICES)}, got {cfg.calib_bos!r}")
    cfg.sources = _list("calib.sources", c.get("sources", []), _str, allow_empty=True)
    for i, src in enumerate(cfg.sources):
        if src.startswith("mix:") or src in mix_preset_names():
            raise _err(f"calib.sources[{i}]", f"{src!r} is a mix: list it under calib.mixes")
        if src.split(":")[0] in generated_kinds():
            raise _err(f"calib.sources[{i}]", f"{src!r} is self-generated: list it under calib.generated")
    known = _known_sources()
    bad = [x for x in cfg.sources if x not in known and not _is_file_source(x)]
    if bad:
        raise _err("calib.sources", f"names unknown sources {bad} (known: {', '.join(known)}; or file:PATH)")
    cfg.mixes = _labelled("calib.mixes", c.get("mixes", {}))
    cfg.generated = _labelled("calib.generated", c.get("generated", {}))
    kinds = generated_kinds()
    for label, spec in cfg.generated.items():
        if spec.split(":")[0] not in kinds:
            raise _err(f"calib.generated.{label}", f"must start with one of {kinds}, got {spec!r}")
    for section, table in (("calib.mixes", cfg.mixes), ("calib.generated", cfg.generated)):
        for label, spec in table.items():
            _check_spec(f"{section}.{label}", spec)
    labels = [st.label for st in cfg.strategies]
    dups = sorted({x for x in labels if labels.count(x) > 1})
    if dups:
        raise _err("calib", f"uses the same label twice across sources/mixes/generated: {dups}")
    if not labels:
        raise _err("calib.sources", "no calibration strategy: give calib.sources, calib.mixes or calib.generated")
    if "reference" in s:
        cfg.reference = _str("study.reference", s["reference"])
        if cfg.reference not in cfg.sources:
            raise _err("study.reference", f"{cfg.reference!r} must be one of calib.sources {cfg.sources}")
    elif "c4" in cfg.sources:
        cfg.reference = "c4"
    if "methods" in p:
        cfg.methods = _list("prune.methods", p["methods"], _str)
    pruners = _known_pruners()
    bad = [m for m in cfg.methods if m not in pruners]
    if bad:
        raise _err("prune.methods", f"names unknown pruners {bad} (known: {', '.join(pruners)})")
    if "sparsities" in p:
        cfg.sparsities = _list("prune.sparsities", p["sparsities"], _sparsity)
    if "patterns" in p:
        cfg.patterns = _list("prune.patterns", p["patterns"], _pattern)
    if "blocksize" in p:
        cfg.blocksize = _int("prune.blocksize", p["blocksize"])
    if "percdamp" in p:
        v = p["percdamp"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise _err("prune.percdamp", f"must be a number in (0, 1), got {v!r}")
        cfg.percdamp = float(v)
    for key in ("dense_inputs", "true_sequential"):
        if key in p and not isinstance(p[key], bool):
            raise _err(f"prune.{key}", f"must be true or false, got {p[key]!r}")
    if "true_sequential" in p:  # the older name: true means the pruned layer feeds the next one
        if "dense_inputs" in p and p["dense_inputs"] == p["true_sequential"]:
            raise _err("prune.true_sequential", "contradicts prune.dense_inputs (true_sequential = not "
                                                "dense_inputs): keep only dense_inputs")
        cfg.dense_inputs = not p["true_sequential"]
    if "dense_inputs" in p:
        cfg.dense_inputs = p["dense_inputs"]
    if "sequential" in p:
        modes = _sequential_modes()
        if p["sequential"] not in modes:
            raise _err("prune.sequential", f"must be one of {', '.join(modes)}, got {p['sequential']!r}")
        cfg.sequential = p["sequential"]
    _parse_profile(cfg, p)
    if "suite" in e:
        cfg.suite = _str("eval.suite", e["suite"])
    if "limit" in e:
        cfg.limit = _int("eval.limit", e["limit"])
    if "tasks" in e:
        cfg.tasks = _list("eval.tasks", e["tasks"], _str)
    if "seed" in e:
        cfg.eval_seed = _int("eval.seed", e["seed"], lo=0)
    if "allow_unsafe_exec" in e:
        if not isinstance(e["allow_unsafe_exec"], bool):
            raise _err("eval.allow_unsafe_exec", f"must be true or false, got {e['allow_unsafe_exec']!r}")
        cfg.allow_unsafe_exec = e["allow_unsafe_exec"]
    _check_eval(cfg)
    cfg.dtype = _concrete_dtype(cfg.model, cfg.dtype)
    return cfg


def _concrete_dtype(model: str, dtype: str) -> str:
    """'auto' as the dtype it names for this model (so that keys name the dtype the cells run in).

    A model that cannot be found here keeps 'auto': nothing of it can run, and loading it says why."""
    from calmix.models import checkpoint_dtype, dtype_name

    if dtype != "auto":
        return dtype
    try:
        return dtype_name(checkpoint_dtype(model))
    except CalmixError:
        return dtype


def _check_spec(key: str, spec: str) -> None:
    """A mix or generated spec must parse."""
    from calmix.calib.spec import parse_spec

    try:
        parse_spec(spec)
    except CalmixError as err:
        raise _err(key, f"is not a valid calibration spec: {err}") from None


def _check_eval(cfg: StudyConfig) -> None:
    """The suite and tasks must exist."""
    from calmix.evals.suites import SUITES
    from calmix.evals.tasks import TASKS

    if cfg.suite not in SUITES:
        raise _err("eval.suite", f"names an unknown suite {cfg.suite!r} (known: {', '.join(SUITES)})")
    bad = [t for t in cfg.tasks or [] if t not in TASKS]
    if bad:
        raise _err("eval.tasks", f"names unknown tasks {bad} (known: {', '.join(sorted(TASKS))})")


def _shipped_presets() -> Registry[Traversable]:
    """The study presets shipped as calmix/configs/NAME.toml, by name."""
    reg: Registry[Traversable] = Registry("study preset")
    for path in sorted((resources.files("calmix") / "configs").iterdir(), key=lambda p: p.name):
        if path.name.endswith(".toml"):
            reg.add(path.name[:-5], path)
    return reg


PRESETS = _shipped_presets()


def preset_names() -> list[str]:
    """Names of the study presets shipped in calmix/configs."""
    return PRESETS.names()


def preset_text(name: str) -> str:
    """TOML text of a shipped preset."""
    return PRESETS.get(name).read_text()


def load_config(spec: str | Path) -> tuple[StudyConfig, str]:
    """Read a study config from a TOML path or a preset name; returns (config, TOML text)."""
    path = Path(spec)
    if path.is_file():
        text = path.read_text()
        where = str(path)
    elif str(spec) in PRESETS:
        text = preset_text(str(spec))
        where = f"preset {spec}"
    else:
        raise CalmixError(f"study config {spec!r} is neither a file nor a preset "
                          f"(presets: {', '.join(preset_names())})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CalmixError(f"study config {where} is not valid TOML: {err}") from None
    return parse_config(data, where), text
