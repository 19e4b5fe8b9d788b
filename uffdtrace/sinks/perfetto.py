"""`uffdtrace export --format perfetto`: the Chrome trace-event JSON that
Perfetto (ui.perfetto.dev) and chrome://tracing open. One track per thread
(named "comm tid"), grouped per process; on the faulting thread a slice per
fault with a child slice per phase; on the handler threads the message read,
the resolving ioctl and the wake-up as instants-long slices; a flow arrow
per fault, raised -> read -> resolved -> woken; flags as instant events with
their evidence. Timestamps are microseconds since the capture started.

Format: "Trace Event Format" (Google), the JSON Object Format with
traceEvents; phases X (complete), M (metadata), i (instant), s/t/f (flow)."""

from __future__ import annotations

import itertools
from typing import Any

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..events import Event
from . import Ignoring

PHASE_NAMES = {("raised", "read"): "pickup", ("read", "resolved"): "service", ("resolved", "woken"): "wake",
               ("woken", "returned"): "resume"}


class Perfetto(Ignoring):
    def __init__(self) -> None:
        self.origin = 0
        self.threads: dict[int, tuple[int, str]] = {}  # tid -> (tgid, comm), from every record seen
        self.processes: dict[int, str] = {}
        self.events: list[dict[str, Any]] = []
        self._flow = 0

    def header(self, info: dict[str, Any]) -> None:
        self.origin = info["started_ns"]

    def _us(self, ts: int) -> float:
        return max(0, ts - self.origin) / 1000

    def _thread(self, tid: int, tgid: int, comm: str) -> None:
        if tid not in self.threads or not self.threads[tid][1]:
            self.threads[tid] = (tgid, comm)
        self.processes.setdefault(tgid, comm if tgid == tid else "")
        if tgid == tid and comm:
            self.processes[tgid] = comm

    def _pid(self, tid: int, default: int) -> int:
        return self.threads.get(tid, (default, ""))[0]

    def event(self, ev: Event) -> None:
        self._thread(ev.tid, ev.tgid, ev.comm)

    def _slice(self, name: str, cat: str, start: int, end: int, tid: int, pid: int, args: dict[str, Any]) -> None:
        dur = (max(0, end - self.origin) - max(0, start - self.origin)) / 1000
        self.events.append({"ph": "X", "name": name, "cat": cat, "ts": self._us(start), "dur": dur, "pid": pid,
                            "tid": tid, "args": args})

    def lifecycle(self, lc: Lifecycle) -> None:
        self._thread(lc.tid, lc.tgid, lc.comm)
        addr = "?" if lc.page is None else f"{lc.page:#x}"
        known = [("raised", lc.t_raised), ("read", lc.t_read), ("resolved", lc.t_resolved), ("woken", lc.t_woken),
                 ("returned", lc.t_returned)]
        points: list[tuple[str, int]] = []
        for name, ts in known:  # in lifecycle order, never going back in time
            if ts is not None:
                points.append((name, max(ts, points[-1][1]) if points else ts))
        start = points[0][1] if points else lc.wait_since
        end = max(points[-1][1] if points else start, lc.ended_at or start)
        args = {"uffd": lc.uffd, "addr": addr, "reason": lc.reason, "rounds": lc.rounds, "reads": lc.reads,
                "state": lc.state, "flags": list(lc.flags),
                "resolve": f"{lc.resolve.op}={lc.resolve.ret}" if lc.resolve else None}
        title = f"fault {addr}" + ("" if lc.t_raised is not None else " (start unknown)")
        self._slice(title, "fault", start, end, lc.tid, lc.tgid, args)
        for (a, ta), (b, tb) in itertools.pairwise(points):
            self._slice(PHASE_NAMES.get((a, b), f"{a} -> {b}"), "phase", ta, tb, lc.tid, lc.tgid, {"addr": addr})
        steps = [("read", lc.t_read, lc.reader_tid, f"read {addr}"),
                 ("resolve", lc.t_resolved, lc.resolver_tid,
                  f"{lc.resolve.op} {addr} = {lc.resolve.ret}" if lc.resolve else f"resolve {addr}"),
                 ("wake", lc.t_woken, lc.waker_tid, f"wake {lc.tid}")]
        flow = [(lc.t_raised, lc.tid, lc.tgid)] if lc.t_raised is not None else []
        for cat, ts, tid, name in steps:
            if ts is None or tid is None:
                continue
            pid = self._pid(tid, lc.tgid)  # a handler seen only here: in the faulting process, unnamed
            self._thread(tid, pid, "")
            self._slice(name, cat, ts, ts, tid, pid, {"faulting_tid": lc.tid, "addr": addr})
            flow.append((ts, tid, pid))
        if len(flow) > 1:
            flow.sort(key=lambda step: step[0])  # a wake-up is timed before the ioctl that made it returns
            self._flow += 1
            for i, (ts, tid, pid) in enumerate(flow):
                ph = "s" if i == 0 else "f" if i == len(flow) - 1 else "t"
                mark: dict[str, Any] = {"ph": ph, "id": self._flow, "name": "fault", "cat": "flow",
                                        "ts": self._us(ts), "pid": pid, "tid": tid}
                if ph != "s":
                    mark["bp"] = "e"  # bound to the slice that encloses it, which starts at its time
                self.events.append(mark)

    def uffd_event(self, ev: EventLifecycle) -> None:
        """The caller's wait for its event's read (then its return), and the read on the reader's track."""
        self._thread(ev.tid, ev.tgid, ev.comm)
        rng = f"{ev.start:#x}+{ev.length:#x}"
        args = {"uffd": ev.uffd, "range": rng, "reader_tid": ev.reader_tid, "state": ev.state, "flags": list(ev.flags)}
        end = max(t for t in (ev.t_raised, ev.t_read, ev.t_done) if t is not None)
        self._slice(f"EVENT {ev.name} {rng}", "uffd_event", ev.t_raised, end, ev.tid, ev.tgid, args)
        if ev.t_read is not None and ev.reader_tid is not None:
            pid = self._pid(ev.reader_tid, ev.tgid)
            self._thread(ev.reader_tid, pid, "")
            self._slice(f"read {ev.name} event", "read", ev.t_read, ev.t_read, ev.reader_tid, pid,
                        {"caller_tid": ev.tid, "range": rng})

    def flag(self, flag: Flag) -> None:
        self._thread(flag.tid, flag.tgid, flag.comm)
        self.events.append({"ph": "i", "s": "t", "name": f"FLAG {flag.name}" + (" (final)" if flag.update else ""),
                            "cat": "flag", "ts": self._us(flag.ts_ns), "pid": flag.tgid, "tid": flag.tid,
                            "args": {"state": flag.state, "addr": None if flag.addr is None else f"{flag.addr:#x}",
                                     "blocked_ms": None if flag.blocked_ns is None else flag.blocked_ns / 1e6,
                                     "evidence": [f"{'' if e.ts_ns is None else self._us(e.ts_ns)} "
                                                  f"{'' if e.tid is None else e.tid}: {e.what}"
                                                  for e in flag.evidence]}})

    def _nested(self) -> list[dict[str, Any]]:
        """The slices of each track made to nest or follow one another (a
        fault that ended as the thread's next one began overlaps it by the
        time the correlator took to see it): a slice is clipped to its parent."""
        out = sorted(self.events, key=lambda e: (e["ts"], -e.get("dur", 0)))
        open_: dict[tuple[int, int], list[float]] = {}  # track -> ends of the slices enclosing now
        for e in out:
            if e["ph"] != "X":
                continue
            stack = open_.setdefault((e["pid"], e["tid"]), [])
            while stack and stack[-1] <= e["ts"] and not (stack[-1] == e["ts"] and e["dur"] == 0):
                stack.pop()
            if stack and e["ts"] + e["dur"] > stack[-1]:
                e["dur"] = stack[-1] - e["ts"]
            stack.append(e["ts"] + e["dur"])
        return out

    def trace(self) -> dict[str, Any]:
        """The whole trace: metadata first, then every event in time order."""
        meta: list[dict[str, Any]] = []
        for pid, comm in sorted(self.processes.items()):
            meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                         "args": {"name": f"{comm or 'pid'} {pid}"}})
        for tid, (pid, comm) in sorted(self.threads.items()):
            meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                         "args": {"name": f"{comm or 'tid'} {tid}"}})
        return {"traceEvents": meta + self._nested(), "displayTimeUnit": "ns",
                "otherData": {"producer": "uffdtrace", "clock": "CLOCK_MONOTONIC, microseconds since the start"}}
