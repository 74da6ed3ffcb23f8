"""HumanEval/MBPP program assembly and pass@1 on canonical (pass) and broken (fail) solutions."""

from __future__ import annotations

import json
import math
import time

import pytest

from calmix.errors import CalmixError
from calmix.evals.codeexec import Program, humaneval_program, mbpp_program, pass_at_1, pass_at_k, run_many
from calmix.evals.sandbox import ExecResult

HUMANEVAL_IDS = ["HumanEval/0", "HumanEval/2", "HumanEval/12", "HumanEval/53", "HumanEval/100"]
MBPP_IDS = [11, 12, 14, 16, 367]  # 367 uses test_setup_code


def _jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_humaneval_program_is_official_layout():
    problem = {"task_id": "T/0", "prompt": "def f(x):\n", "entry_point": "f", "canonical_solution": "    return x\n",
               "test": "def check(candidate):\n    assert candidate(1) == 1\n"}
    assert humaneval_program(problem, "    return x\n") == (
        "def f(x):\n    return x\n\ndef check(candidate):\n    assert candidate(1) == 1\n\ncheck(f)")
    with pytest.raises(CalmixError, match="entry_point"):
        humaneval_program({"task_id": "T/1", "prompt": "", "test": ""}, "")


def test_mbpp_program_layout():
    problem = {"task_id": 1, "text": "t", "code": "", "test_setup_code": "y = 2",
               "test_list": ["assert f(1) == 1", "assert f(y) == 2"]}
    assert mbpp_program(problem, "def f(x): return x") == "def f(x): return x\ny = 2\nassert f(1) == 1\nassert f(y) == 2\n"
    with pytest.raises(CalmixError, match="test_list"):
        mbpp_program({"task_id": 2}, "")


def test_pass_at_k_matches_combinatorics():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0
    with pytest.raises(CalmixError):
        pass_at_k(3, 4, 1)


def test_pass_at_1():
    mk = lambda ok: ExecResult(ok, "passed" if ok else "failed", "", "", 0.0, 0 if ok else 1)
    assert pass_at_1([mk(True), mk(False), mk(True), mk(True)]) == 0.75
    with pytest.raises(CalmixError):
        pass_at_1([])


def test_run_many_preserves_order_and_runs_in_parallel():
    programs = [f"import time\ntime.sleep(0.4)\nassert {i} % 2 == 0\n" for i in range(4)]
    t0 = time.monotonic()
    results = run_many(programs, timeout_s=5, workers=2)
    elapsed = time.monotonic() - t0
    assert [r.passed for r in results] == [True, False, True, False]
    assert elapsed < 1.6 + 0.4  # two rounds of 0.4 s sleeps (+ interpreter start-ups), not four
    with pytest.raises(CalmixError):
        run_many(programs, workers=0)


def test_canonical_solutions_pass_and_broken_ones_fail(shared):
    he = {p["task_id"]: p for p in _jsonl(shared / "eval" / "humaneval" / "HumanEval.jsonl")}
    mb = {p["task_id"]: p for p in _jsonl(shared / "eval" / "mbpp" / "test.jsonl")}
    good = [humaneval_program(he[t], he[t]["canonical_solution"]) for t in HUMANEVAL_IDS]
    good += [mbpp_program(mb[t], mb[t]["code"]) for t in MBPP_IDS]
    bad = [humaneval_program(he[t], "    return None\n") for t in HUMANEVAL_IDS]
    # an off-by-one in the canonical solution of HumanEval/53 (add): return x + y + 1
    bad.append(humaneval_program(he["HumanEval/53"], he["HumanEval/53"]["canonical_solution"].replace("x + y", "x + y + 1")))
    # each MBPP task gets the next task's (valid, but wrong) solution
    bad += [mbpp_program(mb[t], mb[MBPP_IDS[(i + 1) % len(MBPP_IDS)]]["code"]) for i, t in enumerate(MBPP_IDS)]
    programs = [p for pair in zip(good, bad) for p in pair] + bad[len(good):]  # interleaved: order must hold
    results = run_many(programs, timeout_s=10, workers=2)
    expected = [i % 2 == 0 for i in range(2 * len(good))] + [False] * (len(bad) - len(good))
    assert [r.passed for r in results] == expected, [(r.status, r.stderr[-200:]) for r in results]
    assert all(r.status == "failed" for r in results if not r.passed)
    assert pass_at_1(results[: 2 * len(good)]) == 0.5
    assert pass_at_1([r for r, e in zip(results, expected) if e]) == 1.0


def test_program_keeps_solution_and_tests_apart():
    problem = {"task_id": "T/0", "prompt": "def f(x):\n", "entry_point": "f", "test": "def check(c):\n    assert c(1) == 1\n"}
    program = humaneval_program(problem, "    return x\n")
    assert isinstance(program, Program) and program.parts() == ("def f(x):\n    return x\n\n",
                                                               "def check(c):\n    assert c(1) == 1\n\ncheck(f)")
    assert "".join(program.parts()) == program


def test_all_canonical_solutions_pass(shared):
    """HumanEval canonical solutions 164/164 and MBPP reference solutions 499/500 through the sandbox."""
    he = _jsonl(shared / "eval" / "humaneval" / "HumanEval.jsonl")
    mb = _jsonl(shared / "eval" / "mbpp" / "test.jsonl")
    he_res = run_many([humaneval_program(p, p["canonical_solution"]) for p in he], timeout_s=10, workers=2)
    mb_res = run_many([mbpp_program(p, p["code"]) for p in mb], timeout_s=10, workers=2)
    failed_he = [(p["task_id"], r.status, r.stderr[-300:]) for p, r in zip(he, he_res) if not r.passed]
    failed_mb = [(p["task_id"], r.status, r.stderr[-300:]) for p, r in zip(mb, mb_res) if not r.passed]
    assert len(he) == 164 and failed_he == []
    assert len(mb) == 500 and len(failed_mb) <= 1, failed_mb
