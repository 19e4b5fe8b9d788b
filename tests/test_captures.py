"""The correlator on a real record stream: `uffdtrace trace -j --events --
uffd-stress anon 2 2` captured on the 6.18 host (tracepoint mode; the
kernel's own stress test, written by nobody here), replayed offline, whole
and with records taken out as a full ring buffer would."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from uffdtrace.analysis.correlator import Correlator
from uffdtrace.analysis.rules import FROM_ABSENCE, Thresholds
from uffdtrace.events import Event, Kind, Op

from .synthetic import Out

CAPTURE = Path(__file__).parent / "captures" / "uffd_stress_anon_2_2.jsonl.gz"
TICK_NS = 50_000_000  # the live session's watchdog tick


def load() -> tuple[list[Event], list[str]]:
    """The capture's events, and the lines uffd-stress itself printed."""
    events, text = [], []
    with gzip.open(CAPTURE, "rt") as fh:
        for line in fh:
            if not line.startswith("{"):
                text.append(line)
                continue
            rec: dict[str, Any] = json.loads(line)
            if rec.get("type") != "event":
                continue
            rec.pop("type")
            rec.pop("dontwake", None)
            rec["kind"] = Kind[rec["kind"].upper()]
            if isinstance(rec["op"], str):
                rec["op"] = Op[rec["op"].upper()]
            events.append(Event(**rec))
    return events, text


def replay(events: list[Event], tasks: Any = None) -> Out:
    """Feed in delivery order, tick like the live session, finish."""
    out = Out()
    corr = Correlator(out, Thresholds(), sees_returns=False, tasks=tasks)
    start, end = events[0].ts_ns, events[-1].ts_ns
    corr.feed(events)
    for now in range(start, end + 2 * TICK_NS, TICK_NS):
        corr.advance(now)
    corr.finish(end + 2_000_000_000)
    return out


def test_the_real_stream_replays_clean() -> None:
    events, text = load()
    out = replay(events)
    assert not out.flags, out.flags[:2]
    # uffd-stress counts the faults its handlers resolved; a message whose
    # UFFDIO_COPY lost the race (EEXIST) is read but not counted.
    counted = sum(int(n) for line in text for n in re.findall(r"(\d+) (?:missing|wp)\b", line))
    readers = {e.tid for e in events if e.kind == Kind.READ_MSG}
    eexist = [e for e in events if e.kind == Kind.RESOLVE and e.op == Op.COPY and e.ret == -17 and e.tid in readers]
    assert sum(lc.reads for lc in out.lifecycles) == counted + len(eexist) == 310
    # Each fault is resolved by the op that brings its page, per its reason
    # (from the x86 error code): a copy for a missing page, a write-protect
    # lift for a write to a protected one.
    resolved = [(lc.reason, lc.resolve.op) for lc in out.lifecycles if lc.resolve is not None]
    assert resolved and set(resolved) <= {("missing", "copy"), ("missing", "zeropage"), ("wp", "writeprotect")}
    assert {r for r, _ in resolved} == {"missing", "wp"}


@pytest.mark.parametrize("seed", range(5))
def test_records_taken_out_accuse_nobody(seed: int) -> None:
    """A third of the records lost: every thread of the run was in fact woken
    (uffd-stress completed), and the kernel says none still waits. No flag
    concluded from a missing event may stand, nor a retry loop made of them."""
    events, _ = load()
    rng = random.Random(seed)  # noqa: S311 (a reproducible loss pattern, not a secret)
    kept = [e for e in events if rng.random() > 1 / 3]
    out = replay(kept, tasks=lambda _pid, _tid: "other")
    assert not [f for f in out.flags if f.name in FROM_ABSENCE or f.name == "retry_loop"], out.flags[:2]
