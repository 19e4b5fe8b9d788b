"""Every userfaultfd on the host now, from /proc alone (no BPF).

Used by tracepoint mode to learn the uffds and registered ranges of processes
that were already running when tracing started.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
UFFD_LINK = "anon_inode:[userfaultfd]"
# smaps VmFlags of a range registered with a uffd: missing, write-protect, minor.
UFFD_VMFLAGS = {"um", "uw", "ui"}
MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


@dataclass
class UffdFd:
    fd: int
    pending: int | None = None
    total: int | None = None


@dataclass
class UffdProcess:
    pid: int
    comm: str
    fds: list[UffdFd] = field(default_factory=list)
    ranges: list[tuple[int, int]] = field(default_factory=list)


def _fdinfo(pid: int, fd: int) -> UffdFd:
    info = UffdFd(fd)
    try:
        text = (PROC / str(pid) / "fdinfo" / str(fd)).read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "pending":
            info.pending = int(value)
        elif key == "total":
            info.total = int(value)
    return info


def registered_ranges(pid: int) -> list[tuple[int, int]]:
    """[start, end) of every VMA whose VmFlags say it is registered with a uffd."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    try:
        with (PROC / str(pid) / "smaps").open() as fh:
            for line in fh:
                m = MAPS_LINE.match(line)
                if m:
                    current = (int(m[1], 16), int(m[2], 16))
                elif line.startswith("VmFlags:") and current and UFFD_VMFLAGS & set(line.split()[1:]):
                    out.append(current)
    except OSError:
        return []
    return out


def scan_process(pid: int) -> UffdProcess | None:
    fd_dir = PROC / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    fds = []
    for name in names:
        try:
            if os.readlink(fd_dir / name) == UFFD_LINK:
                fds.append(_fdinfo(pid, int(name)))
        except OSError:
            continue
    if not fds:
        return None
    try:
        comm = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        comm = "?"
    return UffdProcess(pid, comm, sorted(fds, key=lambda f: f.fd), registered_ranges(pid))


def scan() -> list[UffdProcess]:
    found = []
    for entry in os.listdir(PROC):
        if entry.isdigit():
            proc = scan_process(int(entry))
            if proc is not None:
                found.append(proc)
    return sorted(found, key=lambda p: p.pid)
