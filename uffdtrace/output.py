"""Printers: human text and JSON lines (field names are the ABI's, DESIGN §4,
and the lifecycle/flag records of README "Output")."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson

from .escape import printable
from .events import Event, Kind, op_name
from .model import Flag, Lifecycle

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
    Kind.UFFD_CLOSE: ("ctx",),
}
HEX_FIELDS = {"addr", "flags", "mode"}
TEXT_NAMES = {"ctx": "uffd", "peer_tid": "peer"}


def _fmt(name: str, value: int) -> str:
    label = TEXT_NAMES.get(name, name)
    return f"{label}={value:#x}" if name in HEX_FIELDS else f"{label}={value}"


def _duration(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 10_000:
        return f"{ns}ns"
    if ns < 10_000_000:
        return f"{ns / 1000:.0f}us"
    return f"{ns / 1_000_000:.0f}ms"


def _addr(addr: int | None) -> str:
    return "?" if addr is None else f"{addr:#x}"


class Printer:
    """Writes events, lifecycles, flags, lost-record notices and the closing
    summary. ``tids`` keeps only what concerns those threads; ``flagged_only``
    keeps only lifecycles that earned a flag."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout, *, tids: tuple[int, ...] = (),
                 flagged_only: bool = False) -> None:
        self.as_json = as_json
        self.out = out
        self.tids = set(tids)
        self.flagged_only = flagged_only
        self._t0: int | None = None

    def set_origin(self, ts_ns: int) -> None:
        """Text times are seconds since this instant (the start of tracing)."""
        self._t0 = ts_ns

    def _seconds(self, ts: int | None) -> str:
        if ts is None:
            return "?"
        if self._t0 is None:
            self._t0 = ts
        return f"{(ts - self._t0) / 1e9:.6f}"

    def lifecycle(self, lc: Lifecycle) -> None:
        if self.tids and not self.tids & {lc.tid, lc.reader_tid, lc.resolver_tid, lc.waker_tid}:
            return
        if self.flagged_only and not lc.flags:
            return
        if self.as_json:
            self._json(lc.to_json())
            return
        lat = lc.latencies()
        res = lc.resolve
        resolved = f"{res.op}{' DONTWAKE' if res.dontwake else ''}={res.ret}" if res else "unresolved"
        parts = [f"{self._seconds(lc.t_raised or lc.ended_at):>12}", f"{printable(lc.comm):<15}",
                 f"{lc.tgid:>7}/{lc.tid:<7}", f"{lc.state:<10}", f"uffd={lc.ctx or '?'}", f"addr={_addr(lc.page)}",
                 lc.reason or "-",
                 f"rounds={lc.rounds}", f"reads={lc.reads}", resolved,
                 *(f"{k}={_duration(v)}" for k, v in lat.items())]
        if lc.flags:
            parts.append("FLAGS=" + ",".join(lc.flags))
        self.out.write(" ".join(parts) + "\n")  # flushed once per batch (flush)

    def flush(self) -> None:
        self.out.flush()

    def flag(self, flag: Flag) -> None:
        if self.tids and flag.tid not in self.tids:
            return
        if self.as_json:
            self._json(flag.to_json())
            self.out.flush()
            return
        blocked = "" if flag.blocked_ns is None else f" blocked={_duration(flag.blocked_ns)}"
        head = "FLAG (final)" if flag.update else "FLAG"
        self.out.write(f"{self._seconds(flag.ts_ns):>12} {head} {flag.name} {printable(flag.comm)} "
                       f"{flag.tgid}/{flag.tid} addr={_addr(flag.addr)}{blocked} state={flag.state}\n")
        if not flag.update:
            for e in flag.evidence:
                who = f" tid {e.tid}" if e.tid else ""
                self.out.write(f"{'':>12}   {self._seconds(e.ts_ns) if e.ts_ns else '':>10}{who}: {e.what}\n")
        self.out.flush()

    def _json(self, obj: dict[str, Any]) -> None:
        # orjson: a fifth of json.dumps's time, and this runs once per lifecycle or event.
        self.out.write(orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE).decode())

    def header(self, info: dict[str, Any]) -> None:
        if self.as_json:
            self._json({"type": "header", **info})
        else:
            probes = ", ".join(p["probe"] for p in info["probes"] if p["attached"])
            self.out.write(f"# uffdtrace {info['version']} mode={info['mode']} transport={info['transport']} "
                           f"kernel={info['kernel']}\n# probes: {probes}\n")
            for p in info["probes"]:
                if not p["attached"]:
                    self.out.write(f"# unavailable: {p['probe']}: {p['detail']}\n")
        self.out.flush()

    def event(self, ev: Event) -> None:
        if self.tids and ev.tid not in self.tids and ev.peer_tid not in self.tids:
            return
        if self.as_json:
            self._json(ev.to_json())
            return
        parts = [f"{self._seconds(ev.ts_ns):>12}", f"{printable(ev.comm):<15}", f"{ev.tgid:>7}/{ev.tid:<7}",
                 f"{ev.kind.name.lower():<14}"]
        if ev.kind in (Kind.RESOLVE, Kind.UFFD_REGISTER):
            parts.append(f"op={op_name(ev.op)}" + (" DONTWAKE" if ev.dontwake else ""))
        parts.extend(_fmt(name, getattr(ev, name)) for name in TEXT_FIELDS.get(ev.kind, ()))
        self.out.write(" ".join(parts) + "\n")

    def lost(self, count: int) -> None:
        if self.as_json:
            self._json({"type": "lost", "count": count})
        else:
            self.out.write(f"# LOST {count} records so far (kernel buffer full: see --buffer-kb)\n")
        self.out.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        if self.as_json:
            self._json({"type": "summary", **summary})
        else:
            kinds = " ".join(f"{k}={v}" for k, v in sorted(summary["by_kind"].items()))
            flags = " ".join(f"{k}={v}" for k, v in sorted(summary["flags"].items())) or "none"
            line = (f"# summary: {summary['lifecycles']} lifecycles, flags: {flags}; {summary['events']} events, "
                    f"{summary['lost']} lost")
            if summary["evicted"]:
                line += f", {summary['evicted']} open lifecycles evicted (table full)"
            if summary.get("command_status") is not None:
                line += f", command exited with status {summary['command_status']}"
            self.out.write(f"{line}\n# by kind: {kinds}\n")
        self.out.flush()
