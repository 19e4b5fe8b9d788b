"""Faults folded in the kernel (tracepoint mode without --events; bpf/fold.h)
become the same lifecycles and flags as their steps sent one by one."""

from __future__ import annotations

from uffdtrace.analysis.correlator import Correlator
from uffdtrace.analysis.folded import REFAULT_NOTE
from uffdtrace.analysis.rules import Thresholds
from uffdtrace.events import FoldBit, Kind, Op

from .synthetic import (
    FAULTER,
    HANDLER,
    MS,
    PAGE,
    T0,
    Out,
    block,
    clean,
    close,
    copy,
    correlate,
    ev,
    fault,
    folded,
    read,
    uffdio_wake,
)


def test_a_folded_lifecycle_is_the_lifecycle_of_its_steps() -> None:
    """One LIFECYCLE record gives what fault, sleep, read, wake-up and copy
    records give, field for field."""
    raw, _ = correlate(clean("tracepoint"), "tracepoint")
    out, corr = correlate([folded(Kind.LIFECYCLE, 0.3)], "tracepoint")
    assert [lc.to_json() for lc in out.lifecycles] == [lc.to_json() for lc in raw.lifecycles]
    assert not out.flags and corr.counters.messages_read == 1 and corr.counters.unmatched_reads == 0


def test_a_fault_that_unfolds_is_judged_on_all_its_steps() -> None:
    """A DONTWAKE copy unfolds the fault: its FAULT_STATE (raised, slept,
    read) then the copy's own record earn the same flag as the raw steps."""
    raw_seq = [fault(0), block(0.01), read(0.1), copy(0.3, dontwake=True)]
    folded_seq = [folded(Kind.FAULT_STATE, 0.3, woken_at=None), copy(0.3, dontwake=True)]
    results = [correlate(seq, "tracepoint", ticks=[50, 150], end=150) for seq in (raw_seq, folded_seq)]
    (raw, _), (out, _) = results
    assert out.raised() == raw.raised() == ["dontwake_without_wake"]
    assert [lc.to_json() for lc in out.lifecycles] == [lc.to_json() for lc in raw.lifecycles]
    assert [e.what for e in out.flags[0].evidence] == [e.what for e in raw.flags[0].evidence]


def test_the_watchdog_takes_over_a_fault_folded_too_long() -> None:
    """Nobody reads or wakes a folded fault: nothing is sent, the watchdog
    finds it in the kernel's map after --wake-ms, and the rules flag it
    (confirmed by wchan). When it ends at last, its record completes the
    same lifecycle instead of opening another."""
    in_kernel = [folded(Kind.FAULT_STATE, 600, read_at=None, woken_at=None)]
    told: list[tuple[int, int]] = []
    out = Out()
    corr = Correlator(out, Thresholds(), sees_returns=False, tasks=lambda _p, _t: "uffd",
                      folded=lambda _handed: list(in_kernel), on_take_over=lambda tid, at: told.append((tid, at)))
    for at in (50, 500, 1200):
        corr.advance(T0 + at * MS)
    assert out.raised() == ["unread", "never_woken"] and not out.lifecycles
    assert told == [(FAULTER, T0)]  # once: the kernel then sends its end even with --flagged
    in_kernel.clear()  # the kernel ends the fold: woken and resolved by one copy
    corr.feed([folded(Kind.LIFECYCLE, 1300.3, read_at=1300.1, woken_at=1300.2)])
    corr.advance(T0 + 1400 * MS)
    corr.finish(T0 + 1500 * MS)
    [lc] = out.lifecycles
    assert (lc.state, lc.reads, lc.t_raised, lc.resolve is not None) == ("woken", 1, T0, True)
    assert [f.name for f in out.flags if f.update] == ["unread", "never_woken"]
    assert corr.counters.lifecycles == 1


def test_a_fault_folded_for_less_than_wake_ms_is_left_to_the_kernel() -> None:
    out, _ = correlate([], "tracepoint", ticks=[50], end=60, tasks={FAULTER: "uffd"},
                       folded=[folded(Kind.FAULT_STATE, 50, read_at=None, woken_at=None, raised=10)])
    # The end of the trace takes every folded fault, whatever its age.
    assert [lc.state for lc in out.lifecycles] == ["blocked"] and not out.flags


def test_a_read_that_raced_the_fold_joins_its_lifecycle() -> None:
    """A reader that finds the fault's count sealed sends its message
    itself; it can come before the record of the fold it missed."""
    out, corr = correlate([read(0.15), folded(Kind.LIFECYCLE, 0.3, read_at=None, reads=0)], "tracepoint",
                          ticks=[0.2, 0.4, 200])
    [lc] = out.lifecycles
    assert lc.reads == 1 and corr.counters.unmatched_reads == 0 and corr.counters.messages_read == 1
    out, corr = correlate([read(0.15, page=PAGE + 4096)], "tracepoint", ticks=[0.2, 200])
    assert corr.counters.unmatched_reads == 1  # one --wake-ms later, nothing claimed it


def test_an_unfolded_fault_of_a_thread_that_moved_on_ends_apart() -> None:
    """The woken thread's next fault is open already when the ioctl that
    woke the previous one returns without resolving it."""
    nxt = PAGE + 4096
    seq = [fault(0.3, page=nxt), folded(Kind.FAULT_STATE, 0.5), uffdio_wake(0.5)]
    out, _ = correlate(seq, "tracepoint", ticks=[0.6, 400], end=400, tasks={FAULTER: "uffd"}, faults={FAULTER: nxt})
    states = {lc.page: lc.state for lc in out.lifecycles}
    assert states == {PAGE: "woken", nxt: "blocked"}


def test_release_of_a_folded_fault_is_flagged() -> None:
    seq = [close(50), folded(Kind.FAULT_STATE, 50.1, woken_at=50.1, bits=FoldBit.CLOSER)]
    out, _ = correlate(seq, "tracepoint", ticks=[40, 100, 200])
    assert out.raised() == ["released_with_waiters"]
    assert [lc.state for lc in out.lifecycles] == ["released"]


def test_a_wait_again_after_a_clean_wake_up_is_a_fault_of_its_own() -> None:
    """The page is gone again when the kernel retries the woken fault: the
    thread sleeps in handle_userfault once more, with no fault record in
    tracepoint mode. Step by step (--events: its BLOCK) or folded (the
    kernel's entry, REFAULT bit), it is a new lifecycle, flagged while its
    message stays unread."""
    raw_seq = [*clean("tracepoint"), ev(Kind.BLOCK, 1.0, FAULTER, mode=1)]  # mode: it ran since its wake-up
    folded_seq = [folded(Kind.LIFECYCLE, 0.3)]
    in_kernel = [folded(Kind.FAULT_STATE, 1200, slept=1.0, read_at=None, woken_at=None, raised=1.0,
                        bits=FoldBit.REFAULT)]
    results = [correlate(raw_seq, "tracepoint", ticks=[500, 1200], end=1300, tasks={FAULTER: "uffd"},
                         faults={FAULTER: PAGE}),
               correlate(folded_seq, "tracepoint", ticks=[500, 1200], end=1300, tasks={FAULTER: "uffd"},
                         faults={FAULTER: PAGE}, folded=in_kernel)]
    for out, corr in results:
        assert [lc.state for lc in out.lifecycles] == ["woken", "blocked"]
        assert out.raised() == ["unread", "never_woken"] and corr.counters.unmatched_reads == 0
        assert REFAULT_NOTE in [e.what for e in out.flags[0].evidence]
    (raw, _), (out, _) = results
    assert [e.what for e in out.flags[0].evidence] == [e.what for e in raw.flags[0].evidence]


def test_a_sleep_switched_out_after_its_wake_up_is_not_a_new_wait() -> None:
    """The waker can run before the thread's own sleep is switched out: that
    BLOCK (the thread did not run since: mode 0) is the same wait."""
    out, _ = correlate([*clean("tracepoint"), block(0.35)], "tracepoint", ticks=[500, 1200], end=1300,
                       tasks={FAULTER: "uffd"}, faults={FAULTER: PAGE})
    assert [lc.state for lc in out.lifecycles] == ["woken"] and not out.flags


def test_a_fault_that_never_waited_is_no_lifecycle() -> None:
    """Tracepoint mode: a fault in a registered range that the kernel served
    without the handler (no sleep, no message read, nothing woke or resolved
    it) ends at the thread's next fault without a lifecycle; the next one,
    which waits, is one."""
    nxt = PAGE + 4096
    out, _ = correlate([fault(0), *clean("tracepoint", page=nxt, at=1)], "tracepoint")
    assert [lc.page for lc in out.lifecycles] == [nxt] and not out.flags
    read_only = [fault(0), read(0.1), fault(1, page=nxt)]  # its message was read: it waited
    out, _ = correlate(read_only, "tracepoint", tasks={FAULTER: "other"})
    assert PAGE in [lc.page for lc in out.lifecycles]


def test_a_folded_fault_names_the_unregister_that_did_not_wake_it() -> None:
    """Folded in the kernel while its range was unregistered, unfolded only
    when the uffd's release woke it: its lifecycle names the unregister. One
    the unregister woke (unfolded before the unregister's record) does not."""
    unregister = ev(Kind.UFFD_REGISTER, 0.5, HANDLER, op=Op.UNREGISTER, addr=PAGE, len=0x1000)
    seq = [unregister, close(50), folded(Kind.FAULT_STATE, 50.1, woken_at=50.1, bits=FoldBit.CLOSER)]
    out, _ = correlate(seq, "tracepoint", ticks=[40, 100, 200])
    [flag] = out.flags
    assert flag.name == "released_with_waiters"
    assert f"its range was unregistered by tid {HANDLER} after it was raised, and that did not wake it" in [
        e.what for e in flag.evidence]
    woken = [folded(Kind.FAULT_STATE, 0.45, woken_at=0.45), unregister]
    out, _ = correlate(woken, "tracepoint", ticks=[40, 100])
    [lc] = out.lifecycles
    assert not out.flags and not any("did not wake" in n.what for n in lc.history), lc.history
