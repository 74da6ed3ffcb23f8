"""Hostile programs cannot harm the evaluator or the machine; correct programs pass, wrong ones fail."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from calmix.evals.sandbox import ExecResult, active_protections, check_program, run_program

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")

PROT = active_protections()
UNPRIVILEGED = PROT.get("uid", 0) != 0
NETNS = bool(PROT.get("netns"))


def _procs_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pids, seconds=3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def test_protections_recorded():
    for key in ("process_group", "tmp_cwd", "rlimits", "guard", "netns", "uid"):
        assert key in PROT
    assert PROT["process_group"] and PROT["tmp_cwd"] and PROT["guard"]
    for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE"):
        assert name in PROT["rlimits"]
    if os.geteuid() == 0:  # root must drop privileges and leave the network
        assert UNPRIVILEGED and NETNS


def test_correct_program_passes_and_wrong_one_fails():
    ok = check_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('done')\n", timeout_s=5)
    assert isinstance(ok, ExecResult)
    assert ok.passed and ok.status == "passed" and ok.returncode == 0 and ok.stdout.strip() == "done"
    bad = check_program("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n", timeout_s=5)
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr
    syntax = check_program("def f(:\n", timeout_s=5)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


def test_stdlib_usable_and_cwd_writable_then_removed():
    prog = ("import os, re, math, heapq, collections, itertools, functools, json, hashlib, tempfile\n"
            "open('scratch.txt', 'w').write('hello')\n"
            "assert open('scratch.txt').read() == 'hello'\n"
            "with tempfile.NamedTemporaryFile('w') as fh: fh.write('x')\n"
            "os.remove('scratch.txt')\n"
            "print(os.getcwd())\n")
    r = check_program(prog, timeout_s=5)
    assert r.passed, r.stderr
    workdir = Path(r.stdout.strip())
    assert workdir.name.startswith("calmix-sbx-") and not workdir.exists()


def test_exit_tricks_do_not_count_as_passed():
    for prog in ("import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\nassert False\n",
                 "raise SystemExit\n", "input()\n"):
        r = check_program(prog, timeout_s=5)
        assert not r.passed and r.status == "failed", (prog, r)


def test_infinite_loop_times_out_and_leaves_no_process():
    t0 = time.monotonic()
    r = check_program("while True:\n    pass\n", timeout_s=1.0)
    assert time.monotonic() - t0 < 2.5
    assert r.status == "timeout" and not r.passed and r.seconds < 2.0
    assert _procs_in_group(r.pid) == [] and not _alive(r.pid)
    r = check_program("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert r.status == "timeout" and r.seconds < 1.5


def test_fork_is_blocked():
    prog = ("import os, time\n"
            "for _ in range(200):\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(30)\n"
            "        os._exit(0)\n")
    r = check_program(prog, timeout_s=5)
    assert r.status == "failed" and "os.fork is disabled" in r.stderr
    assert _procs_in_group(r.pid) == []
    for prog in ("import subprocess\nsubprocess.run(['true'])\n", "import multiprocessing as m\nm.Process(target=print).start()\n",
                 "import posix\nposix.fork()\n", "import ctypes\nctypes.CDLL(None).fork()\n", "import pty\npty.fork()\n"):
        r = check_program(prog, timeout_s=5)
        assert r.status == "failed", (prog, r.stderr)


def test_fork_loop_capped_by_rlimit_without_guard_and_cleaned_up():
    """The OS backstop: with the in-process guard off, RLIMIT_NPROC caps a fork loop and the group is killed."""
    if not UNPRIVILEGED:
        pytest.skip("RLIMIT_NPROC is not enforced when the child cannot leave uid 0")
    prog = ("import os, time\n"
            "pids = []\n"
            "for _ in range(200):\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except OSError:\n"
            "        break\n"
            "    if pid == 0:\n"
            "        time.sleep(30)\n"
            "        os._exit(0)\n"
            "    pids.append(pid)\n"
            "print(' '.join(map(str, pids)))\n")
    r = run_program(prog, timeout_s=5, guard=False, process_limit=16)
    assert r.passed, r.stderr
    pids = [int(p) for p in r.stdout.split()]
    assert 0 < len(pids) < 16
    assert _wait_gone(pids) == []
    assert _procs_in_group(r.pid) == []


def test_memory_fill_is_stopped():
    for prog in ("x = bytearray(8 * 1024 ** 3)\n", "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n"):
        r = check_program(prog, timeout_s=5, memory_mb=512)
        assert r.status in ("failed", "killed") and r.seconds < 5, r
        assert r.status == "killed" or "MemoryError" in r.stderr


def test_write_outside_sandbox_denied(tmp_path):
    target = tmp_path / "pwned.txt"
    for prog in (f"open({str(target)!r}, 'w').write('x')\n",
                 f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
                 f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))\n",
                 f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')\n"):
        r = check_program(prog, timeout_s=5)
        assert r.status == "failed" and "PermissionError" in r.stderr, (prog, r.stderr)
        assert not target.exists()
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    for prog in (f"import os\nos.remove({str(keep)!r})\n", f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                 f"import os\nos.rename({str(keep)!r}, 'stolen')\n"):
        r = check_program(prog, timeout_s=5)
        assert r.status == "failed" and "PermissionError" in r.stderr
        assert keep.read_text() == "precious"


def test_filesystem_denies_writes_without_guard(tmp_path):
    """The OS backstop: as an unprivileged uid, the filesystem refuses writes into a root-owned folder."""
    if not UNPRIVILEGED:
        pytest.skip("the child cannot leave the caller's uid (not started as root)")
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "pwned.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')\n", timeout_s=5, guard=False)
    assert r.status == "failed" and "PermissionError" in r.stderr
    r = run_program(f"import os\nos.system('touch {target}')\n", timeout_s=5, guard=False)
    assert not target.exists()


def test_os_system_denied(tmp_path):
    target = tmp_path / "touched.txt"
    for prog in (f"import os\nos.system('touch {target}')\n", f"import os\nos.popen('touch {target}').read()\n",
                 f"import os\nos.execv('/usr/bin/touch', ['touch', {str(target)!r}])\n"):
        r = check_program(prog, timeout_s=5)
        assert r.status == "failed" and "disabled" in r.stderr, r.stderr
    time.sleep(0.1)
    assert not target.exists()


def _listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.3)
    return srv


def _no_connection(srv) -> bool:
    try:
        conn, _ = srv.accept()
    except (socket.timeout, TimeoutError):
        return True
    conn.close()
    return False


def test_socket_denied():
    srv = _listener()
    port = srv.getsockname()[1]
    try:
        for prog in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n",
                     f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
                     f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)\n"):
            r = check_program(prog, timeout_s=5)
            assert r.status == "failed", prog
        assert _no_connection(srv)
    finally:
        srv.close()


def test_network_namespace_without_guard():
    if not NETNS:
        pytest.skip("no network namespace here (needs root)")
    srv = _listener()
    port = srv.getsockname()[1]
    try:
        r = run_program(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n", timeout_s=5, guard=False)
        assert r.status == "failed" and "unreachable" in r.stderr.lower()
        assert _no_connection(srv)
    finally:
        srv.close()


def test_environment_is_stripped(monkeypatch):
    monkeypatch.setenv("CALMIX_SECRET", "xyz")
    r = check_program("import os, sys\nprint(sorted(os.environ))\nprint(sys.flags.no_site)\n"
                      "assert 'CALMIX_SECRET' not in os.environ\nassert 'xyz' not in str(os.environ)\n", timeout_s=5)
    assert r.passed, r.stderr
    names = eval(r.stdout.splitlines()[0])
    assert set(names) <= {"PATH", "LANG", "LC_ALL", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE",
                          "PYTHONSAFEPATH", "HOME", "TMPDIR"}
    assert r.stdout.splitlines()[1] == "1"


def test_output_is_capped():
    r = check_program("print('x' * 1_000_000)\n", timeout_s=5)
    assert r.passed and len(r.stdout) < 20_000 and r.stdout.endswith("[output truncated]")
    r = check_program("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n", timeout_s=5)
    assert r.status in ("failed", "killed") and r.seconds < 5


def test_deterministic_hash_seed():
    prog = "print(hash('calmix'), list({'a', 'b', 'c', 'd', 'e'}))\n"
    assert check_program(prog).stdout == check_program(prog).stdout


def test_reads_outside_sandbox_denied_but_stdlib_readable(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("xyz")
    for prog in (f"print(open({str(secret)!r}).read())\n", f"import pathlib\nprint(pathlib.Path({str(secret)!r}).read_text())\n",
                 f"import os\nprint(os.read(os.open({str(secret)!r}, os.O_RDONLY), 10))\n"):
        r = check_program(prog, timeout_s=5)
        assert r.status == "failed" and "PermissionError" in r.stderr and "xyz" not in r.stdout, prog
    r = check_program("import os, json, inspect\nassert 'def makedirs' in open(os.__file__).read()\nprint(inspect.getsource(json.dumps)[:3])\n")
    assert r.passed, r.stderr


def test_fallback_without_privileged_layers(monkeypatch, tmp_path):
    """Where netns and the uid drop are unavailable (not root), the sandbox still runs and records that."""
    from calmix.evals import sandbox

    monkeypatch.setattr(sandbox, "_plan", lambda: {"netns": False, "uid": None, "gid": None, "keep_read_cap": False})
    ok = check_program("assert sum(range(4)) == 6\n", timeout_s=5)
    assert ok.passed and ok.protections["netns"] is False and ok.protections["uid"] == os.getuid()
    assert ok.protections["guard"] and "RLIMIT_AS" in ok.protections["rlimits"]
    target = tmp_path / "pwned.txt"
    for prog in ("import os\nos.fork()\n", f"open({str(target)!r}, 'w')\n", "import socket\nsocket.socket()\n"):
        assert check_program(prog, timeout_s=5).status == "failed"
    assert not target.exists()
    assert check_program("while True:\n    pass\n", timeout_s=0.5).status == "timeout"
