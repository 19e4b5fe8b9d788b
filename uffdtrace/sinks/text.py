"""Human text: one line per lifecycle, event or flag (with its evidence
below it), times in seconds since tracing began. Names from others'
processes are escaped (escape.printable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..analysis.verdicts import MEANING
from ..escape import printable
from ..events import Event, Kind, op_name
from ..source import Holder

# Per kind, the fields worth showing in text output (README "Event fields").
TEXT_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.FAULT: ("ctx", "addr", "flags", "mode"),
    Kind.FAULT_RET: ("ctx", "addr", "ret", "aux"),
    Kind.BLOCK: ("ctx", "addr"),
    Kind.READ_MSG: ("ctx", "addr", "flags", "peer_tid"),
    Kind.RESOLVE: ("ctx", "addr", "len", "mode", "ret", "aux"),
    Kind.WAKE_RANGE: ("ctx", "addr", "len"),
    Kind.WAKE_TASK: ("ctx", "peer_tid", "addr", "aux", "len", "ret"),
    Kind.AIO_POLL_SUBMIT: ("ctx", "addr", "aux", "flags"),
    Kind.AIO_POLL_WAKE: ("ctx", "addr", "aux", "mode", "len", "ret"),
    Kind.AIO_POLL_WORK: ("ctx", "addr", "aux"),
    Kind.AIO_COMPLETE: ("ctx", "addr", "aux", "ret"),
    Kind.ANON_VMA_LOCK: ("ctx", "ret", "flags", "aux", "len"),
    Kind.UFFD_NEW: ("aux", "flags"),
    Kind.UFFD_API: ("ctx", "flags", "aux"),
    Kind.UFFD_REGISTER: ("ctx", "addr", "len", "mode", "ret"),
    Kind.UFFD_CLOSE: ("ctx", "flags"),
    Kind.EVENT_WAIT: ("mode", "addr", "len", "aux"),
    Kind.EVENT_DONE: ("mode", "addr", "len", "ret", "aux"),
}
HEX_FIELDS = {"addr", "flags", "mode"}
TEXT_NAMES = {"ctx": "uffd", "peer_tid": "peer"}


def _fmt(name: str, value: int) -> str:
    label = TEXT_NAMES.get(name, name)
    return f"{label}={value:#x}" if name in HEX_FIELDS else f"{label}={value}"


def duration(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 10_000:
        return f"{ns}ns"
    if ns < 10_000_000:
        return f"{ns / 1000:.0f}us"
    return f"{ns / 1_000_000:.0f}ms"


def _addr(addr: int | None) -> str:
    return "?" if addr is None else f"{addr:#x}"


# What each cause of lost records means to the operator (events.LostCause).
LOST_CAUSE_TEXT = {
    "buffer_full": "the kernel buffer was full (raise --buffer-kb)",
    "messages_per_read": "more than 32 messages in one read()",
    "ranges_untracked": "faults in ranges beyond the 16 tracked per process (tracepoint mode)",
}


def lost_causes(causes: dict[str, int]) -> str:
    """' (N because ..., M because ...)' for the causes that lost records; '' for none."""
    named = [f"{n} because {LOST_CAUSE_TEXT.get(cause, cause)}" for cause, n in causes.items() if n]
    return f" ({'; '.join(named)})" if named else ""


class Text:
    """Times are seconds since ``origin_ns``: the header's ``started_ns``
    (the probes went live), else the first thing written."""

    def __init__(self, out: TextIO, *, origin_ns: int | None = None) -> None:
        self.out = out
        self._t0 = origin_ns

    def _seconds(self, ts: int | None) -> str:
        if ts is None:
            return "?"
        if self._t0 is None:
            self._t0 = ts
        return f"{(ts - self._t0) / 1e9:.6f}"

    def header(self, info: dict[str, Any]) -> None:
        if info.get("started_ns"):
            self._t0 = info["started_ns"]
        probes = ", ".join(p["probe"] for p in info["probes"] if p["attached"])
        self.out.write(f"# uffdtrace {info['version']} mode={info['mode']} transport={info['transport']} "
                       f"kernel={printable(info['kernel'])}\n# probes: {probes}\n")
        for p in info["probes"]:
            if not p["attached"]:
                self.out.write(f"# unavailable: {p['probe']}: {p['detail']}\n")
        listed = {f"{p['probe']} ({p['detail']})" for p in info["probes"] if not p["attached"]}
        unseen = [printable(what) for what in info.get("degraded") or () if what not in listed]
        if unseen:
            self.out.write(f"# cannot see: {'; '.join(unseen)}\n")
        self.out.flush()

    def lifecycle(self, lc: Lifecycle) -> None:
        lat = lc.latencies()
        res = lc.resolve
        resolved = f"{res.op}{' DONTWAKE' if res.dontwake else ''}={res.ret}" if res else "unresolved"
        parts = [f"{self._seconds(lc.t_raised or lc.ended_at):>12}", f"{printable(lc.comm):<15}",
                 f"{lc.tgid:>7}/{lc.tid:<7}", f"{lc.state:<10}", f"uffd={lc.uffd or '?'}", f"addr={_addr(lc.page)}",
                 lc.reason or "-",
                 f"rounds={lc.rounds}", f"reads={lc.reads}", resolved,
                 *(f"{k}={duration(v)}" for k, v in lat.items())]
        if lc.lock is not None:  # kprobe mode: the lock, and each fallback to mmap_lock
            parts.append(f"lock={lc.lock}")
        if lc.fallbacks:
            parts.append("fallbacks=" + ",".join(f"{k}:{n}" for k, n in sorted(lc.fallbacks.items())))
        if lc.flags:
            parts.append("FLAGS=" + ",".join(lc.flags))
        self.out.write(" ".join(parts) + "\n")  # flushed once per batch (flush)

    def uffd_event(self, ev: EventLifecycle) -> None:
        read = f"read by {ev.reader_tid} after {duration(ev.t_read - ev.t_raised)}" if ev.t_read is not None \
            else "unread"
        wait = f"wait={duration(ev.t_done - ev.t_raised)}" if ev.t_done is not None else "wait=-"
        parts = [f"{self._seconds(ev.t_raised):>12}", f"{printable(ev.comm):<15}", f"{ev.tgid:>7}/{ev.tid:<7}",
                 f"{ev.state:<10}", f"uffd={ev.uffd or '?'}", f"EVENT {ev.name}",
                 f"range={_addr(ev.start)}+{ev.length:#x}", read, wait]
        if ev.flags:
            parts.append("FLAGS=" + ",".join(ev.flags))
        self.out.write(" ".join(parts) + "\n")

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        pass  # named in the evidence of the flag that asked

    def flag(self, flag: Flag) -> None:
        blocked = "" if flag.blocked_ns is None else f" blocked={duration(flag.blocked_ns)}"
        head = "FLAG (final)" if flag.update else "FLAG"
        self.out.write(f"{self._seconds(flag.ts_ns):>12} {head} {flag.name} {printable(flag.comm)} "
                       f"{flag.tgid}/{flag.tid} addr={_addr(flag.addr)}{blocked} state={flag.state}\n")
        if not flag.update:
            for e in flag.evidence:
                who = f" tid {e.tid}" if e.tid else ""
                self.out.write(f"{'':>12}   {self._seconds(e.ts_ns) if e.ts_ns else '':>10}{who}: {e.what}\n")
            if flag.verdict:
                self.out.write(f"{'':>12}   verdict {flag.verdict}: {MEANING[flag.verdict]}\n")
        self.out.flush()

    def event(self, ev: Event) -> None:
        parts = [f"{self._seconds(ev.ts_ns):>12}", f"{printable(ev.comm):<15}", f"{ev.tgid:>7}/{ev.tid:<7}",
                 f"{ev.kind.name.lower():<14}"]
        if ev.kind in (Kind.RESOLVE, Kind.UFFD_REGISTER):
            parts.append(f"op={op_name(ev.op)}" + (" DONTWAKE" if ev.dontwake else ""))
        parts.extend(_fmt(name, getattr(ev, name)) for name in TEXT_FIELDS.get(ev.kind, ()))
        self.out.write(" ".join(parts) + "\n")

    def lost(self, count: int) -> None:
        self.out.write(f"# LOST {count} records so far (the summary says why)\n")
        self.out.flush()

    def unmatched_reads(self, count: int) -> None:
        pass  # the summary says how many (a trace's reader compares it with messages_read)

    def summary(self, summary: dict[str, Any]) -> None:
        kinds = " ".join(f"{k}={v}" for k, v in sorted(summary["by_kind"].items()))
        flags = " ".join(f"{k}={v}" for k, v in sorted(summary["flags"].items())) or "none"
        line = (f"# summary: {summary['lifecycles']} lifecycles, flags: {flags}; {summary['events']} events, "
                f"{summary['lost']} lost{lost_causes(summary.get('lost_causes') or {})}")
        if summary["evicted"]:
            line += f", {summary['evicted']} open lifecycles evicted (table full)"
        if "anon_vma" in summary:
            rmap = summary["anon_vma"]
            line += f", {rmap['retries']} anon_vma retries in {rmap['walks']} rmap walks"
            if rmap.get("stale"):
                line += f" ({rmap['stale']} holding a stale anon_vma)"
        if summary.get("command_status") is not None:
            line += f", command exited with status {summary['command_status']}"
        self.out.write(f"{line}\n# by kind: {kinds}\n")
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def tick(self, now: int, waiting: list[Lifecycle], events: Sequence[EventLifecycle] = ()) -> None:
        pass  # printed output has no running state
