"""Generator parameters: build a parameter dataclass from `key=value` strings, and the shared range checks."""

from __future__ import annotations

import dataclasses
import types
import typing

from calmix.errors import CalmixError

TRUE_WORDS, FALSE_WORDS = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def convert(kind: str, key: str, value, typ):
    """value as the annotated type typ (an `X | None` field takes '', 'none' or 'auto' as None)."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "auto")):
            return None
        typ = args[0]
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() not in TRUE_WORDS | FALSE_WORDS:
                    raise ValueError
                return value.lower() in TRUE_WORDS
            return bool(value)
        if typ is int and isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        return typ(value)
    except (TypeError, ValueError):
        raise CalmixError(f"{kind}: parameter {key}={value!r} is not a valid {typ.__name__}") from None


def parse_params(cls, params: dict | None, kind: str):
    """Build the params dataclass `cls` from a dict of (string or typed) values; unknown keys are an error."""
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise CalmixError(f"{kind}: unknown parameter(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: convert(kind, k, v, hints[k]) for k, v in params.items()}
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(kind)
    return obj


def parse_generator_params(cls, params: dict | None, kind: str, seqlen: int):
    """parse_params for a generator whose `gen_len` (tokens per generation) defaults to the window length seqlen."""
    p = parse_params(cls, params, kind)
    p.gen_len = p.gen_len or seqlen
    return p


def check_positive(kind: str, **values) -> None:
    """Each given value (None = unset) must be > 0."""
    for k, v in values.items():
        if v is not None and v <= 0:
            raise CalmixError(f"{kind}: {k} must be > 0, got {v}")


def check_fraction(kind: str, key: str, v: float, upper_open: bool = True) -> None:
    """v must lie in [0, 1) (or [0, 1] with upper_open=False)."""
    if not (0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0):
        raise CalmixError(f"{kind}: {key} must be in [0, 1{')' if upper_open else ']'}, got {v}")


def check_schedule(kind: str, p) -> None:
    """The Self-Cal temperature schedule and nucleus settings of p (t_initial, t_final, n, top_k, top_p)."""
    if p.n < 0 or p.t_initial < 0 or p.t_final < 0 or p.top_k < 0:
        raise CalmixError(f"{kind}: n, t_initial, t_final and top_k must be >= 0")
    if not 0.0 < p.top_p <= 1.0:
        raise CalmixError(f"{kind}: top_p must be in (0, 1], got {p.top_p}")
