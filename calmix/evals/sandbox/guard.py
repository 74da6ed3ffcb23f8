"""The in-process layer of the sandbox child: one audit hook (PEP 578) that guards and that keeps the verdict.

An audit hook cannot be removed from Python. This one
- holds the run's nonce (read from a pipe that is closed before the program starts) and writes it to the verdict
  pipe only when the harness's own frame, at the bottom of the main thread's stack, announces that the tests
  returned; an early exit, SystemExit, or a call of anything found through frames or gc never writes it;
- refuses processes, sockets, ctypes, tracing, gc walks, hand-made code objects, resource limits and path
  operations outside the sandbox directory (reads are allowed beneath the read roots), by ending the process.
It never raises and never calls an object of the program (exact types only, builtins captured at install time), so
neither its frame nor its nonce can be reached from the program. It checks names, not inodes: the kernel layers
are the boundary, this is defence in depth.
"""

from __future__ import annotations

import os
import sys

DONE_EVENT = "calmix.sandbox.done"
DENIED_RC = 1
_DENY = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
    "signal.pthread_kill", "pty.spawn", "resource.setrlimit", "resource.prlimit", "sys.settrace", "sys.setprofile",
    "sys._current_frames", "sys._current_exceptions", "code.__new__", "mmap.__new__", "_posixshmem.shm_open",
    "sqlite3.enable_load_extension", "sqlite3.load_extension", "os.startfile", "webbrowser.open"})
_DENY_PREFIXES = ("ctypes.", "socket.", "subprocess.", "gc.get_", "sys.monitoring", "_xxsubinterpreters.")
_DENY_IMPORTS = frozenset({"ctypes", "_ctypes", "mmap", "pty", "_testcapi", "_testinternalcapi", "_xxsubinterpreters",
                           "_xxinterpchannels", "_tkinter", "_posixshmem"})
# event -> (positions of the path arguments, True if the operation writes)
_PATHS = {"open": ((0,), None), "os.listdir": ((0,), False), "os.scandir": ((0,), False),
          "os.getxattr": ((0,), False), "os.listxattr": ((0,), False), "os.chdir": ((0,), True),
          "os.remove": ((0,), True), "os.rmdir": ((0,), True), "os.mkdir": ((0,), True),
          "os.rename": ((0, 1), True), "os.link": ((0, 1), True), "os.symlink": ((0, 1), True),
          "os.truncate": ((0,), True), "os.chmod": ((0,), True), "os.chown": ((0,), True), "os.utime": ((0,), True),
          "os.chflags": ((0,), True), "os.setxattr": ((0,), True), "os.removexattr": ((0,), True),
          "shutil.rmtree": ((0,), True), "sqlite3.connect": ((0,), True)}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install(nonce_fd: int, verdict_fd: int, root: str, read_roots: list[str], expected_stack: tuple,
            enforce: bool = True) -> None:
    """Read the nonce, close its pipe and install the hook; `expected_stack` is the code objects, bottom first,
    of the harness frames allowed to announce DONE_EVENT; `enforce=False` keeps only the verdict."""
    nonce = os.read(nonce_fd, 256)
    os.close(nonce_fd)
    sys.addaudithook(_make_hook(nonce, verdict_fd, root, tuple(read_roots), expected_stack, enforce))


def _make_hook(nonce, verdict_fd, root, read_roots, expected_stack, enforce):
    # Everything the hook calls is bound here, before the program runs: builtins and C functions only.
    write, exit_, getframe, get_ident = os.write, os._exit, sys._getframe, __import__("_thread").get_ident
    close, fsdecode, type_, str_, bytes_, int_, len_ = os.close, os.fsdecode, type, str, bytes, int, len
    streams = (sys.stdout, sys.stderr)
    main_thread = get_ident()
    state = {"done": False, "cwd": root}
    prefix = root + "/"
    readable = tuple(r.rstrip("/") + "/" for r in read_roots) + ("/dev/", "/proc/self/")
    reversed_harness = tuple(reversed(expected_stack))

    def die(what):
        for stream in streams:
            try:
                stream.flush()
            except BaseException:
                pass
        write(2, ("PermissionError: sandbox: " + what + "\n").encode("utf-8", "replace"))
        exit_(DENIED_RC)

    def absolute(path):
        """The normalised absolute form of an exact str/bytes path (no symlinks resolved), else None."""
        if type_(path) is bytes_:
            path = fsdecode(path)
        elif type_(path) is not str_:
            return None
        if not path.startswith("/"):
            path = state["cwd"] + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)

    def inside(path):
        return path == root or path.startswith(prefix)

    def check_path(event, args, positions, writes):
        for i in positions:
            if i >= len_(args) or (type_(args[i]) is int_ and event != "os.chdir"):
                continue  # an open file descriptor: what it may reach was checked when it was opened
            path = absolute(args[i])
            if path is None:
                die(f"{event} with a path that is not a str, bytes or file descriptor is disabled")
            if event == "open":
                mode, flags = args[1], args[2]
                writes = (type_(flags) is int_ and flags & _WRITE_FLAGS) or (type_(mode) is str_ and (
                    "w" in mode or "a" in mode or "x" in mode or "+" in mode))
            if event == "os.symlink" and i == 0 and not path.startswith(prefix):
                die(f"os.symlink to {path} outside the sandbox directory")
            if writes and not inside(path):
                die(f"{event} outside the sandbox directory: {path}")
            if not writes and not inside(path) and not (path + "/").startswith(readable):
                die(f"{event} outside the sandbox directory: {path}")
            if event == "os.chdir":
                state["cwd"] = path

    def verdict():
        frame = getframe(2)  # 0: this function, 1: the hook, 2: the caller of sys.audit
        genuine = get_ident() == main_thread
        for code in reversed_harness:  # identity, top of the stack first, and nothing below the harness
            genuine = genuine and frame is not None and frame.f_code is code
            frame = frame.f_back if frame is not None else None
        if state["done"] or not genuine or frame is not None:
            die("a forged end-of-tests announcement")
        state["done"] = True
        write(verdict_fd, nonce)
        close(verdict_fd)

    def hook(event, args):
        if type_(event) is not str_:
            die("an audit event whose name is not a str")
        if event == DONE_EVENT:
            verdict()
        elif not enforce:
            return
        elif event in _PATHS:
            positions, writes = _PATHS[event]
            check_path(event, args, positions, writes)
        elif event == "import":
            if args and type_(args[0]) is str_ and args[0] in _DENY_IMPORTS:
                die(f"import of {args[0]} is disabled")
        elif event in _DENY or event.startswith(_DENY_PREFIXES):
            die(f"{event} is disabled")

    return hook
