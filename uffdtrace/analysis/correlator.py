"""Per-fault lifecycles: the correlator's state machine, pure Python.

Events from any Source go in (``feed``); time moves forward with
``advance(horizon)``; finished lifecycles and flags come out through a Sink.
A lifecycle is one thread's wait for one page of one uffd: raised -> read ->
resolved -> woken -> returned. The facts it keeps are ``model.py``'s; which
flags they earn, ``rules.py``'s; every flag leaves through ``flags.py``.
Beside it: the tables (``tables.py``), faults folded in the kernel
(``folded.py``), and the trackers that touch no lifecycle (``aio.py``,
``rmap.py``). Why records are re-ordered, why a wake-up waits for its
waker's ioctl record, and what each mode sees: docs/architecture.md,
"The correlator".
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable
from typing import Protocol

from ..events import CLOSE_KEPT, UFFD_EVENT_PAGEFAULT, Event, Kind, Op, op_name
from ..source import BlockedThread, Holder, HolderProbe, TaskProbe, TaskState
from .aio import AioPolls
from .flags import Flags
from .folded import REFAULT_NOTE, FoldedFaults, FoldedProbe, TakeOverHook
from .handlers import Handlers
from .locks import FaultLocks
from .model import MS, Attempt, Counters, EventLifecycle, Evidence, Flag, Lifecycle
from .rmap import RmapWalks
from .rules import (
    EAGAIN,
    EEXIST,
    EXPLAINS_THE_WAIT,
    ONLY_SAY_IT_WAITS,
    RESOLVES,
    Thresholds,
    fault_reason,
    held_by_evidence,
    message_fits,
    no_reader_evidence,
    released_with_waiters,
    resolves,
    retry_loop,
    sigbus,
    timed_flags,
)
from .tables import PAGE_MASK, EndedTable, OpenTable, in_range
from .uffd_events import EventWaits
from .unregisters import Unregisters

MAX_ATTEMPTS = 16

# Asks the kernel's per-thread fault state (a BPF map) which page thread tid
# is faulting on: in kprobe mode while it is inside handle_userfault, in
# tracepoint mode its last fault in a registered range. None when unknown.
FaultProbe = Callable[[int], int | None]


def _ts(ev: Event) -> int:
    return ev.ts_ns


class Sink(Protocol):
    def lifecycle(self, lc: Lifecycle) -> None: ...

    def uffd_event(self, ev: EventLifecycle) -> None: ...

    def flag(self, flag: Flag) -> None: ...

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None: ...


class Correlator:
    def __init__(self, sink: Sink, thresholds: Thresholds | None = None, *, sees_returns: bool,
                 tasks: TaskProbe | None = None, faults: FaultProbe | None = None,
                 folded: FoldedProbe | None = None, on_take_over: TakeOverHook | None = None,
                 holders: HolderProbe | None = None, max_open: int = 65536,
                 vma_lock_flag: int | None = None) -> None:
        self.sink = sink
        self.th = thresholds or Thresholds()
        self.sees_returns = sees_returns
        self.tasks = tasks
        self.faults = faults
        self.lost = 0  # records the source lost so far
        self.register_modes: collections.defaultdict[int, int] = collections.defaultdict(int)  # per uffd
        self.unregisters = Unregisters()
        self.max_open = max_open
        self.open = OpenTable()
        self.ended = EndedTable()
        self.counters = Counters()
        self.flags = Flags(sink)
        self.folded = FoldedFaults(self, folded, on_take_over)
        self.aio = AioPolls(self._unread, self._raise, tasks, sees_returns=sees_returns)
        self.rmap = RmapWalks(self.flags.report, self.th)
        self.locks = FaultLocks(vma_lock_flag)
        self.handlers = Handlers(tasks, holders, on_holders=sink.holders)
        self.events = EventWaits(sink, self.flags, tasks, on_read=self._event_read, handlers=self.handlers)
        # Fed, not yet handled: sorted by time in advance() (a stable sort of
        # nearly sorted data, cheaper than a heap operation per event).
        self._queue: list[Event] = []
        self._handlers: dict[Kind, Callable[[Event], None]] = {
            Kind.FAULT: self.on_fault, Kind.FAULT_RET: self._on_fault_ret, Kind.BLOCK: self._on_block,
            Kind.READ_MSG: self.on_read, Kind.RESOLVE: self._on_resolve, Kind.UFFD_REGISTER: self._on_register,
            Kind.WAKE_TASK: self.on_wake, Kind.UFFD_CLOSE: self._on_close,
            Kind.AIO_POLL_SUBMIT: self.aio.submitted, Kind.AIO_POLL_WAKE: self.aio.woken,
            Kind.AIO_POLL_WORK: self.aio.worked, Kind.AIO_COMPLETE: self.aio.completed,
            Kind.ANON_VMA_LOCK: self.rmap.locked,
            Kind.FAULT_STATE: self.folded.unfold, Kind.LIFECYCLE: self.folded.unfold,
            Kind.EVENT_WAIT: self.events.raised, Kind.EVENT_DONE: self.events.done,
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
        for lc in self.ended.due(horizon, self.th.wake_ns, self.th.stuck_ns):
            self._emit(lc)

    def waiting(self) -> list[Lifecycle]:
        """The open lifecycles whose thread waits now (for live dashboards;
        in tracepoint mode a fault folded in the kernel joins once the
        watchdog takes it over)."""
        return [lc for lc in self.open.values() if lc.waiting]

    def waiting_events(self) -> list[EventLifecycle]:
        """The non-cooperative events whose callers wait for their read or return."""
        return self.events.waiting_now()

    def finish(self, now: int) -> None:
        """End of the trace: everything is handled; lifecycles still open are
        reported as they stand (state ``blocked`` when the thread still waits)."""
        last = max([now, *(ev.ts_ns for ev in self._queue)])
        self.advance(last)
        self.folded.unfold_remaining()
        for lc in self.open.values():
            # Without --events tracepoint mode has no sleep records: ask the kernel.
            where = self._where(lc) if lc.waiting else None
            if where == "gone":
                self._close(lc, "exited", last)
            else:
                blocked = lc.waiting and (lc.asleep or where == "uffd")
                self._close(lc, "blocked" if blocked else lc.finished_state(), last)
        self.folded.age_orphan_reads(None)
        self.rmap.judge(None)
        self.events.finish()
        for lc in self.ended.due(None, 0, 0):
            self._emit(lc)

    def add_blocked(self, t: BlockedThread) -> None:
        """A thread already waiting when tracing began: its start is unknown."""
        lc = Lifecycle(uffd=0, tgid=t.tgid, tid=t.tid, comm=t.comm, page=None, wait_since=t.since_ns,
                       last_ts=t.since_ns, asleep=True)
        lc.note("found waiting in handle_userfault when tracing began (start unknown)", t.since_ns, t.tid)
        self._open(lc)

    # -- the lifecycle table -----------------------------------------------------
    def _open(self, lc: Lifecycle) -> None:
        lc.lost_at_start = self.lost
        self.open.add(lc)
        if len(self.open) > self.max_open:
            self.open.remove(min(self.open.values(), key=lambda x: x.last_ts))
            self.counters.evicted += 1

    def _lifecycle_of(self, tid: int, page: int | None, uffd: int | None = None) -> Lifecycle | None:
        """The open lifecycle of ``tid`` if it is about ``page``. A lifecycle
        found in /proc (page unknown) learns its page and uffd here."""
        lc = self.open.get(tid)
        if lc is None:
            return None
        if lc.page is None and page is not None:
            self.open.set_page(lc, page, uffd)
        return lc if page is None or lc.page == page else None

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

    def _raise(self, lc: Lifecycle, name: str, now: int, conclusion: Evidence) -> None:
        self.flags.on_lifecycle(lc, name, now, conclusion, self.lost)

    def _close(self, lc: Lifecycle, state: str, now: int) -> None:
        """The lifecycle is over: it leaves the open table and waits in the
        ended one before it is emitted."""
        self.open.remove(lc)
        lc.state = state
        lc.ended_at = now
        self.ended.add(lc)
        self.flags.lifecycle_ended(lc, now)

    def _close_if_done(self, lc: Lifecycle, now: int) -> None:
        """Close once its page is there (or its uffd closed) and, where the
        mode sees returns, the thread returned."""
        if lc.returned or not self.sees_returns:
            self._close(lc, lc.finished_state(), now)

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
    def reason(self, ev: Event) -> str | None:
        return fault_reason(ev, self.sees_returns, self.register_modes.get(ev.ctx, 0))

    def on_fault(self, ev: Event) -> None:
        page = ev.addr & PAGE_MASK
        reason = self.reason(ev)
        lc = self.open.get(ev.tid)
        if lc is not None and lc.page is None:
            lc = self._lifecycle_of(ev.tid, page, ev.ctx)
            if lc is not None and lc.reason is None:
                lc.reason = reason
        # The same page for another reason (write-protect after the copy) is another fault.
        if lc is not None and lc.page == page and lc.uffd == ev.ctx and lc.reason == reason:
            if not self.sees_returns and ev.len:  # the previous attempt slept (its BLOCK, folded in the kernel)
                lc.note_slept(ev.len)
            lc.last_ts = ev.ts_ns
            # Tracepoint mode: a round that a wake-up retry just opened is the
            # same one (this exception is the thread coming back after a signal).
            fresh = not self.sees_returns and lc.waiting and lc.round_reads == 0 and not lc.asleep
            self.locks.entered(lc, ev)
            if not fresh:
                self._new_round(lc, ev.ts_ns, "woken_unresolved" if lc.round_woken else "returned_unwoken")
            return
        if lc is not None and self._never_waited(lc):
            self.open.remove(lc)
        elif lc is not None:
            self._close(lc, lc.finished_state(), ev.ts_ns)
        lc = Lifecycle(uffd=ev.ctx, tgid=ev.tgid, tid=ev.tid, comm=ev.comm, page=page, wait_since=ev.ts_ns,
                       last_ts=ev.ts_ns, t_raised=ev.ts_ns, asleep=self.sees_returns, reason=reason)
        lc.note(f"raised{' (' + reason + ')' if reason else ''} at {page:#x}", ev.ts_ns, ev.tid)
        self.locks.entered(lc, ev)
        self._open(lc)

    def _on_fault_ret(self, ev: Event) -> None:
        lc = self._lifecycle_of(ev.tid, ev.addr & PAGE_MASK, ev.ctx)
        if lc is None:
            return
        lc.last_ts = ev.ts_ns
        lc.t_returned = ev.ts_ns
        lc.returned = True
        lc.waiting = False
        lc.round_end = ev.ts_ns
        lc.note(f"returned {ev.ret:#x}", ev.ts_ns, ev.tid)
        self.locks.returned(lc, ev)
        if (conclusion := sigbus(ev.ret)) is not None:
            self._raise(lc, "sigbus", ev.ts_ns, conclusion)
            self._close(lc, "sigbus", ev.ts_ns)
        elif lc.present or lc.closer is not None:
            self._close(lc, lc.finished_state(), ev.ts_ns)

    def _on_block(self, ev: Event) -> None:
        page = ev.addr & PAGE_MASK
        lc = self._lifecycle_of(ev.tid, page, ev.ctx)
        ended = None if self.sees_returns or lc is not None else self.ended.of_thread(ev.tid, page)
        if ended is not None and ev.mode and self.open.get(ev.tid) is None:
            # Asleep in handle_userfault again after its lifecycle ended, and
            # it ran in between (mode): the kernel's retry of the same page
            # fault (no fault record in tracepoint mode) found the page gone.
            # A fault of its own, as the kernel folds it.
            self.on_fault(Event(ts_ns=ev.ts_ns, kind=Kind.FAULT, cpu=ev.cpu, tgid=ev.tgid, tid=ev.tid, comm=ev.comm,
                                ctx=ev.ctx, addr=page, aux=page))
            lc = self.open.get(ev.tid)
            if lc is not None:
                lc.reason = ended.reason
                lc.note(REFAULT_NOTE, ev.ts_ns, ev.tid)
        if lc is not None:
            lc.note_slept(ev.ts_ns)

    def on_read(self, ev: Event) -> None:
        if ev.mode != UFFD_EVENT_PAGEFAULT:
            self.events.read(ev)
            return
        self.counters.messages_read += 1
        page = ev.addr & PAGE_MASK
        lc = self._reader_target(ev, page)
        if lc is None:
            self.folded.park_read(ev, page)
            return
        self.attach_read(lc, ev)

    def attach_read(self, lc: Lifecycle, ev: Event) -> None:
        lc.reads += 1
        lc.round_reads += 1
        if lc.t_read is None:
            lc.t_read = ev.ts_ns
        lc.reader_tid = ev.tid
        self.handlers.read_by(lc.uffd, ev.tid)
        if ev.len:  # time spent inside read() (records from before it was recorded say 0)
            lc.read_call = (ev.tid, ev.ts_ns - ev.len, ev.ts_ns)
        if lc.waiting:
            lc.asleep = True  # its message was queued: it is waiting in handle_userfault
        lc.note("message read", ev.ts_ns, ev.tid)

    def _reader_target(self, ev: Event, page: int) -> Lifecycle | None:
        """The fault the message is of: its thread's (UFFD_FEATURE_THREAD_ID),
        else the least-read waiter on this page of this uffd; open first, then
        ended. None when none of them can have queued it (message_fits)."""
        if ev.peer_tid:
            lc = self._lifecycle_of(ev.peer_tid, page, ev.ctx)
            if lc is not None and message_fits(lc, ev):
                return lc
            ended = self.ended.of_thread(ev.peer_tid, page)
        else:
            candidates = [lc for lc in self.open.on_page(ev.ctx, page) if message_fits(lc, ev)]
            if candidates:
                return min(candidates, key=lambda x: (x.reads - x.rounds, x.wait_since))
            ended = self.ended.of_page(ev.ctx, page)
        return ended if ended is not None and message_fits(ended, ev) else None

    @staticmethod
    def _covers(ev: Event, lc: Lifecycle) -> bool:
        """Whether ioctl ``ev``'s range holds the lifecycle's page (len 0: all)."""
        return in_range(lc, ev.ctx, ev.addr & PAGE_MASK, ev.len)

    def _covering(self, ev: Event) -> list[Lifecycle]:
        """Open lifecycles in the ioctl's range, and ended ones whose waker's
        ioctl record is due from it (the woken thread can move on before that
        ioctl returns)."""
        return [*self.open.in_range(ev.ctx, ev.addr & PAGE_MASK, ev.len),
                *(lc for lc in self.ended.woken_by(ev.tid) if self._covers(ev, lc))]

    def _on_resolve(self, ev: Event) -> None:
        if ev.op == Op.MOVE:
            self.rmap.moved(ev)
        if ev.op in RESOLVES:  # UFFDIO_WAKE and the like only answer for wake-ups
            for lc in self._covering(ev):
                if resolves(ev.op, ev.mode, lc.reason):
                    self.attempt(lc, ev)
        self._waker_ioctl_arrived(ev)

    def attempt(self, lc: Lifecycle, ev: Event) -> None:
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
        lc.eagain_since = lc.eagain_cause = None
        if ev.ret == -EAGAIN:
            label = self._eagain(lc, ev)
        lc.note(f"{attempt.op}{' DONTWAKE' if ev.dontwake else ''} {label}", ev.ts_ns, ev.tid)
        if outcome == "failed":
            return
        lc.present = True
        if lc.resolve is None or (lc.resolve.outcome != "ok" and outcome == "ok"):
            lc.resolve = attempt
            lc.resolver_tid = ev.tid
            lc.t_resolved = ev.ts_ns
        if self.open.holds(lc) and not lc.waiting and lc.pending_waker is None:
            self._close_if_done(lc, ev.ts_ns)

    def _eagain(self, lc: Lifecycle, ev: Event) -> str:
        """A resolution refused while the process's memory changes: name the
        events queued and unread then (its cause), and start the clock of
        eagain_unretried."""
        lc.eagain_since = ev.ts_ns
        unread = self.events.unread(lc.tgid)
        if not unread:
            return "failed with EAGAIN (no unread event seen: read already, or raised before tracing)"
        lc.eagain_cause = ", ".join(f"{w.name} of {w.start:#x}+{w.length:#x} by tid {w.tid}" for w in unread)
        ages = ", ".join(f"{(ev.ts_ns - w.t_raised) / MS:.0f} ms" for w in unread)
        return f"failed with EAGAIN: unread event(s) on its process's memory: {lc.eagain_cause} (queued {ages} ago)"

    def _event_read(self, ew: EventLifecycle) -> None:
        """An event read: faults refused with EAGAIN behind it may be retried now."""
        for lc in self.open.values():
            if lc.tgid == ew.tgid and lc.eagain_since is not None and ew.t_read is not None:
                lc.eagain_since = max(lc.eagain_since, ew.t_read)
                lc.note(f"the {ew.name} event behind the EAGAIN was read", ew.t_read, ew.reader_tid)

    def _waker_ioctl_arrived(self, ev: Event) -> None:
        """The waker's next ioctl record arrived. If its range holds the page
        (every ioctl wakes only the waiters of its range), it is the one that
        did the wake-up, which came with the page (done) or without it (a
        retry). If not, the waking ioctl's record was lost: whether the page
        came is unknown, and no retry is inferred from that absence."""
        for lc in self.ended.woken_by(ev.tid):
            lc.pending_waker = None
            self.ended.waker_reported(lc, waker=ev.tid)
        for lc in self.open.woken_by(ev.tid):
            self.waker_reported(lc, ev)

    def waker_reported(self, lc: Lifecycle, ev: Event) -> None:
        self.open.set_pending(lc, None)
        if not self._covers(ev, lc):
            lc.note("the record of the ioctl that woke it is missing", ev.ts_ns)
            return
        if lc.present or lc.closer is not None:
            self._close_if_done(lc, ev.ts_ns)
        elif not self.sees_returns and not lc.waiting:
            # Woken, page still missing: the thread retries and waits again.
            self._new_round(lc, lc.t_woken or ev.ts_ns, "woken_unresolved")

    def _on_register(self, ev: Event) -> None:
        """UFFDIO_REGISTER: which faults the uffd takes; a fault of the range
        after it is a new one (a woken lifecycle there is over, not given a
        round). UFFDIO_UNREGISTER wakes the waiters of the range: they fault
        again without the uffd."""
        if ev.ret != 0:
            return
        if ev.op == Op.REGISTER:
            self.register_modes[ev.ctx] |= ev.mode
            self.events.registered_by(ev.ctx, ev.tgid)
            for lc in self.open.in_range(ev.ctx, ev.addr, ev.len):
                if self._over_at_register(lc):
                    self._close(lc, lc.finished_state(), ev.ts_ns)
            return
        for lc in self.open.woken_by(ev.tid):
            lc.note("range unregistered", ev.ts_ns, ev.tid)
            self._close(lc, "unregistered", ev.ts_ns)
        self.unregisters.add(ev)

    def _over_at_register(self, lc: Lifecycle) -> bool:
        """Whether a lifecycle whose range is registered anew is over: in
        kprobe mode one that returned (the retry it would come back for finds
        the page without the uffd); in tracepoint mode one whose round shows
        no sign of waiting (not asleep, nothing read: woken, or a round only
        its unresolved wake-up opened)."""
        if self.sees_returns:
            return lc.returned
        return not lc.waiting or (not lc.asleep and lc.round_reads == 0)

    def on_wake(self, ev: Event) -> None:
        if ev.ret != 1:
            return  # the wake function ran but did not wake this waiter
        lc = self._lifecycle_of(ev.peer_tid, ev.addr & PAGE_MASK, ev.ctx)
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
            self.unregisters.note_missed(lc)
            self._raise(lc, "released_with_waiters", ev.ts_ns, conclusion)
        # Woken by the thread that closed the uffd: the close was its record.
        done = lc.present or lc.closer == ev.tid
        if done and not self.sees_returns:
            self._close(lc, lc.finished_state(), ev.ts_ns)
        elif not done:
            self.open.set_pending(lc, ev.tid)

    def _on_close(self, ev: Event) -> None:
        if ev.flags & CLOSE_KEPT:
            return  # one holder's descriptor: the uffd lives on, nothing is woken
        for lc in self.open.values():
            if lc.uffd != ev.ctx or not lc.waiting:
                continue
            lc.closer = ev.tid
            lc.note("uffd closed", ev.ts_ns, ev.tid)
            # Flagged when the closer's release wakes the thread (on_wake): a
            # lifecycle that only looks open (its return record was lost)
            # is not accused. In tracepoint mode close(2) releases only the
            # last reference, and only then are waiters woken.

    # -- watchdog ------------------------------------------------------------------
    def _where(self, lc: Lifecycle) -> TaskState | None:
        return self.tasks(lc.tgid, lc.tid) if self.tasks is not None else None

    def _unread(self, uffd: int) -> list[Lifecycle]:
        """The uffd's faults that wait with their message unread."""
        return [lc for lc in self.open.values()
                if lc.uffd == uffd and lc.waiting and lc.round_reads == 0 and lc.start_known]

    def _quiet_ns(self, lc: Lifecycle) -> int:
        """How long a woken lifecycle stays open without a new round: one
        --wake-ms, or up to --stuck-ms while the ioctl record of its waker is due."""
        return self.th.stuck_ns if lc.pending_waker is not None else self.th.wake_ns

    def _tick(self, now: int) -> None:
        self.folded.take_over(now)
        self.rmap.judge(now)
        self.folded.age_orphan_reads(now)
        # Before the faults' own rules: a lost poll wake-up explains an unread fault.
        if self.aio.requests:
            self.aio.tick(now, self.th.stuck_ns)
        for lc in self.open.values():
            if lc.waiting:
                self._check_waiting(lc, now)
            elif lc.round_end is not None and now - lc.round_end > self._quiet_ns(lc):
                # Woken or returned and no new round since: it is over. (While
                # its waker's ioctl record is due, that record may still open a
                # new round in tracepoint mode.)
                self._close(lc, lc.finished_state(), now)
        self.events.tick(now, self.th)

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
            self._close(lc, "exited" if where == "gone" else "returned", now)
        return False

    def _handlers_due(self, lc: Lifecycle, now: int) -> bool:
        """Blocked past --stuck-ms: ask, once per --stuck-ms, whether any
        reader of its uffd still lives, and who holds the uffd."""
        return ("no_reader" not in lc.flags and self.handlers.can_ask()
                and now - lc.wait_since > self.th.stuck_ns and now - lc.handlers_asked > self.th.stuck_ns)

    def _check_waiting(self, lc: Lifecycle, now: int) -> None:
        if not lc.asleep and not self._shows_waiting(lc, now):
            return
        earned = [(n, e) for n, e in timed_flags(lc, now, self.th) if n not in lc.flags]
        if EXPLAINS_THE_WAIT & set(lc.flags):
            earned = [(n, e) for n, e in earned if n not in ONLY_SAY_IT_WAITS]
        ask_handlers = self._handlers_due(lc, now)
        if not earned and not ask_handlers:
            return
        # Every timed flag concludes from a missing event: confirm that the
        # thread still waits, for this page, before accusing anyone.
        where = self._where(lc)
        if where in ("gone", "other", "aio"):
            # The kernel says it no longer waits (or has exited), though no
            # record said so: a signal, a lost record, or its end still on
            # its way (the kernel answers for now; records are handled up to
            # an earlier horizon, and a slow host can be far behind).
            lc.other_since = lc.other_since or now
            if now - lc.other_since > self.th.wake_ns:
                if where != "gone":
                    lc.note("left handle_userfault unseen (signal, or a lost record)", now)
                self._close(lc, "exited" if where == "gone" else "returned", now)
            return
        lc.other_since = None
        page = self.faults(lc.tid) if self.faults is not None and lc.page is not None else None
        if page is not None and page & PAGE_MASK != lc.page:
            lc.note(f"the kernel shows it faulting at {page & PAGE_MASK:#x} now: woken unseen", now)
            self._close(lc, "returned", now)
            return
        if ask_handlers:
            lc.handlers_asked = now
            readers = self.handlers.readers(lc.uffd, lc.tid, now)
            if readers.nobody:
                # Its handlers are dead: say so, not that they are slow or lost a wake-up.
                earned.append(("no_reader", no_reader_evidence(lc, readers, now)))
            elif readers.holders is not None:
                earned = [(n, held_by_evidence(e, readers.holders) if n in ONLY_SAY_IT_WAITS else e)
                          for n, e in earned]
        if EXPLAINS_THE_WAIT & ({n for n, _ in earned} | set(lc.flags)):
            earned = [(n, e) for n, e in earned if n not in ONLY_SAY_IT_WAITS]
        if earned:
            self.unregisters.note_missed(lc)
        for name, conclusion in earned:
            self._raise(lc, name, now, conclusion)
