"""What the running kernel and host offer: probed from files, never from versions."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .btf import VMLINUX_BTF

SYS_USERFAULTFD = 323  # x86-64 (tracepoint mode needs x86's page-fault tracepoints anyway)
O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY = 0o2000000, 0o4000, 1


def uffd_inodes_distinct() -> bool:
    """Whether each uffd has an inode of its own (v5.12+, b537900f1598): two
    made here and compared. Otherwise every uffd shares the anon inode."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # UFFD_USER_MODE_ONLY (5.11) lets a user without CAP_SYS_PTRACE make one (doctor).
    fds = [libc.syscall(SYS_USERFAULTFD, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY) for _ in range(2)]
    if any(fd < 0 for fd in fds):
        fds = [fd if fd >= 0 else libc.syscall(SYS_USERFAULTFD, O_CLOEXEC | O_NONBLOCK) for fd in fds]
    try:
        return all(fd >= 0 for fd in fds) and os.fstat(fds[0]).st_ino != os.fstat(fds[1]).st_ino
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


@dataclass(frozen=True)
class Features:
    release: str
    root: bool
    btf: bool
    kprobes: bool
    tracefs: Path | None
    headers: Path | None
    headers_target: str | None
    bcc_version: str | None
    bcc_error: str | None

    @property
    def headers_match(self) -> bool:
        """Whether the headers bcc will use were built for this very kernel:
        the release their build wrote down (a kernel built in its own tree,
        or Debian's headers package), else the tree's name."""
        if self.headers_target is None:
            return False
        try:
            built_for = (Path(self.headers_target) / "include" / "config" / "kernel.release").read_text()
        except OSError:
            return self.release in self.headers_target
        return built_for.strip() == self.release


def tracefs() -> Path | None:
    for path in TRACEFS_CANDIDATES:
        try:
            if (path / "events").is_dir():
                return path
        except PermissionError:  # not root: the caller says what is missing
            continue
    return None


def ensure_tracefs() -> Path | None:
    """Mount tracefs if nothing is mounted yet (bcc reads tracepoint formats
    from it); returns where it is, or None if it cannot be had."""
    found = tracefs()
    if found is not None:
        return found
    target = TRACEFS_CANDIDATES[0]
    if target.is_dir() and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], check=False, capture_output=True)
    return tracefs()


def kprobes_available(trace_dir: Path | None) -> bool:
    # The perf 'kprobe' PMU (what bcc uses) or tracefs kprobe_events exist
    # only with CONFIG_KPROBE_EVENTS, which needs CONFIG_KPROBES.
    if Path("/sys/bus/event_source/devices/kprobe").is_dir():
        return True
    return trace_dir is not None and (trace_dir / "kprobe_events").exists()


def bcc_version() -> tuple[str | None, str | None]:
    """bcc's version, read from its package without importing it: importing
    bcc maps LLVM (60 MiB), which only compiling needs (compiled.py)."""
    import importlib.util

    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        return None, "No module named 'bcc'"
    try:
        text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    except OSError:
        return "unknown", None
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return (found.group(1) if found else "unknown"), None


def probe() -> Features:
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    trace_dir = tracefs()
    version, error = bcc_version()
    return Features(
        release=release,
        root=os.geteuid() == 0,
        btf=VMLINUX_BTF.exists(),
        kprobes=kprobes_available(trace_dir),
        tracefs=trace_dir,
        headers=build if build.exists() else None,
        headers_target=os.path.realpath(build) if build.exists() else None,
        bcc_version=version,
        bcc_error=error,
    )
