"""Checks of a Perfetto export against the Trace Event Format (Google's
"Trace Event Format" document: the JSON Object Format, phases X, M, i, s, t,
f), for the unit tier and the live tier alike."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from typing import Any

PHASES = {"X", "M", "i", "s", "t", "f"}


def _ns(us: float) -> int:
    """A time as a trace viewer reads it: microseconds to whole nanoseconds
    (Perfetto's JSON import). Compared as floats, ts + dur of a slice that
    ends with the one enclosing it can come out one ulp past it
    (161780.61800000002 > 161780.618): a flake, not a defect of the trace."""
    return round(us * 1000)


def check_trace_events(doc: dict[str, Any], live: list[dict[str, Any]], started_ns: int) -> None:
    """``live``: the lifecycle and flag lines `trace -j` printed for the same run."""
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    named: set[tuple[int, int]] = set()
    slices: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        assert e["ph"] in PHASES and isinstance(e["name"], str) and isinstance(e["pid"], int), e
        assert isinstance(e["tid"], int)
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name") and isinstance(e["args"]["name"], str)
            if e["name"] == "thread_name":
                named.add((e["pid"], e["tid"]))
            continue
        assert isinstance(e["ts"], int | float) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
            slices[(e["pid"], e["tid"])].append((_ns(e["ts"]), _ns(e["ts"] + e["dur"])))
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] != "M"}
    assert used <= named, used - named  # every track is named "comm tid"

    covered: dict[tuple[int, int], tuple[list[int], list[int]]] = {}  # track -> its outermost slices
    for track, spans in slices.items():  # nest or follow, never overlap partly
        stack: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start and not (stack[-1] == start == end):
                stack.pop()
            assert not stack or end <= stack[-1], (track, start, end, stack[-1])
            if not stack:
                starts.append(start)
                ends.append(end)
            stack.append(end)
        covered[track] = (starts, ends)

    flows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["ph"] in "stf":
            flows[e["id"]].append(e)
    for fid, marks in flows.items():
        kinds = [m["ph"] for m in marks]
        assert kinds.count("s") == 1 and kinds.count("f") == 1 and kinds[0] == "s" and kinds[-1] == "f", (fid, kinds)
        assert [m["ts"] for m in marks] == sorted(m["ts"] for m in marks)
        for m in marks:  # bound to a slice of its track that holds its time
            starts, ends = covered.get((m["pid"], m["tid"]), ([], []))
            i = bisect.bisect_right(starts, _ns(m["ts"])) - 1
            assert i >= 0 and _ns(m["ts"]) <= ends[i], m

    # A multiset: a wait of the same page fault after a wake-up is a lifecycle
    # of its own, and two of one thread can start in the same microsecond.
    faults = Counter((e["tid"], e["ts"]) for e in events if e["ph"] == "X" and e["cat"] == "fault")
    lifecycles = [x for x in live if x["type"] == "lifecycle"]
    assert faults.total() == len(lifecycles), (faults.total(), len(lifecycles))
    for lc in lifecycles:
        if lc["t_raised_ns"] is not None:  # microseconds since the capture started
            assert (lc["tid"], (lc["t_raised_ns"] - started_ns) / 1000) in faults, lc
    instants = [(e["tid"], e["name"]) for e in events if e["ph"] == "i"]
    assert sorted(instants) == sorted((f["tid"], f"FLAG {f['flag']}" + (" (final)" if f["update"] else ""))
                                      for f in live if f["type"] == "flag")
