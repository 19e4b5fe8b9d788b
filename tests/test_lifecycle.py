"""Correlator and rules on synthetic sequences (tests/synthetic.py), the
core rules in both modes' shapes: clean faults, DONTWAKE, EEXIST races, lost
wake-ups, unread faults, retry loops, releases. These complement the live
tiers, which run the same scenarios on real kernels."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from uffdtrace.events import UFFD_EVENT_REMOVE, Event, Kind, Op
from uffdtrace.source import Holder, TaskState

from .synthetic import (
    COPIER,
    CTX,
    EEXIST,
    FAULTER,
    HANDLER,
    MODES,
    MS,
    OTHER,
    PAGE,
    PID,
    T0,
    block,
    clean,
    close,
    copy,
    correlate,
    dontwake_stall,
    eexist_race,
    ev,
    fault,
    fault_ret,
    read,
    retry,
    woken,
)


@pytest.mark.parametrize("mode", MODES)
def test_clean_fault_is_one_lifecycle_without_flags(mode: str) -> None:
    out, corr = correlate(clean(mode), mode)
    [lc] = out.lifecycles
    assert not out.flags and lc.flags == {}
    assert (lc.rounds, lc.reads, lc.page, lc.tid, lc.reader_tid, lc.waker_tid) == (1, 1, PAGE, FAULTER, HANDLER,
                                                                                    HANDLER)
    assert lc.resolve is not None and (lc.resolve.op, lc.resolve.ret, lc.resolve.dontwake) == ("copy", 0, False)
    assert lc.state == ("returned" if mode == "kprobe" else "woken")
    lat = lc.latencies()
    assert lat["pickup"] == int(0.1 * MS) and lat["wake"] == 0  # woken inside the copy
    assert (lat["resume"] == int(0.05 * MS)) if mode == "kprobe" else lat["resume"] is None
    j = lc.to_json()
    assert j["type"] == "lifecycle" and j["flags"] == [] and j["t_raised_ns"] == T0
    assert j["reason"] == "missing"  # tracepoint mode: from the x86 error code (page not present)
    assert corr.counters.lifecycles == 1 and not corr.open


@pytest.mark.parametrize("mode", MODES)
def test_many_faults_delivered_out_of_order_across_cpus(mode: str) -> None:
    """Per-CPU buffers interleave: the correlator orders by timestamp."""
    seq: list[Event] = []
    for i in range(50):
        for e in clean(mode, page=PAGE + i * 4096, at=i * 1.0, faulter=FAULTER + (i % 5) * 10):
            seq.append(dataclasses.replace(e, cpu=(i * 7 + e.kind) % 4))
    shuffled = sorted(seq, key=lambda e: (e.cpu, e.ts_ns))  # each CPU's records in order, CPUs one after another
    out, _ = correlate(shuffled, mode)
    assert len(out.lifecycles) == 50 and not out.flags
    assert all(lc.rounds == 1 and lc.reads == 1 and lc.resolve for lc in out.lifecycles)


def test_copy_record_after_the_return_still_resolves() -> None:
    """kprobe: the woken thread can return before the handler's ioctl does."""
    seq = [fault(0), read(0.1), woken(0.2), fault_ret(0.3), copy(0.4)]
    out, _ = correlate(seq, "kprobe", ticks=[0.35, 0.45])
    [lc] = out.lifecycles
    assert lc.state == "returned" and lc.resolve is not None and not out.flags


@pytest.mark.parametrize("mode", MODES)
def test_dontwake_stall_is_flagged_while_blocked_then_closed(mode: str) -> None:
    out, _ = correlate(dontwake_stall(mode, wake_at=2000), mode, ticks=[50, 150, 900, 1100, 1500, 2500])
    # Raised live: before the wake-up at 2000 ms.
    assert out.raised() == ["dontwake_without_wake", "never_woken"]
    assert all(f.state == "blocked" and f.ts_ns < T0 + 2000 * MS for f in out.flags if not f.update)
    assert out.flags[0].ts_ns == T0 + 150 * MS and out.flags[1].ts_ns == T0 + 1100 * MS
    [update] = [f for f in out.flags if f.update]
    assert update.name == "never_woken" and update.blocked_ns == 2000 * MS and update.state != "blocked"
    [lc] = out.lifecycles
    assert list(lc.flags) == ["dontwake_without_wake", "never_woken"] and lc.resolve and lc.resolve.dontwake
    evidence = [e.what for e in out.flags[0].evidence]
    assert any("DONTWAKE" in w for w in evidence) and "no UFFDIO_WAKE within 100 ms" in evidence[-1]


@pytest.mark.parametrize("mode", MODES)
def test_dontwake_with_prompt_uffdio_wake_is_clean(mode: str) -> None:
    out, _ = correlate(dontwake_stall(mode, wake_at=50), mode, ticks=[10, 100, 200, 1500])
    assert not out.flags and len(out.lifecycles) == 1


@pytest.mark.parametrize("mode", MODES)
def test_eexist_without_wake(mode: str) -> None:
    out, _ = correlate(eexist_race(mode, handler_wakes=False), mode, ticks=[50, 200, 500], end=500)
    # The handler owned the wake-up after EEXIST; the DONTWAKE fill is not blamed.
    assert out.raised() == ["eexist_without_wake"]
    [lc] = out.lifecycles
    assert lc.state == "blocked" and lc.resolve is not None and lc.resolve.tid == OTHER
    assert any("EEXIST" in e.what for e in out.flags[0].evidence)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("handler_wakes", "winner_wakes"), [(True, False), (False, True)])
def test_eexist_followed_by_a_wake_is_clean(mode: str, handler_wakes: bool, winner_wakes: bool) -> None:
    out, _ = correlate(eexist_race(mode, handler_wakes=handler_wakes, winner_wakes=winner_wakes), mode,
                       ticks=[50, 200, 2000])
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["returned" if mode == "kprobe" else "woken"]


@pytest.mark.parametrize("mode", MODES)
def test_missed_wakeup(mode: str) -> None:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else []) + [read(0.1), copy(0.2)]
    out, _ = correlate(seq, mode, ticks=[50, 150], end=150)
    assert out.raised() == ["missed_wakeup"]
    assert "lost the wake-up" in out.flags[0].evidence[-1].what


@pytest.mark.parametrize(("read_entered", "inside"), [(0.3, True), (0.55, False)])
def test_missed_wakeup_names_the_read_it_ran_inside(read_entered: float, inside: bool) -> None:
    """The refile race (refile_seq reverted): a background copy returns while
    the reader is inside the read() that hands the fault out; its wake-up is
    lost, and the reader's own copy gets EEXIST. The evidence says the copy
    ran inside that read() only when it did (the read's time inside the call
    comes in the message's ``len``)."""
    took = int((0.6 - read_entered) * MS)
    seq = [fault(0), copy(0.5, tid=COPIER), ev(Kind.READ_MSG, 0.6, HANDLER, mode=0x12, peer_tid=FAULTER, ret=32,
                                               len=took),
           copy(0.7, ret=EEXIST)]
    out, _ = correlate(seq, "kprobe", ticks=[50, 150, 1200], end=1200)
    assert out.raised() == ["missed_wakeup", "eexist_without_wake", "never_woken"]
    missed = out.flags[0].evidence[-1].what
    assert ("inside read() handing this fault out" in missed) == inside, missed
    if inside:
        assert f"copy by tid {COPIER} returned while tid {HANDLER} was inside read()" in missed
        assert "200 us after it entered, 100 us before it returned" in missed


@pytest.mark.parametrize("mode", MODES)
def test_unread_and_never_woken(mode: str) -> None:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    out, _ = correlate(seq, mode, ticks=[500, 1200], end=1200)
    assert out.raised() == ["unread", "never_woken"]
    assert {f.blocked_ns for f in out.flags if not f.update} == {1200 * MS}
    [lc] = out.lifecycles
    assert lc.state == "blocked" and lc.reads == 0


def test_unread_fault_without_sleep_records_is_confirmed_by_the_kernel() -> None:
    """Tracepoint mode without --events sends no BLOCK record: a fault
    nobody read is known to wait only once its thread's wchan says so, and
    then earns the same flags; a thread that is not waiting earns none, and
    its fault, which never waited, is no lifecycle (as in kprobe mode)."""
    out, _ = correlate([fault(0)], "tracepoint", ticks=[500, 1200], end=1200, tasks={FAULTER: "uffd"})
    assert out.raised() == ["unread", "never_woken"]
    assert [lc.state for lc in out.lifecycles] == ["blocked"]
    out, corr = correlate([fault(0)], "tracepoint", ticks=[500, 1200], end=1200, tasks={FAULTER: "other"})
    assert not out.flags and not out.lifecycles and corr.counters.lifecycles == 0
    # Traced for less than --wake-ms: the end of the trace asks the kernel too.
    out, _ = correlate([fault(0)], "tracepoint", end=50, tasks={FAULTER: "uffd"})
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["blocked"]


def test_sleep_folded_into_the_next_fault_record_counts_as_a_round() -> None:
    """The kernel reports that an attempt slept with the thread's next fault
    on the page (FAULT len: when it slept): a thread that slept, was never
    woken by the uffd (a signal) and faulted again has had two rounds,
    exactly as with the BLOCK record; without a sleep it is the same round."""
    slept_at = T0 + int(0.01 * MS)
    again = ev(Kind.FAULT, 5, FAULTER, addr=PAGE, mode=0x200, len=slept_at)
    out, _ = correlate([fault(0), again, read(6), woken(7), copy(8)], "tracepoint")
    [lc] = out.lifecycles
    assert (lc.rounds, dict(lc.round_causes)) == (2, {"returned_unwoken": 1})
    assert [e.ts_ns for e in lc.history] == sorted(e.ts_ns or 0 for e in lc.history)
    assert "slept in handle_userfault" in [e.what for e in lc.history]
    out, _ = correlate([fault(0), fault(5), read(6), woken(7), copy(8)], "tracepoint")
    [lc] = out.lifecycles
    assert lc.rounds == 1 and not out.flags


@pytest.mark.parametrize("mode", MODES)
def test_read_but_not_yet_stuck_is_not_flagged(mode: str) -> None:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else []) + [read(0.1)]
    out, _ = correlate(seq, mode, ticks=[900], end=900)
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["blocked"]


@pytest.mark.parametrize("mode", MODES)
def test_retry_loop(mode: str) -> None:
    out, corr = correlate(retry(mode, wakes=4), mode, ticks=[2.5, 10])
    assert corr.flags.counts.failing == 1
    [lc] = out.lifecycles
    assert (lc.rounds, lc.reads) == (5, 5)
    assert out.raised() == ["retry_loop"] and list(lc.flags) == ["retry_loop"]
    assert lc.round_causes == {"woken_unresolved": 4}
    flag = out.flags[0]
    assert flag.ts_ns < T0 + 3 * MS  # raised when the third round began
    assert "3 times" in flag.evidence[-1].what and "woken_unresolved" in flag.evidence[-1].what


@pytest.mark.parametrize("mode", MODES)
def test_one_retry_is_below_the_threshold(mode: str) -> None:
    out, _ = correlate(retry(mode, wakes=1), mode)
    [lc] = out.lifecycles
    assert lc.rounds == 2 and not out.flags


def test_retry_threshold_is_configurable() -> None:
    out, _ = correlate(retry("kprobe", wakes=1), "kprobe", retry_threshold=2)
    assert out.raised() == ["retry_loop"]


def test_released_with_waiters_kprobe() -> None:
    seq = [fault(0), read(0.1), close(50), woken(50.1), fault_ret(50.2)]
    out, _ = correlate(seq, "kprobe", ticks=[40, 100])
    assert out.raised() == ["released_with_waiters"]
    [lc] = out.lifecycles
    assert lc.state == "released" and not lc.resolve


def test_released_with_waiters_tracepoint_needs_the_closers_wake() -> None:
    seq = [fault(0), block(0.01), read(0.1), close(50), woken(50.1)]
    out, _ = correlate(seq, "tracepoint", ticks=[40, 100, 200])
    assert out.raised() == ["released_with_waiters"]
    assert [lc.state for lc in out.lifecycles] == ["released"]
    # The process exits right after: the lifecycle is already over, not "exited".
    out, _ = correlate(seq, "tracepoint", ticks=[40], end=60, tasks={FAULTER: "gone"})
    assert [lc.state for lc in out.lifecycles] == ["released"] and out.raised() == ["released_with_waiters"]
    # close(2) of one of several fds: nobody is woken, nothing released.
    out, _ = correlate(seq[:-1], "tracepoint", ticks=[40, 100, 200], end=200)
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["blocked"]


def test_a_holders_close_that_keeps_the_uffd_releases_nothing() -> None:
    """Tracepoint mode sends every holder's close; one that leaves the uffd
    open (UT_CLOSE_KEPT) does not make the next wake-up a release."""
    seq = [fault(0), block(0.01), read(0.1), close(50, kept=True), woken(50.1)]
    out, _ = correlate(seq, "tracepoint", ticks=[40, 100, 200])
    assert "released_with_waiters" not in out.raised()
    assert [lc.state for lc in out.lifecycles] != ["released"]


def test_close_after_the_fault_ended_is_clean() -> None:
    out, _ = correlate([*clean("kprobe"), close(5)], "kprobe", ticks=[1, 10])
    assert not out.flags


@pytest.mark.parametrize("mode", MODES)
def test_no_reader_when_every_handler_that_read_the_uffd_is_gone(mode: str) -> None:
    """A handler (in any process) read the message and died: no_reader, in
    place of never_woken; a fault queued after its handlers died earns it
    in place of unread. While a reader lives it is only slow: never_woken."""
    waits = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    seq = [*waits, read(0.1, tid=OTHER)]
    out, _ = correlate(seq, mode, ticks=[500, 1200, 1300, 2500], end=2500, tasks={FAULTER: "uffd", OTHER: "gone"})
    assert out.raised() == ["no_reader"]
    [flag] = [f for f in out.flags if not f.update]
    assert f"tid {OTHER}" in flag.evidence[-1].what and "read and never resolved" in flag.evidence[-1].what
    out, _ = correlate(seq, mode, ticks=[500, 1200, 2500], end=2500, tasks={FAULTER: "uffd", OTHER: "other"})
    assert out.raised() == ["never_woken"]
    # The handler dies after the fault was flagged never_woken: no_reader follows.
    class DiesWhenAsked(dict[int, TaskState]):
        def get(self, tid: int, default: TaskState | None = None) -> TaskState | None:  # type: ignore[override]
            state = super().get(tid, default)
            if tid == OTHER:
                self[OTHER] = "gone"
            return state

    out, _ = correlate(seq, mode, ticks=[500, 1200, 2000, 2300, 3300], end=3300,
                       tasks=DiesWhenAsked({FAULTER: "uffd", OTHER: "other"}))
    assert out.raised() == ["never_woken", "no_reader"]


def test_no_reader_for_a_message_still_queued_after_its_handlers_died() -> None:
    seq = [fault(0, tid=OTHER + 1), read(0.1, peer=OTHER + 1, tid=OTHER), fault(10), block(10.01)]
    seq = [*seq[:2], ev(Kind.WAKE_TASK, 0.2, OTHER, peer_tid=OTHER + 1, ret=1), *seq[2:]]
    out, _ = correlate(seq, "tracepoint", ticks=[500, 1200], end=1200,
                       tasks={FAULTER: "uffd", OTHER: "gone", OTHER + 1: "other"})
    assert out.raised() == ["no_reader"]
    assert "still queued" in next(f for f in out.flags if not f.update).evidence[-1].what


@pytest.mark.parametrize("mode", MODES)
def test_no_reader_when_no_holder_has_a_thread_that_could_read(mode: str) -> None:
    """Nobody ever read the message, and the only process holding the uffd
    is the faulting one, whose only thread waits (its handler process died
    before reading): no_reader, naming the holder. With a thread of a holder
    free to read, it is unread (the holders named); unknown holders change
    nothing."""
    waits = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    ticks, tasks = [500, 1200, 2500], {FAULTER: "uffd"}
    out, _ = correlate(waits, mode, ticks=ticks, end=2500, tasks=tasks, holders={CTX: [Holder(PID, "wl", 1, 1)]})
    assert out.raised() == ["no_reader"] and out.held == [(CTX, [Holder(PID, "wl", 1, 1)])]
    what = next(f for f in out.flags if not f.update).evidence[-1].what
    assert "no thread is left that could read uffd" in what and "still queued" in what, what
    assert f"held by pid {PID} wl (1 thread, 1 asleep in a userfaultfd wait)" in what, what
    out, _ = correlate(waits, mode, ticks=ticks, end=2500, tasks=tasks, holders={CTX: [Holder(PID, "wl", 2, 1)]})
    assert out.raised() == ["unread", "never_woken"]
    raised = [f for f in out.flags if not f.update]
    assert all(f"held by pid {PID} wl (2 threads, 1 asleep" in f.evidence[-1].what for f in raised), raised
    out, _ = correlate(waits, mode, ticks=ticks, end=2500, tasks=tasks, holders={})
    assert out.raised() == ["unread", "never_woken"] and not any("held by" in f.evidence[-1].what for f in out.flags)
    # Nobody holds it: the uffd is being released, or its holder is exiting (killed): no conclusion.
    out, _ = correlate(waits, mode, ticks=ticks, end=2500, tasks=tasks, holders={CTX: []})
    assert out.raised() == ["unread", "never_woken"], out.flags


def _event(kind: Kind, at: float, tid: int = OTHER, **kw: Any) -> Event:
    return ev(kind, at, tid, mode=UFFD_EVENT_REMOVE, addr=PAGE + 4096, len=3 * 4096, **kw)


def test_an_event_nobody_reads_is_event_unread_once_the_kernel_confirms() -> None:
    """A balloon's MADV_DONTNEED waits on its REMOVE event: flagged after
    --stuck-ms only while the thread waits in the event's completion."""
    seq = [_event(Kind.EVENT_WAIT, 0), read(1300, peer=0, tid=HANDLER),
           _event(Kind.EVENT_DONE, 1300.1)]
    seq[1] = dataclasses.replace(seq[1], mode=UFFD_EVENT_REMOVE, flags=PAGE + 4096, addr=PAGE + 4 * 4096)
    out, _ = correlate(seq, "tracepoint", ticks=[500, 1200, 1250], end=1400, tasks={OTHER: "event"})
    assert out.raised() == ["event_unread"]
    [ew] = out.events
    assert (ew.name, ew.reader_tid, ew.state, list(ew.flags)) == ("remove", HANDLER, "resumed", ["event_unread"])
    assert [f.update for f in out.flags] == [False, True] and out.flags[-1].blocked_ns == 1300.1 * MS
    out, _ = correlate(seq, "tracepoint", ticks=[500, 1200, 1250], end=1400, tasks={OTHER: "other"})
    assert not out.flags and out.events[0].t_read is not None


def test_eagain_names_the_unread_event_and_a_handler_that_never_retries_is_flagged() -> None:
    eagain = ev(Kind.RESOLVE, 100, HANDLER, op=Op.COPY, len=4096, ret=-11)
    event_read = dataclasses.replace(read(100.5, peer=0), mode=UFFD_EVENT_REMOVE, flags=PAGE + 4096)
    seq = [fault(0), block(0.01), read(0.1), _event(Kind.EVENT_WAIT, 50), eagain, event_read,
           _event(Kind.EVENT_DONE, 100.6)]
    out, _ = correlate(seq, "tracepoint", ticks=[150, 250, 400], end=400, tasks={FAULTER: "uffd"})
    assert out.raised() == ["eagain_unretried"]
    whats = [e.what for e in out.flags[0].evidence]
    assert any("EAGAIN" in w and f"remove of {PAGE + 4096:#x}" in w and f"tid {OTHER}" in w for w in whats), whats
    retried = [*seq, ev(Kind.RESOLVE, 101, HANDLER, op=Op.COPY, len=4096), woken(101.1)]
    out, _ = correlate(retried, "tracepoint", ticks=[150, 250, 400], end=400, tasks={FAULTER: "uffd"})
    assert not out.flags


def test_an_event_read_before_its_callers_sleep_is_still_its_read() -> None:
    """The handler can take the message between its queueing and the
    caller's schedule(): the read comes first, the raise claims it."""
    early = dataclasses.replace(read(10, peer=0, tid=HANDLER), mode=UFFD_EVENT_REMOVE, flags=PAGE + 4096)
    out, corr = correlate([early, _event(Kind.EVENT_WAIT, 10.01), _event(Kind.EVENT_DONE, 10.05)], "tracepoint",
                          ticks=[5000], end=5000, tasks={OTHER: "event"})
    [ew] = out.events
    assert ew.reader_tid == HANDLER and ew.t_read == ew.t_raised and not out.flags
    assert corr.events.unmatched_reads == 0


def test_an_event_read_stamped_after_its_caller_returned_is_still_its_read() -> None:
    """A read is stamped when read() returns, which can be after the caller
    it woke has returned from its fork: it is that caller's read."""
    late = dataclasses.replace(read(10.03, peer=0, tid=HANDLER), mode=UFFD_EVENT_REMOVE, flags=PAGE + 4096)
    out, corr = correlate([_event(Kind.EVENT_WAIT, 10), _event(Kind.EVENT_DONE, 10.02), late], "tracepoint",
                          ticks=[5000], end=5000, tasks={OTHER: "other"})
    [ew] = out.events
    assert ew.reader_tid == HANDLER and ew.t_read == ew.t_done and ew.state == "resumed" and not out.flags
    assert corr.events.unmatched_reads == 0
    out, _ = correlate([_event(Kind.EVENT_WAIT, 10), _event(Kind.EVENT_DONE, 10.02)], "tracepoint",
                       ticks=[5000], end=5000)
    assert [(ew.reader_tid, ew.state) for ew in out.events] == [(None, "resumed")]  # released, or a signal
