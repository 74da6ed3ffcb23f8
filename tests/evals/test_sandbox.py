"""Hostile programs cannot harm the evaluator or the machine, nor fake a pass; correct programs pass, wrong ones fail.

Every hostile program runs through the real HumanEval path (score_code_completions of the humaneval task), as the
user running the tests (root in CI) and as an unprivileged user (a forked child that drops to uid 65534)."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

from calmix.evals.sandbox import ExecResult, check_program, host, isolation, run_program

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")

NOBODY = 65534
PROBLEM = {"task_id": "T/0", "prompt": "def add(a, b):\n", "entry_point": "add",
           "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}
GOOD = "    return a + b\n"


def _isolated() -> bool:
    return isolation()["available"]


needs_isolation = pytest.mark.skipif(not sys.platform.startswith("linux") or not _isolated(),
                                     reason="no kernel isolation on this machine (see `calmix doctor`)")


# ------------------------------------------------------------------------------------------- hostile programs
def _hostile(spot: Path, home: Path, secret: Path, port: int) -> dict[str, str]:
    """name -> completion: each is a correct solution followed by an attack at module level."""
    t = str(spot)
    leaks = [f"/tmp/leak-{spot.name}", f"/dev/shm/leak-{spot.name}", f"/var/tmp/leak-{spot.name}",
             str(home / f"leak-{spot.name}"), str(spot / "leak")]
    frames = "import sys\nf = sys._getframe()\nwhile f.f_back is not None:\n    f = f.f_back\ng = f.f_globals\n"
    ctypes_path = ("import glob, importlib.util, sys, sysconfig\n"
                   "p = glob.glob(sysconfig.get_paths()['platstdlib'] + '/lib-dynload/_ctypes.*.so')[0]\n"
                   "spec = importlib.util.spec_from_file_location('_ctypes', p)\n"
                   "m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\nsys.modules['_ctypes'] = m\n")
    steal = (f"data = open({str(secret)!r}).read()\nprint(data)\n"
             f"for p in {leaks!r}:\n    try:\n        open(p, 'w').write(data)\n    except OSError:\n        pass\n")
    progs = {
        "os._exit(0)": "import os\nos._exit(0)\n",
        "SystemExit(0)": "raise SystemExit(0)\n",
        "exit found through frames": frames + "g['os']._exit(0)\n",
        "harness run called through frames": frames + "g['_run'](compile('', 's', 'exec'), compile('', 't', 'exec'), {})\n",
        "announcement forged": "import sys\nsys.audit('calmix.sandbox.done')\n",
        "exit found through gc": "import gc\n[o for o in gc.get_objects() if getattr(o, '__name__', '') == '_exit'][0](0)\n",
        "infinite loop": "while True:\n    pass\n",
        "200 forks": "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(30)\n",
        "8 GiB allocation": "x = bytearray(8 * 1024 ** 3)\n",
        "2 GB to stdout": "import sys\nb = 'x' * (1 << 20)\nfor _ in range(2048):\n    sys.stdout.write(b)\n",
        "SIGKILL to the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n",
        "TCP connect": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n",
        "os.system": f"import os\nos.system('touch {t}/system')\n",
        "open outside": f"open({t + '/open'!r}, 'w').write('x')\n",
        "_io.FileIO outside": f"import _io\n_io.FileIO({t + '/fileio'!r}, 'w').write(b'x')\n",
        "os.open outside": f"import os\nos.close(os.open({t + '/osopen'!r}, os.O_CREAT | os.O_WRONLY))\n",
        "pathlib outside": f"import pathlib\npathlib.Path({t + '/pathlib'!r}).write_text('x')\n",
        "overwrite in home": f"import _io\n_io.FileIO({str(home / 'precious.txt')!r}, 'w').write(b'pwned')\n",
        "steal a file of the user": steal,
        "_ctypes from its file path": ctypes_path + f"m.dlopen(None)\nimport ctypes\nlibc = ctypes.CDLL(None)\n"
                                      f"libc.system(b'touch {t}/ctypes')\nlibc._exit(0)\n",
    }
    return {name: GOOD + prog for name, prog in progs.items()}


def _side_effects(spot: Path, home: Path) -> list[str]:
    found = [str(p) for p in spot.iterdir()]
    found += [p for p in (f"/tmp/leak-{spot.name}", f"/dev/shm/leak-{spot.name}", f"/var/tmp/leak-{spot.name}",
                          str(home / f"leak-{spot.name}")) if os.path.exists(p)]
    if (home / "precious.txt").read_text() != "precious":
        found.append("home/precious.txt overwritten")
    return found


def _sandbox_processes() -> list[int]:
    """Live processes still running the sandbox child."""
    child = str(host.CHILD).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if child in cmd and state not in ("Z", "X"):
                found.append(int(entry))
    return found


def _attack(base: str, guard: bool) -> dict:
    """Run every hostile program (HumanEval path when guarded, else run_program with the guard off) with a correct
    one before and after; report statuses, side effects, connections, secrets seen and surviving processes."""
    from calmix.evals.evaluate import score_code_completions
    from calmix.evals.tasks import get_task

    spot, home = Path(tempfile.mkdtemp(dir=base)), Path(tempfile.mkdtemp(dir=base))
    old_home, os.environ["HOME"] = os.environ.get("HOME"), str(home)
    (home / "precious.txt").write_text("precious")
    secret = home / "secret.txt"
    secret.write_text("s3cr3t-" + spot.name)
    secret.chmod(0o600)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    try:
        progs = _hostile(spot, home, secret, srv.getsockname()[1])
        names = ["good (first)", *progs, "good (last)"]
        completions = [GOOD, *progs.values(), GOOD]
        if guard:
            items = [{"problem": PROBLEM}] * len(completions)
            res = score_code_completions(get_task("humaneval"), items, completions)
            passed, sandbox = res["metrics"]["passed"], res["metrics"]["sandbox"]
            outs = [""] * len(names)
        else:
            from calmix.evals.codeexec import humaneval_program

            parts = [humaneval_program(PROBLEM, c).parts() for c in completions]
            results = [run_program(sol, timeout_s=2, guard=False, tests=tests) for sol, tests in parts]
            passed, sandbox = [r.passed for r in results], results[0].protections
            outs = [r.stdout for r in results]
        try:
            conn, _ = srv.accept()
            conn.close()
            connected = True
        except (socket.timeout, TimeoutError):
            connected = False
        deadline = time.monotonic() + 3
        while _sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"passed": dict(zip(names, passed)), "side_effects": _side_effects(spot, home), "connected": connected,
                "secret_seen": [n for n, o in zip(names, outs) if secret.read_text() in o],
                "survivors": _sandbox_processes(), "sandbox": sandbox, "uid": os.getuid()}
    finally:
        srv.close()
        if old_home is not None:
            os.environ["HOME"] = old_home


def _expose_interpreter() -> None:
    """In a private mount namespace, make the interpreter reachable for `nobody` when a folder above it is not
    (e.g. pyenv under a 0700 /root): a 0755 tmpfs over that folder with the installation bound back into it."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x00020000) == 0, os.strerror(ctypes.get_errno())
    assert libc.mount(None, b"/", None, 16384 | (1 << 18), None) == 0
    prefix = os.path.realpath(sys.base_prefix)
    parts = Path(prefix).parents
    blocked = [p for p in reversed(parts) if str(p) != "/" and not os.stat(p).st_mode & 0o001]
    if not blocked:
        return
    fd = os.open(prefix, os.O_PATH)
    assert libc.mount(b"tmpfs", str(blocked[0]).encode(), b"tmpfs", 0, b"mode=0755") == 0
    os.makedirs(prefix, exist_ok=True)
    assert libc.mount(f"/proc/self/fd/{fd}".encode(), prefix.encode(), None, 4096, None) == 0


def _as_unprivileged(fn, *args) -> dict:
    """fn(*args) in a forked child running as uid/gid 65534; its JSON result."""
    base = tempfile.mkdtemp()
    os.chown(base, NOBODY, NOBODY)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            _expose_interpreter()
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            host.isolation.cache_clear()
            host._unsafe_protections.cache_clear()
            out = fn(base, *args)
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


VERDICT_ATTACKS = ("os._exit(0)", "SystemExit(0)", "exit found through frames", "harness run called through frames",
                   "announcement forged", "exit found through gc", "infinite loop", "_ctypes from its file path")


def _check_attack(out: dict, guard: bool) -> None:
    assert "error" not in out, out.get("error")
    passed = out["passed"]
    assert passed.pop("good (first)") and passed.pop("good (last)"), out  # the evaluator lives on and scores
    # guarded, every attack ends the program; under the kernel layers alone an attack that fails quietly (a
    # refused os.system returns -1) may let the correct solution pass, but no attack on the verdict does
    attacks = passed if guard else {k: passed[k] for k in VERDICT_ATTACKS}
    assert not any(attacks.values()), {k: v for k, v in attacks.items() if v}
    assert out["side_effects"] == [] and not out["connected"] and out["survivors"] == []
    assert out["secret_seen"] == [], out["secret_seen"]


@needs_isolation
@pytest.mark.parametrize("who", ["caller", "unprivileged"])
@pytest.mark.parametrize("guard", [True, False], ids=["guarded", "kernel-only"])
def test_hostile_programs(who, guard):
    if who == "unprivileged" and os.geteuid() != 0:
        pytest.skip("already unprivileged: the caller case covers it")
    out = _as_unprivileged(_attack, guard) if who == "unprivileged" else _attack(tempfile.gettempdir(), guard)
    _check_attack(out, guard)
    if who == "unprivileged":
        assert out["uid"] == NOBODY and "user" in out["sandbox"]["namespaces"]


# ------------------------------------------------------------------------------------------------ layers
@needs_isolation
def test_protections_recorded():
    prot = isolation()["protections"]
    assert prot["process_group"] and prot["tmp_cwd"] and prot["guard"] and prot["readonly_root"]
    assert {"mount", "network", "pid"} <= set(prot["namespaces"]) and prot["capabilities"] == 0
    assert prot["no_new_privs"] and prot["uid"] != 0
    for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE"):
        assert name in prot["rlimits"]


def test_refused_without_isolation_unless_allowed(monkeypatch):
    from calmix.errors import CalmixError
    from calmix.evals import codeexec
    from calmix.evals.sandbox import IsolationUnavailable

    monkeypatch.setattr(host, "isolation", lambda: {"available": False, "reason": "user namespaces disabled",
                                                     "protections": {}})
    with pytest.raises(IsolationUnavailable, match="user namespaces disabled.*--allow-unsafe-exec"):
        check_program("pass")
    with pytest.raises(CalmixError, match="--allow-unsafe-exec"):
        codeexec.run_many(["pass"])
    r = check_program("assert sum(range(4)) == 6\n", allow_unsafe=True)
    assert r.passed and r.protections["namespaces"] == [] and r.protections["guard"]
    assert check_program("import os\nos._exit(0)\n", allow_unsafe=True).status == "failed"
    assert check_program("while True:\n    pass\n", timeout_s=0.5, allow_unsafe=True).status == "timeout"


# --------------------------------------------------------------------------------------------- behaviour
@needs_isolation
def test_correct_program_passes_and_wrong_one_fails():
    ok = check_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('done')\n", timeout_s=5)
    assert isinstance(ok, ExecResult)
    assert ok.passed and ok.status == "passed" and ok.returncode == 0 and ok.stdout.strip() == "done"
    bad = check_program("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n", timeout_s=5)
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr
    syntax = check_program("def f(:\n", timeout_s=5)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr
    swallow = check_program("def add(a, b):\n    return 1\n'''", tests="assert add(2, 3) == 5\n'''\n")
    assert swallow.status == "failed"  # the solution cannot swallow the tests into a string


@needs_isolation
def test_stdlib_usable_and_cwd_writable_then_removed():
    prog = ("import os, re, math, heapq, collections, itertools, functools, json, hashlib, tempfile, decimal\n"
            "open('scratch.txt', 'w').write('hello')\n"
            "assert open('scratch.txt').read() == 'hello'\n"
            "with tempfile.NamedTemporaryFile('w') as fh: fh.write('x')\n"
            "os.remove('scratch.txt')\n"
            "import inspect\nassert 'def dumps' in inspect.getsource(json)\n"
            "print(os.getcwd())\n")
    r = check_program(prog, timeout_s=5)
    assert r.passed, r.stderr
    workdir = Path(r.stdout.strip())
    assert workdir.name.startswith("calmix-sbx-") and not workdir.exists()


@needs_isolation
def test_timeouts_are_quick():
    t0 = time.monotonic()
    r = check_program("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert r.status == "timeout" and r.seconds < 1.5 and time.monotonic() - t0 < 2.5


@needs_isolation
def test_environment_is_stripped(monkeypatch):
    monkeypatch.setenv("CALMIX_SECRET", "xyz")
    r = check_program("import os, sys\nprint(sorted(os.environ))\nprint(sys.flags.no_site)\n"
                      "assert 'CALMIX_SECRET' not in os.environ\nassert 'xyz' not in str(os.environ)\n", timeout_s=5)
    assert r.passed, r.stderr
    names = eval(r.stdout.splitlines()[0])
    assert set(names) <= set(host._clean_env("/x"))
    assert r.stdout.splitlines()[1] == "1"


@needs_isolation
def test_output_is_capped_and_hash_seed_fixed():
    r = check_program("print('x' * 1_000_000)\n", timeout_s=5)
    assert r.passed and len(r.stdout) < 20_000 and r.stdout.endswith("[output truncated]")
    prog = "print(hash('calmix'), list({'a', 'b', 'c', 'd', 'e'}))\n"
    assert check_program(prog).stdout == check_program(prog).stdout


def test_doctor_and_eval_report_or_refuse(monkeypatch, tmp_path, capsys):
    from calmix.cli import main

    rc = main(["doctor"])
    out = capsys.readouterr()
    assert rc == (0 if _isolated() else 1)
    assert ("kernel-isolated" in out.out) == _isolated()
    monkeypatch.setattr(host, "isolation", lambda: {"available": False, "reason": "user namespaces disabled",
                                                     "protections": {}})
    assert main(["doctor"]) == 1 and "--allow-unsafe-exec" in capsys.readouterr().err
    rc = main(["eval", "--model", "no-such-model", "--tasks", "humaneval", "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "user namespaces disabled" in err and "--allow-unsafe-exec" in err and len(err.splitlines()) == 1


@needs_isolation
def test_more_escapes_fail_without_side_effects(tmp_path):
    from calmix.evals.codeexec import run_many

    keep, target = tmp_path / "keep.txt", tmp_path / "pwned"
    keep.write_text("precious")
    progs = ["import sys\nsys.exit(0)\n", "input()\n", f"import os\nos.popen('touch {target}').read()\n",
             f"import os\nos.execv('/usr/bin/touch', ['touch', {str(target)!r}])\n",
             "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)\n",
             f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')\n",
             f"import os\nos.remove({str(keep)!r})\n", f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
             f"import os\nos.rename({str(keep)!r}, 'stolen')\n",
             "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n"]
    results = run_many(progs, timeout_s=5)
    assert [r.status for r in results if r.passed] == [], [(p, r.status) for p, r in zip(progs, results)]
    assert keep.read_text() == "precious" and not target.exists()
