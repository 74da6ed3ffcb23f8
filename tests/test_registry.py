"""The generic registry: registration order, duplicates refused, lookups that name the choices."""

import pytest

from calmix.errors import CalmixError
from calmix.registry import Registry, UnknownName


def test_register_get_and_order():
    reg = Registry("widget")
    reg.add("b", 2)

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg["b"] == 2
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and len(reg) == 2
    assert "a" in reg and "c" not in reg
    assert dict(reg.items()) == {"b": 2, "a": a}


def test_duplicate_names_are_refused():
    reg = Registry("widget")
    reg.add("x", 1)
    with pytest.raises(ValueError, match="widget 'x' is registered twice"):
        reg.add("x", 2)
    assert reg["x"] == 1
    with pytest.raises(ValueError):
        reg.add("", 3)


def test_unknown_name_lists_choices_and_suggests_nearest():
    reg = Registry("pruning method")
    for name in ("sparsegpt", "wanda", "magnitude"):
        reg.add(name, name)
    with pytest.raises(UnknownName) as info:
        reg.get("sparsgpt")
    msg = str(info.value)
    assert msg == ("unknown pruning method 'sparsgpt' (did you mean 'sparsegpt'?): "
                   "choose one of magnitude, sparsegpt, wanda")
    assert isinstance(info.value, CalmixError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownName, match=r"unknown pruning method 'zzz': choose one of"):
        reg["zzz"]
    with pytest.raises(UnknownName):
        reg.get(None)


def test_remove():
    reg = Registry("thing")
    reg.add("t", 1)
    assert reg.remove("t") == 1 and "t" not in reg
    reg.add("t", 2)
    assert reg["t"] == 2
