"""Correlator and rules on synthetic event sequences (no kernel).

Each sequence mirrors what the probes really record, in both modes: kprobe
mode sees handle_userfault entry/return; tracepoint mode sees the exception,
the sleep (block) and the wake-up. Resolving ioctls are recorded when they
return, after the wake-ups they did. These tests complement the live tiers,
which run the same scenarios on real kernels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from uffdtrace.analysis.correlator import Correlator
from uffdtrace.analysis.folded import REFAULT_NOTE
from uffdtrace.analysis.model import Flag, Lifecycle
from uffdtrace.analysis.rules import Thresholds, counts_as_failure
from uffdtrace.events import FOLD_CLOSER, FOLD_REFAULT, Event, Kind, Op
from uffdtrace.source import BlockedThread, TaskState

MS = 1_000_000
T0 = 1_000 * MS
PAGE = 0x7F0000001000
CTX = 1
PID, FAULTER, HANDLER, OTHER = 100, 101, 100, 102
RETRY, SIGBUS = 0x400, 0x2
EEXIST = -17


def ev(kind: Kind, at_ms: float, tid: int, **kw: Any) -> Event:
    fields: dict[str, Any] = {"ts_ns": T0 + int(at_ms * MS), "kind": kind, "cpu": kw.pop("cpu", 0), "tgid": PID,
                              "tid": tid, "comm": "wl", "ctx": CTX, "addr": PAGE, "len": 0, "flags": 0, "mode": 0,
                              "ret": 0, "peer_tid": 0, "op": 0, "aux": 0}
    fields.update(kw)
    return Event(**fields)


def fault(at: float, tid: int = FAULTER, page: int = PAGE) -> Event:
    return ev(Kind.FAULT, at, tid, addr=page, mode=0x200)


def fault_ret(at: float, tid: int = FAULTER, ret: int = RETRY, page: int = PAGE) -> Event:
    return ev(Kind.FAULT_RET, at, tid, addr=page, ret=ret)


def block(at: float, tid: int = FAULTER) -> Event:
    return ev(Kind.BLOCK, at, tid)


def read(at: float, peer: int = FAULTER, tid: int = HANDLER, page: int = PAGE) -> Event:
    return ev(Kind.READ_MSG, at, tid, addr=page, mode=0x12, peer_tid=peer, ret=32)


def copy(at: float, tid: int = HANDLER, ret: int = 0, dontwake: bool = False, page: int = PAGE) -> Event:
    return ev(Kind.RESOLVE, at, tid, op=Op.COPY, addr=page, len=4096, mode=int(dontwake), ret=ret,
              aux=4096 if ret == 0 else ret & (2**64 - 1))


def uffdio_wake(at: float, tid: int = HANDLER) -> Event:
    return ev(Kind.RESOLVE, at, tid, op=Op.WAKE, len=4096)


def woken(at: float, waker: int = HANDLER, peer: int = FAULTER, page: int = PAGE) -> Event:
    return ev(Kind.WAKE_TASK, at, waker, peer_tid=peer, addr=page, ret=1)


def close(at: float, tid: int = HANDLER) -> Event:
    return ev(Kind.UFFD_CLOSE, at, tid, addr=0)


@dataclass
class Out:
    lifecycles: list[Lifecycle] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    def lifecycle(self, lc: Lifecycle) -> None:
        self.lifecycles.append(lc)

    def flag(self, flag: Flag) -> None:
        self.flags.append(flag)

    def raised(self) -> list[str]:
        return [f.name for f in self.flags if not f.update]


def correlate(events: list[Event], mode: str, ticks: list[float] = (), end: float | None = None,
              tasks: dict[int, TaskState] | None = None, faults: dict[int, int] | None = None,
              lost: dict[float, int] | None = None, folded: list[Event] | None = None,
              **th: Any) -> tuple[Out, Correlator]:
    """Feed the events (in the given delivery order), tick at ``ticks`` (ms),
    and finish at ``end`` (ms, default: 1 s after the last event). ``tasks``
    and ``faults`` stand for the kernel's view of each thread (wchan, and
    the page of its in-kernel fault state); ``lost`` the source's count of
    lost records as of a tick; ``folded`` the faults the kernel is folding
    (tracepoint mode), a list the caller may change between runs."""
    out = Out()
    corr = Correlator(out, Thresholds(**th), sees_returns=mode == "kprobe",
                      tasks=(lambda _p, t: tasks.get(t)) if tasks is not None else None,
                      faults=faults.get if faults is not None else None,
                      folded=(lambda _handed: list(folded)) if folded is not None else None)
    corr.feed(list(events))
    for at in ticks:
        corr.advance(T0 + int(at * MS))
        if lost and at in lost:
            corr.note_lost(lost[at])
    last = max(e.ts_ns for e in events) if events else T0
    corr.finish(T0 + int(end * MS) if end is not None else last + 1000 * MS)
    return out, corr


def clean(mode: str, page: int = PAGE, at: float = 0.0, faulter: int = FAULTER) -> list[Event]:
    """One fault resolved by UFFDIO_COPY, as each mode records it."""
    seq = [fault(at, faulter, page)]
    if mode == "tracepoint":
        seq.append(block(at + 0.01, faulter))
    seq += [read(at + 0.1, faulter, page=page), woken(at + 0.2, peer=faulter, page=page)]
    if mode == "kprobe":
        seq.append(fault_ret(at + 0.25, faulter, page=page))
    seq.append(copy(at + 0.3, page=page))
    return seq


MODES = ["kprobe", "tracepoint"]


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


def dontwake_stall(mode: str, wake_at: float) -> list[Event]:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    seq += [read(0.1), copy(0.2, dontwake=True), woken(wake_at), uffdio_wake(wake_at + 0.1)]
    return seq + ([fault_ret(wake_at + 0.05)] if mode == "kprobe" else [])


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


def eexist_race(mode: str, *, handler_wakes: bool, winner_wakes: bool = False) -> list[Event]:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    seq += [read(0.1), copy(0.2, tid=OTHER, dontwake=not winner_wakes)]
    if winner_wakes:
        seq.append(woken(0.15, waker=OTHER))
    seq.append(copy(0.3, ret=EEXIST))
    if handler_wakes:
        seq += [woken(0.4), uffdio_wake(0.5)]
    if handler_wakes or winner_wakes:
        seq += [fault_ret(0.45)] if mode == "kprobe" else []
    return seq


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


COPIER = FAULTER + 7


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


def retry(mode: str, wakes: int) -> list[Event]:
    """UFFDIO_WAKE without resolving ``wakes`` times, then UFFDIO_COPY."""
    seq: list[Event] = []
    t = 0.0
    for i in range(wakes + 1):
        if mode == "kprobe" or i == 0:
            seq.append(fault(t))
        if mode == "tracepoint":
            seq.append(block(t + 0.01))
        seq.append(read(t + 0.1))
        seq.append(woken(t + 0.2))
        if i < wakes:
            seq.append(uffdio_wake(t + 0.3))
            seq += [fault_ret(t + 0.25)] if mode == "kprobe" else []
        else:
            seq.append(copy(t + 0.3))
            seq += [fault_ret(t + 0.35)] if mode == "kprobe" else []
        t += 1.0
    return seq


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


def test_close_after_the_fault_ended_is_clean() -> None:
    out, _ = correlate([*clean("kprobe"), close(5)], "kprobe", ticks=[1, 10])
    assert not out.flags


def test_sigbus_is_informational() -> None:
    out, corr = correlate([fault(0), fault_ret(0.1, ret=SIGBUS)], "kprobe")
    assert out.raised() == ["sigbus"] and not counts_as_failure(out.flags[0].name) and corr.flags.counts.failing == 0
    assert [lc.state for lc in out.lifecycles] == ["sigbus"]


def aio_wake(at: float, ret: int = 1) -> Event:
    """kprobe mode's aio records: ctx the polled uffd, addr the user iocb, aux aio_data."""
    return ev(Kind.AIO_POLL_WAKE, at, FAULTER, ctx=CTX, addr=0x5000, aux=0x1234, mode=1, flags=1, ret=ret)


def aio_complete(at: float) -> Event:
    return ev(Kind.AIO_COMPLETE, at, HANDLER, ctx=CTX, addr=0x5000, aux=0x1234, ret=1)


def test_aio_poll_stuck_kprobe() -> None:
    out, _ = correlate([aio_wake(0)], "kprobe", ticks=[500, 1500])
    assert out.raised() == ["aio_poll_stuck"] and (out.flags[0].uffd, out.flags[0].addr) == (CTX, 0x5000)
    out, _ = correlate([aio_wake(0), aio_complete(2)], "kprobe", ticks=[500, 1500])
    assert not out.flags
    out, _ = correlate([aio_wake(0, ret=0)], "kprobe", ticks=[1500])
    assert not out.flags  # a wake-up the request did not ask for


def test_aio_poll_stuck_tracepoint_when_the_uffd_became_readable() -> None:
    submit = ev(Kind.AIO_POLL_SUBMIT, 0, HANDLER, addr=0x5000, aux=0x1234, flags=1)
    done = ev(Kind.AIO_COMPLETE, 3, HANDLER, ctx=CTX, addr=0x5000, aux=0x1234, ret=1)
    out, _ = correlate([submit, fault(1), block(1.01)], "tracepoint", ticks=[1500])
    assert "aio_poll_stuck" in out.raised()
    out, _ = correlate([submit, fault(1), block(1.01), done, read(4), woken(5), copy(6)], "tracepoint",
                       ticks=[1500])
    assert not out.flags
    out, _ = correlate([submit], "tracepoint", ticks=[1500])
    assert not out.flags  # nothing to read: the poll rightly waits


def anon_lock(at: float, retries: int) -> Event:
    return ev(Kind.ANON_VMA_LOCK, at, OTHER, ctx=3, ret=1, flags=retries + 1, aux=retries, len=50_000)


def test_anon_vma_retry_with_concurrent_move() -> None:
    move = ev(Kind.RESOLVE, 0, HANDLER, op=Op.MOVE, len=4096, aux=4096)
    out, _ = correlate([move, anon_lock(1, retries=2)], "kprobe")
    assert out.raised() == ["anon_vma_retry"]
    assert any("UFFDIO_MOVE" in e.what for e in out.flags[0].evidence)
    out, _ = correlate([move, anon_lock(1, retries=0)], "kprobe")
    assert not out.flags
    contended = ev(Kind.ANON_VMA_LOCK, 1, OTHER, ctx=3, ret=-1)  # tracepoint mode: retries unknown
    out, _ = correlate([contended], "tracepoint")
    assert not out.flags


def test_anon_vma_retry_names_a_move_that_returned_after_it() -> None:
    """A UFFDIO_MOVE of many pages changes the folio's anon_vma early and
    returns later: the retry is judged once the move window has passed, so
    that move is in its evidence, and the flag keeps the retry's own time."""
    late_move = ev(Kind.RESOLVE, 4, HANDLER, op=Op.MOVE, len=64 * 4096, aux=64 * 4096)
    out, _ = correlate([anon_lock(1, retries=1), late_move], "kprobe", ticks=[2, 5, 20])
    assert out.raised() == ["anon_vma_retry"]
    assert out.flags[0].ts_ns == T0 + 1 * MS
    assert [(e.what, e.tid) for e in out.flags[0].evidence[1:]] == [("concurrent UFFDIO_MOVE returned", HANDLER)]


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


def writeprotect(at: float, tid: int = OTHER, protect: bool = False, dontwake: bool = False) -> Event:
    return ev(Kind.RESOLVE, at, tid, op=Op.WRITEPROTECT, len=4096, mode=int(protect) | (int(dontwake) << 1))


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
    seq = [wp_fault, block(0.01), read(0.1), copy(0.2, tid=OTHER, ret=EEXIST), writeprotect(0.3, HANDLER),
           woken(0.31)]
    out, _ = correlate(seq, "tracepoint", ticks=[200])
    [lc] = out.lifecycles
    assert not out.flags and lc.reason == "wp"
    assert lc.resolve is not None and lc.resolve.op == "writeprotect"
    assert [a.op for a in lc.attempts] == ["writeprotect"]
    # Protecting (MODE_WP) resolves nothing, whatever the fault.
    out, _ = correlate([wp_fault, block(0.01), read(0.1), writeprotect(0.3, HANDLER, protect=True)], "tracepoint",
                       ticks=[200], end=200)
    assert [lc.resolve for lc in out.lifecycles] == [None] and not out.flags


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


# -- faults folded in the kernel (tracepoint mode without --events) ------------

def folded(kind: Kind, at: float, *, slept: float | None = 0.01, read_at: float | None = 0.1,
           woken_at: float | None = 0.2, op: int = Op.COPY, tid: int = FAULTER, page: int = PAGE,
           raised: float = 0.0, bits: int = 0, reads: int | None = None) -> Event:
    """A LIFECYCLE or FAULT_STATE record as bpf/tracepoint.c sends it."""
    def ns(ms: float | None) -> int:
        return 0 if ms is None else T0 + int(ms * MS)

    return ev(kind, at, tid, addr=page, len=ns(raised), flags=0x6, mode=ns(slept), ret=ns(woken_at),
              aux=ns(read_at), peer_tid=HANDLER if read_at is not None else 0,
              peer2_tid=HANDLER if woken_at is not None else 0,
              count=(1 if read_at is not None else 0) if reads is None else reads,
              op=(op if kind == Kind.LIFECYCLE else 0) | bits)


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
    seq = [close(50), folded(Kind.FAULT_STATE, 50.1, woken_at=50.1, bits=FOLD_CLOSER)]
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
                        bits=FOLD_REFAULT)]
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
