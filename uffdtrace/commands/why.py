"""`uffdtrace why`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import session
from ..analysis.model import Flag
from ..analysis.rules import Thresholds
from ..analysis.tables import PAGE_SIZE
from ..escape import printable
from ..events import UFFD_EVENT_PAGEFAULT, Event, Kind, op_name
from ..live import hang, kernel, uffd_state
from ..live.source import LiveSource, Options, check_bpf, check_pids
from ..sinks import Ignoring


class Watched(Ignoring):
    """What the trace of --watch saw of each blocked thread: the reads of its
    message, the resolutions covering its page, its wake-ups, and the flags."""

    def __init__(self, blocked: list[hang.Blocked]) -> None:
        self.blocked = blocked
        self.seen: dict[int, dict[str, Any]] = {
            b.tid: {"reads": [], "resolutions": [], "wakeups": [], "flags": []} for b in blocked}

    def _mine(self, b: hang.Blocked, ev: Event) -> str | None:
        if b.addr is None:
            return None
        if ev.kind is Kind.READ_MSG:
            if b.kind == "fault" and ev.mode == UFFD_EVENT_PAGEFAULT and ev.addr & ~(PAGE_SIZE - 1) == b.addr:
                return "reads"
            if b.kind == "event" and ev.mode != UFFD_EVENT_PAGEFAULT and ev.flags == b.addr:
                return "reads"  # an event's message: its range's start (remove, unmap) or its origin (remap)
        if ev.kind is Kind.RESOLVE and b.kind == "fault" and ev.addr <= b.addr < ev.addr + max(ev.len, 1):
            return "resolutions"
        return None

    def event(self, ev: Event) -> None:
        for b in self.blocked:
            seen = self.seen[b.tid]
            if ev.kind is Kind.WAKE_TASK and ev.peer_tid == b.tid:
                seen["wakeups"].append({"by_tid": ev.tid})
            elif (what := self._mine(b, ev)) == "reads":
                seen["reads"].append({"by_tid": ev.tid})
            elif what == "resolutions":
                seen["resolutions"].append({"by_tid": ev.tid, "op": op_name(ev.op), "ret": ev.ret})

    def flag(self, flag: Flag) -> None:
        if flag.tid in self.seen and not flag.update:
            self.seen[flag.tid]["flags"].append(flag.name)


def watch(found: list[hang.Blocked], seconds: float, mode: str) -> dict[int, dict[str, Any]]:
    """Trace the blocked threads' processes and every holder of their uffds
    for ``seconds`` (every record: nothing folded), then look again."""
    pids = sorted({b.pid for b in found} | {h.pid for b in found for h in b.holders})
    seen = Watched(found)
    session.run(LiveSource(Options(pids=pids, duration=seconds, every_record=True), mode), seen, Thresholds(),
                raw_events=True)
    after = {b.tid: b for b in hang.explain(pids, uffd_state.snapshot)}
    for tid, s in seen.seen.items():
        s["seconds"] = seconds
        s["still_blocked"] = after[tid].verdict if tid in after else None
    return seen.seen


def _watch_line(s: dict[str, Any]) -> str:
    parts = [f"{len(s['reads'])} reads", f"{len(s['resolutions'])} resolutions", f"{len(s['wakeups'])} wake-ups"]
    if s["flags"]:
        parts.append(f"flags {', '.join(s['flags'])}")
    end = f"still blocked: {s['still_blocked']}" if s["still_blocked"] else "no longer blocked"
    return f"    watched {s['seconds']:g} s: {', '.join(parts)}; {end}"


@click.command("why")
@click.argument("pids", nargs=-1, type=int, metavar="[PID]...")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per blocked thread.")
@click.option("--watch", "watch_s", type=click.FloatRange(min=0.1), metavar="S",
              help="Then trace the blocked threads' processes and their uffds' holders for S seconds, and add what "
                   "happened to each thread (reads, resolutions, wake-ups).")
@click.pass_context
def command(ctx: click.Context, pids: tuple[int, ...], as_json: bool, watch_s: float | None) -> None:
    """Explain a hang in progress, without a prior trace: for every thread of
    PID (every process when none is given) blocked in handle_userfault or in
    an event's completion, the missing step and who should take it. Exit 0
    when nothing is blocked, 3 when something is."""
    check_bpf(kernel.probe())  # the uffds' queues are walked by a BPF program
    check_pids(pids)
    found = hang.explain(list(pids), uffd_state.snapshot)
    watched = watch(found, watch_s, ctx.obj["mode"]) if watch_s and found else {}
    if as_json:
        for b in found:
            click.echo(json.dumps({"type": "blocked", **b.to_json(), "watch": watched.get(b.tid)}))
    elif not found:
        click.echo("no thread is blocked on userfaultfd" + (f" in {' '.join(map(str, pids))}" if pids else ""))
    else:
        for b in found:
            click.echo(printable(f"{b.verdict}: {b.explanation}"))
            if b.tid in watched:
                click.echo(_watch_line(watched[b.tid]))
    sys.exit(3 if found else 0)
