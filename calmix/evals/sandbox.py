"""Run untrusted, model-written Python programs in a locked-down child process.

Layers (each recorded per run in `ExecResult.protections`):
- a separate process in its own session/process group, killed as a group on wall-clock timeout and after exit;
- resource limits: CPU time, address space/data, file size, open files, processes, no core dumps;
- a fresh temporary working directory (also HOME and TMPDIR), removed afterwards; stdin is /dev/null;
- a stripped environment (PATH, LANG, a fixed PYTHONHASHSEED); `python -S -s -B`: stdlib only, no site-packages;
- when started as root: a new network namespace (no interfaces up, so no network at all) and a drop to an
  unprivileged uid (`nobody`), so the filesystem itself refuses writes outside the sandbox directory and
  RLIMIT_NPROC is enforced (it is not for root). If the interpreter lives under a directory `nobody` cannot
  read (e.g. pyenv under /root), the child keeps only CAP_DAC_READ_SEARCH (read, never write);
- an in-process guard installed before the program runs: fork/exec/spawn/system/kill/subprocess/socket/ctypes
  are disabled; file writes, deletes and renames outside the sandbox directory raise PermissionError, and so
  do reads outside it except of the Python standard library, time zones, /dev and /proc/self.
The in-process guard alone can be bypassed by determined code (it is Python); the OS layers are the boundary.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pwd
import shutil
import signal
import stat
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
SANDBOX_ERROR_RC = 70  # the runner itself failed (not the program)


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


# The runner is executed with `python -S -s -B -c RUNNER CONFIG_JSON` in the sandbox directory. It applies the
# OS-level protections while still privileged, reports them on an inherited fd, drops privileges, installs the
# in-process guard and finally executes the program in a fresh namespace. Exit 0 only if the program ran to
# the end; any exception, including SystemExit, is a failure (as in the official human-eval harness).
_RUNNER = r'''
import sys, os, json, resource

def _main():
    cfg = json.loads(sys.argv[1])
    root = os.path.realpath(os.getcwd())
    prot = {"process_group": os.getpgid(0) == os.getpid(), "tmp_cwd": root == os.path.realpath(cfg["cwd"])}
    real_exit = os._exit
    ctypes = None
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        libc = None
    # 1. network namespace (needs CAP_SYS_ADMIN, i.e. root): a fresh namespace has only a downed loopback
    prot["netns"] = False
    if cfg["netns"] and libc is not None:
        prot["netns"] = libc.unshare(0x40000000) == 0  # CLONE_NEWNET
    # 2. resource limits (soft = hard, so the program cannot raise them once unprivileged)
    set_ok = []
    for name, value in cfg["rlimits"].items():
        res = getattr(resource, name)
        soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and os.geteuid() != 0:
            value = min(value, hard)
        try:
            resource.setrlimit(res, (value, value))
            set_ok.append(name)
        except (ValueError, OSError):
            pass
    prot["rlimits"] = set_ok
    # 3. drop to an unprivileged uid when root
    prot["uid"] = os.getuid()
    prot["read_cap"] = False
    if cfg["uid"] is not None and os.geteuid() == 0:
        try:
            keep = cfg["keep_read_cap"] and libc is not None
            if keep:
                libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            if keep:
                class Hdr(ctypes.Structure):
                    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
                class Data(ctypes.Structure):
                    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
                data = (Data * 2)()
                data[0].effective = data[0].permitted = 1 << 2  # CAP_DAC_READ_SEARCH only
                prot["read_cap"] = libc.capset(ctypes.byref(Hdr(0x20080522, 0)), data) == 0
            libc is not None and libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            prot["uid"] = os.getuid()
        except Exception as exc:
            prot["uid_error"] = repr(exc)
    prot["guard"] = bool(cfg["guard"])
    os.write(cfg["report_fd"], json.dumps(prot).encode())
    os.close(cfg["report_fd"])
    try:
        with open(cfg["program"], encoding="utf-8") as fh:
            source = fh.read()
        code = compile(source, "program.py", "exec")
    except SyntaxError:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        real_exit(1)
    except Exception as exc:
        sys.stderr.write(f"sandbox: cannot load the program: {exc!r}\n")
        sys.stderr.flush()
        real_exit(''' + str(SANDBOX_ERROR_RC) + r''')
    if cfg["guard"]:
        _guard(root, cfg["read_roots"])
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except BaseException:
        import traceback
        traceback.print_exc()
        rc = 1
    else:
        rc = 0
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        rc = 1
    real_exit(rc)


def _guard(root, read_roots):
    import builtins, io, _io, posix, shutil, subprocess, socket, _socket, _posixsubprocess

    def deny(name):
        def blocked(*args, **kwargs):
            raise PermissionError(f"sandbox: {name} is disabled")
        return blocked

    realpath, fspath, fsdecode, sep = os.path.realpath, os.fspath, os.fsdecode, os.sep

    def inside(path):
        if isinstance(path, int):
            return True
        try:
            p = realpath(fsdecode(fspath(path)))
        except (TypeError, ValueError):
            return False
        return p == root or p.startswith(root + sep)

    def check(name, paths):
        for p in paths:
            if not inside(p):
                raise PermissionError(f"sandbox: {name} outside the sandbox directory: {p!r}")

    def path_guard(name, fn, npaths):
        def guarded(*args, **kwargs):
            if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
                raise PermissionError(f"sandbox: {name} with dir_fd is disabled")
            named = [kwargs[k] for k in ("path", "src", "dst", "name", "file") if k in kwargs]
            check(name, list(args[:npaths]) + named)
            return fn(*args, **kwargs)
        return guarded

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    orig_os_open = posix.open

    readable = tuple(os.path.realpath(p) + sep for p in read_roots) + ("/dev/", f"/proc/{os.getpid()}/")

    def check_read(name, path):
        if isinstance(path, int) or inside(path):
            return
        try:
            p = realpath(fsdecode(fspath(path)))
        except (TypeError, ValueError):
            p = ""
        if not p.startswith(readable):
            raise PermissionError(f"sandbox: {name} outside the sandbox directory: {path!r}")

    def guarded_os_open(path, flags, *args, **kwargs):
        if kwargs.get("dir_fd") is not None:
            raise PermissionError("sandbox: os.open with dir_fd is disabled")
        if flags & write_flags:
            check("os.open for writing", [path])
        else:
            check_read("os.open", path)
        return orig_os_open(path, flags, *args, **kwargs)

    orig_open = _io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+"):
            check("open for writing", [file])
        else:
            check_read("open", file)
        return orig_open(file, mode, *args, **kwargs)

    blocked_names = ("fork", "forkpty", "vfork", "system", "popen", "kill", "killpg", "tgkill", "pidfd_open",
                     "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
                     "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
                     "posix_spawn", "posix_spawnp", "setuid", "setgid", "setreuid", "setregid", "setresuid",
                     "setresgid", "seteuid", "setegid", "setgroups", "setsid", "setpgid", "setpgrp", "chroot",
                     "putenv", "unsetenv", "_exit", "plock")
    path_names = {"remove": 1, "unlink": 1, "rmdir": 1, "removedirs": 1, "mkdir": 1, "makedirs": 1,
                  "rename": 2, "renames": 2, "replace": 2, "link": 2, "symlink": 2, "truncate": 1, "chmod": 1,
                  "lchmod": 1, "chown": 1, "lchown": 1, "chflags": 1, "lchflags": 1, "utime": 1, "mkfifo": 1,
                  "mknod": 1, "setxattr": 1, "removexattr": 1}
    for mod in (os, posix):
        for name in blocked_names:
            if hasattr(mod, name):
                setattr(mod, name, deny(f"os.{name}"))
        for name, n in path_names.items():
            if hasattr(mod, name):
                setattr(mod, name, path_guard(f"os.{name}", getattr(mod, name), n))
        mod.open = guarded_os_open
    for name, n in (("rmtree", 1), ("move", 2), ("chown", 1), ("copytree", 2)):
        setattr(shutil, name, path_guard(f"shutil.{name}", getattr(shutil, name), n))
    builtins.open = io.open = _io.open = guarded_open
    subprocess.Popen = deny("subprocess")
    _posixsubprocess.fork_exec = deny("subprocess")
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo"):
        for mod in (socket, _socket):
            if hasattr(mod, name):
                setattr(mod, name, deny(f"socket.{name}"))
    import resource
    resource.setrlimit = deny("resource.setrlimit")
    for name in ("ctypes", "_ctypes", "ctypes.util", "mmap", "pty", "_multiprocessing", "pdb", "faulthandler"):
        sys.modules[name] = None
    builtins.help = None

_main()
'''


def _world_readable(path: Path) -> bool:
    """True if `path` and every directory above it can be traversed/read by any user."""
    path = path.resolve()
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError:
            return False
        need = stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH
        if not mode & need:
            return False
    return True


@functools.lru_cache(maxsize=1)
def _plan() -> dict:
    """Which privileged protections to request on this machine (decided once per process)."""
    root = os.geteuid() == 0
    uid = gid = None
    if root:
        try:
            pw = pwd.getpwnam("nobody")
            uid, gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            uid = gid = 65534
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    readable = _world_readable(Path(sys.executable)) and _world_readable(stdlib / "os.py")
    return {"netns": root and sys.platform.startswith("linux"), "uid": uid, "gid": gid,
            "keep_read_cap": not readable}


def _read_roots() -> list[str]:
    """Folders the guarded program may open for reading besides its own: the Python stdlib and time zones."""
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], "/usr/share/zoneinfo"}
    return sorted(os.path.realpath(p) for p in roots)


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


def run_program(program: str, timeout_s: float = 5.0, memory_mb: int = 1024, *, guard: bool = True,
                max_output: int = MAX_OUTPUT_BYTES, process_limit: int = PROCESS_LIMIT) -> ExecResult:
    """Run `program` in the sandbox; `guard=False` turns off only the in-process guard (for tests)."""
    plan = _plan()
    workdir = tempfile.mkdtemp(prefix="calmix-sbx-")
    prog_path = os.path.join(workdir, "program.py")
    with open(prog_path, "w", encoding="utf-8") as fh:
        fh.write(program)
    if plan["uid"] is not None:
        os.chown(workdir, plan["uid"], plan["gid"])
        os.chmod(prog_path, 0o644)
    rlimits = {"RLIMIT_CPU": int(math.ceil(timeout_s)) + 1, "RLIMIT_AS": int(memory_mb) << 20,
               "RLIMIT_DATA": int(memory_mb) << 20, "RLIMIT_FSIZE": FILE_SIZE_LIMIT,
               "RLIMIT_NOFILE": OPEN_FILES_LIMIT, "RLIMIT_NPROC": int(process_limit), "RLIMIT_CORE": 0}
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    report = tempfile.TemporaryFile()
    cfg = {"cwd": workdir, "program": prog_path, "guard": guard, "rlimits": rlimits, "netns": plan["netns"],
           "uid": plan["uid"], "gid": plan["gid"], "keep_read_cap": plan["keep_read_cap"],
           "report_fd": report.fileno(), "read_roots": _read_roots()}
    cmd = [sys.executable, "-S", "-s", "-B", "-c", _RUNNER, json.dumps(cfg)]
    start = time.monotonic()
    proc = None
    try:
        proc = subprocess.Popen(cmd, cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, pass_fds=(report.fileno(),), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            rc = proc.wait()
            timed_out = True
        seconds = time.monotonic() - start
        _kill_group(proc.pid)  # anything the program left behind in its process group
        report.seek(0)
        try:
            protections = json.loads(report.read().decode() or "{}")
        except ValueError:
            protections = {}
        stdout, stderr = _read_capped(out, max_output), _read_capped(err, max_output)
    except OSError as exc:
        return ExecResult(False, "error", "", f"sandbox: cannot start the program: {exc}", time.monotonic() - start,
                          None, {}, None)
    finally:
        for fh in (out, err, report):
            fh.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if timed_out:
        status = "timeout"
    elif rc == 0:
        status = "passed"
    elif rc < 0:
        status = "killed"
    elif rc == SANDBOX_ERROR_RC or not protections:
        status = "error"
    else:
        status = "failed"
    return ExecResult(status == "passed", status, stdout, stderr, seconds, rc, protections, proc.pid)


def check_program(program: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> ExecResult:
    """Execute a complete test program (solution + asserts) in the sandbox; passed means it ran to the end."""
    return run_program(program, timeout_s=timeout_s, memory_mb=memory_mb)


@functools.lru_cache(maxsize=1)
def active_protections() -> dict:
    """The protections a sandboxed run gets on this machine (probed once with a trivial program)."""
    return dict(check_program("pass", timeout_s=10.0).protections)
