"""Parameter parsing and the shared range checks of the generators."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from calmix.calib.generated import generate_set
from calmix.calib.generated.params import (check_fraction, check_positive, check_schedule, convert,
                                           parse_generator_params, parse_params)
from calmix.calib.generated.selfcal import SelfCalParams
from calmix.errors import CalmixError


def test_params_parsing_and_errors():
    p = parse_params(SelfCalParams, {"t_initial": "1.5", "n": "4", "stopword_first": "yes", "gen_len": "none"}, "x")
    assert p.t_initial == 1.5 and p.n == 4 and p.stopword_first is True and p.gen_len is None
    with pytest.raises(CalmixError, match="valid keys: t_initial"):
        parse_params(SelfCalParams, {"bogus": "1"}, "selfcal")
    with pytest.raises(CalmixError, match="not a valid int"):
        parse_params(SelfCalParams, {"n": "ten"}, "selfcal")
    with pytest.raises(CalmixError, match="top_p"):
        parse_params(SelfCalParams, {"top_p": "0"}, "selfcal")
    with pytest.raises(CalmixError, match="unknown self-generated set"):
        generate_set("nope", None, None, 1, 8)


def test_gen_len_defaults_to_the_window_length():
    assert parse_generator_params(SelfCalParams, None, "selfcal", 16).gen_len == 16
    assert parse_generator_params(SelfCalParams, {"gen_len": "5"}, "selfcal", 16).gen_len == 5
    with pytest.raises(CalmixError, match="gen_len must be > 0"):
        parse_generator_params(SelfCalParams, {"gen_len": "0"}, "selfcal", 16)


def test_convert_by_annotation():
    assert convert("k", "x", "3.0", int) == 3 and convert("k", "x", 7, int) == 7
    assert convert("k", "x", "off", bool) is False and convert("k", "x", "ON", bool) is True
    assert convert("k", "x", "auto", int | None) is None and convert("k", "x", "5", int | None) == 5
    assert convert("k", "x", 0.25, float) == 0.25 and convert("k", "x", "wiki", str | None) == "wiki"
    with pytest.raises(CalmixError, match=r"k: parameter x='maybe' is not a valid bool"):
        convert("k", "x", "maybe", bool)
    with pytest.raises(CalmixError, match="not a valid int"):
        convert("k", "x", "2.5", int)


def test_parse_params_without_a_validate_method():
    @dataclass
    class Plain:
        a: int = 1
        b: str | None = None

    assert parse_params(Plain, None, "k") == Plain()
    assert parse_params(Plain, {"a": "2", "b": "x"}, "k") == Plain(2, "x")


def test_range_checks():
    check_positive("k", a=1, b=None, c=0.5)
    with pytest.raises(CalmixError, match="k: b must be > 0, got 0"):
        check_positive("k", a=1, b=0)
    check_fraction("k", "drop", 0.0)
    with pytest.raises(CalmixError, match=r"drop must be in \[0, 1\), got 1.0"):
        check_fraction("k", "drop", 1.0)
    check_fraction("k", "drop", 1.0, upper_open=False)
    with pytest.raises(CalmixError, match=r"must be in \[0, 1\], got -0.1"):
        check_fraction("k", "drop", -0.1, upper_open=False)
    check_schedule("k", SelfCalParams())
    with pytest.raises(CalmixError, match="must be >= 0"):
        check_schedule("k", SelfCalParams(t_final=-1.0))
    with pytest.raises(CalmixError, match=r"top_p must be in \(0, 1\]"):
        check_schedule("k", SelfCalParams(top_p=1.5))
