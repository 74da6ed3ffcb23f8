"""The evaluator's side of the sandbox: start the child (child.py, by path), time it out, kill its process group,
read its verdict and clean up. Standard library only.

Layers (each recorded per run in `ExecResult.protections`, see child.py for the order):
- kernel: new mount, network, pid, ipc and uts namespaces (plus a user namespace when not root; root drops to
  `nobody` instead, so the filesystem's own permissions refuse it); a read-only view of the filesystem with empty
  read-only tmpfs over /tmp, /var/tmp, /dev/shm, the home and temporary folders, only the sandbox folder writable
  (and mounted noexec); a private /proc; no capabilities, no_new_privs; Landlock (reads only beneath the Python
  installation and system libraries, writes only in the sandbox folder, no TCP, no signals out) and seccomp (no
  sockets, exec, fork, mounts, namespaces, ptrace, io_uring) where the kernel has them;
- a separate process group, killed on timeout and after exit; rlimits (CPU, address space, file size, files,
  processes, no core); a fresh working folder removed afterwards; stdin /dev/null; a stripped environment;
- the in-process audit hook (guard.py), and a verdict that only the harness can write: a nonce passed on a pipe
  that is closed before the program runs, written back only after the tests returned.
Without the kernel layers code execution is refused (IsolationUnavailable) unless the caller allows unsafe runs.
"""

from __future__ import annotations

import fcntl
import functools
import marshal
import math
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_OUTPUT_BYTES = 16 * 1024
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OPEN_FILES_LIMIT = 64
PROCESS_LIMIT = 64
SANDBOX_ERROR_RC = 70  # the child itself failed (not the program); child.ERROR_RC
NOBODY = 65534
CHILD = Path(__file__).with_name("child.py")
FIX = ("allow unprivileged user namespaces (sysctl user.max_user_namespaces=15000, kernel.unprivileged_userns_clone=1,"
       " or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), or pass --allow-unsafe-exec to run "
       "model-written code with only the in-process guard")


class IsolationUnavailable(RuntimeError):
    """Kernel isolation cannot be set up on this machine and unsafe execution was not allowed."""


@dataclass
class ExecResult:
    """Outcome of one sandboxed program: status is passed, failed, timeout, error or killed."""

    passed: bool
    status: str
    stdout: str
    stderr: str
    seconds: float
    returncode: int | None
    protections: dict = field(default_factory=dict)
    pid: int | None = None

    def to_dict(self) -> dict:
        """A JSON-serialisable view."""
        return {k: getattr(self, k) for k in ("passed", "status", "stdout", "stderr", "seconds", "returncode", "protections")}


@functools.lru_cache(maxsize=1)
def _read_roots() -> tuple[str, ...]:
    """What the program may read besides its folder: the Python installation, system libraries, time zones (fixed
    for this interpreter, so found once)."""
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], sys.base_prefix, "/usr", "/lib", "/lib64", "/lib32",
             "/etc/localtime", "/etc/ld.so.cache", "/proc/self", str(CHILD.parent)}
    return tuple(sorted(os.path.realpath(p) if p != "/proc/self" else p for p in roots))


@functools.lru_cache(maxsize=1)
def _keep() -> tuple[str, ...]:
    """Folders of the Python installation that must stay visible even when a tmpfs covers them (e.g. ~/.pyenv)."""
    paths = sysconfig.get_paths()
    return tuple(sorted({os.path.realpath(p) for p in (sys.base_prefix, paths["stdlib"], paths["platstdlib"])}))


def _covers() -> list[str]:
    """Places hidden behind empty tmpfs: temporary folders, the home folders (of $HOME and of the account), the
    runtime folder, and any folder above the Python installation that `nobody` cannot traverse (the installation
    is bound back inside, readable)."""
    covers = {"/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir(), os.path.expanduser("~"), f"/run/user/{os.getuid()}"}
    try:
        covers.add(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        pass
    for path in _keep():
        closed = [p for p in Path(path).parents if str(p) != "/" and not _traversable(p)]
        if closed:
            covers.add(str(closed[-1]))
    return sorted(os.path.realpath(c) for c in covers if c and os.path.realpath(c) != "/")


def _traversable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o001)
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _helpers() -> dict:
    """kernel.py and guard.py (beside child.py) compiled once per evaluator and handed to every child as code
    objects: the child runs with -B and would otherwise compile their source on each start."""
    helpers = {}
    for name in ("kernel", "guard"):
        path = CHILD.with_name(f"{name}.py")
        helpers[name] = compile(path.read_bytes(), str(path), "exec", dont_inherit=True, optimize=0)
    return helpers


def _clean_env(cwd: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
            "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONSAFEPATH": "1",
            "HOME": cwd, "TMPDIR": cwd}


def _read_capped(fh, limit: int) -> str:
    fh.seek(0)
    data = fh.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + "\n...[output truncated]" if len(data) > limit else text


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether the child ended within `timeout_s`. Waits on a pidfd, so the end is seen at once; Popen.wait with
    a timeout polls with sleeps that double up to 50 ms, which would add up to half the run to every program."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(min(max(0, math.ceil(timeout_s * 1000)), 2**31 - 1)))  # ms, a C int
    finally:
        os.close(fd)


def _drain(fd: int) -> bytes:
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
    out = b""
    try:
        while len(out) < 4096:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
    except BlockingIOError:
        pass
    return out


def run_program(program: str, timeout_s: float = 5.0, memory_mb: int = 1024, *, tests: str = "", guard: bool = True,
                max_output: int = MAX_OUTPUT_BYTES, process_limit: int = PROCESS_LIMIT,
                allow_unsafe: bool = False) -> ExecResult:
    """Run `program` then the trusted `tests` in the sandbox; passed means the tests ran to their end.
    Raises IsolationUnavailable where the kernel layers are missing unless `allow_unsafe`; `guard=False` turns
    off only the in-process guard (to test the layers under it)."""
    isolate = isolation()["available"]
    if not isolate and not allow_unsafe:
        raise IsolationUnavailable(refusal())
    return _spawn(program, tests, timeout_s, memory_mb, guard, max_output, process_limit, isolate)


def _spawn(program: str, tests: str, timeout_s: float, memory_mb: int, guard: bool, max_output: int,
           process_limit: int, isolate: bool) -> ExecResult:
    workdir = tempfile.mkdtemp(prefix="calmix-sbx-")
    if isolate and os.geteuid() == 0:
        os.chown(workdir, NOBODY, NOBODY)  # the child becomes nobody: its folder is the one place it owns
    rlimits = {"RLIMIT_CPU": int(math.ceil(timeout_s)) + 1, "RLIMIT_AS": int(memory_mb) << 20,
               "RLIMIT_DATA": int(memory_mb) << 20, "RLIMIT_FSIZE": FILE_SIZE_LIMIT,
               "RLIMIT_NOFILE": OPEN_FILES_LIMIT, "RLIMIT_NPROC": int(process_limit), "RLIMIT_CORE": 0}
    out, err, report, config = (tempfile.TemporaryFile() for _ in range(4))
    nonce = secrets.token_hex(16).encode()
    nonce_r, nonce_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    os.write(nonce_w, nonce)
    os.close(nonce_w)
    cfg = {"cwd": workdir, "solution": program, "tests": tests, "guard": guard, "isolate": isolate,
           "rlimits": rlimits, "covers": _covers(), "keep": _keep(), "read_roots": _read_roots(),
           "report_fd": report.fileno(), "nonce_fd": nonce_r, "verdict_fd": verdict_w, "helpers": _helpers()}
    config.write(marshal.dumps(cfg))
    config.seek(0)
    fds = (config.fileno(), report.fileno(), nonce_r, verdict_w)
    cmd = [sys.executable, "-S", "-s", "-B", "-P", str(CHILD), str(config.fileno())]
    start = time.monotonic()
    proc = None
    try:
        try:
            proc = subprocess.Popen(cmd, cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, pass_fds=fds, start_new_session=True)
        finally:  # once, here: in a threaded caller a second close could hit another run's descriptor
            os.close(nonce_r)
            os.close(verdict_w)
        timed_out = not _exited(proc, timeout_s)
        if timed_out:
            _kill_group(proc.pid)
        rc = proc.wait()
        seconds = time.monotonic() - start
        _kill_group(proc.pid)  # anything the program left behind in its process group
        marker = _drain(verdict_r)
        report.seek(0)
        try:
            protections = marshal.loads(report.read())
        except (EOFError, ValueError, TypeError):
            protections = {}
        stdout, stderr = _read_capped(out, max_output), _read_capped(err, max_output)
    except OSError as exc:
        return ExecResult(False, "error", "", f"sandbox: cannot start the program: {exc}", time.monotonic() - start,
                          None, {}, None)
    finally:
        os.close(verdict_r)
        for fh in (out, err, report, config):
            fh.close()
        shutil.rmtree(workdir, ignore_errors=True)
    protections["verdict"] = "nonce"
    if timed_out:
        status = "timeout"
    elif marker == nonce and rc == 0:
        status = "passed"
    elif rc == SANDBOX_ERROR_RC or not protections.get("rlimits"):
        status = "error"
    elif rc < 0:
        status = "killed"
    else:
        status = "failed"
    return ExecResult(status == "passed", status, stdout, stderr, seconds, rc, protections, proc.pid)


def check_program(program: str, timeout_s: float = 5.0, memory_mb: int = 1024, *, tests: str = "",
                  allow_unsafe: bool = False) -> ExecResult:
    """Execute a test program (solution, then the trusted `tests`) in the sandbox; passed means the tests returned."""
    return run_program(program, timeout_s=timeout_s, memory_mb=memory_mb, tests=tests, allow_unsafe=allow_unsafe)


@functools.lru_cache(maxsize=1)
def isolation() -> dict:
    """Whether the kernel layers can be set up here, probed once per process with a trivial program:
    {"available": bool, "reason": str, "protections": dict}."""
    if not sys.platform.startswith("linux"):
        return {"available": False, "reason": f"{sys.platform} is not Linux", "protections": {}}
    probe = _spawn("pass", "", 10.0, 256, True, MAX_OUTPUT_BYTES, PROCESS_LIMIT, isolate=True)
    prot = probe.protections
    if probe.passed and prot.get("readonly_root"):
        return {"available": True, "reason": "", "protections": prot}
    reason = prot.get("isolation_error") or probe.stderr.strip().splitlines()[-1:] or [probe.status]
    return {"available": False, "reason": reason if isinstance(reason, str) else reason[0], "protections": prot}


def refusal() -> str:
    """The one-line error of a refused code execution, naming the reason and the fix."""
    return f"kernel isolation for model-written code is unavailable here ({isolation()['reason']}): {FIX}"


def active_protections(allow_unsafe: bool = False) -> dict:
    """The layers a sandboxed run gets on this machine (what the study records per cell), with `isolated`."""
    iso = isolation()
    if iso["available"]:
        return {"isolated": True, **iso["protections"]}
    if not allow_unsafe:
        return {"isolated": False, "refused": refusal()}
    return {"isolated": False, **_unsafe_protections()}


@functools.lru_cache(maxsize=1)
def _unsafe_protections() -> dict:
    return dict(_spawn("pass", "", 10.0, 256, True, MAX_OUTPUT_BYTES, PROCESS_LIMIT, isolate=False).protections)


def describe(protections: dict) -> str:
    """One line naming the active layers, e.g. for `calmix eval` and `calmix doctor`."""
    if protections.get("refused"):
        return "code execution refused: " + protections["refused"]
    parts = []
    if protections.get("namespaces"):
        parts.append("namespaces " + "+".join(protections["namespaces"]))
    if protections.get("readonly_root"):
        parts.append("read-only root, tmpfs over " + ", ".join(protections.get("tmpfs", [])))
    if protections.get("capabilities") == 0:
        parts.append("no capabilities")
    if protections.get("no_new_privs"):
        parts.append("no_new_privs")
    if protections.get("uid") is not None:
        parts.append(f"uid {protections['uid']}")
    parts.append(f"landlock ABI {protections['landlock']}" if protections.get("landlock") else "no landlock")
    parts.append("seccomp" if protections.get("seccomp") else "no seccomp")
    if protections.get("rlimits"):
        parts.append("rlimits")
    if protections.get("guard"):
        parts.append("audit-hook guard")
    parts.append("nonce verdict")
    head = "kernel-isolated" if protections.get("isolated", bool(protections.get("namespaces"))) else "UNSAFE (no kernel isolation)"
    return f"{head}: " + ", ".join(parts)
