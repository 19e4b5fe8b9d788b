"""One tracing session (docs/architecture.md, "The seams"): a Source's records -> the correlator and
its rules -> a Sink. The same code runs on a live kernel (source.LiveSource),
while recording (capture.Recording) and on a capture file (capture.Replay):
everything the correlator learns from outside the record stream (where a
thread is now, what the kernel still folds, the clock) it asks the Source."""

from __future__ import annotations

import collections
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

from . import __version__
from .analysis.correlator import Correlator
from .analysis.rules import Thresholds
from .events import Kind
from .sinks import Sink
from .source import RunInfo, Source


def header(info: RunInfo, th: Thresholds) -> dict[str, Any]:
    return {
        "version": __version__, "mode": info.mode, "transport": info.transport, "kernel": info.kernel,
        "host": info.host, "wall_offset_ns": info.wall_offset_ns,
        "probes": info.probes, "command": info.command, "command_pid": info.command_pid, "pids": info.pids,
        "degraded": info.degraded, "existing_uffd_pids": info.existing, "started_ns": info.started_ns,
        "output": info.output, **({"program": info.program} if info.program else {}),
        "vma_lock_flag": info.vma_lock_flag,
        "stuck_ms": th.stuck_ms, "wake_ms": th.wake_ms, "retry_threshold": th.retry_threshold,
    }


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Records, lifecycles and flags make no reference cycles (a whole
    uffd-stress replay leaves none for the collector), so its young-generation
    passes, every 700 allocations by default, only cost: about 2 µs per
    lifecycle (docs/benchmarks.md). What start-up made is frozen out of them,
    and they come 70 times less often; cycles are still collected."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def run(src: Source, sink: Sink, th: Thresholds, *, raw_events: bool) -> dict[str, Any]:
    """Trace until the source ends; returns the summary (also written)."""
    with fewer_collections():
        return _run(src, sink, th, raw_events=raw_events)


def _run(src: Source, sink: Sink, th: Thresholds, *, raw_events: bool) -> dict[str, Any]:
    kinds: collections.Counter[Kind] = collections.Counter()
    lost_seen = unmatched_seen = 0
    try:
        src.start()
        sink.header(header(src.info, th))
        src.release_command()
        corr = Correlator(sink, th, sees_returns=src.info.sees_returns, tasks=src.thread_state,
                          faults=src.fault_page, folded=src.folded_faults, on_take_over=src.adopt,
                          holders=src.uffd_holders, vma_lock_flag=src.info.vma_lock_flag)
        for t in src.blocked_before():
            corr.add_blocked(t)
        for batch, horizon in src.batches():
            kinds.update(ev.kind for ev in batch)
            if raw_events:
                for ev in batch:
                    sink.event(ev)
            corr.feed(batch)
            corr.advance(horizon)
            sink.tick(horizon, corr.waiting(), corr.waiting_events())
            sink.flush()
            # After the batch: a loss counted now may have happened during the
            # faults it opened, and their flags will say so (never the reverse).
            lost = src.lost()
            corr.note_lost(lost)
            if lost > lost_seen:
                lost_seen = lost
                sink.lost(lost_seen)
            if corr.counters.unmatched_reads > unmatched_seen:
                unmatched_seen = corr.counters.unmatched_reads
                sink.unmatched_reads(unmatched_seen)
        corr.finish(src.now())
        if corr.counters.unmatched_reads > unmatched_seen:
            sink.unmatched_reads(corr.counters.unmatched_reads)
    except BaseException:
        src.close()
        raise
    totals = src.close()
    if totals.lost > lost_seen:
        sink.lost(totals.lost)
    by_kind = {kind.name.lower(): n for kind, n in kinds.items()}
    summary = {"lifecycles": corr.counters.lifecycles + totals.quiet_lifecycles,
               "quiet_lifecycles": totals.quiet_lifecycles, "quiet_reads": totals.quiet_reads,
               "flags": dict(corr.flags.counts.by_name), "failing_flags": corr.flags.counts.failing,
               "evicted": corr.counters.evicted, "messages_read": corr.counters.messages_read + totals.quiet_reads,
               "unmatched_reads": corr.counters.unmatched_reads,
               "events": sum(by_kind.values()), "by_kind": by_kind, "lost": totals.lost,
               "lost_causes": totals.lost_causes, "filtered_resolves": totals.filtered,
               "command_status": totals.command_status, "pids_exited": totals.pids_exited}
    if corr.rmap.walks:  # kprobe mode's anon_vma locks: retries counted, flagged only when they loop
        summary["anon_vma"] = corr.rmap.counts()
    sink.summary(summary)
    return summary
