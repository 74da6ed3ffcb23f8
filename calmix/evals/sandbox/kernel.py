"""Linux isolation syscalls for the sandbox child, through ctypes (standard library only).

Namespaces (user, mount, network, pid, ipc, uts), a read-only view of the filesystem with empty private tmpfs
over the writable shared places, capabilities dropped, no_new_privs, a Landlock ruleset and a seccomp filter.
Every function raises OSError naming the step that failed; the child reports it and refuses to run the program.
"""

from __future__ import annotations

import ctypes
import os
import struct

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV, ATTR_NOEXEC = 1, 2, 4, 8
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR, SYS_LANDLOCK_CREATE, SYS_LANDLOCK_ADD, SYS_LANDLOCK_RESTRICT = 442, 444, 445, 446
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 28, 38, 47
SECUREBITS = 1 | 2 | 8 | 32 | 64 | 128  # no root magic, no setuid fixup change, no keep-caps, no ambient; all locked
NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _b(path: str) -> bytes:
    return os.fsencode(path)


# --------------------------------------------------------------------------------------------- namespaces
def enter_namespaces(as_root: bool) -> None:
    """Unshare mount, network, pid, ipc and uts namespaces (plus a user namespace when not root)."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    if not as_root:
        flags |= CLONE_NEWUSER
    _check(_libc.unshare(flags), "unshare")
    if not as_root:  # map the caller to `nobody` inside; setgroups must be denied before gid_map is writable
        for name, text in (("setgroups", "deny"), ("uid_map", f"{NOBODY} {uid} 1"), ("gid_map", f"{NOBODY} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")


# ----------------------------------------------------------------------------------------------- mounts
class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _setattr(path: str, set_: int, clr: int = 0, recursive: bool = False) -> None:
    attr = _MountAttr(set_, clr, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, _b(path), AT_RECURSIVE if recursive else 0,
                         ctypes.byref(attr), ctypes.sizeof(attr)), f"mount_setattr {path}")


def _mount(src: bytes | None, target: str, fstype: bytes | None, flags: int, data: bytes | None = None) -> None:
    _check(_libc.mount(src, _b(target), fstype, flags, data), f"mount {target}")


def _covering(path: str, covers: list[str]) -> str | None:
    return next((c for c in covers if path == c or path.startswith(c.rstrip("/") + "/")), None)


def readonly_view(workdir: str, covers: list[str], keep: list[str]) -> list[str]:
    """Make / read-only and private, put empty read-only tmpfs over `covers`, re-expose `keep` (read-only) and
    `workdir` (the only writable place); returns the covers actually mounted."""
    keep = [p for p in keep if os.path.isdir(p)]
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in [workdir, *keep]}  # handles before they are hidden
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _setattr("/", ATTR_RDONLY | ATTR_NOSUID, recursive=True)
    covers = sorted({os.path.realpath(c) for c in covers if os.path.isdir(c)}, key=len)
    covers = [c for i, c in enumerate(covers) if not _covering(c, covers[:i])]
    for cover in covers:
        _mount(b"tmpfs", cover, b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=64k,nr_inodes=256,mode=0755")
    for path, fd in fds.items():
        writable = path == workdir
        if not writable and not _covering(path, covers):
            continue  # already visible, read-only
        os.makedirs(path, exist_ok=True)
        _mount(_b(f"/proc/self/fd/{fd}"), path, None, MS_BIND)
        # the writable folder is noexec (nothing written there can be mapped as code); the Python installation
        # must stay executable for its extension modules
        _setattr(path, ATTR_NOSUID | ATTR_NODEV | (ATTR_NOEXEC if writable else ATTR_RDONLY),
                 clr=ATTR_RDONLY if writable else 0)
        os.close(fd)
    for cover in covers:
        _setattr(cover, ATTR_RDONLY)
    return covers


def fresh_proc() -> bool:
    """Mount a proc of this pid namespace over /proc (the host's processes vanish); else hide /proc."""
    try:
        _mount(b"proc", "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return True
    except OSError:  # e.g. a container that masks parts of /proc: hide it instead
        _mount(b"tmpfs", "/proc", b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k")
        return False


# -------------------------------------------------------------------------------------------- privileges
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_privileges(as_root: bool) -> None:
    """Lock securebits, empty the bounding and ambient sets, become `nobody` (root), clear all capabilities and set
    no_new_privs, so neither setuid binaries nor exec can bring a capability back."""
    _check(_libc.prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0), "prctl(SECUREBITS)")
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    _check(_libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0), "prctl(CAP_AMBIENT_CLEAR_ALL)")
    if as_root:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "capset")
    no_new_privs()


def no_new_privs() -> None:
    """Forbid gaining privileges through exec (setuid bits, file capabilities) from now on."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def capabilities() -> dict:
    """Effective, permitted and bounding capability masks of this process (from /proc/self/status)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")):
                key, value = line.split(":")
                out[key] = int(value.strip(), 16)
    return out


# ---------------------------------------------------------------------------------------------- landlock
class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)  # + truncate, ioctl_dev


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel (0 if unavailable)."""
    return max(0, _libc.syscall(SYS_LANDLOCK_CREATE, None, 0, 1))


def landlock(read: list[str], write: list[str], devices: list[str]) -> int:
    """Allow reading only beneath `read`, writing only beneath `write`, the `devices` read-write, no TCP and
    (ABI >= 6) no signals or abstract sockets outside the sandbox; returns the ABI used (0: unavailable)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    attr = struct.pack("QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)[: 8 * min(3, 1 + (abi >= 4) + (abi >= 6))]
    ruleset = _check(_libc.syscall(SYS_LANDLOCK_CREATE, attr, len(attr), 0), "landlock_create_ruleset")
    try:
        rules = [(p, FS_READ_FILE | FS_READ_DIR) for p in read] + [(p, fs & ~FS_EXECUTE) for p in write]
        rules += [(p, FS_READ_FILE | FS_WRITE_FILE) for p in devices]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # an optional path that does not exist here
            try:
                if not os.path.isdir(path):
                    access &= FS_FILE_RIGHTS
                rule = _PathBeneath(access & fs, fd)
                _check(_libc.syscall(SYS_LANDLOCK_ADD, ruleset, 1, ctypes.byref(rule), 0), f"landlock rule {path}")
            finally:
                os.close(fd)
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


# ----------------------------------------------------------------------------------------------- seccomp
# Denied with EPERM: sockets, tracing and other processes' memory, every mount/namespace call, exec, fork (clone
# without CLONE_THREAD), io_uring (it would bypass this filter), bpf/perf/userfaultfd/keyrings, module loading.
_SYSCALLS = {
    "x86_64": (0xC000003E, 56, dict(socket=41, socketpair=53, ptrace=101, process_vm_readv=310, process_vm_writev=311,
               mount=165, umount2=166, pivot_root=155, chroot=161, unshare=272, setns=308, bpf=321, perf_event_open=298,
               userfaultfd=323, keyctl=250, add_key=248, request_key=249, execve=59, execveat=322, fork=57, vfork=58,
               kexec_load=246, init_module=175, finit_module=313, open_by_handle_at=304)),
    "aarch64": (0xC00000B7, 220, dict(socket=198, socketpair=199, ptrace=117, process_vm_readv=270,
                process_vm_writev=271, mount=40, umount2=39, pivot_root=41, chroot=51, unshare=97, setns=268, bpf=280,
                perf_event_open=241, userfaultfd=282, keyctl=219, add_key=217, request_key=218, execve=221,
                execveat=281, kexec_load=104, init_module=105, finit_module=273, open_by_handle_at=265)),
}
_COMMON = dict(io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
               fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_getfd=438, mount_setattr=442)
CLONE3, CLONE_THREAD = 435, 0x00010000


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_filter() -> bytes | None:
    """The BPF program of the filter for this machine's architecture (None where the table does not cover it)."""
    arch = _SYSCALLS.get(os.uname().machine)
    if arch is None:
        return None
    audit_arch, clone, table = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    kill, eperm, enosys, allow = 0x80000000, 0x00050000 | 1, 0x00050000 | 38, 0x7FFF0000
    prog = [_bpf(ld, 4), _bpf(jeq, audit_arch, 1, 0), _bpf(ret, kill), _bpf(ld, 0)]
    if audit_arch == 0xC000003E:
        prog += [_bpf(jge, 0x40000000, 0, 1), _bpf(ret, kill)]  # the x32 ABI would dodge the table
    for nr in sorted(set(table.values()) | set(_COMMON.values())):
        prog += [_bpf(jeq, nr, 0, 1), _bpf(ret, eperm)]
    prog += [_bpf(jeq, CLONE3, 0, 1), _bpf(ret, enosys)]  # glibc then falls back to clone, checked below
    prog += [_bpf(jeq, clone, 0, 3), _bpf(ld, 16), _bpf(jset, CLONE_THREAD, 1, 0), _bpf(ret, eperm), _bpf(ret, allow)]
    return b"".join(prog)


def seccomp() -> bool:
    """Install the filter (needs no_new_privs); False where this architecture has no table."""
    prog = seccomp_filter()
    if prog is None:
        return False
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0), "prctl(SECCOMP)")
    return True
