"""A hang in progress, explained from what the kernel holds now (`uffdtrace
why`): every thread blocked in handle_userfault or in an event's
completion, the uffd it waits on and where its message is (bpf/why.c's walk
of the uffds' queues), whether its page is there now (/proc/PID/pagemap),
who holds the uffd and what their threads are doing (/proc), and the
verdict (analysis/verdicts.py). Read-only; x86-64 syscall numbers."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..analysis.verdicts import verdict
from ..escape import printable
from ..events import UFFD_EVENT_NAMES, UFFD_EVENT_REMAP
from . import procscan
from .uffd_state import Uffd, Waiter

PROC = procscan.PROC
# x86-64: calls a handler thread waits in, and where their descriptor is.
READS = {0: "read", 19: "readv", 17: "pread64"}  # fd in arg 0
POLLS = {7: "poll", 271: "ppoll"}  # struct pollfd * in arg 0, nfds in arg 1
EPOLLS = {232: "epoll_wait", 281: "epoll_pwait", 441: "epoll_pwait2"}  # epfd in arg 0
AIO = {208: "io_getevents", 333: "io_pgetevents"}
MAX_POLLFDS = 4096
PAGEMAP_PRESENT, PAGEMAP_SWAPPED = 1 << 63, 1 << 62
STUCK_NS = 1_000_000_000  # trace's default --stuck-ms


@dataclass
class HandlerThread:
    """A thread of a process holding the uffd."""

    tid: int
    comm: str
    wchan: str
    on_this_uffd: str | None  # read, poll, epoll_wait...: it waits for this uffd to be readable
    asleep_on_uffd: bool  # itself blocked on a userfaultfd wait: it can read nothing


@dataclass
class HolderView:
    pid: int
    comm: str
    fds: list[int]
    threads: list[HandlerThread] = field(default_factory=list)


@dataclass
class Blocked:
    """One thread blocked on userfaultfd, explained."""

    pid: int
    tid: int
    comm: str
    kind: str  # fault or event
    uffd: int | None  # its inode, as /proc/PID/fd shows it
    addr: int | None  # the fault's address, or the event's start
    event: str | None  # the event's name
    length: int | None  # the event's range
    waiting_s: float | None  # since it last ran
    message: str | None  # queued or read; None: on none of the uffd's queues
    page: str  # present, absent or unknown
    holders: list[HolderView]
    events_queued: list[dict[str, Any]]
    verdict: str = ""
    explanation: str = ""

    @property
    def handler_threads(self) -> list[HandlerThread]:
        return [t for h in self.holders for t in h.threads if t.on_this_uffd]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["length"]
        out["range"] = None if self.length is None else [self.addr, self.length]
        out["handler_threads"] = [asdict(t) for t in self.handler_threads]
        return out


def blocked_threads(pids: list[int]) -> list[tuple[int, procscan.BlockedTask]]:
    """Every thread of ``pids`` (every process when empty) waiting on userfaultfd: a fault or an event."""
    return [(pid, t) for pid in pids or [int(e) for e in os.listdir(PROC) if e.isdigit()]
            for t in procscan.blocked_tasks(pid, events=True)]


def page_state(pid: int, addr: int) -> str:
    """Whether the page at ``addr`` is mapped now (or swapped out: not missing either)."""
    try:
        with open(f"{PROC}/{pid}/pagemap", "rb") as fh:
            fh.seek(addr // os.sysconf("SC_PAGE_SIZE") * 8)
            raw = fh.read(8)
    except OSError:
        return "unknown"
    if len(raw) != 8:
        return "unknown"
    entry = struct.unpack("<Q", raw)[0]
    return "present" if entry & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) else "absent"


def _fd_ino(pid: int, fd: int) -> int | None:
    try:
        return os.stat(f"{PROC}/{pid}/fd/{fd}").st_ino
    except OSError:
        return None


def _polled_fds(pid: int, addr: int, nfds: int) -> list[int]:
    try:
        with open(f"{PROC}/{pid}/mem", "rb") as fh:
            fh.seek(addr)
            raw = fh.read(8 * min(nfds, MAX_POLLFDS))
    except (OSError, ValueError, OverflowError):
        return []
    return [fd for fd, _events, _revents in struct.iter_unpack("<ihh", raw[: len(raw) - len(raw) % 8])]


def _epoll_fds(pid: int, epfd: int) -> list[int]:
    fds = []
    for line in (procscan.read_text(PROC / str(pid) / "fdinfo" / str(epfd)) or "").splitlines():
        if line.startswith("tfd:"):
            fds.append(int(line.split()[1]))
    return fds


def waits_on(pid: int, tid: int, ino: int) -> str | None:
    """The call the thread sleeps in, when it waits for uffd ``ino``."""
    words = (procscan.read_text(procscan.task_dir(pid, tid) / "syscall") or "").split()
    if len(words) < 3 or not words[0].lstrip("-").isdigit():
        return None  # running, or not in a system call
    nr, args = int(words[0]), [int(w, 16) for w in words[1:7]]
    if nr in READS:
        fds, name = [args[0]], READS[nr]
    elif nr in POLLS:
        fds, name = _polled_fds(pid, args[0], args[1]), POLLS[nr]
    elif nr in EPOLLS:
        fds, name = _epoll_fds(pid, args[0]), EPOLLS[nr]
    else:
        return AIO.get(nr)  # an aio poll names no descriptor: said, not matched
    return name if any(_fd_ino(pid, fd) == ino for fd in fds if fd >= 0) else None


def holder_view(pid: int, fds: list[int], ino: int) -> HolderView:
    view = HolderView(pid, (procscan.read_text(PROC / str(pid) / "comm") or "?").strip(), sorted(fds))
    try:
        tids = sorted(int(t) for t in os.listdir(PROC / str(pid) / "task"))
    except OSError:
        return view  # exited during the walk
    for tid in tids:
        task = procscan.task_dir(pid, tid)
        where = procscan.wchan(task)
        if where is None:
            continue
        view.threads.append(HandlerThread(tid, (procscan.read_text(task / "comm") or "?").strip(), where or "running",
                                          waits_on(pid, tid, ino), where in (procscan.WCHAN, procscan.EVENT_WCHAN)))
    return view


def _find(uffds: dict[int, Uffd], tid: int) -> tuple[Uffd, str, Waiter] | None:
    for u in uffds.values():
        for queue, waiters in (("queued", u.queued), ("read", u.read), ("queued", u.events)):
            for w in waiters:
                if w.tid == tid:
                    return u, queue, w
    return None


def _event_range(w: Waiter) -> tuple[int, int]:
    if w.event == UFFD_EVENT_REMAP:
        return w.args[0], w.args[2]  # from, to, len
    return w.args[0], max(0, w.args[1] - w.args[0])  # start, end (fork: none)


def _describe(b: Blocked, meaning: str) -> str:
    where = "a fault" if b.kind == "fault" else f"its {b.event} event"
    head = f"{printable(b.comm)} {b.pid}/{b.tid} waits on {where}"
    if b.uffd is None:
        return f"{head}, on a uffd not found: {meaning}"
    parts = [f"{head} (uffd {b.uffd}): {meaning}"]
    holders = "; ".join(
        f"pid {h.pid} {printable(h.comm)} ("
        + ", ".join(f"tid {t.tid} {printable(t.comm)} "
                    + (f"in {t.on_this_uffd} on this uffd" if t.on_this_uffd else
                       "asleep on a userfaultfd wait" if t.asleep_on_uffd else f"in {t.wchan}")
                    for t in h.threads[:8])
        + (f", {len(h.threads) - 8} more" if len(h.threads) > 8 else "") + ")"
        for h in b.holders)
    parts.append(f"held by {holders}" if holders else "no process holds it")
    return "; ".join(parts)


def asleep_for_stuck(waiting: list[tuple[int, procscan.BlockedTask]]) -> set[int]:
    """The threads whose last run the kernel does not say (procscan.exec_start_ns)
    that stay asleep on userfaultfd, never switched in, for STUCK_NS from now:
    a wait that long is known without its start. It costs `why` that second
    only when such a thread waits."""
    unknown = [(pid, t.tid) for pid, t in waiting if t.last_ran_ns is None]
    if not unknown:
        return set()
    before = {tid: procscan.switches(procscan.task_dir(pid, tid)) for pid, tid in unknown}
    time.sleep(STUCK_NS / 1e9)
    return {tid for pid, tid in unknown
            if before[tid] is not None and procscan.switches(procscan.task_dir(pid, tid)) == before[tid]
            and procscan.thread_state(pid, tid) in ("uffd", "event")}


def explain(pids: list[int], snapshot: Callable[[], dict[int, Uffd]]) -> list[Blocked]:
    """One Blocked per thread of ``pids`` (every process when empty) waiting
    on userfaultfd; the uffds' queues (``snapshot``) are read once it is
    known which waits are long."""
    waiting = blocked_threads(pids)
    long_asleep = asleep_for_stuck(waiting)
    if any(t.last_ran_ns is None for _, t in waiting):  # it waited a second: the threads as they are now
        waiting = blocked_threads(pids)
    uffds = snapshot()
    now = time.monotonic_ns()
    blocked_tids = {task.tid for _, task in waiting}
    out = []
    for pid, task in waiting:
        tid, comm, kind, last_ran = task.tid, task.comm, task.kind, task.last_ran_ns
        found = _find(uffds, tid)
        u, message, w = found if found else (None, None, None)
        addr = length = None
        event = None
        if w is not None and kind == "event":
            event = UFFD_EVENT_NAMES.get(w.event, f"{w.event:#x}")
            addr, length = _event_range(w)
        elif w is not None:
            addr = w.args[1] & ~(os.sysconf("SC_PAGE_SIZE") - 1)
        holders = [holder_view(hp, fds, u.ino) for hp, fds in sorted(u.holders.items())] if u else []
        threads = [t for h in holders for t in h.threads]
        can_read = any(not t.asleep_on_uffd and t.tid not in blocked_tids for t in threads) if threads else None
        # Its reader gone is concluded only of a wait longer than --stuck-ms's default: a handler of
        # its own process may be busy with the page for a moment, waiting on nothing of the uffd.
        waited = (last_ran is not None and now - last_ran > STUCK_NS) or tid in long_asleep
        handled = not waited or any(h.pid != pid for h in holders) or any(t.on_this_uffd for t in threads)
        b = Blocked(pid, tid, comm, kind, u.ino if u else None, addr, event, length,
                    None if last_ran is None else round(max(0, now - last_ran) / 1e9, 3), message,
                    page_state(pid, addr) if kind == "fault" and addr is not None else "unknown", holders,
                    [{"event": UFFD_EVENT_NAMES.get(e.event, f"{e.event:#x}"), "tid": e.tid,
                      "start": _event_range(e)[0], "len": _event_range(e)[1]} for e in (u.events if u else [])])
        b.verdict, meaning = verdict(kind, message, b.page, can_read, handled)
        b.explanation = _describe(b, meaning)
        out.append(b)
    return out
