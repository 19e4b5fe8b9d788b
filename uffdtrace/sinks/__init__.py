"""Sinks: everything that consumes a session's output (docs/architecture.md, "The seams"). A session
writes its header, events (with --events), lifecycles, flags, lost-record
notices and the closing summary to one Sink; text and JSON lines are two of
them, filters and fan-out wrap others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..events import Event
from ..source import Holder
from .jsonl import JsonLines
from .text import Text


class Sink(Protocol):
    def header(self, info: dict[str, Any]) -> None: ...

    def event(self, ev: Event) -> None: ...

    def lifecycle(self, lc: Lifecycle) -> None: ...

    def uffd_event(self, ev: EventLifecycle) -> None:
        """A non-cooperative event's lifecycle, once its caller resumed (or at the end)."""
        ...

    def flag(self, flag: Flag) -> None: ...

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        """The processes holding uffd ``uffd`` when the kernel was asked (for a fault stuck on it)."""
        ...

    def lost(self, count: int) -> None: ...

    def unmatched_reads(self, count: int) -> None:
        """Messages read so far that matched no fault (the correlator's count)."""
        ...

    def summary(self, summary: dict[str, Any]) -> None: ...

    def flush(self) -> None:
        """End of a batch: what was written should reach its reader now."""
        ...

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        """After each batch: the trace clock, the faults whose threads wait, and the
        non-cooperative events whose callers wait (dashboards)."""
        ...


class Ignoring:
    """A base for sinks that want only part of what a session writes."""

    def header(self, info: dict[str, Any]) -> None:
        pass

    def event(self, ev: Event) -> None:
        pass

    def lifecycle(self, lc: Lifecycle) -> None:
        pass

    def uffd_event(self, ev: EventLifecycle) -> None:
        pass

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        pass

    def flag(self, flag: Flag) -> None:
        pass

    def lost(self, count: int) -> None:
        pass

    def unmatched_reads(self, count: int) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        pass


class Tee:
    """Writes to several sinks, in order."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def header(self, info: dict[str, Any]) -> None:
        for s in self.sinks:
            s.header(info)

    def event(self, ev: Event) -> None:
        for s in self.sinks:
            s.event(ev)

    def lifecycle(self, lc: Lifecycle) -> None:
        for s in self.sinks:
            s.lifecycle(lc)

    def uffd_event(self, ev: EventLifecycle) -> None:
        for s in self.sinks:
            s.uffd_event(ev)

    def flag(self, flag: Flag) -> None:
        for s in self.sinks:
            s.flag(flag)

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        for s in self.sinks:
            s.holders(uffd, holders, ts_ns)

    def lost(self, count: int) -> None:
        for s in self.sinks:
            s.lost(count)

    def unmatched_reads(self, count: int) -> None:
        for s in self.sinks:
            s.unmatched_reads(count)

    def summary(self, summary: dict[str, Any]) -> None:
        for s in self.sinks:
            s.summary(summary)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        for s in self.sinks:
            s.tick(now, waiting, events)


class Filter:
    """Passes on only what concerns ``tids`` (its faults, or the ones it read,
    resolved or woke) and, with ``flagged_only``, only lifecycles that earned
    a flag (flags always pass)."""

    def __init__(self, inner: Sink, *, tids: tuple[int, ...] = (), flagged_only: bool = False) -> None:
        self.inner = inner
        self.tids = set(tids)
        self.flagged_only = flagged_only

    def header(self, info: dict[str, Any]) -> None:
        self.inner.header(info)

    def lost(self, count: int) -> None:
        self.inner.lost(count)

    def unmatched_reads(self, count: int) -> None:
        self.inner.unmatched_reads(count)

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        self.inner.holders(uffd, holders, ts_ns)

    def summary(self, summary: dict[str, Any]) -> None:
        self.inner.summary(summary)

    def flush(self) -> None:
        self.inner.flush()

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        self.inner.tick(now, waiting, events)

    def event(self, ev: Event) -> None:
        if not self.tids or ev.tid in self.tids or ev.peer_tid in self.tids:
            self.inner.event(ev)

    def lifecycle(self, lc: Lifecycle) -> None:
        if self.tids and not self.tids & {lc.tid, lc.reader_tid, lc.resolver_tid, lc.waker_tid}:
            return
        if self.flagged_only and not lc.flags:
            return
        self.inner.lifecycle(lc)

    def uffd_event(self, ev: EventLifecycle) -> None:
        if not self.tids or self.tids & {ev.tid, ev.reader_tid}:
            self.inner.uffd_event(ev)  # an event is no fault: --flagged keeps every one

    def flag(self, flag: Flag) -> None:
        if not self.tids or flag.tid in self.tids:
            self.inner.flag(flag)


def printer(as_json: bool, out: TextIO, *, tids: tuple[int, ...] = (), flagged_only: bool = False) -> Sink:
    """What `trace` prints to ``out``: JSON lines or text, filtered."""
    sink: Sink = JsonLines(out) if as_json else Text(out)
    return Filter(sink, tids=tids, flagged_only=flagged_only) if tids or flagged_only else sink


class Summary(Ignoring):
    """Only the closing summary and lost-record notices (`record` on stderr)."""

    def __init__(self, as_json: bool, out: TextIO) -> None:
        self.inner: Sink = JsonLines(out) if as_json else Text(out)

    def lost(self, count: int) -> None:
        self.inner.lost(count)

    def summary(self, summary: dict[str, Any]) -> None:
        self.inner.summary(summary)
