"""Correlator and rules on synthetic sequences (tests/synthetic.py), the
edges: informational flags, aio poll and rmap trackers, threads found
blocked at start or gone, bounded tables, records out of step, reasons per
register mode and ioctl, and absence flags that need the kernel's word."""

from __future__ import annotations

import pytest

from uffdtrace.analysis.correlator import Correlator
from uffdtrace.analysis.rules import Thresholds, counts_as_failure
from uffdtrace.events import PAGEFAULT_FLAG_WP, Event, Kind, Op
from uffdtrace.source import BlockedThread

from .synthetic import (
    CTX,
    EEXIST,
    FAULTER,
    HANDLER,
    MODES,
    MS,
    OTHER,
    PAGE,
    PID,
    SIGBUS,
    T0,
    Out,
    aio_complete,
    aio_wake,
    anon_lock,
    block,
    close,
    copy,
    correlate,
    ev,
    fault,
    fault_ret,
    read,
    woken,
    writeprotect,
)


def test_sigbus_is_informational() -> None:
    out, corr = correlate([fault(0), fault_ret(0.1, ret=SIGBUS)], "kprobe")
    assert out.raised() == ["sigbus"] and not counts_as_failure(out.flags[0].name) and corr.flags.counts.failing == 0
    assert [lc.state for lc in out.lifecycles] == ["sigbus"]


def aio_work(at: float, began: float, on_queue: bool, completed: bool = False) -> Event:
    """kprobe mode's completion work, recorded as it returns."""
    return ev(Kind.AIO_POLL_WORK, at, OTHER, ctx=CTX, addr=0x5000, aux=0x1234, len=int((at - began) * MS),
              flags=int(on_queue), ret=int(completed))


PAGE2 = PAGE + 0x1000


def test_aio_poll_stuck_kprobe_names_the_fault_queued_while_the_request_was_off_the_queue() -> None:
    """363bee27e258's race: a wake-up took the request off the uffd's queue,
    its work found nothing (a drain had read the message) and put it back; a
    fault queued in between woke nothing and waits unread beside the pending
    poll. The flag is the fault's, and replaces unread/never_woken."""
    lost = [aio_wake(0), aio_work(1.0, began=0.2, on_queue=False), fault(0.6, tid=OTHER, page=PAGE2)]
    out, _ = correlate(lost, "kprobe", ticks=[500, 1700], tasks={OTHER: "uffd"})
    assert out.raised() == ["aio_poll_stuck"], out.raised()
    flag = out.flags[0]
    assert (flag.tid, flag.addr, flag.verdict) == (OTHER, PAGE2, "not_read")
    said = " | ".join(e.what for e in flag.evidence)
    assert "queued while the poll request was off the uffd's waitqueue" in said and "363bee27e258" in said, said
    assert "IOCB_CMD_POLL (aio_data 0x1234) on its uffd is not completed" in said, said


def test_aio_poll_stuck_kprobe_only_beside_a_pending_poll_and_an_unread_fault() -> None:
    # Completed: the fault waits unread for another reason.
    out, _ = correlate([aio_wake(0), fault(0.6, tid=OTHER, page=PAGE2), aio_complete(0.8)], "kprobe",
                       ticks=[500, 1700], tasks={OTHER: "uffd"})
    assert "aio_poll_stuck" not in out.raised() and "unread" in out.raised()
    # Woken, the work found nothing (a drain read the message) and nothing
    # else was queued: the request rightly waits. (The rule before this one
    # flagged every woken request that did not complete.)
    drained = [fault(0), aio_wake(0.01), read(0.1), copy(0.2), woken(0.2),
               aio_work(1.0, began=0.2, on_queue=False)]
    out, _ = correlate(drained, "kprobe", ticks=[500, 1700, 3000])
    assert not out.flags
    # The stock kernel keeps the request queued: a fault in the work's span is
    # no lost wake-up; with the poll pending and the message unread past
    # --stuck-ms, the flag still stands (the kernel should have completed it).
    out, _ = correlate([aio_wake(0), aio_work(1.0, began=0.2, on_queue=True), fault(0.6, tid=OTHER, page=PAGE2)],
                       "kprobe", ticks=[1700], tasks={OTHER: "uffd"})
    assert out.raised() == ["aio_poll_stuck"]
    assert not any("off the uffd's waitqueue" in e.what for e in out.flags[0].evidence)
    # The kernel says the thread no longer waits: nobody is accused.
    out, _ = correlate([aio_wake(0), fault(0.6, tid=OTHER, page=PAGE2)], "kprobe", ticks=[1700, 1800],
                       tasks={OTHER: "other"})
    assert "aio_poll_stuck" not in out.raised()
    out, _ = correlate([aio_wake(0, ret=0), fault(0.6, tid=OTHER, page=PAGE2)], "kprobe", ticks=[1700],
                       tasks={OTHER: "uffd"})
    assert "aio_poll_stuck" not in out.raised()  # a wake-up the request did not ask for


def test_aio_poll_stuck_tracepoint_while_the_submitter_sleeps_in_io_getevents() -> None:
    submit = ev(Kind.AIO_POLL_SUBMIT, 0, HANDLER, addr=0x5000, aux=0x1234, flags=1)
    done = ev(Kind.AIO_COMPLETE, 3, HANDLER, ctx=CTX, addr=0x5000, aux=0x1234, ret=1)
    out, _ = correlate([submit, fault(1), block(1.01)], "tracepoint", ticks=[1500],
                       tasks={FAULTER: "uffd", HANDLER: "aio"})
    assert out.raised() == ["aio_poll_stuck"]
    assert f"tid {HANDLER} sleeps in io_getevents" in out.flags[0].evidence[-1].what
    # The handler is busy elsewhere: the poll may be completed and not yet collected.
    out, _ = correlate([submit, fault(1), block(1.01)], "tracepoint", ticks=[1500],
                       tasks={FAULTER: "uffd", HANDLER: "other"})
    assert "aio_poll_stuck" not in out.raised() and "unread" in out.raised()
    out, _ = correlate([submit, fault(1), block(1.01), done, read(4), woken(5), copy(6)], "tracepoint",
                       ticks=[1500])
    assert not out.flags
    out, _ = correlate([submit], "tracepoint", ticks=[1500])
    assert not out.flags  # nothing to read: the poll rightly waits


def test_a_walk_that_kept_the_anon_vma_its_folio_left_is_anon_vma_stale() -> None:
    """880a99b60d46's re-check undone: the walk returned holding an anon_vma
    that is no longer the folio's (kprobe mode reads folio->mapping as the
    lock function returns); the flag names the UFFDIO_MOVE around it."""
    move = ev(Kind.RESOLVE, 2, HANDLER, op=Op.MOVE, len=4096, aux=4096)
    stale = ev(Kind.ANON_VMA_LOCK, 1, OTHER, ctx=3, ret=1, flags=1, aux=0, len=60_000, addr=0xA000, mode=1)
    out, corr = correlate([stale, move], "kprobe")
    assert out.raised() == ["anon_vma_stale"] and corr.rmap.counts()["stale"] == 1
    said = [e.what for e in out.flags[0].evidence]
    assert "holding anon_vma 0xa000" in said[0] and "880a99b60d46" in said[0], said
    assert [(e.what, e.tid) for e in out.flags[0].evidence[1:]] == [
        (f"concurrent UFFDIO_MOVE: a UFFDIO_MOVE by tid {HANDLER} returned within 10 ms of the walk, the nearest "
         "1000 us after it", HANDLER)]
    out, _ = correlate([ev(Kind.ANON_VMA_LOCK, 1, OTHER, ctx=3, ret=1, flags=1, addr=0xA000), move], "kprobe")
    assert not out.flags  # the folio's own anon_vma
    # A mover returns hundreds of moves before the walk is judged: the ones around it are still named.
    moves = [ev(Kind.RESOLVE, 0.5 + i * 0.05, HANDLER, op=Op.MOVE, len=4096, aux=4096) for i in range(400)]
    out, _ = correlate([*moves[:20], stale, *moves[20:]], "kprobe", ticks=[30])
    [named] = [e.what for e in out.flags[0].evidence if e.what.startswith("concurrent UFFDIO_MOVE")]
    n = sum(1 for m in moves if m.ts_ns - T0 <= 11 * MS)
    assert f"{n} UFFDIO_MOVEs by tid {HANDLER}" in named and "the nearest during the walk" in named, named


def test_a_single_anon_vma_retry_is_counted_not_flagged() -> None:
    """One retry after a UFFDIO_MOVE is the v6.8 recheck doing its job."""
    move = ev(Kind.RESOLVE, 0, HANDLER, op=Op.MOVE, len=4096, aux=4096)
    out, corr = correlate([move, anon_lock(1, retries=1), anon_lock(30, retries=2)], "kprobe")
    assert not out.flags
    assert corr.rmap.counts() == {"walks": 2, "retries": 3, "stale": 0}
    contended = ev(Kind.ANON_VMA_LOCK, 1, OTHER, ctx=3, ret=-1)  # tracepoint mode: retries unknown
    out, corr = correlate([contended], "tracepoint")
    assert not out.flags and corr.rmap.counts() == {"walks": 1, "retries": 0, "stale": 0}


def test_anon_vma_retry_loop_flagged_once_with_its_moves() -> None:
    """More than --retry-threshold retries for one folio, over walks within
    the move window of each other: one flag, every walk and the move named."""
    move = ev(Kind.RESOLVE, 0, HANDLER, op=Op.MOVE, len=4096, aux=4096)
    walks = [anon_lock(1, retries=2), anon_lock(3, retries=1), anon_lock(5, retries=1), anon_lock(7, retries=3)]
    out, _ = correlate([move, *walks], "kprobe")
    assert out.raised() == ["anon_vma_retry"]
    [flag] = out.flags
    assert flag.ts_ns == T0 + 5 * MS  # the walk that crossed the threshold (3)
    whats = [e.what for e in flag.evidence]
    assert sum("folio_lock_anon_vma_read" in w for w in whats) == 3 and "4 retries for one folio in 3 walk(s)" in \
        whats[3], whats
    assert any(e.what.startswith("concurrent UFFDIO_MOVE: a UFFDIO_MOVE by tid") and e.tid == HANDLER
               for e in flag.evidence), whats
    out, _ = correlate([move, *walks], "kprobe", retry_threshold=10)
    assert not out.flags
    apart = [anon_lock(i * 20, retries=2) for i in range(5)]  # farther apart than the window: no loop
    out, _ = correlate(apart, "kprobe")
    assert not out.flags


def test_anon_vma_retry_names_a_move_that_returned_after_it() -> None:
    """A UFFDIO_MOVE of many pages changes the folio's anon_vma early and
    returns later: the walks are judged once the move window has passed, so
    that move is in the loop's evidence, and the flag keeps the walk's own time."""
    late_move = ev(Kind.RESOLVE, 4, HANDLER, op=Op.MOVE, len=64 * 4096, aux=64 * 4096)
    out, _ = correlate([anon_lock(1, retries=4), late_move], "kprobe", ticks=[2, 5, 20])
    assert out.raised() == ["anon_vma_retry"]
    assert out.flags[0].ts_ns == T0 + 1 * MS
    assert [e.tid for e in out.flags[0].evidence[2:]] == [HANDLER]
    assert out.flags[0].evidence[2].what.endswith("the nearest 3000 us after it"), out.flags[0].evidence[2]


def test_fault_blocked_before_tracing_began() -> None:
    out = Out()
    corr = Correlator(out, Thresholds(), sees_returns=True)
    corr.add_blocked(BlockedThread(PID, FAULTER, "wl", since_ns=T0 - 5000 * MS))
    corr.advance(T0)
    assert out.raised() == ["never_woken"] and out.flags[0].addr is None
    assert out.flags[0].blocked_ns == 5000 * MS
    corr.feed([woken(10), copy(10.1)])  # the wake-up tells the page
    corr.advance(T0 + 200 * MS)
    corr.finish(T0 + 300 * MS)
    [lc] = out.lifecycles
    assert lc.page == PAGE and lc.t_raised is None and not lc.start_known and lc.state == "woken"
    assert lc.to_json()["t_raised_ns"] is None


def test_a_thread_that_exited_ends_cleanly() -> None:
    seq = [fault(0), block(0.01), read(0.1)]
    out, _ = correlate(seq, "tracepoint", ticks=[1500], tasks={FAULTER: "gone"})
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["exited"]


def test_kernel_says_not_waiting_is_not_stuck() -> None:
    """A wake-up we did not see (a signal): no never_woken, and it ends."""
    seq = [fault(0), block(0.01), read(0.1)]
    out, _ = correlate(seq, "tracepoint", ticks=[1500, 1700], end=1700, tasks={FAULTER: "other"})
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["returned"]


def test_tracepoint_fault_that_never_waited_is_not_flagged() -> None:
    """A fault in a registered range whose page arrived first never enters
    handle_userfault's wait: no sleep, no message, no wake-up."""
    out, _ = correlate([fault(0), copy(0.5, tid=OTHER)], "tracepoint", ticks=[200, 2000])
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["returned"]


def test_late_read_record_still_counts() -> None:
    """A reader preempted between copying the message out and returning is
    recorded after the fault ended; it still belongs to it."""
    seq = [fault(0), woken(0.2, waker=OTHER), fault_ret(0.25), copy(0.3, tid=OTHER), read(5, tid=HANDLER)]
    out, corr = correlate(seq, "kprobe", ticks=[1, 10, 200])
    [lc] = out.lifecycles
    assert lc.reads == 1 and corr.counters.unmatched_reads == 0


def test_open_lifecycles_are_bounded() -> None:
    out = Out()
    corr = Correlator(out, Thresholds(), sees_returns=True, max_open=10)
    corr.feed([fault(i * 0.01, tid=1000 + i) for i in range(25)])
    corr.advance(T0 + 1 * MS)
    assert len(corr.open) == 10 and corr.counters.evicted == 15
    assert {lc.tid for lc in corr.open.values()} == set(range(1015, 1025))


def test_flag_json_shape() -> None:
    out, _ = correlate([fault(0)], "kprobe", ticks=[1200], end=1200)
    j = out.flags[0].to_json()
    assert {"type", "flag", "tid", "addr", "blocked_ms", "evidence"} <= j.keys()
    assert j["type"] == "flag" and j["blocked_ms"] == 1200.0 and j["evidence"][0]["ts_ns"] == T0


@pytest.mark.parametrize("mode", MODES)
def test_waker_record_after_the_thread_moved_on(mode: str) -> None:
    """Under load the woken thread returns and faults its next page before
    the handler's UFFDIO_COPY returns (300 ms later here, beyond --wake-ms):
    the copy still belongs to the first fault."""
    nxt = PAGE + 4096
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else []) + [read(0.1), woken(0.2)]
    seq += [fault_ret(0.25)] if mode == "kprobe" else []
    # The next page is served by another handler meanwhile.
    seq += [fault(0.3, page=nxt)] + ([block(0.31)] if mode == "tracepoint" else [])
    seq += [read(0.4, tid=OTHER, page=nxt), woken(0.5, waker=OTHER, page=nxt)]
    seq += [fault_ret(0.55, page=nxt)] if mode == "kprobe" else []
    seq += [copy(0.6, tid=OTHER, page=nxt), copy(300)]
    out, corr = correlate(seq, mode, ticks=[0.5, 150, 250, 350, 600])
    first, second = sorted(out.lifecycles, key=lambda lc: lc.page or 0)
    assert first.page == PAGE and first.resolve is not None and first.resolve.op == "copy"
    assert first.rounds == 1 and second.page == nxt and second.resolve is not None
    assert not out.flags and corr.counters.unmatched_reads == 0


@pytest.mark.parametrize("mode", MODES)
def test_messages_without_thread_id_match_by_page(mode: str) -> None:
    """Without UFFD_FEATURE_THREAD_ID a message names no thread: two threads
    waiting on one page get one read each."""
    other = FAULTER + 1
    seq = [fault(0), fault(0.05, tid=other)]
    seq += [block(0.01), block(0.06, tid=other)] if mode == "tracepoint" else []
    seq += [read(0.1, peer=0), read(0.15, peer=0), woken(0.2), woken(0.21, peer=other)]
    seq += [fault_ret(0.25), fault_ret(0.26, tid=other)] if mode == "kprobe" else []
    seq += [copy(0.3)]
    out, corr = correlate(seq, mode, ticks=[1, 500])
    assert sorted((lc.tid, lc.reads) for lc in out.lifecycles) == [(FAULTER, 1), (other, 1)]
    assert not out.flags and corr.counters.unmatched_reads == 0


@pytest.mark.parametrize("mode", MODES)
def test_writeprotect_does_not_resolve_a_missing_fault(mode: str) -> None:
    """uffd-stress: a handler lifts write protection over a range while another
    thread waits there for a missing page. That is no resolution of it (the
    old rule called it one, and raised missed_wakeup when no wake-up came)."""
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    seq += [read(0.1), writeprotect(0.2), copy(300), woken(300.1)]
    seq += [fault_ret(300.2)] if mode == "kprobe" else []
    out, _ = correlate(seq, mode, ticks=[150, 250, 400])
    assert not out.flags
    [lc] = out.lifecycles
    assert lc.resolve is not None and lc.resolve.op == "copy" and [a.op for a in lc.attempts] == ["copy"]


def test_write_protect_fault_is_lifted_by_writeprotect_only() -> None:
    """Tracepoint mode reads the reason from the x86 error code: a write to a
    present page is a write-protect fault; a copy over it brings nothing."""
    wp_fault = ev(Kind.FAULT, 0, FAULTER, flags=0x1 | 0x2 | 0x4)
    seq = [wp_fault, block(0.01), read(0.1, flags=PAGEFAULT_FLAG_WP), copy(0.2, tid=OTHER, ret=EEXIST),
           writeprotect(0.3, HANDLER), woken(0.31)]
    out, _ = correlate(seq, "tracepoint", ticks=[200])
    [lc] = out.lifecycles
    assert not out.flags and lc.reason == "wp" and lc.reads == 1
    assert lc.resolve is not None and lc.resolve.op == "writeprotect"
    assert [a.op for a in lc.attempts] == ["writeprotect"]
    # Protecting (MODE_WP) resolves nothing, whatever the fault.
    out, _ = correlate([wp_fault, block(0.01), read(0.1), writeprotect(0.3, HANDLER, protect=True)], "tracepoint",
                       ticks=[200], end=200)
    assert [lc.resolve for lc in out.lifecycles] == [None] and not out.flags


@pytest.mark.parametrize("peer", [0, FAULTER], ids=["by_page", "thread_id"])
def test_a_missing_message_is_not_a_write_fault_s_on_a_present_page(peer: int) -> None:
    """tests/workloads/gup_fault: a copy-on-write fault (a write to a
    present page: the error code says write-protect) needs no handler; the
    thread then faults the page through get_user_pages, which tracepoint mode
    does not see, and waits there. That message (missing) is not the write
    fault's: counted unmatched, and the thread's next write fault on the
    page is no second round of it (it made a false retry_loop)."""
    cow = [ev(Kind.FAULT, at, FAULTER, flags=0x1 | 0x2 | 0x4) for at in (0, 10, 20)]
    seq = [cow[0], read(5, peer=peer), copy(5.1), cow[1], read(15, peer=peer), copy(15.1), cow[2]]
    out, corr = correlate(seq, "tracepoint", ticks=[1, 6, 12, 16, 300])
    assert not out.flags and corr.counters.unmatched_reads == 2
    assert all(lc.reads == 0 and lc.rounds == 1 for lc in out.lifecycles)


def test_tracepoint_reason_minor_on_a_uffd_registered_for_minor_faults() -> None:
    register = ev(Kind.UFFD_REGISTER, -1, HANDLER, op=Op.REGISTER, mode=0x4, len=1 << 20)
    cont = ev(Kind.RESOLVE, 0.2, HANDLER, op=Op.CONTINUE, len=4096)
    out, _ = correlate([register, fault(0), block(0.01), read(0.1), cont, woken(0.19, HANDLER)], "tracepoint")
    [lc] = out.lifecycles
    assert lc.reason == "minor" and lc.resolve is not None and lc.resolve.op == "continue" and not out.flags


@pytest.mark.parametrize("mode", MODES)
def test_absence_flags_need_the_kernel_to_show_the_thread_still_on_the_page(mode: str) -> None:
    """Resolved, and no wake-up record: missed_wakeup only if the kernel's
    per-thread fault state still holds this page and wchan says it waits."""
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else []) + [read(0.1), copy(0.2)]
    # The wake-up record was lost: the thread already faults on another page.
    out, _ = correlate(seq, mode, ticks=[150, 300], end=300, tasks={FAULTER: "uffd"},
                       faults={FAULTER: PAGE + 0x5000})
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["returned"]
    assert "woken unseen" in out.lifecycles[0].history[-1].what
    # It left handle_userfault: not stuck either.
    out, _ = correlate(seq, mode, ticks=[150, 300], end=300, tasks={FAULTER: "other"}, faults={FAULTER: PAGE})
    assert not out.flags and [lc.state for lc in out.lifecycles] == ["returned"]
    # Still there, on this page: the kernel did lose the wake-up.
    out, _ = correlate(seq, mode, ticks=[150], end=150, tasks={FAULTER: "uffd"}, faults={FAULTER: PAGE | 0x123})
    assert out.raised() == ["missed_wakeup"]


@pytest.mark.parametrize("mode", MODES)
def test_a_flag_says_when_records_were_lost_while_the_thread_waited(mode: str) -> None:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    out, _ = correlate(seq, mode, ticks=[500, 1200], end=1200, lost={500: 7})
    assert out.raised() == ["unread", "never_woken"]
    assert all("7 records were lost while it waited" in f.evidence[-1].what for f in out.flags if not f.update)
    # Records lost before the fault began do not cast doubt on it.
    out, _ = correlate([fault(100)] + ([block(100.01)] if mode == "tracepoint" else []), mode,
                       ticks=[0, 700, 1300], end=1300, lost={0: 7})
    assert out.raised() == ["unread", "never_woken"]
    assert not any("lost" in e.what for f in out.flags for e in f.evidence)


def test_release_is_flagged_on_the_closers_wake_only() -> None:
    """kprobe mode: a lifecycle that only looks open at the release (its
    return record was lost) is not accused; the release's wake-up is proof."""
    out, _ = correlate([fault(0), read(0.1), close(50)], "kprobe", ticks=[40, 100], end=100)
    assert "released_with_waiters" not in out.raised()


@pytest.mark.parametrize(("length", "expected"), [(4096, {0}), (3 * 4096, {0, 1, 2}), (200 * 4096, {0, 1, 2, 3, 100}),
                                                  (1, {0})])
def test_a_copy_reaches_every_waiter_in_its_range_and_no_other(length: int, expected: set[int]) -> None:
    """Open lifecycles are found through their (uffd, page) index, or by a
    scan when the range is long; a waiter on another uffd is never touched."""
    pages = [0, 1, 2, 3, 100]
    seq = [fault(0.01 * i, tid=1000 + p, page=PAGE + p * 4096) for i, p in enumerate(pages)]
    seq.append(ev(Kind.FAULT, 0.1, 2000, addr=PAGE, mode=0x200, ctx=CTX + 1))
    seq.append(ev(Kind.RESOLVE, 1, HANDLER, op=Op.COPY, addr=PAGE, len=length, ret=0, aux=length or 4096))
    out, _ = correlate(seq, "kprobe", end=2)
    assert len(out.lifecycles) == len(pages) + 1
    assert {(lc.page - PAGE) // 4096 for lc in out.lifecycles if lc.resolve is not None and lc.uffd == CTX} == expected
    assert all(lc.resolve is None for lc in out.lifecycles if lc.uffd != CTX)


def test_a_fault_the_unregister_did_not_wake_says_so() -> None:
    """A fault raised while its range was unregistered, queued after the
    unregister's wake-up, waits on: the flag that confirms it waits (or the
    release that wakes it at last) names the unregister. A fault raised
    after the unregister, or woken by it, is not said to have missed it."""
    missed = f"its range was unregistered by tid {HANDLER} after it was raised, and that did not wake it"
    unregister = ev(Kind.UFFD_REGISTER, 0.5, HANDLER, op=Op.UNREGISTER, addr=PAGE, len=2 * 0x1000)
    seq = [fault(0), block(0.01), unregister, fault(0.6, tid=OTHER, page=PAGE + 0x1000), block(0.61, tid=OTHER)]
    out, _ = correlate(seq, "tracepoint", ticks=[40, 1200, 1300], end=1300, tasks={FAULTER: "uffd", OTHER: "uffd"})
    evidence = {f.tid: [e.what for e in f.evidence] for f in out.flags}
    assert missed in evidence[FAULTER] and missed not in evidence[OTHER], evidence
    # Woken at last by the release: the release's flag names the unregister too.
    out, _ = correlate([fault(0), block(0.01), unregister, close(50), woken(50.1)], "tracepoint", ticks=[40, 100])
    [flag] = out.flags
    assert flag.name == "released_with_waiters" and missed in [e.what for e in flag.evidence]
    # Woken by the unregister itself: closed as unregistered, nothing flagged.
    out, _ = correlate([fault(0), block(0.01), woken(0.4), unregister], "tracepoint", ticks=[40, 100])
    [lc] = out.lifecycles
    assert lc.state == "unregistered" and not out.flags


def test_a_fault_after_its_range_is_registered_again_is_a_new_lifecycle() -> None:
    """The same thread faulting the same page again after an unresolved
    wake-up is a new round of its lifecycle, unless the range was registered
    anew in between (unmapped and mapped again at the same address, say):
    then it is a fault of its own, not a retry."""
    register = ev(Kind.UFFD_REGISTER, 5, HANDLER, op=Op.REGISTER, addr=PAGE, len=0x1000, mode=0x1)
    def wake(at: float) -> Event:
        return ev(Kind.RESOLVE, at, HANDLER, op=Op.WAKE, addr=PAGE, len=0x1000)

    first = [fault(0), block(0.01), read(0.1), woken(1.0), wake(1.1)]
    again = [fault(6), block(6.01), read(6.1), woken(7), wake(7.1)]
    out, _ = correlate([*first, register, *again], "tracepoint", ticks=[3, 100], end=100)
    assert len(out.lifecycles) == 2 and not out.flags, out.flags
    out, _ = correlate([*first, *again], "tracepoint", ticks=[3, 100], end=100)
    assert len(out.lifecycles) == 1 and out.raised() == ["retry_loop"]
    # Kprobe mode: a fault that returned (VM_FAULT_RETRY after an unresolved
    # wake-up) comes back as a round, unless its range was registered anew.
    first = [fault(0), read(0.1), woken(1.0), wake(1.1), fault_ret(1.2)]
    again = [fault(6), read(6.1), woken(7), wake(7.1), fault_ret(7.2)]
    out, _ = correlate([*first, register, *again], "kprobe", ticks=[3, 100], end=100)
    assert [lc.rounds for lc in out.lifecycles] == [1, 1], [lc.history for lc in out.lifecycles]
    out, _ = correlate([*first, *again], "kprobe", ticks=[3, 100], end=100)
    assert [lc.rounds for lc in out.lifecycles] == [2]
