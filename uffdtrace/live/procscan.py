"""Every userfaultfd on the host now, from /proc alone (no BPF).

Used by `uffdtrace ps`, by `trace` at start to report faults that were already
blocked (and, in tracepoint mode, to learn the uffds and registered ranges of
processes already running), and by the watchdog to ask whether a thread still
waits in handle_userfault.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..source import Holder, TaskState

PROC = Path("/proc")
UFFD_LINK = "anon_inode:[userfaultfd]"
# smaps VmFlags of a range registered with a uffd: missing, write-protect, minor.
UFFD_VMFLAGS = {"um", "uw", "ui"}
WCHAN = "handle_userfault"  # where a thread waiting for its fault sleeps
EVENT_WCHAN = "userfaultfd_event_wait_completion"  # where a caller waits for its event to be read
AIO_WCHAN = "read_events"  # where io_getevents/io_pgetevents sleep (fs/aio.c)
THREAD_STATES: dict[str, TaskState] = {WCHAN: "uffd", EVENT_WCHAN: "event", AIO_WCHAN: "aio"}
MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


@dataclass
class UffdFd:
    fd: int
    pending: int | None = None
    total: int | None = None
    ino: int | None = None  # the uffd's inode: the same through every holder's descriptor (5.12+)


@dataclass
class BlockedTask:
    """A thread sleeping in handle_userfault (its wchan says so), or in an event's completion."""

    tid: int
    comm: str
    last_ran_ns: int | None  # CLOCK_MONOTONIC of the last time it ran (sched exec_start), when the kernel tells
    kind: str = "fault"  # fault, or event (userfaultfd_event_wait_completion)


@dataclass
class UffdProcess:
    pid: int
    comm: str
    fds: list[UffdFd] = field(default_factory=list)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    blocked: list[BlockedTask] = field(default_factory=list)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _fdinfo(pid: int, fd: int) -> UffdFd:
    try:
        ino: int | None = os.stat(PROC / str(pid) / "fd" / str(fd)).st_ino
    except OSError:
        ino = None
    info = UffdFd(fd, ino=ino)
    for line in (read_text(PROC / str(pid) / "fdinfo" / str(fd)) or "").splitlines():
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


def wchan(task: Path) -> str | None:
    """Where the thread sleeps ("" while it runs); None when it no longer
    exists (or is a zombie)."""
    stat = read_text(task / "stat")
    if stat is None or stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return None
    return (read_text(task / "wchan") or "").strip()


def task_dir(pid: int, tid: int) -> Path:
    """/proc/PID/task/TID."""
    return PROC / str(pid) / "task" / str(tid)


def thread_state(pid: int, tid: int) -> TaskState:
    """``uffd`` when the thread waits in handle_userfault, ``event`` when it
    waits for its uffd event to be read, ``aio`` when it sleeps in
    io_getevents, ``gone`` when it no longer exists (or is a zombie),
    ``other`` otherwise."""
    where = wchan(task_dir(pid, tid))
    if where is None:
        return "gone"
    return THREAD_STATES.get(where, "other")


def exec_start_ns(task: Path) -> int | None:
    """se.exec_start from /proc/.../sched: milliseconds of the scheduler
    clock; None when the kernel does not say. 0 says nothing either: an
    enqueue on another CPU zeroes it (enqueue_entity, ENQUEUE_MIGRATED), and
    since v6.12's delayed dequeue a sleeping thread can be moved that way
    without running again."""
    for line in (read_text(task / "sched") or "").splitlines():
        if line.startswith("se.exec_start"):
            return int(float(line.split(":")[1]) * 1e6) or None
    return None


def switches(task: Path) -> int | None:
    """How many times the thread was switched out, voluntarily or not: the
    count does not move while it sleeps. None when the kernel does not say."""
    counts = [int(line.split(":")[1]) for line in (read_text(task / "status") or "").splitlines()
              if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))]
    return sum(counts) if len(counts) == 2 else None


def last_ran_ns(task: Path) -> int | None:
    """When the thread last ran, on CLOCK_MONOTONIC. The scheduler clock
    does not count like it (2.9 s behind on this project's VM): the reading
    thread's own exec_start, updated at least every tick while it runs, says
    by how much, so that a wait is never overstated by more than a tick."""
    ran = exec_start_ns(task)
    if ran is None:
        return None
    mono = time.monotonic_ns()
    own = exec_start_ns(PROC / "thread-self")
    return ran if own is None else ran + mono - own


def blocked_tasks(pid: int, events: bool = False) -> list[BlockedTask]:
    """The threads of ``pid`` waiting in handle_userfault; with ``events``,
    those waiting for their event to be read too."""
    waits = {WCHAN: "fault", **({EVENT_WCHAN: "event"} if events else {})}
    out = []
    try:
        tids = sorted(int(t) for t in os.listdir(PROC / str(pid) / "task"))
    except OSError:
        return []
    for tid in tids:
        task = task_dir(pid, tid)
        kind = waits.get((read_text(task / "wchan") or "").strip())
        if kind is not None:
            out.append(BlockedTask(tid, (read_text(task / "comm") or "?").strip(), last_ran_ns(task), kind))
    return out


def holders(ino: int) -> list[Holder]:
    """Every process with a descriptor on the uffd whose inode is ``ino``,
    with its threads and how many of them sleep in a userfaultfd wait."""
    out = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        fd_dir = PROC / entry.name / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or hidden (only root asks)
        for name in names:
            try:
                if os.readlink(fd_dir / name) == UFFD_LINK and os.stat(fd_dir / name).st_ino == ino:
                    break
            except OSError:
                continue
        else:
            continue
        pid = int(entry.name)
        try:
            tids = os.listdir(PROC / entry.name / "task")
        except OSError:
            continue
        states = [thread_state(pid, int(t)) for t in tids]
        alive = [s for s in states if s != "gone"]
        if alive:
            out.append(Holder(pid, (read_text(PROC / entry.name / "comm") or "?").strip(), len(alive),
                              sum(s in ("uffd", "event") for s in alive)))
    return out


class Hidden(Exception):
    """The process's fds cannot be read (another user's, without root)."""


def scan_process(pid: int, include_blocked_only: bool = False) -> UffdProcess | None:
    """The process's uffds, ranges and blocked threads; None when it has no
    uffd (and, with ``include_blocked_only``, no thread blocked on one: a
    process can fault on a uffd whose fd lives in its handler process).
    Raises Hidden when it cannot be looked at."""
    fd_dir = PROC / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except PermissionError as exc:
        raise Hidden(pid) from exc
    except OSError:
        return None
    fds = []
    for name in names:
        try:
            if os.readlink(fd_dir / name) == UFFD_LINK:
                fds.append(_fdinfo(pid, int(name)))
        except OSError:
            continue
    blocked = blocked_tasks(pid) if fds or include_blocked_only else []
    if not fds and not blocked:
        return None
    comm = (read_text(PROC / str(pid) / "comm") or "?").strip()
    return UffdProcess(pid, comm, sorted(fds, key=lambda f: f.fd), registered_ranges(pid) if fds else [], blocked)


@dataclass
class Scan:
    processes: list[UffdProcess]
    hidden: int  # processes that could not be looked at (no permission)


def scan(pids: Iterable[int] = (), include_blocked_only: bool = False) -> Scan:
    """Every process with a uffd (or only ``pids``)."""
    wanted = list(pids) or [int(e) for e in os.listdir(PROC) if e.isdigit()]
    found, hidden = [], 0
    for pid in wanted:
        try:
            if (p := scan_process(pid, include_blocked_only)) is not None:
                found.append(p)
        except Hidden:
            hidden += 1
    return Scan(sorted(found, key=lambda p: p.pid), hidden)
