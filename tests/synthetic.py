"""Synthetic event sequences for the correlator's unit tests: keyword
factories for each record a probe writes (times in ms from T0), sequences
shaped like both modes' records (kprobe mode sees handle_userfault entry and
return; tracepoint mode the exception, the sleep and the wake-up; resolving
ioctls are recorded when they return, after the wake-ups they did), and
``correlate``, which runs a sequence through the correlator as a live session
would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uffdtrace.analysis.correlator import Correlator
from uffdtrace.analysis.model import EventLifecycle, Flag, Lifecycle
from uffdtrace.analysis.rules import Thresholds
from uffdtrace.events import CLOSE_KEPT, Event, Kind, Op
from uffdtrace.source import Holder, TaskState

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


def fault(at: float, tid: int = FAULTER, page: int = PAGE, flags: int = 0) -> Event:
    """``flags``: vm_fault.flags in kprobe mode, the x86 error code in tracepoint mode."""
    return ev(Kind.FAULT, at, tid, addr=page, mode=0x200, flags=flags)


def fault_ret(at: float, tid: int = FAULTER, ret: int = RETRY, page: int = PAGE) -> Event:
    return ev(Kind.FAULT_RET, at, tid, addr=page, ret=ret)


def block(at: float, tid: int = FAULTER) -> Event:
    return ev(Kind.BLOCK, at, tid)


def read(at: float, peer: int = FAULTER, tid: int = HANDLER, page: int = PAGE, flags: int = 0) -> Event:
    """``flags``: the message's (PAGEFAULT_FLAG_WP for a write-protect fault's)."""
    return ev(Kind.READ_MSG, at, tid, addr=page, mode=0x12, peer_tid=peer, ret=32, flags=flags)


def copy(at: float, tid: int = HANDLER, ret: int = 0, dontwake: bool = False, page: int = PAGE) -> Event:
    return ev(Kind.RESOLVE, at, tid, op=Op.COPY, addr=page, len=4096, mode=int(dontwake), ret=ret,
              aux=4096 if ret == 0 else ret & (2**64 - 1))


def uffdio_wake(at: float, tid: int = HANDLER) -> Event:
    return ev(Kind.RESOLVE, at, tid, op=Op.WAKE, len=4096)


def woken(at: float, waker: int = HANDLER, peer: int = FAULTER, page: int = PAGE) -> Event:
    return ev(Kind.WAKE_TASK, at, waker, peer_tid=peer, addr=page, ret=1)


def close(at: float, tid: int = HANDLER, kept: bool = False) -> Event:
    """close(2) of a uffd descriptor; ``kept``: another holder keeps it open."""
    return ev(Kind.UFFD_CLOSE, at, tid, addr=0, flags=CLOSE_KEPT if kept else 0)


@dataclass
class Out:
    lifecycles: list[Lifecycle] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    events: list[EventLifecycle] = field(default_factory=list)
    held: list[tuple[int, list[Holder]]] = field(default_factory=list)

    def lifecycle(self, lc: Lifecycle) -> None:
        self.lifecycles.append(lc)

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        self.held.append((uffd, holders))

    def uffd_event(self, ev: EventLifecycle) -> None:
        self.events.append(ev)

    def flag(self, flag: Flag) -> None:
        self.flags.append(flag)

    def raised(self) -> list[str]:
        return [f.name for f in self.flags if not f.update]


def correlate(events: list[Event], mode: str, ticks: list[float] = (), end: float | None = None,
              tasks: dict[int, TaskState] | None = None, faults: dict[int, int] | None = None,
              lost: dict[float, int] | None = None, folded: list[Event] | None = None,
              holders: dict[int, list[Holder]] | None = None, vma_lock_flag: int | None = None,
              **th: Any) -> tuple[Out, Correlator]:
    """Feed the events (in the given delivery order), tick at ``ticks`` (ms),
    and finish at ``end`` (ms, default: 1 s after the last event). ``tasks``
    and ``faults`` stand for the kernel's view of each thread (wchan, and
    the page of its in-kernel fault state), ``holders`` for the processes
    holding each uffd, ``vma_lock_flag`` FAULT_FLAG_VMA_LOCK (RunInfo); ``lost`` the source's count of
    lost records as of a tick; ``folded`` the faults the kernel is folding
    (tracepoint mode), a list the caller may change between runs."""
    out = Out()
    corr = Correlator(out, Thresholds(**th), sees_returns=mode == "kprobe",
                      tasks=(lambda _p, t: tasks.get(t)) if tasks is not None else None,
                      faults=faults.get if faults is not None else None,
                      folded=(lambda _handed: list(folded)) if folded is not None else None,
                      holders=holders.get if holders is not None else None, vma_lock_flag=vma_lock_flag)
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


def dontwake_stall(mode: str, wake_at: float) -> list[Event]:
    seq = [fault(0)] + ([block(0.01)] if mode == "tracepoint" else [])
    seq += [read(0.1), copy(0.2, dontwake=True), woken(wake_at), uffdio_wake(wake_at + 0.1)]
    return seq + ([fault_ret(wake_at + 0.05)] if mode == "kprobe" else [])


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


COPIER = FAULTER + 7


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


def aio_wake(at: float, ret: int = 1) -> Event:
    """kprobe mode's aio records: ctx the polled uffd, addr the user iocb, aux aio_data."""
    return ev(Kind.AIO_POLL_WAKE, at, FAULTER, ctx=CTX, addr=0x5000, aux=0x1234, mode=1, flags=1, ret=ret)


def aio_complete(at: float) -> Event:
    return ev(Kind.AIO_COMPLETE, at, HANDLER, ctx=CTX, addr=0x5000, aux=0x1234, ret=1)


def anon_lock(at: float, retries: int) -> Event:
    return ev(Kind.ANON_VMA_LOCK, at, OTHER, ctx=3, ret=1, flags=retries + 1, aux=retries, len=50_000)


def writeprotect(at: float, tid: int = OTHER, protect: bool = False, dontwake: bool = False) -> Event:
    return ev(Kind.RESOLVE, at, tid, op=Op.WRITEPROTECT, len=4096, mode=int(protect) | (int(dontwake) << 1))


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
