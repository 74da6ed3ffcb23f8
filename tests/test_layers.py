"""The layering of docs/DESIGN.md, checked on the source: no import from a lower layer to a higher one, no circle.

Every import counts, including those inside functions (a lazy import is still an arrow)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "calmix"

# Rank of each package (longest prefix wins). A module imports only its own package or a lower rank, and the
# three steps of rank 2 (calibrate, prune, evaluate) never import each other.
LAYERS: dict[str, int] = {
    "calmix": 0, "calmix.errors": 0, "calmix.paths": 0, "calmix.registry": 0, "calmix.fingerprint": 0,
    "calmix.runrecord": 0, "calmix.devices": 0, "calmix.batching": 0,
    "calmix.data": 1, "calmix.models": 1, "calmix.lm": 1, "calmix.publish": 1, "calmix.placement": 1,
    "calmix.calib": 2, "calmix.prune": 2, "calmix.evals": 2,
    "calmix.study": 3,
    "calmix.commands": 4,
    "calmix.cli": 5,
}
SIBLING_RANKS = {2}
# Inside a package, arrows that must not exist although the ranks allow them.
FORBIDDEN = [("calmix.study.report", "calmix.study.runner")]
STDLIB_ONLY = ("calmix.evals.sandbox",)  # stands between untrusted programs and the user: small and auditable


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """calmix modules imported anywhere in the file (from-imports of a submodule count as that submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "calmix")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "calmix":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for m in imports_of(path, name, known) if m in known} for name, path in mods.items()}


def package_of(name: str) -> str:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layers.py and docs/DESIGN.md")
    return best


def test_every_module_has_a_layer():
    for name in modules():
        package_of(name)


def test_no_import_goes_up_or_sideways():
    bad = []
    for mod, deps in graph().items():
        pm = package_of(mod)
        for dep in deps:
            pd = package_of(dep)
            if pd == "calmix" or pm == pd:
                continue
            if LAYERS[pd] > LAYERS[pm] or (LAYERS[pd] == LAYERS[pm] and LAYERS[pm] in SIBLING_RANKS):
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_forbidden_arrows_inside_packages():
    g = graph()
    bad = [f"{a} -> {b}" for a, b in FORBIDDEN if any(d == b or d.startswith(b + ".") for d in g.get(a, ()))]
    assert not bad, bad


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g[node]):
            if dep == "calmix":  # the package's own __init__ holds only the version
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_stdlib_only_modules():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name, path in modules().items():
        if not name.startswith(STDLIB_ONLY):
            continue
        siblings = {p.stem for p in path.parent.glob("*.py")}  # the child program imports its siblings by path
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            else:
                continue
            for target in targets:
                assert target.split(".")[0] in stdlib | siblings or target.startswith(STDLIB_ONLY), (
                    f"{name} imports {target}: this module may import only the standard library")


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    src = tmp_path / "calmix" / "lm.py"
    src.parent.mkdir()
    src.write_text("def f():\n    from calmix.study import runner\n    import calmix.evals.tasks as t\n")
    found = imports_of(src, "calmix.lm", {"calmix.study.runner", "calmix.evals.tasks"})
    assert found == {"calmix.study.runner", "calmix.evals.tasks"}
