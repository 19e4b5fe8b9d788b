"""Printers: human text and JSON lines (field names are the ABI's, DESIGN §4)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .events import Event, Kind, op_name

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


class Printer:
    """Writes events, lost-record notices and the closing summary."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout) -> None:
        self.as_json = as_json
        self.out = out
        self._t0: int | None = None

    def _json(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")

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
        if self.as_json:
            self._json(ev.to_json())
            return
        if self._t0 is None:
            self._t0 = ev.ts_ns
        parts = [f"{(ev.ts_ns - self._t0) / 1e9:12.6f}", f"{ev.comm:<15}", f"{ev.tgid:>7}/{ev.tid:<7}",
                 f"{ev.kind.name.lower():<14}"]
        if ev.kind in (Kind.RESOLVE, Kind.UFFD_REGISTER):
            parts.append(f"op={op_name(ev.op)}" + (" DONTWAKE" if ev.dontwake else ""))
        parts.extend(_fmt(name, getattr(ev, name)) for name in TEXT_FIELDS.get(ev.kind, ()))
        self.out.write(" ".join(parts) + "\n")

    def lost(self, count: int) -> None:
        if self.as_json:
            self._json({"type": "lost", "count": count})
        else:
            self.out.write(f"# LOST {count} records so far (ring buffer full)\n")
        self.out.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        if self.as_json:
            self._json({"type": "summary", **summary})
        else:
            kinds = " ".join(f"{k}={v}" for k, v in sorted(summary["by_kind"].items()))
            line = f"# summary: {summary['events']} events, {summary['lost']} lost"
            if summary.get("command_status") is not None:
                line += f", command exited with status {summary['command_status']}"
            self.out.write(f"{line}\n# by kind: {kinds}\n")
        self.out.flush()
