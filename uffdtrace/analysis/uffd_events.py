"""Non-cooperative events (UFFD_FEATURE_EVENT_REMOVE, _UNMAP, _REMAP,
_FORK), beside the fault lifecycles. A thread in madvise, munmap, mremap or
fork queues one and waits until a handler reads it; until then every
UFFDIO_COPY/ZEROPAGE/CONTINUE/MOVE on its uffd fails with EAGAIN. Each
becomes an event lifecycle (raised, read and by whom, the caller resumed);
``event_unread`` when its caller has waited longer than --stuck-ms for the
read, confirmed with the kernel (the thread still waits in
userfaultfd_event_wait_completion)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..events import UFFD_EVENT_FORK, UFFD_EVENT_REMAP, Event
from ..source import TaskProbe
from .flags import Flags
from .handlers import Handlers
from .model import MS, EventLifecycle, Evidence, Flag
from .rules import Thresholds, held_by
from .verdicts import EVENT_UNREAD

MAX_WAITS = 4096


class EventSink(Protocol):
    def uffd_event(self, ev: EventLifecycle) -> None: ...


class EventWaits:
    def __init__(self, sink: EventSink, flags: Flags, tasks: TaskProbe | None,
                 on_read: Callable[[EventLifecycle], None] | None = None, handlers: Handlers | None = None) -> None:
        self.sink = sink
        self.handlers = handlers
        self.flags = flags
        self.on_read = on_read
        self.tasks = tasks
        self.waiting: dict[int, EventLifecycle] = {}  # by the caller's tid
        self.reads = 0  # event messages read
        self.unmatched_reads = 0  # read, and no caller seen waiting for it (raised before tracing)
        # Read before its caller's sleep was recorded (the handler, on another
        # CPU, can take the message between its queueing and the caller's
        # schedule()): claimed by that caller's raise within --wake-ms.
        self._early_reads: list[Event] = []
        self._registrar: dict[int, int] = {}  # uffd -> the process that registered memory on it

    def raised(self, ev: Event) -> None:
        if ev.tid in self.waiting:  # its previous call returned, and its read never came
            prev = self.waiting[ev.tid]
            self._end(prev, prev.t_done)
        if len(self.waiting) >= MAX_WAITS:
            self._end(self.waiting[next(iter(self.waiting))], None)
        ew = self.waiting[ev.tid] = EventLifecycle(ev.tgid, ev.tid, ev.comm, ev.mode, ev.addr, ev.len, ev.ts_ns)
        ew.uffd = ev.ctx  # kprobe mode knows it at the raise; tracepoint mode at the read
        ew.history.append(Evidence(f"{ew.name} raised: waits for its read", ev.ts_ns, ev.tid))
        early = next((r for r in self._early_reads if _is_its_message(ew, r)), None)
        if early is not None:
            self._early_reads.remove(early)
            self._read_by(ew, early)

    def registered_by(self, uffd: int, tgid: int) -> None:
        if len(self._registrar) >= MAX_WAITS:
            self._registrar.pop(next(iter(self._registrar)))
        self._registrar[uffd] = tgid

    def read(self, ev: Event) -> None:
        """A handler read an event message (any process: the uffd is the same).
        A fork's message names no range: of several forks waiting, the one
        of the process that registered memory on this uffd."""
        self.reads += 1
        mine = [w for w in self.waiting.values() if w.t_read is None and _is_its_message(w, ev)]
        owner = self._registrar.get(ev.ctx)
        ew = next((w for w in mine if w.tgid == owner), mine[0] if mine else None)
        if ew is None:
            if len(self._early_reads) >= MAX_WAITS:
                self._early_reads.pop(0)
                self.unmatched_reads += 1
            self._early_reads.append(ev)
            return
        self._read_by(ew, ev)

    def _read_by(self, ew: EventLifecycle, ev: Event) -> None:
        # A read is stamped when read() returns: after the caller it woke may
        # have returned too.
        t_read = max(ev.ts_ns, ew.t_raised) if ew.t_done is None else min(ev.ts_ns, ew.t_done)
        ew.uffd, ew.t_read, ew.reader_tid = ev.ctx, t_read, ev.tid
        ew.history.append(Evidence("event read", t_read, ev.tid))
        if self.on_read is not None:
            self.on_read(ew)
        if ew.t_done is not None:
            self._end(ew, ew.t_done)

    def done(self, ev: Event) -> None:
        """The call returned. Its read may still be on its way (stamped at
        read()'s return, after the wake-up): it waits one --wake-ms for it."""
        ew = self.waiting.get(ev.tid)
        if ew is None:
            return
        ew.ret, ew.t_done = ev.ret, ev.ts_ns
        if ew.t_read is not None:
            self._end(ew, ev.ts_ns)

    def _end(self, ew: EventLifecycle, ts: int | None) -> None:
        del self.waiting[ew.tid]
        ew.t_done = ts
        if ts is not None:
            ew.history.append(Evidence("the caller resumed", ts, ew.tid))
        for flag in ew.flags.values():  # again, with the whole wait (as a stuck fault's flags)
            self.flags.sink.flag(Flag(name=flag.name, ts_ns=ts or flag.ts_ns, tgid=ew.tgid, tid=ew.tid, comm=ew.comm,
                             uffd=ew.uffd, addr=ew.start, blocked_ns=(ts or flag.ts_ns) - ew.t_raised,
                             state=ew.state, evidence=list(ew.history), update=True, verdict=flag.verdict))
        self.sink.uffd_event(ew)

    def waiting_now(self) -> list[EventLifecycle]:
        return [w for w in self.waiting.values() if w.t_done is None]

    def unread(self, tgid: int) -> list[EventLifecycle]:
        """Events of process ``tgid`` queued and not read yet: the EAGAIN's cause."""
        return [w for w in self.waiting.values() if w.tgid == tgid and w.t_read is None and w.t_done is None]

    def tick(self, now: int, th: Thresholds) -> None:
        while self._early_reads and now - self._early_reads[0].ts_ns > th.wake_ns:
            self._early_reads.pop(0)
            self.unmatched_reads += 1
        for ew in list(self.waiting.values()):
            if ew.t_done is not None:
                if now - ew.t_done > th.wake_ns:
                    self._end(ew, ew.t_done)  # returned, and no read came: released, or a signal
                continue
            if ew.t_read is not None or "event_unread" in ew.flags or now - ew.t_raised <= th.stuck_ns:
                continue
            where = self.tasks(ew.tgid, ew.tid) if self.tasks is not None else None
            if where == "gone":
                self._end(ew, None)
                continue
            if where != "event":  # cannot tell, or it no longer waits (its return record is due)
                continue
            holders = self.handlers.holders_now(ew.uffd, now) if self.handlers is not None else None
            flag = Flag(name="event_unread", ts_ns=now, tgid=ew.tgid, tid=ew.tid, comm=ew.comm, uffd=ew.uffd,
                        addr=ew.start, blocked_ns=now - ew.t_raised, state="blocked", verdict=EVENT_UNREAD,
                        evidence=[*ew.history, Evidence(
                            f"still waiting in userfaultfd_event_wait_completion after {(now - ew.t_raised) / MS:.0f}"
                            f" ms: no handler read its {ew.name} event; until one does, every "
                            "UFFDIO_COPY/ZEROPAGE/CONTINUE/MOVE on its uffd fails with EAGAIN"
                            + (f"; {held_by(holders)}" if holders is not None else ""))])
            ew.flags["event_unread"] = flag
            self.flags.report(flag)

    def finish(self) -> None:
        self.unmatched_reads += len(self._early_reads)
        self._early_reads.clear()
        for ew in list(self.waiting.values()):
            self._end(ew, ew.t_done)


def _is_its_message(ew: EventLifecycle, ev: Event) -> bool:
    """The message (uffd_msg in READ_MSG: flags = arg word 1, addr = word 2)
    of the event this caller raised: same kind and uffd (when the raise
    named it), and for a range, one inside
    the call's (madvise and munmap split theirs per VMA)."""
    if ev.mode != ew.event or (ew.uffd and ew.uffd != ev.ctx):
        return False
    if ew.event == UFFD_EVENT_FORK:
        return True
    start = ev.flags  # remove/unmap: start; remap: from
    if ew.event == UFFD_EVENT_REMAP:
        return start == ew.start
    return ew.start <= start < ew.start + max(ew.length, 1)
