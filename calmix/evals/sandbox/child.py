"""The sandbox child, run by path as `python -S -s -B -P child.py CONFIG_FD` (standard library only; the
configuration and the report are marshal data).

Order: read the configuration (it carries kernel.py and guard.py, compiled by the host from their files beside
this one); isolate (namespaces, fork into the new pid namespace, read-only view, capabilities dropped, Landlock,
seccomp); resource limits; compile; report the active protections on an inherited fd; install the audit hook
(guard + verdict); run the solution, then the tests, in a fresh `__main__`. Only the hook writes the verdict, and
only once the tests have returned; the exit status is never the verdict.
"""

from __future__ import annotations

import marshal
import os
import resource
import sys

import _signal  # the C module: `signal` would import enum and functools, 5 ms at every start

ERROR_RC = 70  # the child itself failed (not the program)
DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]


def _isolate(cfg: dict, kernel) -> dict:
    """Enter the namespaces and lock this process down; only the forked pid-1 child returns."""
    as_root = os.geteuid() == 0
    kernel.enter_namespaces(as_root)
    pid = os.fork()
    if pid:
        _wait_and_mirror(pid)
    kernel.die_with_parent()
    covers = kernel.readonly_view(cfg["cwd"], cfg["covers"], cfg["keep"])
    proc = kernel.fresh_proc()
    os.chdir(cfg["cwd"])
    kernel.drop_privileges(as_root)
    landlock = kernel.landlock(cfg["read_roots"], [cfg["cwd"]], DEVICES)
    seccomp = kernel.seccomp()
    caps = kernel.capabilities()
    return {"namespaces": ["mount", "network", "pid", "ipc", "uts"] + ([] if as_root else ["user"]),
            "readonly_root": True, "tmpfs": covers, "private_proc": proc, "uid": os.getuid(),
            "capabilities": caps.get("CapEff", -1) | caps.get("CapPrm", -1) | caps.get("CapBnd", -1),
            "no_new_privs": caps.get("NoNewPrivs") == 1, "landlock": landlock, "seccomp": seccomp}


def _wait_and_mirror(pid: int) -> None:
    """The parent outside the pid namespace: close everything, wait, and end the way the child ended."""
    os.closerange(3, 1 << 16)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        _signal.signal(sig, _signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else ERROR_RC)


def _extras(cfg: dict, kernel) -> dict:
    """Without namespaces (unsafe mode): the unprivileged layers that still apply, each where available."""
    out = {"namespaces": [], "readonly_root": False, "uid": os.getuid()}
    try:
        kernel.no_new_privs()
        out["no_new_privs"] = True
        out["landlock"] = kernel.landlock(cfg["read_roots"], [cfg["cwd"]], DEVICES)
        out["seccomp"] = kernel.seccomp()
    except OSError as err:
        out["extras_error"] = str(err)
    return out


def _limit(rlimits: dict) -> list[str]:
    """Set each limit soft = hard (capped at the current hard limit), so the program cannot raise it."""
    done = []
    for name, value in rlimits.items():
        res = getattr(resource, name)
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(res, (value, value))
            done.append(name)
        except (ValueError, OSError):
            pass
    return done


def _run(solution, tests, namespace, exec_=exec, audit=sys.audit) -> None:
    """The solution, then the tests; the announcement is reached only if both returned (bound before any code)."""
    exec_(solution, namespace)
    exec_(tests, namespace)
    audit("calmix.sandbox.done")


def main() -> None:
    """Entry point of the child."""
    bottom = sys._getframe(1).f_code
    fd = int(sys.argv[1])
    with os.fdopen(fd, "rb") as fh:
        cfg = marshal.loads(fh.read())  # marshal, not json: a builtin, so no imports at start-up
    kernel, guard = (_module(name, cfg["helpers"].pop(name)) for name in ("kernel", "guard"))
    prot = {"process_group": os.getpgid(0) == os.getpid(), "guard": bool(cfg["guard"])}
    try:
        prot.update(_isolate(cfg, kernel) if cfg["isolate"] else _extras(cfg, kernel))
    except OSError as err:
        prot["isolation_error"] = str(err)
        _report(cfg["report_fd"], prot)
        os._exit(ERROR_RC)
    prot["tmp_cwd"] = os.path.realpath(os.getcwd()) == os.path.realpath(cfg["cwd"])
    prot["rlimits"] = _limit(cfg["rlimits"])
    try:
        solution = compile(cfg["solution"], "<solution>", "exec")
        tests = compile(cfg["tests"], "<tests>", "exec")
    except (SyntaxError, ValueError):
        _report(cfg["report_fd"], prot)
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    _report(cfg["report_fd"], prot)
    module = type(sys)("__main__")
    sys.modules["__main__"] = module
    guard.install(cfg["nonce_fd"], cfg["verdict_fd"], os.path.realpath(cfg["cwd"]), cfg["read_roots"],
                  (bottom, main.__code__, _run.__code__), enforce=cfg["guard"])
    del cfg, kernel, guard
    try:
        _run(solution, tests, module.__dict__)
        rc = 0
    except BaseException as exc:
        import traceback

        tb = exc.__traceback__.tb_next.tb_next  # from the program's own frames on: main and _run are not its
        traceback.print_exception(type(exc), exc, tb)
        rc = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        rc = 1
    os._exit(rc)


def _module(name: str, code) -> object:
    """A helper module (kernel.py, guard.py) run from the code the host compiled from its file beside this one;
    kept out of sys.modules, so the program cannot look it up."""
    module = type(sys)(name)
    module.__file__ = code.co_filename
    exec(code, module.__dict__)
    return module


def _report(fd: int, prot: dict) -> None:
    os.write(fd, marshal.dumps(prot))
    os.close(fd)


if __name__ == "__main__":
    main()
