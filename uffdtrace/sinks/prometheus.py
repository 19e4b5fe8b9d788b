"""`uffdtrace serve`: the session as Prometheus metrics (prometheus_client).

Labels are `comm` (and the flag, op, result, reason, phase or record kind a
metric is about) and never a pid, tid or address: a fleet of hosts must not
multiply series per thread. Memory stays bounded over days: finished
lifecycles are counted into the metrics and dropped; the uffds seen are
forgotten after UFFD_IDLE_S without a sign of them.

Most lifecycles never reach Python: the kernel sums the clean ones into
the same metrics (Aggregates; bpf/aggregate.h), and Metrics adds what it
summed since its last read once per KERNEL_READ_S. Its latency histograms have the kernel's
buckets (Log2Histogram), so that both add up in one series."""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..events import HIST_BOUNDS, Event, Kind, bucket_of
from ..source import KERNEL_READ_S, Aggregates, LatencySum
from . import Ignoring
from .report import result_name, total_ns

# Bucket i's upper bound: 2**i µs (1 µs to 67 s, exp2 as bcc's histograms), in seconds.
BOUNDS = (*(floatToGoString(2**i / 1e6) for i in range(HIST_BOUNDS)), "+Inf")  # type: ignore[no-untyped-call]
UFFD_IDLE_S = 600
NS = 1e9


class Log2Histogram:
    """A latency histogram in seconds with the kernel's buckets, one series
    per label values; what Python observed and what the kernel summed
    (add) count alike. Scraped from the HTTP server's thread."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], registry: CollectorRegistry) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self._lock = threading.Lock()
        # label values -> bucket counts, then the sum of the values in ns
        self._series: dict[tuple[str, ...], list[int]] = {}
        if not labels:  # one series, there from the start
            self._row(())
        registry.register(self)

    def _row(self, values: tuple[str, ...]) -> list[int]:
        row = self._series.get(values)
        if row is None:
            row = self._series[values] = [0] * (HIST_BOUNDS + 2)
        return row

    def observe_ns(self, ns: int, *values: str) -> None:
        with self._lock:
            row = self._row(values)
            row[bucket_of(ns)] += 1
            row[-1] += ns

    def add(self, hist: LatencySum, *values: str) -> None:
        with self._lock:
            row = self._row(values)
            for i, n in enumerate(hist.counts):
                row[i] += n
            row[-1] += hist.sum_ns

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.doc, labels=self.labels)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        with self._lock:
            rows = sorted((values, list(row)) for values, row in self._series.items())
        for values, row in rows:
            cumulative = itertools.accumulate(row[:-1])
            family.add_metric(list(values), list(zip(BOUNDS, cumulative, strict=True)), row[-1] / NS)
        yield family


class Metrics(Ignoring):
    def __init__(self, registry: CollectorRegistry, aggregates: Aggregates | None = None) -> None:
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
        self.locks = counter("fault_locks", "Faults by the lock their first entry into handle_userfault ran under "
                             "(vma: the per-VMA lock; mmap: mmap_lock; kprobe mode)", ("comm", "lock"))
        self.fallbacks = counter("lock_fallbacks", "VM_FAULT_RETRY fallbacks from the per-VMA lock to mmap_lock, by "
                                 "cause (userfault_retry: handle_userfault returned it; vma_lock_not_taken: the fault "
                                 "came under mmap_lock without it; kprobe mode)", ("comm", "cause"))
        self.flags = counter("flags", "Flags raised", ("comm", "flag"))
        self.uffd_events = counter("uffd_events", "Non-cooperative events whose caller resumed (or was given up)",
                                   ("comm", "event"))
        self.anon_vma_retries = counter("anon_vma_retries", "folio_lock_anon_vma_read rechecks that failed (a "
                                        "UFFDIO_MOVE changed the folio's anon_vma under an rmap walk)", ("comm",))
        self.lost_records = counter("lost_records", "Records the kernel could not deliver")
        self.unmatched = counter("unmatched_reads", "Page-fault messages read that matched no fault seen (not in "
                                 "messages_read: the fault began before tracing, its records were lost, or the "
                                 "tracer could not tell it)")
        self.events = counter("events", "Records received, by kind", ("kind",))
        self.in_flight = gauge("faults_in_flight", "Faults whose thread waits now", ("comm",))
        self.oldest = gauge("oldest_blocked_seconds", "How long the longest-waiting thread has waited")
        self.event_waits = gauge("event_callers_waiting", "Callers of madvise/munmap/mremap/fork waiting on their "
                                 "non-cooperative event now", ("comm",))
        self.uffds = gauge("uffds_traced", "Userfaultfd contexts seen recently")
        self.processes = gauge("processes_traced", "Processes with a userfaultfd seen recently")
        self.phase = Log2Histogram("uffdtrace_phase_seconds", "Fault latency per phase (pickup: raised to read; "
                                   "service: read to resolved; wake: resolved to woken; resume: woken to returned)",
                                   ("phase",), registry)
        self.event_unread = Log2Histogram("uffdtrace_event_unread_seconds", "Non-cooperative events: raised to "
                                          "read (every resolution on the uffd fails with EAGAIN meanwhile)",
                                          (), registry)
        self.fault_time = Log2Histogram("uffdtrace_fault_seconds", "Whole fault: raised to woken or returned",
                                        (), registry)
        self.info = Info("uffdtrace", "The tracer: version, mode, kernel, transport, what it cannot see",
                         registry=registry)
        self._lost_seen = self._unmatched_seen = 0
        self._seen: dict[tuple[int, int], int] = {}  # (tgid, uffd) -> last seen (trace clock)
        self._aggregates = aggregates
        self._kernel_read_at = 0.0

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
        if lc.lock is not None:
            self.locks.labels(comm, lc.lock).inc()
        for cause, n in lc.fallbacks.items():
            self.fallbacks.labels(comm, cause).inc(n)
        for phase, ns in lc.latencies().items():
            if ns is not None:
                self.phase.observe_ns(ns, phase)
        total = total_ns(lc)
        if total is not None:
            self.fault_time.observe_ns(total)
        if lc.uffd:
            self._seen[(lc.tgid, lc.uffd)] = lc.ended_at or lc.last_ts

    def uffd_event(self, ev: EventLifecycle) -> None:
        self.uffd_events.labels(ev.comm, ev.name).inc()
        if ev.t_read is not None:
            self.event_unread.observe_ns(ev.t_read - ev.t_raised)

    def flag(self, flag: Flag) -> None:
        if not flag.update:
            self.flags.labels(flag.comm, flag.name).inc()

    def lost(self, count: int) -> None:
        if count > self._lost_seen:
            self.lost_records.inc(count - self._lost_seen)
            self._lost_seen = count

    def unmatched_reads(self, count: int) -> None:
        if count > self._unmatched_seen:
            self.unmatched.inc(count - self._unmatched_seen)
            self._unmatched_seen = count

    def _add_kernel_totals(self) -> None:
        """What the kernel summed since the last call, counted as lifecycle()
        counts a clean lifecycle (its wake-up came inside the ioctl: 0 s)."""
        assert self._aggregates is not None
        for t in self._aggregates.take_clean_totals():
            if t.reads:
                self.reads.labels(t.comm).inc(t.reads)
            if not t.faults:
                continue
            self.faults.labels(t.comm, t.reason or "unknown").inc(t.faults)
            self.resolutions.labels(t.comm, t.op, result_name(0)).inc(t.faults)
            if t.woken:
                self.wakeups.labels(t.comm).inc(t.woken)
                self.phase.add(LatencySum((t.woken,) + (0,) * HIST_BOUNDS, 0), "wake")
            self.phase.add(t.pickup, "pickup")
            self.phase.add(t.service, "service")
            self.fault_time.add(t.fault)
            if t.uffd:
                self._seen[(t.tgid, t.uffd)] = max(t.last_ns, self._seen.get((t.tgid, t.uffd), 0))

    def summary(self, summary: dict[str, Any]) -> None:
        if self._aggregates is not None:  # the last second's (the source kept them as it closed)
            self._add_kernel_totals()

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        if self._aggregates is not None and time.monotonic() - self._kernel_read_at >= KERNEL_READ_S:
            self._kernel_read_at = time.monotonic()
            self._add_kernel_totals()
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
