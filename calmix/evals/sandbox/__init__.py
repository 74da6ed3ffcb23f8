"""Sandboxed execution of model-written programs (standard library only): host.py starts child.py by path, which
isolates itself through kernel.py and guards itself and keeps the verdict through guard.py."""

from calmix.evals.sandbox.host import (ExecResult, IsolationUnavailable, active_protections, check_program, describe,
                                       isolation, refusal, run_program)

__all__ = ["ExecResult", "IsolationUnavailable", "active_protections", "check_program", "describe", "isolation",
           "refusal", "run_program"]
