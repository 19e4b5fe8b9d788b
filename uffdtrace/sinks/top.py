"""`uffdtrace top`: what the terminal dashboard shows, kept as a Sink (per
process and uffd: faults/s, in flight, the oldest blocked fault, phase
percentiles over a sliding window, resolutions, retries, flags; the faults
stuck now and the latest flags) and rendered with rich.

Most lifecycles never reach Python: the kernel sums the clean ones
(Aggregates; bpf/aggregate.h) and Top adds what it summed once per
KERNEL_READ_S. Latencies are kept as the kernel keeps them, in log2
buckets, so both add up in one window: a percentile is its bucket's bound
(<=4us: at most 4 us)."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..escape import printable
from ..events import HIST_BOUNDS, Event, bucket_of
from ..source import KERNEL_READ_S, Aggregates
from . import Ignoring
from .report import result_name
from .text import duration

WINDOW_S = 10  # faults/s and percentiles over this long, a second at a time
PHASES = ("pickup", "service", "wake")
SORTS = ("faults/s", "in flight", "oldest", "flags", "pid")
WIDE = 132  # from this width: uffd, p50s, resolutions, errors
# 80 columns hold the narrow set exactly (each column pads one space on its right).
COLUMNS = [("PID", 7), ("COMM", 10), ("UFFD", 4), ("FAULTS/S", 8), ("INFL", 4), ("OLDEST", 7),
           ("PICK p99", 8), ("SERV p99", 8), ("WAKE p99", 8), ("PICKUP p50/p99", 14),
           ("SERVICE p50/p99", 15), ("WAKE p50/p99", 13), ("RESOLVED", 16), ("ERR", 3), ("RETRY", 5), ("FLAGS", 5)]
WIDE_ONLY = {"UFFD", "PICKUP p50/p99", "SERVICE p50/p99", "WAKE p50/p99", "RESOLVED", "ERR"}
NARROW_ONLY = {"PICK p99", "SERV p99", "WAKE p99"}
NS = 1_000_000_000


def bound(ns: int) -> str:
    """A bucket's bound (1000 << i ns) in whole units."""
    if ns < 10_000_000:
        return f"{ns // 1000}us"
    return f"{ns // 1_000_000}ms" if ns < 10 * NS else f"{ns // NS}s"


@dataclass
class Second:
    """What ended in one second of the window: faults and their phases' latency buckets."""

    start: int
    faults: int = 0
    lat: dict[str, list[int]] = field(default_factory=lambda: {p: [0] * (HIST_BOUNDS + 1) for p in PHASES})


@dataclass
class Row:
    """One process and uffd."""

    tgid: int
    comm: str
    uffd: int
    window: collections.deque[Second] = field(default_factory=collections.deque)
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: int = 0
    retries: int = 0
    flags: int = 0
    in_flight: int = 0
    oldest_since: int | None = None

    def second(self, ts: int) -> Second:
        """The window's second that ``ts`` ends in (the latest, if older)."""
        if not self.window or ts - self.window[-1].start >= NS:
            self.window.append(Second(ts))
        return self.window[-1]

    def faults(self) -> int:
        return sum(s.faults for s in self.window)

    def percentile(self, phase: str, q: float) -> str:
        """The bound of the bucket the q-quantile of the window falls in."""
        counts = [sum(col) for col in zip(*(s.lat[phase] for s in self.window), strict=True)]
        total = sum(counts)
        if not total:
            return "-"
        i = next(i for i, seen in enumerate(itertools.accumulate(counts)) if seen >= q * total)
        return f"<={bound(1000 << i)}" if i < HIST_BOUNDS else f">{bound(1000 << (HIST_BOUNDS - 1))}"


def missing_step(lc: Lifecycle) -> str:
    """What the waiting thread still waits for."""
    if not lc.reads:
        return "message read"
    if lc.resolve is None:
        return "resolution"
    return "wake-up" if lc.t_woken is None else "return"


class Top(Ignoring):
    def __init__(self, redraw: Callable[[], None] = lambda: None, every_s: float = 0.25,
                 aggregates: Aggregates | None = None) -> None:
        self.redraw = redraw
        self.every_s = every_s
        self.aggregates = aggregates
        self._kernel_read_at = 0.0
        self.summed = 0  # faults the kernel summed
        self.info: dict[str, Any] = {}
        self.rows: dict[tuple[int, str, int], Row] = {}
        self.now = 0
        # Faults and event callers waiting: comm, tgid, tid, page (or the event's start), age, missing step.
        self.stuck: list[tuple[str, int, int, int | None, int, str]] = []
        self.recent_flags: collections.deque[Flag] = collections.deque(maxlen=4)
        self.events: collections.deque[tuple[int, int]] = collections.deque()  # (time, records) per batch
        self._batch_events = 0
        self.lost_records = 0
        self.sort = 0
        self.pid_filter: int | None = None
        self.paused = False
        self.typing: str | None = None  # the pid being typed after "/"
        self._drawn = 0.0

    # -- the Sink side -----------------------------------------------------
    def header(self, info: dict[str, Any]) -> None:
        self.info = info
        self.redraw()

    def _row(self, tgid: int, comm: str, uffd: int) -> Row:
        key = (tgid, comm, uffd)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(tgid, comm, uffd)
        return row

    def event(self, ev: Event) -> None:
        self._batch_events += 1

    def lifecycle(self, lc: Lifecycle) -> None:
        row = self._row(lc.tgid, lc.comm, lc.uffd)
        second = row.second(lc.ended_at or lc.last_ts)
        second.faults += 1
        for phase, ns in lc.latencies().items():
            if ns is not None and phase in second.lat:
                second.lat[phase][bucket_of(ns)] += 1
        for a in lc.attempts:
            row.ops[f"{a.op} {result_name(a.ret)}"] += 1
            row.errors += a.ret != 0
        row.retries += lc.rounds - 1

    def flag(self, flag: Flag) -> None:
        if not flag.update:
            self.recent_flags.appendleft(flag)
            self._row(flag.tgid, flag.comm, flag.uffd).flags += 1

    def lost(self, count: int) -> None:
        self.lost_records = count

    def _add_kernel_totals(self, now: int) -> None:
        """What the kernel summed since the last call, added as lifecycle()
        adds a clean lifecycle (its wake-up came inside the ioctl: 0 s)."""
        assert self.aggregates is not None
        for t in self.aggregates.take_clean_totals():
            if not t.faults:
                continue
            row = self._row(t.tgid, t.comm, t.uffd)
            second = row.second(now)
            second.faults += t.faults
            for phase, summed in (("pickup", t.pickup), ("service", t.service)):
                second.lat[phase] = [a + b for a, b in zip(second.lat[phase], summed.counts, strict=True)]
            second.lat["wake"][0] += t.woken
            row.ops[f"{t.op} {result_name(0)}"] += t.faults
            self.summed += t.faults

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        self.now = now
        if self.aggregates is not None and time.monotonic() - self._kernel_read_at >= KERNEL_READ_S:
            self._kernel_read_at = time.monotonic()
            self._add_kernel_totals(now)
        self.events.append((now, self._batch_events))
        self._batch_events = 0
        while self.events and now - self.events[0][0] > WINDOW_S * NS:
            self.events.popleft()
        for row in self.rows.values():
            row.in_flight, row.oldest_since = 0, None
            while row.window and now - row.window[0].start >= WINDOW_S * NS:
                row.window.popleft()
        for lc in waiting:
            row = self._row(lc.tgid, lc.comm, lc.uffd)
            row.in_flight += 1
            since = lc.waiting_since
            row.oldest_since = since if row.oldest_since is None else min(row.oldest_since, since)
        self.stuck = sorted([*((lc.comm, lc.tgid, lc.tid, lc.page, now - lc.waiting_since, missing_step(lc))
                               for lc in waiting),
                             *((ew.comm, ew.tgid, ew.tid, ew.start, now - ew.t_raised,
                                f"its {ew.name} " + ("event to be read" if ew.t_read is None else "call to return"))
                               for ew in events)], key=lambda s: -s[4])
        clock = time.monotonic()
        if not self.paused and clock - self._drawn >= self.every_s:
            self._drawn = clock
            self.redraw()

    # -- keys --------------------------------------------------------------
    def key(self, ch: str) -> bool:
        """One key pressed; False for q (quit)."""
        if self.typing is not None:
            if ch.isdigit():
                self.typing += ch
            elif ch in "\r\n":
                self.pid_filter = int(self.typing) if self.typing else None
                self.typing = None
            elif ch == "\x1b":
                self.typing = None
        elif ch == "q":
            return False
        elif ch == "s":
            self.sort = (self.sort + 1) % len(SORTS)
        elif ch == "/":
            self.typing = ""
        elif ch == "p":
            self.paused = not self.paused
        self._drawn = 0.0
        self.redraw()
        return True

    # -- rendering ---------------------------------------------------------
    def _sorted_rows(self) -> list[Row]:
        rows = [r for r in self.rows.values() if self.pid_filter is None or r.tgid == self.pid_filter]
        keys: dict[str, Callable[[Row], Any]] = {
            "faults/s": lambda r: -r.faults(), "in flight": lambda r: -r.in_flight,
            "oldest": lambda r: r.oldest_since if r.oldest_since is not None else 1 << 63,
            "flags": lambda r: -r.flags, "pid": lambda r: (r.tgid, r.uffd)}
        return sorted(rows, key=keys[SORTS[self.sort]])

    def render(self, width: int, height: int) -> RenderableType:
        info = self.info
        span = max(1, (self.events[-1][0] - self.events[0][0]) / NS) if len(self.events) > 1 else 1
        rate = sum(n for _, n in self.events) / span
        summed = f"  {self.summed:,} summed in kernel" if self.aggregates is not None else ""
        head = (f"uffdtrace top  {rate:,.0f} events/s{summed}  lost {self.lost_records}  mode={info.get('mode', '?')} "
                f"kernel={printable(str(info.get('kernel', '?')))}")
        pid = f"{self.typing}_" if self.typing is not None else "all" if self.pid_filter is None else self.pid_filter
        keys = f"q quit  s sort ({SORTS[self.sort]})  / pid ({pid})  p pause" + ("  PAUSED" if self.paused else "")
        if width < 60 or height < 10:  # too small: one line per stuck fault, no tables
            lines = [head[:width], keys[:width], *(f"{printable(c)} {tid} waits {duration(age)} for {m}"[:width]
                                     for c, _, tid, _, age, m in self.stuck[: max(0, height - 3)])]
            return Text("\n".join(lines))
        degraded = info.get("degraded") or []
        parts: list[RenderableType] = [Text(head[:width], style="bold")]
        if degraded:
            parts.append(Text(f"cannot see: {'; '.join(map(printable, degraded))}"[:width], style="dim"))
        wide = width >= WIDE
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        for name, min_width in COLUMNS:
            if name not in (NARROW_ONLY if wide else WIDE_ONLY):
                table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=min_width,
                                 max_width=min_width if name == "COMM" else None)
        room = max(1, (height - 8) // 2)
        for r in self._sorted_rows()[:room]:
            oldest = "-" if r.oldest_since is None else duration(self.now - r.oldest_since)
            cells = {"PID": str(r.tgid), "COMM": printable(r.comm), "UFFD": str(r.uffd or "?"),
                     "FAULTS/S": f"{r.faults() / WINDOW_S:.1f}", "INFL": str(r.in_flight), "OLDEST": oldest,
                     "RESOLVED": ", ".join(f"{k} {v}" for k, v in r.ops.most_common(2)) or "-",
                     "ERR": str(r.errors), "RETRY": str(r.retries), "FLAGS": str(r.flags)}
            for phase, short in (("pickup", "PICK"), ("service", "SERV"), ("wake", "WAKE")):
                p50, p99 = r.percentile(phase, 0.5), r.percentile(phase, 0.99)
                cells[f"{short} p99"] = p99
                cells[f"{phase.upper()} p50/p99"] = f"{p50}/{p99}"
            table.add_row(*(cells[c.header] for c in table.columns))  # type: ignore[index]
        parts.append(table)
        parts.append(Text("STUCK NOW (thread, page, waiting, missing step)", style="bold"))
        for comm, tgid, tid, page, age, missing in self.stuck[: max(1, room // 2)]:
            page_s = "?" if page is None else f"{page:#x}"
            parts.append(Text(f"  {printable(comm)} {tgid}/{tid} {page_s} {duration(age)} waiting for {missing}",
                              style="red"))
        if not self.stuck:
            parts.append(Text("  none"))
        parts.append(Text("LATEST FLAGS", style="bold"))
        for f in self.recent_flags:
            why = f.evidence[-1].what if f.evidence else ""
            parts.append(Text(f"  {f.name} {printable(f.comm)} {f.tgid}/{f.tid}: {printable(why)}"[:width]))
        parts.append(Text(keys[:width], style="reverse"))
        return Group(*parts)
