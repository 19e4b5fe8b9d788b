"""One tracing session: live source -> correlator -> printer, shared by
`trace` and `demo`."""

from __future__ import annotations

import collections
import platform
import time
from collections.abc import Sequence
from typing import Any

from . import __version__, procscan
from .events import Kind
from .lifecycle import Correlator
from .model import BlockedThread
from .output import Printer
from .rules import Thresholds
from .source import LiveSource


def header(src: LiveSource, command: Sequence[str], pids: Sequence[int], th: Thresholds) -> dict[str, Any]:
    return {
        "version": __version__, "mode": src.info.mode, "transport": src.info.transport,
        "kernel": platform.release(), "probes": [p.to_json() for p in src.info.probes],
        "command": list(command), "command_pid": src.info.command_pid, "pids": list(pids),
        "degraded": src.info.degraded, "existing_uffd_pids": src.info.existing,
        "stuck_ms": th.stuck_ms, "wake_ms": th.wake_ms, "retry_threshold": th.retry_threshold,
    }


def run(src: LiveSource, printer: Printer, th: Thresholds, *, raw_events: bool, command: Sequence[str] = (),
        pids: Sequence[int] = ()) -> dict[str, Any]:
    """Trace until the source ends; returns the summary (also printed)."""
    kinds: collections.Counter[Kind] = collections.Counter()
    lost_seen = 0
    try:
        src.start()
        printer.header(header(src, command, pids, th))
        src.release_command()
        printer.set_origin(src.info.started_ns)  # before the command's first fault
        corr = Correlator(printer, th, sees_returns=src.backend.sees_returns, tasks=procscan.thread_state,
                          faults=src.fault_page, folded=src.folded_faults, adopted=src.adopt)
        now = time.monotonic_ns()
        for pid, t in src.blocked_before:  # waiting before tracing began (DESIGN §5)
            corr.add_blocked(BlockedThread(pid, t.tid, t.comm, min(t.last_ran_ns or now, now)))
        for batch, horizon in src.batches():
            kinds.update(ev.kind for ev in batch)
            if raw_events:
                for ev in batch:
                    printer.event(ev)
            corr.feed(batch)
            corr.advance(horizon)
            printer.flush()
            # After the batch: a loss counted now may have happened during the
            # faults it opened, and their flags will say so (never the reverse).
            lost = src.lost
            corr.note_lost(lost)
            if lost > lost_seen:
                lost_seen = lost
                printer.lost(lost_seen)
        corr.finish(time.monotonic_ns())
    finally:
        src.close()
    if src.lost > lost_seen:
        printer.lost(src.lost)
    by_kind = {kind.name.lower(): n for kind, n in kinds.items()}
    quiet_lifecycles, quiet_reads = src.quiet
    summary = {"lifecycles": corr.counters.lifecycles + quiet_lifecycles, "quiet_lifecycles": quiet_lifecycles,
               "quiet_reads": quiet_reads,
               "flags": dict(corr.counters.flags), "failing_flags": corr.counters.failing,
               "evicted": corr.counters.evicted, "messages_read": corr.counters.messages_read + quiet_reads,
               "unmatched_reads": corr.counters.unmatched_reads,
               "events": sum(by_kind.values()), "by_kind": by_kind, "lost": src.lost,
               "lost_causes": src.lost_causes, "filtered_resolves": src.filtered,
               "command_status": src.info.command_status, "pids_exited": src.info.pids_exited}
    printer.summary(summary)
    return summary
