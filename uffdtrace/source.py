"""The Source seam, at the bottom of the layers: what a tracing session asks
of wherever its records come from (a live kernel, a recording, a capture
file), and the plain values that cross it. Every layer may import this
module; it imports none of them (docs/architecture.md, "The seams")."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from .events import Event

# Where a thread is now: waiting in handle_userfault, elsewhere, or gone.
# "event": waits for its uffd event to be read; "aio": sleeps in io_getevents.
TaskState = Literal["uffd", "event", "aio", "other", "gone"]
# Asks the system (live) where a thread (tgid, tid) is now; None when it cannot tell.
TaskProbe = Callable[[int, int], TaskState | None]


@dataclass(frozen=True)
class Holder:
    """A process with a descriptor on a uffd, as /proc shows it now."""

    pid: int
    comm: str
    threads: int  # alive
    waiting: int  # of them, asleep in handle_userfault or an event's wait: none of these can read

    @property
    def can_read(self) -> bool:
        return self.threads > self.waiting


# Asks the system (live) which processes hold uffd N now; None when it cannot tell.
HolderProbe = Callable[[int], "list[Holder] | None"]


@dataclass
class BlockedThread:
    """A thread found in /proc waiting in handle_userfault when tracing began."""

    tgid: int
    tid: int
    comm: str
    since_ns: int  # last time it ran, on the trace clock (an upper bound of its wait start)


@dataclass
class RunInfo:
    """What a source knows about its run, for headers (and capture headers)."""

    mode: str = "kprobe"
    transport: str = ""
    kernel: str = ""  # release of the traced kernel
    host: str = ""
    probes: list[dict[str, Any]] = field(default_factory=list)  # probes.ProbeStatus.to_json()
    command: list[str] = field(default_factory=list)
    command_pid: int | None = None
    pids: list[int] = field(default_factory=list)
    existing: list[int] = field(default_factory=list)  # tracepoint mode: uffd users found in /proc
    degraded: list[str] = field(default_factory=list)  # what this session cannot see
    sees_returns: bool = True  # kprobe mode sees handle_userfault return (analysis/lifecycle.py)
    # FAULT_FLAG_VMA_LOCK in the FAULT records' flags (0: no per-VMA locks, every
    # fault under mmap_lock); None: the mode (or an older capture) cannot tell.
    vma_lock_flag: int | None = None
    started_ns: int = 0  # CLOCK_MONOTONIC when the probes were live (before any command started)
    wall_offset_ns: int = 0  # CLOCK_REALTIME - CLOCK_MONOTONIC at start
    output: list[str] = field(default_factory=list)  # events, flagged, aggregated: what the kernel sent, printed
    program: str = ""  # live: "compiled" now, or "cached" (a compiled program kept by an earlier session)


@dataclass(frozen=True)
class LatencySum:
    """A latency histogram the kernel summed (bpf/aggregate.h): counts of its
    buckets (events.HIST_BOUNDS + 1 of them) and the sum of the values."""

    counts: tuple[int, ...]
    sum_ns: int

    def since(self, before: LatencySum) -> LatencySum:
        return LatencySum(tuple(a - b for a, b in zip(self.counts, before.counts, strict=True)),
                          self.sum_ns - before.sum_ns)


@dataclass(frozen=True)
class CleanTotals:
    """The clean lifecycles of one process, comm and uffd, raised for one
    reason and resolved by one ``op``, that the kernel summed instead of
    sending (serve and top: RunInfo.output "aggregated"): each was read
    ``reads`` times in all, resolved by one ``op`` that returned 0, woken
    inside it (``woken`` of them); the last ended at ``last_ns``.
    ``op`` None: messages read after their fault ended, nothing else."""

    tgid: int
    comm: str
    uffd: int
    reason: str | None
    op: str | None
    faults: int
    woken: int
    reads: int
    last_ns: int
    pickup: LatencySum
    service: LatencySum
    fault: LatencySum

    def since(self, before: CleanTotals | None) -> CleanTotals:
        """What grew since ``before`` (an earlier reading of the same key)."""
        if before is None:
            return self
        return dataclasses.replace(self, faults=self.faults - before.faults, woken=self.woken - before.woken,
                                   reads=self.reads - before.reads, pickup=self.pickup.since(before.pickup),
                                   service=self.service.since(before.service), fault=self.fault.since(before.fault))


# How often serve's and top's sinks take what the kernel summed (a read of the whole map).
KERNEL_READ_S = 1.0


class Aggregates(Protocol):
    """What the kernel summed instead of sending (a LiveSource for serve and top)."""

    def take_clean_totals(self) -> list[CleanTotals]: ...


@dataclass
class Totals:
    """What a source counted, as it closes."""

    lost_causes: dict[str, int] = field(default_factory=dict)
    filtered: int = 0  # resolving ioctls the kernel did not send (none could matter)
    quiet_lifecycles: int = 0  # clean lifecycles the kernel only counted (--flagged)
    quiet_reads: int = 0  # their messages, and those of faults dropped in the kernel (never waited)
    command_status: int | None = None
    pids_exited: bool = False  # every -p process exited, which ended the trace

    @property
    def lost(self) -> int:
        return sum(self.lost_causes.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Source(Protocol):
    @property
    def info(self) -> RunInfo:
        """Complete once start() returned."""
        ...

    def start(self) -> None: ...

    def blocked_before(self) -> list[BlockedThread]:
        """Threads waiting in handle_userfault before tracing began."""
        ...

    def release_command(self) -> None:
        """The header is out: a command started by the source may run."""
        ...

    def batches(self) -> Iterator[tuple[list[Event], int]]:
        """Records in delivery order, in batches; each batch comes with a
        horizon: every record with an earlier timestamp has been delivered."""
        ...

    def lost(self) -> int:
        """Records lost so far."""
        ...

    def now(self) -> int:
        """CLOCK_MONOTONIC, as the correlator's clock."""
        ...

    def thread_state(self, pid: int, tid: int) -> TaskState | None: ...

    def fault_page(self, tid: int) -> int | None: ...

    def uffd_holders(self, uffd: int) -> list[Holder] | None:
        """The processes holding a descriptor on uffd ``uffd`` (an id) now; None when it cannot be told."""
        ...

    def folded_faults(self, include_handed: bool) -> list[Event]: ...

    def adopt(self, tid: int, raised_ns: int) -> None: ...

    def close(self) -> Totals: ...


