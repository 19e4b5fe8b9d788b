"""`uffdtrace serve`: the session as Prometheus metrics (prometheus_client).

Labels are `comm` (and the flag, op, result, reason, phase or record kind a
metric is about) and never a pid, tid or address: a fleet of hosts must not
multiply series per thread. Memory stays bounded over days: finished
lifecycles are counted into the metrics and dropped; the uffds seen are
forgotten after UFFD_IDLE_S without a sign of them."""

from __future__ import annotations

import collections
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..events import Event, Kind
from . import Ignoring
from .report import result_name, total_ns

# 1 µs to 64 s in powers of two (exp2 buckets, as bcc's histograms), in seconds.
BUCKETS = tuple(2**i / 1e6 for i in range(27))
UFFD_IDLE_S = 600
NS = 1e9


class Metrics(Ignoring):
    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # a _created series per counter: noise
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"uffdtrace_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"uffdtrace_{name}", doc, labels, registry=registry)

        self.faults = counter("faults", "Faults whose lifecycle ended, by what raised them", ("comm", "reason"))
        self.reads = counter("messages_read", "Page-fault messages read by handlers", ("comm",))
        self.resolutions = counter("resolutions", "Resolving ioctls that covered a waiting fault",
                                   ("comm", "op", "result"))
        self.wakeups = counter("wakeups", "Faults woken", ("comm",))
        self.rounds = counter("extra_rounds", "Rounds beyond the first (the fault entered handle_userfault again)",
                              ("comm",))
        self.flags = counter("flags", "Flags raised", ("comm", "flag"))
        self.uffd_events = counter("uffd_events", "Non-cooperative events whose caller resumed (or was given up)",
                                   ("comm", "event"))
        self.anon_vma_retries = counter("anon_vma_retries", "folio_lock_anon_vma_read rechecks that failed (a "
                                        "UFFDIO_MOVE changed the folio's anon_vma under an rmap walk)", ("comm",))
        self.lost_records = counter("lost_records", "Records the kernel could not deliver")
        self.events = counter("events", "Records received, by kind", ("kind",))
        self.in_flight = gauge("faults_in_flight", "Faults whose thread waits now", ("comm",))
        self.oldest = gauge("oldest_blocked_seconds", "How long the longest-waiting thread has waited")
        self.event_waits = gauge("event_callers_waiting", "Callers of madvise/munmap/mremap/fork waiting on their "
                                 "non-cooperative event now", ("comm",))
        self.uffds = gauge("uffds_traced", "Userfaultfd contexts seen recently")
        self.processes = gauge("processes_traced", "Processes with a userfaultfd seen recently")
        self.phase = Histogram("uffdtrace_phase_seconds", "Fault latency per phase (pickup: raised to read; "
                               "service: read to resolved; wake: resolved to woken; resume: woken to returned)",
                               ("phase",), buckets=BUCKETS, registry=registry)
        self.event_unread = Histogram("uffdtrace_event_unread_seconds", "Non-cooperative events: raised to read "
                                      "(every resolution on the uffd fails with EAGAIN meanwhile)",
                                      buckets=BUCKETS, registry=registry)
        self.fault_time = Histogram("uffdtrace_fault_seconds", "Whole fault: raised to woken or returned",
                                    buckets=BUCKETS, registry=registry)
        self.info = Info("uffdtrace", "The tracer: version, mode, kernel, transport, what it cannot see",
                         registry=registry)
        self._lost_seen = 0
        self._seen: dict[tuple[int, int], int] = {}  # (tgid, uffd) -> last seen (trace clock)

    def header(self, info: dict[str, Any]) -> None:
        self.info.info({"version": info["version"], "mode": info["mode"], "kernel": info["kernel"],
                        "transport": info["transport"], "degraded": "; ".join(info["degraded"])})

    def event(self, ev: Event) -> None:
        self.events.labels(ev.kind.name.lower()).inc()
        if ev.kind is Kind.ANON_VMA_LOCK and ev.ret >= 0 and ev.aux:
            self.anon_vma_retries.labels(ev.comm).inc(ev.aux)
        if ev.ctx:
            self._seen[(ev.tgid, ev.ctx)] = ev.ts_ns

    def lifecycle(self, lc: Lifecycle) -> None:
        comm = lc.comm
        self.faults.labels(comm, lc.reason or "unknown").inc()
        if lc.reads:
            self.reads.labels(comm).inc(lc.reads)
        for a in lc.attempts:
            self.resolutions.labels(comm, a.op, result_name(a.ret)).inc()
        if lc.t_woken is not None:
            self.wakeups.labels(comm).inc()
        if lc.rounds > 1:
            self.rounds.labels(comm).inc(lc.rounds - 1)
        for phase, ns in lc.latencies().items():
            if ns is not None:
                self.phase.labels(phase).observe(ns / NS)
        total = total_ns(lc)
        if total is not None:
            self.fault_time.observe(total / NS)
        if lc.uffd:
            self._seen[(lc.tgid, lc.uffd)] = lc.ended_at or lc.last_ts

    def uffd_event(self, ev: EventLifecycle) -> None:
        self.uffd_events.labels(ev.comm, ev.name).inc()
        if ev.t_read is not None:
            self.event_unread.observe((ev.t_read - ev.t_raised) / NS)

    def flag(self, flag: Flag) -> None:
        if not flag.update:
            self.flags.labels(flag.comm, flag.name).inc()

    def lost(self, count: int) -> None:
        if count > self._lost_seen:
            self.lost_records.inc(count - self._lost_seen)
            self._lost_seen = count

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        per_comm: dict[str, int] = {}
        for lc in waiting:
            per_comm[lc.comm] = per_comm.get(lc.comm, 0) + 1
            if lc.uffd:
                self._seen[(lc.tgid, lc.uffd)] = now
        self.in_flight.clear()
        for comm, n in per_comm.items():
            self.in_flight.labels(comm).set(n)
        self.oldest.set(max(((now - lc.waiting_since) / NS for lc in waiting), default=0.0))
        self.event_waits.clear()
        for comm, n in collections.Counter(ew.comm for ew in events).items():
            self.event_waits.labels(comm).set(n)
        for key in [k for k, ts in self._seen.items() if now - ts > UFFD_IDLE_S * NS]:
            del self._seen[key]
        self.uffds.set(len(self._seen))
        self.processes.set(len({tgid for tgid, _ in self._seen}))


class FlagLog(Ignoring):
    """A flag's evidence as one JSON line on stderr (never a label)."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out

    def flag(self, flag: Flag) -> None:
        self.out.write(orjson.dumps(flag.to_json(), option=orjson.OPT_APPEND_NEWLINE).decode())
        self.out.flush()
