"""Faults folded in the kernel (tracepoint mode without --events; bpf/fold.h):
a clean fault arrives as one LIFECYCLE record, a fault that went its own way
as a FAULT_STATE record, and a fault folded longer than --wake-ms is taken
over from the kernel's map by the watchdog. Each becomes a lifecycle, either
at once or by replaying its steps through the correlator's own handlers,
each step once. Reads whose fault is still folded wait here for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..events import PAGEFAULT_FLAG_WP, UFFD_EVENT_PAGEFAULT, Event, Folded, Kind, op_name
from .model import Attempt, Counters, Lifecycle
from .rules import Thresholds, message_fits
from .tables import PAGE_SIZE, EndedTable, OpenTable

REFAULT_NOTE = "raised again: the page was gone when the kernel retried the fault after its wake-up"

# Asks the kernel which faults it is folding now, as FAULT_STATE events; with
# True, also those woken inside an ioctl that has not returned yet.
FoldedProbe = Callable[[bool], list[Event]]
# Tells the kernel that the watchdog took over the folded fault of (tid, raised
# at): its end is then always sent (--flagged sends clean ends only then).
TakeOverHook = Callable[[int, int], None]


class Steps(Protocol):
    """What the correlator offers the folded path: its tables and counters,
    and the handlers a folded fault's steps are replayed through."""

    open: OpenTable
    ended: EndedTable
    counters: Counters
    th: Thresholds
    lost: int
    max_open: int

    def reason(self, ev: Event) -> str | None: ...

    def on_fault(self, ev: Event) -> None: ...

    def on_read(self, ev: Event) -> None: ...

    def on_wake(self, ev: Event) -> None: ...

    def attempt(self, lc: Lifecycle, ev: Event) -> None: ...

    def waker_reported(self, lc: Lifecycle, ev: Event) -> None: ...

    def attach_read(self, lc: Lifecycle, ev: Event) -> None: ...


class FoldedFaults:
    def __init__(self, steps: Steps, probe: FoldedProbe | None, on_take_over: TakeOverHook | None) -> None:
        self.steps = steps
        self.probe = probe
        self.on_take_over = on_take_over
        self._taken_over: dict[int, int] = {}  # tid -> raise time of the folded fault the watchdog took over
        self._orphan_reads: dict[tuple[int, int], list[Event]] = {}  # (uffd, page) -> reads that matched nothing yet

    def unfold(self, ev: Event) -> None:
        """A LIFECYCLE record (read once, resolved and woken by one ioctl)
        becomes a finished lifecycle at once; a FAULT_STATE (the fault went
        its own way), or the kernel's entry for a fault folded longer than
        --wake-ms, replays its steps through the handlers, each once."""
        f = Folded(ev)
        lc = self.steps.open.get(ev.tid)
        if lc is not None and lc.unfolded != f.raised_ns and (lc.t_raised or 0) > f.raised_ns:
            self._end(self._finished(f))  # the thread is on a newer fault: this one is over
        elif lc is None and ev.kind == Kind.LIFECYCLE:
            self._end(self._finished(f))
        else:
            self._replay(f, lc)

    def _finished(self, f: Folded) -> Lifecycle:
        """A finished lifecycle, straight from a folded fault's record."""
        ev = f.ev
        self.steps.counters.messages_read += f.messages
        lc = Lifecycle(uffd=ev.ctx, tgid=ev.tgid, tid=ev.tid, comm=ev.comm, page=ev.addr, wait_since=f.raised_ns,
                       last_ts=ev.ts_ns, reason=self.steps.reason(ev), lost_at_start=self.steps.lost,
                       t_raised=f.raised_ns, reads=f.messages, round_reads=f.messages, t_read=f.read_ns or None,
                       reader_tid=f.reader_tid or None, t_woken=f.woken_ns or None, waker_tid=f.waker_tid or None,
                       waiting=False, asleep=True, round_woken=bool(f.woken_ns), round_end=f.woken_ns or None,
                       unfolded=f.raised_ns)
        if ev.kind == Kind.LIFECYCLE:
            attempt = Attempt(ev.ts_ns, f.waker_tid, op_name(f.resolve_op), 0, False, "ok")
            lc.attempts.append(attempt)
            lc.resolve = attempt
            lc.resolver_tid = f.waker_tid
            lc.t_resolved = ev.ts_ns
            lc.present = True
        elif f.woken_ns:
            lc.pending_waker = f.waker_tid  # its waker's ioctl record is due
        self.claim_orphan_reads(lc)
        return lc

    def _end(self, lc: Lifecycle) -> None:
        lc.state = lc.finished_state()
        lc.ended_at = lc.last_ts
        self.steps.ended.add(lc)

    def park_read(self, ev: Event, page: int) -> None:
        """A read that matched no lifecycle: its fault may be folded in the
        kernel still, the record that ends the fold due (the read raced its
        wake-up). It waits one --wake-ms for that record before it counts as
        unmatched."""
        self._orphan_reads.setdefault((ev.ctx, page), []).append(ev)

    def claim_orphan_reads(self, lc: Lifecycle) -> None:
        """Reads of this fault's page that came before its folded record."""
        if not self._orphan_reads or lc.page is None:
            return
        key = (lc.uffd, lc.page)
        waiting = self._orphan_reads.pop(key, [])
        for ev in waiting:
            if ev.peer_tid in (0, lc.tid) and message_fits(lc, ev):
                self.steps.attach_read(lc, ev)
            else:
                self._orphan_reads.setdefault(key, []).append(ev)

    def age_orphan_reads(self, now: int | None) -> None:
        """Reads still unmatched one --wake-ms later (all, at the end) count as unmatched."""
        for key, evs in list(self._orphan_reads.items()):
            keep = [ev for ev in evs if now is not None and now - ev.ts_ns <= self.steps.th.wake_ns]
            self.steps.counters.unmatched_reads += len(evs) - len(keep)
            if keep:
                self._orphan_reads[key] = keep
            else:
                del self._orphan_reads[key]

    def _replay(self, f: Folded, lc: Lifecycle | None) -> None:
        ev, steps, page = f.ev, self.steps, f.ev.addr
        if lc is None or lc.unfolded != f.raised_ns:
            steps.on_fault(Event(ts_ns=f.raised_ns, kind=Kind.FAULT, cpu=ev.cpu, tgid=ev.tgid, tid=ev.tid,
                                 comm=ev.comm, ctx=ev.ctx, addr=page, flags=ev.flags, aux=page))
            lc = steps.open.get(ev.tid)
            if lc is None:
                return
            lc.unfolded = f.raised_ns
            if f.refault:
                lc.note(REFAULT_NOTE, f.raised_ns, ev.tid)
            self.claim_orphan_reads(lc)
        if f.slept_ns:
            lc.note_slept(f.slept_ns)
        # The kernel counted these messages for this fault, as message_fits
        # allows (it does not send their flags): a write-protect fault's are WP.
        flags = PAGEFAULT_FLAG_WP if lc.reason == "wp" else 0
        for _ in range(f.messages - lc.round_reads):
            steps.on_read(Event(ts_ns=f.read_ns, kind=Kind.READ_MSG, cpu=ev.cpu, tgid=ev.tgid, tid=f.reader_tid,
                                comm=ev.comm, ctx=ev.ctx, addr=page, flags=flags, mode=UFFD_EVENT_PAGEFAULT,
                                peer_tid=ev.tid))
        if f.woken_ns and lc.t_woken != f.woken_ns:
            if f.by_closer and lc.waiting and lc.closer is None:
                lc.closer = f.waker_tid
                lc.note("uffd closed", f.woken_ns, f.waker_tid)
            steps.on_wake(Event(ts_ns=f.woken_ns, kind=Kind.WAKE_TASK, cpu=ev.cpu, tgid=ev.tgid, tid=f.waker_tid,
                                comm=ev.comm, ctx=ev.ctx, addr=page, mode=int(f.via_read), ret=1, peer_tid=ev.tid))
        if ev.kind == Kind.LIFECYCLE and steps.open.holds(lc):
            resolve = Event(ts_ns=ev.ts_ns, kind=Kind.RESOLVE, cpu=ev.cpu, tgid=ev.tgid, tid=f.waker_tid,
                            comm=ev.comm, ctx=ev.ctx, addr=page, len=PAGE_SIZE, op=f.resolve_op)
            steps.attempt(lc, resolve)
            if lc.pending_waker == resolve.tid:
                steps.waker_reported(lc, resolve)

    def take_over(self, now: int) -> None:
        """Faults the kernel has folded for longer than --wake-ms become open
        lifecycles, so that the rules see a fault nobody reads or wakes."""
        for ev in self.probe(False) if self.probe is not None else ():
            raised = Folded(ev).raised_ns
            if now - raised <= self.steps.th.wake_ns:
                continue
            lc = self.steps.open.get(ev.tid)
            first = self._taken_over.get(ev.tid) != raised
            if not first and (lc is None or lc.unfolded != raised):
                continue  # taken over before, and closed since
            if first:
                if len(self._taken_over) >= self.steps.max_open:
                    self._taken_over.clear()
                self._taken_over[ev.tid] = raised
                if self.on_take_over is not None:
                    self.on_take_over(ev.tid, raised)
            self.unfold(ev)

    def unfold_remaining(self) -> None:
        """End of the trace: every fault the kernel still folds, woken ones too."""
        for ev in self.probe(True) if self.probe is not None else ():
            self.unfold(ev)
