"""Per-fault lifecycles (DESIGN §5): the correlator, pure Python.

Events from any EventSource go in (``feed``); time moves forward with
``advance(horizon)``; finished lifecycles and flags come out through a Sink.
The facts it keeps are ``model.py``'s; which flags they earn, ``rules.py``'s.

A lifecycle is one thread's wait for one page of one uffd, keyed by
(ctx, tid, page): raised -> read -> resolved -> woken -> returned. A thread
waits on at most one fault at a time, so open lifecycles are indexed by tid.

Events are re-ordered by timestamp before use (per-CPU buffers deliver out of
order), and the records are not all taken at the instant their step happened:
a resolving ioctl is recorded when it returns, after the wake-up it caused.
So a wake-up stays "pending" until the waker's own ioctl record says what it
did (resolved the page, or only woke it: UFFDIO_WAKE), and a finished
lifecycle waits one ``--wake-ms`` before it is emitted, so that a reader's
late record still counts.

The two modes see different things: kprobe mode sees every entry into and
return from handle_userfault (``sees_returns``); tracepoint mode sees the
page-fault exception, the sleep (BLOCK) and the wake-up, so a new round there
starts when a wake-up did not resolve the page (the thread retries at once).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import FOLD_CLOSER, FOLD_OP_MASK, FOLD_REFAULT, FOLD_VIA_READ, Event, Kind, Op, op_name
from ..source import BlockedThread, TaskState
from .model import REASONS, AioPoll, Attempt, Evidence, Flag, Lifecycle
from .rules import (
    EEXIST,
    FROM_ABSENCE,
    MOVE_WINDOW_NS,
    RESOLVES,
    WHILE_BLOCKED,
    Thresholds,
    aio_poll_stuck,
    anon_vma_retry,
    counts_as_failure,
    released_with_waiters,
    resolves,
    retry_loop,
    sigbus,
    timed_flags,
)

UFFD_EVENT_PAGEFAULT = 0x12
PAGE_SIZE = 0x1000
PAGE_MASK = ~(PAGE_SIZE - 1)
# x86 page-fault error code bits (tracepoint mode's fault records carry it).
X86_PF_PROT, X86_PF_WRITE = 0x1, 0x2
# UFFDIO_REGISTER modes.
REGISTER_MISSING, REGISTER_MINOR = 0x1, 0x4
MAX_ATTEMPTS = 16
MAX_AIO = 4096

# Asks the system (live) where a thread (tgid, tid) is now: waiting in
# handle_userfault, elsewhere, or gone. None when it cannot tell.
TaskProbe = Callable[[int, int], TaskState | None]
# Asks the kernel's per-thread fault state (a BPF map) which page thread tid
# is faulting on: in kprobe mode while it is inside handle_userfault, in
# tracepoint mode its last fault in a registered range. None when unknown.
FaultProbe = Callable[[int], int | None]
# Asks the kernel which faults it is folding now (tracepoint mode without
# --events), as FAULT_STATE events; with True, also those woken inside an
# ioctl that has not returned yet.
FoldedProbe = Callable[[bool], list[Event]]
# Tells the kernel that the watchdog took over the folded fault of (tid, raised
# at): its end is then always sent (--flagged sends clean ends only then).
AdoptHook = Callable[[int, int], None]


def _ts(ev: Event) -> int:
    return ev.ts_ns


class Sink(Protocol):
    def lifecycle(self, lc: Lifecycle) -> None: ...

    def flag(self, flag: Flag) -> None: ...


@dataclass
class Counters:
    lifecycles: int = 0
    flags: collections.Counter[str] = field(default_factory=collections.Counter)
    failing: int = 0  # flags that --fail-on-flags counts
    evicted: int = 0
    unmatched_reads: int = 0
    messages_read: int = 0  # page-fault messages handlers read (sent one by one or folded in the kernel)


REFAULT_NOTE = "raised again: the page was gone when the kernel retried the fault after its wake-up"


class Settling:
    """Ended lifecycles, kept a little before they are emitted so that late
    records still reach them: a reader's (one --wake-ms), or the ioctl record
    of the thread that woke them (up to --stuck-ms, kept apart by waker).
    Indexed so that no event scans them all."""

    def __init__(self) -> None:
        self._queue: collections.deque[Lifecycle] = collections.deque()  # by ended_at
        self._by_waker: dict[int, list[Lifecycle]] = {}
        self._by_thread_page: dict[tuple[int, int | None], Lifecycle] = {}
        self._by_page: dict[tuple[int, int | None], Lifecycle] = {}

    def add(self, lc: Lifecycle) -> None:
        if lc.pending_waker is not None:
            self._by_waker.setdefault(lc.pending_waker, []).append(lc)
        else:
            self._queue.append(lc)
        self._by_thread_page[(lc.tid, lc.page)] = lc
        self._by_page[(lc.ctx, lc.page)] = lc

    def waker_reported(self, lc: Lifecycle, waker: int) -> None:
        held = self._by_waker.get(waker, [])
        if lc in held:
            held.remove(lc)
            if not held:
                del self._by_waker[waker]
            self._queue.append(lc)

    def woken_by(self, waker: int) -> list[Lifecycle]:
        return list(self._by_waker.get(waker, ()))

    def of_thread(self, tid: int, page: int) -> Lifecycle | None:
        return self._by_thread_page.get((tid, page))

    def of_page(self, ctx: int, page: int) -> Lifecycle | None:
        return self._by_page.get((ctx, page))

    def due(self, now: int | None, wake_ns: int, stuck_ns: int) -> list[Lifecycle]:
        """Remove and return what is ready at ``now`` (everything when None)."""
        out = []
        while self._queue and (now is None or now - self._queue[0].ended_at > wake_ns):
            out.append(self._queue.popleft())
        for waker, held in list(self._by_waker.items()):
            ready = [lc for lc in held if now is None or now - lc.ended_at > stuck_ns]
            if ready:
                out += ready
                self._by_waker[waker] = [lc for lc in held if lc not in ready]
                if not self._by_waker[waker]:
                    del self._by_waker[waker]
        for lc in out:
            if self._by_thread_page.get((lc.tid, lc.page)) is lc:
                del self._by_thread_page[(lc.tid, lc.page)]
            if self._by_page.get((lc.ctx, lc.page)) is lc:
                del self._by_page[(lc.ctx, lc.page)]
        return out


class OpenTable:
    """Open lifecycles (one per thread), indexed so that a message or an
    ioctl finds its faults without scanning them all: by (uffd, page), and
    by the waker whose ioctl record is due. Fields behind an index change
    only through ``set_page`` and ``set_pending``."""

    def __init__(self) -> None:
        self._by_tid: dict[int, Lifecycle] = {}
        self._by_page: dict[tuple[int, int | None], dict[int, Lifecycle]] = {}
        self._by_waker: dict[int, dict[int, Lifecycle]] = {}

    def __len__(self) -> int:
        return len(self._by_tid)

    def get(self, tid: int) -> Lifecycle | None:
        return self._by_tid.get(tid)

    def values(self) -> list[Lifecycle]:
        """A copy: the caller may close lifecycles while it walks them."""
        return list(self._by_tid.values())

    def add(self, lc: Lifecycle) -> None:
        old = self._by_tid.get(lc.tid)
        if old is not None:
            self.remove(old)
        self._by_tid[lc.tid] = lc
        self._by_page.setdefault((lc.ctx, lc.page), {})[lc.tid] = lc
        if lc.pending_waker is not None:
            self._by_waker.setdefault(lc.pending_waker, {})[lc.tid] = lc

    def remove(self, lc: Lifecycle) -> None:
        if self._by_tid.get(lc.tid) is not lc:
            return
        del self._by_tid[lc.tid]
        _discard(self._by_page, (lc.ctx, lc.page), lc.tid)
        if lc.pending_waker is not None:
            _discard(self._by_waker, lc.pending_waker, lc.tid)

    def set_page(self, lc: Lifecycle, page: int, ctx: int | None) -> None:
        """A lifecycle found in /proc learns its page (and uffd) from an event."""
        _discard(self._by_page, (lc.ctx, lc.page), lc.tid)
        lc.page = page
        if ctx:
            lc.ctx = ctx
        self._by_page.setdefault((lc.ctx, lc.page), {})[lc.tid] = lc

    def set_pending(self, lc: Lifecycle, waker: int | None) -> None:
        if lc.pending_waker is not None:
            _discard(self._by_waker, lc.pending_waker, lc.tid)
        lc.pending_waker = waker
        if waker is not None:
            self._by_waker.setdefault(waker, {})[lc.tid] = lc

    def on_page(self, ctx: int, page: int) -> list[Lifecycle]:
        return list(self._by_page.get((ctx, page), {}).values())

    def in_range(self, ctx: int, start: int, length: int) -> list[Lifecycle]:
        """Lifecycles of uffd ``ctx`` whose page is in [start, start+length) (length 0: all)."""
        # Whichever is shorter: the range's pages, or the open lifecycles.
        if length == 0 or length > len(self._by_tid) * PAGE_SIZE:
            return [lc for lc in self._by_tid.values() if in_range(lc, ctx, start, length)]
        return [lc for page in range(start, start + length, PAGE_SIZE)
                for lc in self._by_page.get((ctx, page), {}).values()]

    def woken_by(self, waker: int) -> list[Lifecycle]:
        return list(self._by_waker.get(waker, {}).values())


def in_range(lc: Lifecycle, ctx: int, start: int, length: int) -> bool:
    """Whether the lifecycle's page is in [start, start+length) of uffd ``ctx`` (length 0: all)."""
    return lc.ctx == ctx and lc.page is not None and (length == 0 or start <= lc.page < start + length)


def _discard(index: dict[Any, dict[int, Lifecycle]], key: Any, tid: int) -> None:
    entries = index.get(key)
    if entries is not None:
        entries.pop(tid, None)
        if not entries:
            del index[key]


class Correlator:
    def __init__(self, sink: Sink, thresholds: Thresholds | None = None, *, sees_returns: bool,
                 tasks: TaskProbe | None = None, faults: FaultProbe | None = None,
                 folded: FoldedProbe | None = None, adopted: AdoptHook | None = None,
                 max_open: int = 65536) -> None:
        self.sink = sink
        self.folded = folded
        self.adopted = adopted
        self._adopted: dict[int, int] = {}  # tid -> raise time of the folded fault the watchdog took over
        self._orphan_reads: dict[tuple[int, int], list[Event]] = {}  # (uffd, page) -> reads that matched nothing yet
        self.th = thresholds or Thresholds()
        self.sees_returns = sees_returns
        self.tasks = tasks
        self.faults = faults
        self.lost = 0  # records the source lost so far
        self.register_modes: collections.defaultdict[int, int] = collections.defaultdict(int)  # per uffd
        self.max_open = max_open
        self.open = OpenTable()
        self.settling = Settling()
        self.aio: dict[int, AioPoll] = {}
        self.recent_moves: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        self._rmap_walks: collections.deque[Event] = collections.deque()  # anon_vma locks not judged yet
        self.counters = Counters()
        # Fed, not yet handled: sorted by time in advance() (a stable sort of
        # nearly sorted data, cheaper than a heap operation per event).
        self._queue: list[Event] = []
        self._handlers: dict[Kind, Callable[[Event], None]] = {
            Kind.FAULT: self._fault, Kind.FAULT_RET: self._fault_ret, Kind.BLOCK: self._block,
            Kind.READ_MSG: self._read, Kind.RESOLVE: self._resolve, Kind.UFFD_REGISTER: self._register,
            Kind.WAKE_TASK: self._wake, Kind.UFFD_CLOSE: self._close, Kind.AIO_POLL_SUBMIT: self._aio_submit,
            Kind.AIO_POLL_WAKE: self._aio_wake, Kind.AIO_COMPLETE: self._aio_complete,
            Kind.ANON_VMA_LOCK: self._anon_vma_lock, Kind.FAULT_STATE: self._unfold, Kind.LIFECYCLE: self._unfold,
        }

    # -- driving -------------------------------------------------------------
    def feed(self, events: list[Event]) -> None:
        """Events in delivery order (equal timestamps keep it)."""
        self._queue += events

    def note_lost(self, total: int) -> None:
        """The source's count of lost records so far (flags concluded from a
        missing event say when records were lost while the thread waited)."""
        self.lost = total

    def advance(self, horizon: int) -> None:
        """Handle every event up to ``horizon`` in time order, then check the
        rules as of ``horizon`` (the watchdog tick)."""
        self._queue.sort(key=_ts)
        due = bisect.bisect_right(self._queue, horizon, key=_ts)
        handlers = self._handlers
        for ev in self._queue[:due]:
            handler = handlers.get(ev.kind)
            if handler is not None:
                handler(ev)
        del self._queue[:due]
        self._tick(horizon)
        for lc in self.settling.due(horizon, self.th.wake_ns, self.th.stuck_ns):
            self._emit(lc)

    def _settle_ns(self, lc: Lifecycle) -> int:
        """How long a woken lifecycle stays open without a new round: one
        --wake-ms, or up to --stuck-ms while the ioctl record of its waker is due."""
        return self.th.stuck_ns if lc.pending_waker is not None else self.th.wake_ns

    def waiting(self) -> list[Lifecycle]:
        """The open lifecycles whose thread waits now (for live dashboards;
        in tracepoint mode a fault folded in the kernel joins once the
        watchdog takes it over)."""
        return [lc for lc in self.open.values() if lc.waiting]

    def finish(self, now: int) -> None:
        """End of the trace: everything is handled; lifecycles still open are
        reported as they stand (state ``blocked`` when the thread still waits)."""
        last = max([now, *(ev.ts_ns for ev in self._queue)])
        self.advance(last)
        for ev in self.folded(True) if self.folded is not None else ():
            self._unfold(ev)
        for lc in self.open.values():
            # Without --events tracepoint mode has no sleep records: ask the kernel.
            where = self._where(lc) if lc.waiting else None
            if where == "gone":
                self._close_lifecycle(lc, "exited", last)
            else:
                blocked = lc.waiting and (lc.asleep or where == "uffd")
                self._close_lifecycle(lc, "blocked" if blocked else self._finished_state(lc), last)
        self._age_orphan_reads(None)
        self._judge_rmap_walks(None)
        for lc in self.settling.due(None, 0, 0):
            self._emit(lc)

    def add_blocked(self, t: BlockedThread) -> None:
        """A thread already waiting when tracing began: its start is unknown."""
        lc = Lifecycle(ctx=0, tgid=t.tgid, tid=t.tid, comm=t.comm, page=None, wait_since=t.since_ns,
                       last_ts=t.since_ns, asleep=True)
        lc.note("found waiting in handle_userfault when tracing began (start unknown)", t.since_ns, t.tid)
        self._open(lc)

    # -- lifecycle table -------------------------------------------------------
    def _open(self, lc: Lifecycle) -> None:
        lc.lost_at_start = self.lost
        self.open.add(lc)
        if len(self.open) > self.max_open:
            self.open.remove(min(self.open.values(), key=lambda x: x.last_ts))
            self.counters.evicted += 1

    def _mine(self, tid: int, page: int | None, ctx: int | None = None) -> Lifecycle | None:
        """The open lifecycle of ``tid`` if it is about ``page`` (a lifecycle
        found in /proc learns its page and uffd from the first event)."""
        lc = self.open.get(tid)
        if lc is None:
            return None
        if lc.page is None and page is not None:
            self.open.set_page(lc, page, ctx)
        return lc if page is None or lc.page == page else None

    def _is_open(self, lc: Lifecycle) -> bool:
        return self.open.get(lc.tid) is lc

    def _emit(self, lc: Lifecycle) -> None:
        self.counters.lifecycles += 1
        self.sink.lifecycle(lc)

    def _never_waited(self, lc: Lifecycle) -> bool:
        """Tracepoint mode: a fault in a registered range that never slept in
        handle_userfault, whose message nobody read, that nothing woke or
        resolved: the kernel had the page without the handler. Kprobe mode
        (which sees handle_userfault) has no lifecycle for it, and the
        kernel drops such a folded fault: neither is one here."""
        return (not self.sees_returns and not lc.asleep and lc.reads == 0 and lc.t_woken is None
                and not lc.attempts and not lc.flags and lc.rounds == 1)

    def _finished_state(self, lc: Lifecycle) -> str:
        if lc.closer is not None:
            return "released"
        return "woken" if lc.t_woken is not None and not lc.returned else "returned"

    def _raise(self, lc: Lifecycle, name: str, now: int, conclusion: Evidence) -> None:
        if name in lc.flags:
            return
        evidence = lc.evidence(conclusion)
        if name in FROM_ABSENCE and self.lost > lc.lost_at_start:
            evidence.append(Evidence(f"{self.lost - lc.lost_at_start} records were lost while it waited: the "
                                     "missing event may be among them (the kernel confirms that it still waits)"))
        flag = Flag(name, now, lc.tgid, lc.tid, lc.comm, lc.ctx, lc.page,
                    now - lc.waiting_since if lc.waiting else None, "blocked" if lc.waiting else lc.state, evidence)
        lc.flags[name] = flag
        self._report(flag)

    def _report(self, flag: Flag) -> None:
        self.counters.flags[flag.name] += 1
        self.counters.failing += counts_as_failure(flag.name)
        self.sink.flag(flag)

    def _report_update(self, lc: Lifecycle, flag: Flag, now: int) -> None:
        """A while-blocked flag again, with how long the wait lasted in the end."""
        end = lc.t_woken or lc.t_returned or now
        self.sink.flag(Flag(flag.name, now, lc.tgid, lc.tid, lc.comm, lc.ctx, lc.page, end - lc.waiting_since,
                            lc.state, lc.evidence(), update=True))

    def _close_lifecycle(self, lc: Lifecycle, state: str, now: int) -> None:
        """The lifecycle is over: it leaves the table and settles before it is emitted."""
        self.open.remove(lc)
        lc.state = state
        lc.ended_at = now
        self.settling.add(lc)
        for flag in list(lc.flags.values()):
            if flag.name in WHILE_BLOCKED:
                self._report_update(lc, flag, now)

    def _new_round(self, lc: Lifecycle, ts: int, cause: str) -> None:
        lc.rounds += 1
        lc.round_reads = 0
        lc.waiting = True
        lc.asleep = self.sees_returns
        lc.returned = False
        lc.round_woken = False
        lc.wait_since = ts
        lc.round_causes[cause] = lc.round_causes.get(cause, 0) + 1
        lc.note(f"round {lc.rounds} ({cause.replace('_', ' ')})", ts)
        if (conclusion := retry_loop(lc, self.th)) is not None:
            self._raise(lc, "retry_loop", ts, conclusion)

    # -- events ------------------------------------------------------------------
    def _reason(self, ev: Event) -> str | None:
        """Why the fault went to the uffd: kprobe mode reads it from
        handle_userfault; tracepoint mode derives it from the x86 error code
        (present and written: write-protect; not present: missing, or minor
        on a uffd registered for minor faults only)."""
        if self.sees_returns:
            return REASONS.get(ev.mode, "minor")
        if ev.flags & X86_PF_PROT:
            return "wp" if ev.flags & X86_PF_WRITE else None
        modes = self.register_modes.get(ev.ctx, 0)
        if modes & REGISTER_MINOR:
            return None if modes & REGISTER_MISSING else "minor"
        return "missing"

    def _fault(self, ev: Event) -> None:
        page = ev.addr & PAGE_MASK
        reason = self._reason(ev)
        self._aio_readable(ev)
        lc = self.open.get(ev.tid)
        if lc is not None and lc.page is None:
            lc = self._mine(ev.tid, page, ev.ctx)
            if lc is not None and lc.reason is None:
                lc.reason = reason
        # The same page for another reason (write-protect after the copy) is another fault.
        if lc is not None and lc.page == page and lc.ctx == ev.ctx and lc.reason == reason:
            if not self.sees_returns and ev.len:  # the previous attempt slept (its BLOCK, folded in the kernel)
                self._slept(lc, ev.len)
            lc.last_ts = ev.ts_ns
            # Tracepoint mode: a round that a wake-up retry just opened is the
            # same one (this exception is the thread coming back after a signal).
            fresh = not self.sees_returns and lc.waiting and lc.round_reads == 0 and not lc.asleep
            if not fresh:
                self._new_round(lc, ev.ts_ns, "woken_unresolved" if lc.round_woken else "returned_unwoken")
            return
        if lc is not None and self._never_waited(lc):
            self.open.remove(lc)
        elif lc is not None:
            self._close_lifecycle(lc, self._finished_state(lc), ev.ts_ns)
        lc = Lifecycle(ctx=ev.ctx, tgid=ev.tgid, tid=ev.tid, comm=ev.comm, page=page, wait_since=ev.ts_ns,
                       last_ts=ev.ts_ns, t_raised=ev.ts_ns, asleep=self.sees_returns, reason=reason)
        lc.note(f"raised{' (' + reason + ')' if reason else ''} at {page:#x}", ev.ts_ns, ev.tid)
        self._open(lc)

    def _fault_ret(self, ev: Event) -> None:
        lc = self._mine(ev.tid, ev.addr & PAGE_MASK, ev.ctx)
        if lc is None:
            return
        lc.last_ts = ev.ts_ns
        lc.t_returned = ev.ts_ns
        lc.returned = True
        lc.waiting = False
        lc.round_end = ev.ts_ns
        lc.note(f"returned {ev.ret:#x}", ev.ts_ns, ev.tid)
        if (conclusion := sigbus(ev.ret)) is not None:
            self._raise(lc, "sigbus", ev.ts_ns, conclusion)
            self._close_lifecycle(lc, "sigbus", ev.ts_ns)
        elif lc.present or lc.closer is not None:
            self._close_lifecycle(lc, self._finished_state(lc), ev.ts_ns)

    def _block(self, ev: Event) -> None:
        page = ev.addr & PAGE_MASK
        lc = self._mine(ev.tid, page, ev.ctx)
        ended = None if self.sees_returns or lc is not None else self.settling.of_thread(ev.tid, page)
        if ended is not None and ev.mode and self.open.get(ev.tid) is None:
            # Asleep in handle_userfault again after its lifecycle ended, and
            # it ran in between (mode): the kernel's retry of the same page
            # fault (no fault record in tracepoint mode) found the page gone.
            # A fault of its own, as the kernel folds it.
            self._fault(Event(ev.ts_ns, Kind.FAULT, ev.cpu, ev.tgid, ev.tid, ev.comm, ev.ctx, page, 0, 0, 0, 0, 0,
                              0, page))
            lc = self.open.get(ev.tid)
            if lc is not None:
                lc.reason = ended.reason
                lc.note(REFAULT_NOTE, ev.ts_ns, ev.tid)
        if lc is not None:
            self._slept(lc, ev.ts_ns)

    @staticmethod
    def _slept(lc: Lifecycle, ts: int) -> None:
        if lc.waiting and not lc.asleep:
            lc.asleep = True
            lc.last_ts = max(lc.last_ts, ts)
            lc.note("slept in handle_userfault", ts, lc.tid)

    def _read(self, ev: Event) -> None:
        if ev.mode != UFFD_EVENT_PAGEFAULT:
            return
        self.counters.messages_read += 1
        page = ev.addr & PAGE_MASK
        lc = self._reader_target(ev, page)
        if lc is None:
            # Its fault may be folded in the kernel still, the record that
            # ends the fold due (the read raced its wake-up): it waits one
            # --wake-ms for that record before it counts as unmatched.
            self._orphan_reads.setdefault((ev.ctx, page), []).append(ev)
            return
        self._attach_read(lc, ev)

    def _attach_read(self, lc: Lifecycle, ev: Event) -> None:
        lc.reads += 1
        lc.round_reads += 1
        if lc.t_read is None:
            lc.t_read = ev.ts_ns
        lc.reader_tid = ev.tid
        if ev.len:  # time spent inside read() (records from before it was recorded say 0)
            lc.read_call = (ev.tid, ev.ts_ns - ev.len, ev.ts_ns)
        if lc.waiting:
            lc.asleep = True  # its message was queued: it is waiting in handle_userfault
        lc.note("message read", ev.ts_ns, ev.tid)

    def _reader_target(self, ev: Event, page: int) -> Lifecycle | None:
        if ev.peer_tid:
            lc = self._mine(ev.peer_tid, page, ev.ctx)
            if lc is not None:
                return lc
            return self.settling.of_thread(ev.peer_tid, page)
        # No UFFD_FEATURE_THREAD_ID: the least-read waiter on this page of this uffd.
        candidates = self.open.on_page(ev.ctx, page)
        if not candidates:
            return self.settling.of_page(ev.ctx, page)
        return min(candidates, key=lambda x: (x.reads - x.rounds, x.wait_since))

    @staticmethod
    def _covers(ev: Event, lc: Lifecycle) -> bool:
        """Whether ioctl ``ev``'s range holds the lifecycle's page (len 0: all)."""
        return in_range(lc, ev.ctx, ev.addr & PAGE_MASK, ev.len)

    def _covering(self, ev: Event) -> list[Lifecycle]:
        """Open lifecycles in the ioctl's range, and ended ones whose waker's
        ioctl record is due from it (the woken thread can move on before that
        ioctl returns)."""
        return [*self.open.in_range(ev.ctx, ev.addr & PAGE_MASK, ev.len),
                *(lc for lc in self.settling.woken_by(ev.tid) if self._covers(ev, lc))]

    def _resolve(self, ev: Event) -> None:
        if ev.op == Op.MOVE:
            self.recent_moves.append((ev.ts_ns, ev.tid))
        if ev.op in RESOLVES:  # UFFDIO_WAKE and the like only settle wake-ups
            for lc in self._covering(ev):
                if resolves(ev.op, ev.mode, lc.reason):
                    self._attempt(lc, ev)
        self._settle_wakes(ev)

    def _attempt(self, lc: Lifecycle, ev: Event) -> None:
        done = ev.len if ev.ret == 0 else ev.aux if 0 < ev.aux < (1 << 63) else 0
        if done and lc.page is not None and lc.page < (ev.addr & PAGE_MASK) + done:
            outcome = "ok"
        elif ev.ret == -EEXIST and lc.page == ev.addr & PAGE_MASK:
            outcome = "eexist"
        else:
            outcome = "failed"
        attempt = Attempt(ev.ts_ns, ev.tid, op_name(ev.op), ev.ret, ev.dontwake, outcome)
        if len(lc.attempts) < MAX_ATTEMPTS:
            lc.attempts.append(attempt)
        lc.last_ts = ev.ts_ns
        label = {"ok": "resolved", "eexist": "failed with EEXIST", "failed": f"failed ({ev.ret})"}[outcome]
        lc.note(f"{attempt.op}{' DONTWAKE' if ev.dontwake else ''} {label}", ev.ts_ns, ev.tid)
        if outcome == "failed":
            return
        lc.present = True
        if lc.resolve is None or (lc.resolve.outcome != "ok" and outcome == "ok"):
            lc.resolve = attempt
            lc.resolver_tid = ev.tid
            lc.t_resolved = ev.ts_ns
        if self._is_open(lc) and not lc.waiting and lc.pending_waker is None \
                and (lc.returned or not self.sees_returns):
            self._close_lifecycle(lc, self._finished_state(lc), ev.ts_ns)

    def _settle_wakes(self, ev: Event) -> None:
        """The waker's next ioctl record arrived. If its range holds the page
        (every ioctl wakes only the waiters of its range), it is the one that
        did the wake-up, which came with the page (done) or without it (a
        retry). If not, the waking ioctl's record was lost: whether the page
        came is unknown, and no retry is inferred from that absence."""
        for lc in self.settling.woken_by(ev.tid):
            lc.pending_waker = None
            self.settling.waker_reported(lc, waker=ev.tid)
        for lc in self.open.woken_by(ev.tid):
            self._waker_reported(lc, ev)

    def _waker_reported(self, lc: Lifecycle, ev: Event) -> None:
        self.open.set_pending(lc, None)
        if not self._covers(ev, lc):
            lc.note("the record of the ioctl that woke it is missing", ev.ts_ns)
            return
        if lc.present or lc.closer is not None:
            if lc.returned or not self.sees_returns:
                self._close_lifecycle(lc, self._finished_state(lc), ev.ts_ns)
        elif not self.sees_returns and not lc.waiting:
            # Woken, page still missing: the thread retries and waits again.
            self._new_round(lc, lc.t_woken or ev.ts_ns, "woken_unresolved")

    def _register(self, ev: Event) -> None:
        """UFFDIO_REGISTER: which faults the uffd takes. UFFDIO_UNREGISTER
        wakes the waiters of the range: they fault again without the uffd."""
        if ev.ret != 0:
            return
        if ev.op == Op.REGISTER:
            self.register_modes[ev.ctx] |= ev.mode
            return
        for lc in self.open.woken_by(ev.tid):
            lc.note("range unregistered", ev.ts_ns, ev.tid)
            self._close_lifecycle(lc, "unregistered", ev.ts_ns)

    def _wake(self, ev: Event) -> None:
        if ev.ret != 1:
            return  # the wake function ran but did not wake this waiter
        lc = self._mine(ev.peer_tid, ev.addr & PAGE_MASK, ev.ctx)
        if lc is None or not lc.waiting:
            return
        lc.last_ts = ev.ts_ns
        lc.t_woken = ev.ts_ns
        lc.waker_tid = ev.tid
        lc.waiting = False
        lc.round_woken = True
        lc.round_end = ev.ts_ns
        lc.note("woken", ev.ts_ns, ev.tid)
        if (conclusion := released_with_waiters(lc, waker=ev.tid)) is not None:
            self._raise(lc, "released_with_waiters", ev.ts_ns, conclusion)
        # Woken by the thread that closed the uffd: the close was its record.
        settled = lc.present or lc.closer == ev.tid
        if settled and not self.sees_returns:
            self._close_lifecycle(lc, self._finished_state(lc), ev.ts_ns)
        elif not settled:
            self.open.set_pending(lc, ev.tid)

    def _close(self, ev: Event) -> None:
        for lc in self.open.values():
            if lc.ctx != ev.ctx or not lc.waiting:
                continue
            lc.closer = ev.tid
            lc.note("uffd closed", ev.ts_ns, ev.tid)
            # Flagged when the closer's release wakes the thread (_wake): a
            # lifecycle that only looks open (its return record was lost)
            # is not accused. In tracepoint mode close(2) releases only the
            # last reference, and only then are waiters woken.

    # -- faults folded in the kernel (tracepoint mode without --events) ----------
    def _unfold(self, ev: Event) -> None:
        """A fault whose steps the kernel folded (bpf/tracepoint.c): a
        LIFECYCLE record (read once, resolved and woken by one ioctl) becomes
        a finished lifecycle at once; a FAULT_STATE (the fault went its own
        way), or the kernel's entry for a fault folded longer than --wake-ms
        (the watchdog's), replays its steps through the handlers, each once.
        FAULT_STATE/LIFECYCLE fields: len raised, mode slept, aux read (by
        peer_tid, count messages), ret woken (by peer2_tid), op the resolving
        ioctl and FOLD_* bits."""
        lc = self.open.get(ev.tid)
        if lc is not None and lc.unfolded != ev.len and (lc.t_raised or 0) > ev.len:
            self._settle(self._from_folded(ev))  # the thread is on a newer fault: this one is over
        elif lc is None and ev.kind == Kind.LIFECYCLE:
            self._settle(self._from_folded(ev))
        else:
            self._replay(ev, lc)

    def _from_folded(self, ev: Event) -> Lifecycle:
        """A finished lifecycle, straight from a folded fault's record."""
        self.counters.messages_read += ev.count
        lc = Lifecycle(ctx=ev.ctx, tgid=ev.tgid, tid=ev.tid, comm=ev.comm, page=ev.addr, wait_since=ev.len,
                       last_ts=ev.ts_ns, reason=self._reason(ev), lost_at_start=self.lost, t_raised=ev.len,
                       reads=ev.count, round_reads=ev.count, t_read=ev.aux or None,
                       reader_tid=ev.peer_tid or None, t_woken=ev.ret or None, waker_tid=ev.peer2_tid or None,
                       waiting=False, asleep=True, round_woken=bool(ev.ret), round_end=ev.ret or None,
                       unfolded=ev.len)
        if ev.kind == Kind.LIFECYCLE:
            attempt = Attempt(ev.ts_ns, ev.peer2_tid, op_name(ev.op & FOLD_OP_MASK), 0, False, "ok")
            lc.attempts.append(attempt)
            lc.resolve = attempt
            lc.resolver_tid = ev.peer2_tid
            lc.t_resolved = ev.ts_ns
            lc.present = True
        elif ev.ret:
            lc.pending_waker = ev.peer2_tid  # its waker's ioctl record is due
        self._claim_orphan_reads(lc)
        return lc

    def _claim_orphan_reads(self, lc: Lifecycle) -> None:
        """Reads of this fault's page that came before its folded record."""
        if not self._orphan_reads or lc.page is None:
            return
        key = (lc.ctx, lc.page)
        waiting = self._orphan_reads.pop(key, [])
        for ev in waiting:
            if ev.peer_tid in (0, lc.tid):
                self._attach_read(lc, ev)
            else:
                self._orphan_reads.setdefault(key, []).append(ev)

    def _age_orphan_reads(self, now: int | None) -> None:
        """Reads still unmatched one --wake-ms later (all, at the end) count as unmatched."""
        for key, evs in list(self._orphan_reads.items()):
            keep = [ev for ev in evs if now is not None and now - ev.ts_ns <= self.th.wake_ns]
            self.counters.unmatched_reads += len(evs) - len(keep)
            if keep:
                self._orphan_reads[key] = keep
            else:
                del self._orphan_reads[key]

    def _settle(self, lc: Lifecycle) -> None:
        lc.state = self._finished_state(lc)
        lc.ended_at = lc.last_ts
        self.settling.add(lc)

    def _replay(self, ev: Event, lc: Lifecycle | None) -> None:
        page = ev.addr
        if lc is None or lc.unfolded != ev.len:
            self._fault(Event(ev.len, Kind.FAULT, ev.cpu, ev.tgid, ev.tid, ev.comm, ev.ctx, page, 0, ev.flags, 0, 0,
                              0, 0, page))
            lc = self.open.get(ev.tid)
            if lc is None:
                return
            lc.unfolded = ev.len
            if ev.op & FOLD_REFAULT:
                lc.note(REFAULT_NOTE, ev.len, ev.tid)
            self._claim_orphan_reads(lc)
        if ev.mode:
            self._slept(lc, ev.mode)
        for _ in range(ev.count - lc.round_reads):
            self._read(Event(ev.aux, Kind.READ_MSG, ev.cpu, ev.tgid, ev.peer_tid, ev.comm, ev.ctx, page, 0, 0,
                             UFFD_EVENT_PAGEFAULT, 0, ev.tid, 0, 0))
        if ev.ret and lc.t_woken != ev.ret:
            if ev.op & FOLD_CLOSER and lc.waiting and lc.closer is None:
                lc.closer = ev.peer2_tid
                lc.note("uffd closed", ev.ret, ev.peer2_tid)
            self._wake(Event(ev.ret, Kind.WAKE_TASK, ev.cpu, ev.tgid, ev.peer2_tid, ev.comm, ev.ctx, page, 0, 0,
                             int(bool(ev.op & FOLD_VIA_READ)), 1, ev.tid, 0, 0))
        if ev.kind == Kind.LIFECYCLE and self._is_open(lc):
            resolve = Event(ev.ts_ns, Kind.RESOLVE, ev.cpu, ev.tgid, ev.peer2_tid, ev.comm, ev.ctx, page, PAGE_SIZE,
                            0, 0, 0, 0, ev.op & FOLD_OP_MASK, 0)
            self._attempt(lc, resolve)
            if lc.pending_waker == resolve.tid:
                self._waker_reported(lc, resolve)

    def _adopt_folded(self, now: int) -> None:
        """Faults the kernel has folded for longer than --wake-ms become open
        lifecycles, so that the rules see a fault nobody reads or wakes."""
        for ev in self.folded(False) if self.folded is not None else ():
            if now - ev.len <= self.th.wake_ns:
                continue
            lc = self.open.get(ev.tid)
            first = self._adopted.get(ev.tid) != ev.len
            if not first and (lc is None or lc.unfolded != ev.len):
                continue  # taken over before, and closed since
            if first:
                if len(self._adopted) >= self.max_open:
                    self._adopted.clear()
                self._adopted[ev.tid] = ev.len
                if self.adopted is not None:
                    self.adopted(ev.tid, ev.len)
            self._unfold(ev)

    # -- aio poll and rmap ---------------------------------------------------------
    def _aio_submit(self, ev: Event) -> None:
        if len(self.aio) >= MAX_AIO:
            self.aio.pop(next(iter(self.aio)))
        self.aio[ev.addr] = AioPoll(ev.addr, ev.tgid, ev.tid, ev.comm, ev.ctx, ev.aux,
                                    history=[Evidence("IOCB_CMD_POLL submitted", ev.ts_ns, ev.tid)])

    def _aio_readable(self, ev: Event) -> None:
        """Tracepoint mode: a fault on a polled uffd makes it readable."""
        if not self.aio:
            return
        for req in self.aio.values():
            if req.uffd == ev.ctx and req.t_ready is None:
                req.t_ready = ev.ts_ns
                req.history.append(Evidence("uffd became readable (a fault was queued)", ev.ts_ns, ev.tid))

    def _aio_wake(self, ev: Event) -> None:
        if ev.ret != 1:
            return
        req = self.aio.get(ev.addr)
        if req is None:
            if len(self.aio) >= MAX_AIO:
                self.aio.pop(next(iter(self.aio)))
            req = self.aio[ev.addr] = AioPoll(ev.addr, ev.tgid, ev.tid, ev.comm, ev.ctx, ev.aux)
        if req.t_ready is None:
            req.t_ready = ev.ts_ns
            req.history.append(Evidence(f"aio_poll_wake mask {ev.mode:#x}", ev.ts_ns, ev.tid))

    def _aio_complete(self, ev: Event) -> None:
        self.aio.pop(ev.addr, None)

    def _anon_vma_lock(self, ev: Event) -> None:
        # Judged once MOVE_WINDOW_NS has passed: the UFFDIO_MOVE that changed
        # the anon_vma under the walk often returns after it.
        self._rmap_walks.append(ev)

    def _judge_rmap_walks(self, now: int | None) -> None:
        """The walks whose window has passed (all of them when ``now`` is None)."""
        while self._rmap_walks and (now is None or self._rmap_walks[0].ts_ns + MOVE_WINDOW_NS <= now):
            ev = self._rmap_walks.popleft()
            evidence = anon_vma_retry(ev, self.recent_moves)
            if evidence:
                self._report(Flag("anon_vma_retry", ev.ts_ns, ev.tgid, ev.tid, ev.comm, 0, None, None, "returned",
                                  evidence))

    # -- watchdog ------------------------------------------------------------------
    def _where(self, lc: Lifecycle) -> TaskState | None:
        return self.tasks(lc.tgid, lc.tid) if self.tasks is not None else None

    def _tick(self, now: int) -> None:
        self._adopt_folded(now)
        self._judge_rmap_walks(now)
        if self._orphan_reads:
            self._age_orphan_reads(now)
        for lc in self.open.values():
            if lc.waiting:
                self._check_waiting(lc, now)
            elif lc.round_end is not None and now - lc.round_end > self._settle_ns(lc):
                # Woken or returned and no new round since: it is over. (While
                # its waker's ioctl record is due, that record may still open a
                # new round in tracepoint mode.)
                self._close_lifecycle(lc, self._finished_state(lc), now)
        for req in self.aio.values():
            if not req.flagged and (conclusion := aio_poll_stuck(req, now, self.th)) is not None:
                req.flagged = True
                self._report(Flag("aio_poll_stuck", now, req.tgid, req.tid, req.comm, req.uffd, req.iocb, None,
                                  "pending", [*req.history, conclusion]))

    def _shows_waiting(self, lc: Lifecycle, now: int) -> bool:
        """Tracepoint mode: a fault in a registered range that shows no sign
        of waiting (no sleep, no message read, no wake-up) waits only if the
        kernel says so, once --wake-ms has passed; otherwise it is over."""
        if now - lc.wait_since <= self.th.wake_ns:
            return False
        where = self._where(lc)
        if where == "uffd":
            lc.asleep = True
            return True
        if where != "gone" and self._never_waited(lc):
            self.open.remove(lc)
        else:
            self._close_lifecycle(lc, "exited" if where == "gone" else "returned", now)
        return False

    def _check_waiting(self, lc: Lifecycle, now: int) -> None:
        if not lc.asleep and not self._shows_waiting(lc, now):
            return
        earned = [(n, e) for n, e in timed_flags(lc, now, self.th) if n not in lc.flags]
        if not earned:
            return
        # Every timed flag concludes from a missing event: confirm that the
        # thread still waits, for this page, before accusing anyone.
        where = self._where(lc)
        if where == "gone":
            self._close_lifecycle(lc, "exited", now)
            return
        if where == "other":
            # The kernel says it no longer waits, though no event said so
            # (a signal, a lost record, or its wake-up is still in flight).
            lc.other_since = lc.other_since or now
            if now - lc.other_since > self.th.wake_ns:
                lc.note("left handle_userfault unseen (signal, or a lost record)", now)
                self._close_lifecycle(lc, "returned", now)
            return
        lc.other_since = None
        page = self.faults(lc.tid) if self.faults is not None and lc.page is not None else None
        if page is not None and page & PAGE_MASK != lc.page:
            lc.note(f"the kernel shows it faulting at {page & PAGE_MASK:#x} now: woken unseen", now)
            self._close_lifecycle(lc, "returned", now)
            return
        for name, conclusion in earned:
            self._raise(lc, name, now, conclusion)
