"""`uffdtrace report`: a whole session summed up, as plain text that pastes
into a mail or a bug tracker (tabulate), or as one JSON object. Memory is
bounded by processes times uffds, flags and the few slowest faults: finished
lifecycles are counted, not kept."""

from __future__ import annotations

import collections
import datetime
import errno
import heapq
import io
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from ..analysis.model import EventLifecycle, Flag, Lifecycle
from ..escape import printable
from ..events import Event, Kind
from ..source import Holder
from . import Ignoring
from .text import Text, duration

PHASES = ("pickup", "service", "wake", "resume")
PHASE_MEANING = {"pickup": "raised -> message read", "service": "read -> resolved",
                 "wake": "resolved -> woken", "resume": "woken -> returned"}
SLOWEST = 10
MAX_EVENTS = 10000  # non-cooperative events kept for the report (a balloon raises a few per second)
MAX_USERS = 64  # processes named per uffd
# Records made through a descriptor on the uffd: their process held one.
DESCRIPTOR_USES = {Kind.READ_MSG: "read", Kind.RESOLVE: "ioctl", Kind.UFFD_API: "ioctl",
                   Kind.UFFD_REGISTER: "ioctl", Kind.AIO_POLL_SUBMIT: "poll", Kind.UFFD_CLOSE: "close"}


def result_name(ret: int) -> str:
    if ret == 0:
        return "ok"
    return errno.errorcode.get(-ret, str(ret)) if ret < 0 else str(ret)


def total_ns(lc: Lifecycle) -> int | None:
    end = lc.t_returned or lc.t_woken or lc.ended_at
    return end - lc.t_raised if lc.t_raised is not None and end and end >= lc.t_raised else None


@dataclass
class UffdStats:
    """One (process, uffd)."""

    faults: int = 0
    reads: int = 0
    extra_rounds: int = 0
    resolutions: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    flagged: int = 0
    locks: collections.Counter[str] = field(default_factory=collections.Counter)  # kprobe mode: vma | mmap
    fallbacks: collections.Counter[str] = field(default_factory=collections.Counter)  # to mmap_lock, per cause


def uffd_users(u: dict[str, Any]) -> tuple[str, str]:
    """A row of the report's "uffds": who used a descriptor on it, who held it when a fault was stuck."""
    used = ", ".join(f"{x['pid']} {x['comm']} ({'/'.join(x['uses'])})" for x in u["used_by"]) or "-"
    held = "-" if u["held_by"] is None else ", ".join(
        f"{h['pid']} {h['comm']} ({h['waiting']}/{h['threads']} threads waiting)"
        for h in u["held_by"]["holders"]) or "none (released)"
    return used, held


class Log2Histogram:
    """Counts per power-of-two bucket of microseconds (bcc's print_log2_hist)."""

    def __init__(self) -> None:
        self.buckets: collections.Counter[int] = collections.Counter()

    def add(self, ns: int) -> None:
        self.buckets[(ns // 1000).bit_length()] += 1

    @staticmethod
    def bounds(i: int) -> tuple[int, int]:
        return (0, 0) if i == 0 else (1 << (i - 1), (1 << i) - 1)

    def rows(self) -> list[tuple[int, int, int]]:
        if not self.buckets:
            return []
        return [(*self.bounds(i), self.buckets[i]) for i in range(min(self.buckets), max(self.buckets) + 1)]

    def render(self, title: str) -> str:
        rows = self.rows()
        if not rows:
            return f"{title}: none\n"
        peak = max(c for _, _, c in rows)
        out = [f"{title}\n{'usecs':>22}{'':>6}: count     distribution"]
        for low, high, count in rows:
            bar = "*" * (count * 40 // peak) if count else ""
            out.append(f"{low:>12} -> {high:<12}: {count:<9} |{bar:<40}|")
        return "\n".join(out) + "\n"


class Report(Ignoring):
    """Collects a session (header, lifecycles, flags, summary); render() or to_json() after."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.summary_: dict[str, Any] = {}
        self.uffds: dict[tuple[int, str, int], UffdStats] = collections.defaultdict(UffdStats)
        self.hist = {phase: Log2Histogram() for phase in PHASES}
        self.slowest: list[tuple[int, int, dict[str, Any]]] = []  # min-heap of (total, seq, lifecycle json)
        self.flags: list[Flag] = []
        self.events: list[EventLifecycle] = []  # non-cooperative events, kept whole: they are few
        self.final: dict[tuple[str, int, int | None], Flag] = {}  # re-reports with the final numbers
        self._seq = 0
        # Per uffd: the processes seen using a descriptor on it (pid -> comm, uses),
        # and the holders the kernel named when a fault was stuck on it (the latest answer).
        self.users: dict[int, dict[int, tuple[str, set[str]]]] = collections.defaultdict(dict)
        self.held: dict[int, tuple[int, list[Holder]]] = {}

    def header(self, info: dict[str, Any]) -> None:
        self.info = info

    def summary(self, summary: dict[str, Any]) -> None:
        self.summary_ = summary

    def lifecycle(self, lc: Lifecycle) -> None:
        s = self.uffds[(lc.tgid, lc.comm, lc.uffd)]
        s.faults += 1
        s.reads += lc.reads
        s.extra_rounds += lc.rounds - 1
        if lc.lock is not None:
            s.locks[lc.lock] += 1
        s.fallbacks.update(lc.fallbacks)
        s.states[lc.state] += 1
        s.flagged += bool(lc.flags)
        if lc.resolve is not None:
            s.resolutions[(lc.resolve.op, result_name(lc.resolve.ret))] += 1
        for phase, ns in lc.latencies().items():
            if ns is not None:
                self.hist[phase].add(ns)
        total = total_ns(lc)
        if total is not None:
            self._seq += 1
            item = (total, -self._seq, lc.to_json())
            if len(self.slowest) < SLOWEST:
                heapq.heappush(self.slowest, item)
            elif item > self.slowest[0]:
                heapq.heapreplace(self.slowest, item)

    def event(self, ev: Event) -> None:
        use = DESCRIPTOR_USES.get(ev.kind)
        if use is None or not ev.ctx:
            return
        users = self.users[ev.ctx]
        if ev.tgid not in users and len(users) >= MAX_USERS:
            return
        users.setdefault(ev.tgid, (ev.comm, set()))[1].add(use)

    def holders(self, uffd: int, holders: list[Holder], ts_ns: int) -> None:
        self.held[uffd] = (ts_ns, holders)

    def uffd_event(self, ev: EventLifecycle) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(ev)

    def flag(self, flag: Flag) -> None:
        if flag.update:
            self.final[(flag.name, flag.tid, flag.addr)] = flag
        else:
            self.flags.append(flag)

    # -- rendering ---------------------------------------------------------
    def _slowest(self) -> list[dict[str, Any]]:
        return [lc for _, _, lc in sorted(self.slowest, reverse=True)]

    def _process_rows(self) -> list[dict[str, Any]]:
        return [{"pid": tgid, "comm": comm, "uffd": uffd, "faults": s.faults, "reads": s.reads,
                 "extra_rounds": s.extra_rounds, "flagged": s.flagged,
                 "resolutions": {f"{op} {res}": n for (op, res), n in sorted(s.resolutions.items())},
                 "states": dict(sorted(s.states.items())), "locks": dict(sorted(s.locks.items())),
                 "fallbacks": dict(sorted(s.fallbacks.items()))}
                for (tgid, comm, uffd), s in sorted(self.uffds.items())]

    def _uffd_rows(self) -> list[dict[str, Any]]:
        return [{"uffd": uffd,
                 "used_by": [{"pid": pid, "comm": comm, "uses": sorted(uses)}
                             for pid, (comm, uses) in sorted(self.users.get(uffd, {}).items())],
                 "held_by": None if uffd not in self.held else {
                     "t_ns": self.held[uffd][0],
                     "holders": [{"pid": h.pid, "comm": h.comm, "threads": h.threads, "waiting": h.waiting}
                                 for h in self.held[uffd][1]]}}
                for uffd in sorted(set(self.users) | set(self.held))]

    def to_json(self, path: str, damage: str | None) -> dict[str, Any]:
        return {"type": "report", "capture": path, "partial": damage, "run": self.info,
                "processes": self._process_rows(),
                "uffds": self._uffd_rows(),
                "latency_us": {phase: [{"low": lo, "high": hi, "count": n} for lo, hi, n in h.rows()]
                               for phase, h in self.hist.items()},
                "slowest": self._slowest(),
                "uffd_events": [ev.to_json() for ev in self.events],
                "flags": [{**f.to_json(), "final": self.final[k].to_json() if (k := (f.name, f.tid, f.addr))
                           in self.final else None} for f in self.flags],
                "summary": self.summary_}

    def render(self, path: str, damage: str | None) -> str:
        out = io.StringIO()
        info, summ = self.info, self.summary_
        out.write(f"uffdtrace report: {printable(path)}\n")
        if damage:
            out.write(f"PARTIAL: {printable(damage)}; this report covers the records before it\n")
        started = info.get("started_ns", 0) + info.get("wall_offset_ns", 0)
        when = datetime.datetime.fromtimestamp(started / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        out.write(f"\nRecorded {when} on {printable(info.get('host', '?'))} by uffdtrace {info['version']}: "
                  f"kernel {printable(info['kernel'])}, {info['mode']} mode, {info['transport']} transport\n")
        if info["command"]:
            out.write(f"Command: {printable(' '.join(info['command']))} (exit status {summ['command_status']})\n")
        if info["pids"]:
            out.write(f"Processes: {' '.join(map(str, info['pids']))}\n")
        out.write(f"Thresholds: --stuck-ms {info['stuck_ms']:g} --wake-ms {info['wake_ms']:g} "
                  f"--retry-threshold {info['retry_threshold']}\n")
        attached = [p["probe"] for p in info["probes"] if p["attached"]]
        out.write(f"Probes: {', '.join(attached)}\n")
        for p in info["probes"]:
            if not p["attached"]:
                out.write(f"Not attached: {p['probe']}: {printable(p['detail'])}\n")
        for d in info["degraded"]:
            out.write(f"Could not be seen: {printable(d)}\n")
        lost = summ["lost"]
        out.write(f"Records: {summ['events']} events, {lost} lost"
                  + (f" ({', '.join(f'{k} {v}' for k, v in summ['lost_causes'].items() if v)})" if lost else "")
                  + f"; {summ['filtered_resolves']} resolutions that touched no waiting fault counted in the kernel"
                  + "\n")
        out.write(f"Lifecycles: {summ['lifecycles']}"
                  + (f" ({summ['quiet_lifecycles']} clean ones only counted in the kernel: --flagged)"
                     if summ["quiet_lifecycles"] else "")
                  + f"; messages read {summ['messages_read']}, matching no fault {summ['unmatched_reads']}\n")
        if "anon_vma" in summ:
            rmap = summ["anon_vma"]
            out.write(f"Rmap walks locking an anon_vma: {rmap['walks']}, retried {rmap['retries']} times (the v6.8 "
                      f"recheck after a UFFDIO_MOVE; flagged only past --retry-threshold for one folio)"
                      + (f"; {rmap['stale']} went on holding an anon_vma their folio had left (anon_vma_stale)"
                         if rmap.get("stale") else "") + "\n")

        out.write("\nPer process and uffd\n")
        processes = self._process_rows()
        rows = [[r["pid"], printable(r["comm"]), r["uffd"] or "?", r["faults"], r["reads"], r["extra_rounds"],
                 r["flagged"], ", ".join(f"{k} {v}" for k, v in r["resolutions"].items()) or "-",
                 ", ".join(f"{k} {v}" for k, v in r["states"].items())] for r in processes]
        out.write(tabulate(rows, headers=["PID", "COMM", "UFFD", "FAULTS", "READS", "ROUNDS>1", "FLAGGED",
                                          "RESOLUTIONS (op result count)", "ENDED"]) + "\n")

        locked = [r for r in processes if r["locks"]]
        if locked:
            out.write("\nLocks the faults ran under (per-VMA lock or mmap_lock, as each entered handle_userfault) "
                      "and their VM_FAULT_RETRY fallbacks to mmap_lock\n")
            rows = [[r["pid"], printable(r["comm"]), r["uffd"] or "?", r["locks"].get("vma", 0),
                     r["locks"].get("mmap", 0), ", ".join(f"{k} {v}" for k, v in r["fallbacks"].items()) or "-"]
                    for r in locked]
            out.write(tabulate(rows, headers=["PID", "COMM", "UFFD", "VMA LOCK", "MMAP_LOCK",
                                              "FALLBACKS (cause count)"]) + "\n")

        uffds = self._uffd_rows()
        if uffds:
            out.write("\nWho held each uffd (a descriptor used: read, ioctl, poll, close; and, when a fault was "
                      "stuck on it, the holders /proc named)\n")
            rows = [[u["uffd"], *map(printable, uffd_users(u))] for u in uffds]
            out.write(tabulate(rows, headers=["UFFD", "USED BY", "HELD BY WHEN STUCK"]) + "\n")

        out.write("\nLatency per phase\n")
        for phase in PHASES:
            out.write("\n" + self.hist[phase].render(f"{phase} ({PHASE_MEANING[phase]})"))

        out.write(f"\nSlowest faults (raised -> woken or returned), at most {SLOWEST}\n")
        slow = [[printable(lc["comm"]), f"{lc['tgid']}/{lc['tid']}", lc["uffd"] or "?",
                 "?" if lc["addr"] is None else f"{lc['addr']:#x}", lc["reason"] or "-", lc["rounds"],
                 *(duration(lc["latency_ns"][p]) for p in PHASES),
                 f"{lc['resolve_op']}={lc['resolve_ret']}" if lc["resolve_op"] else "unresolved", lc["state"],
                 ",".join(lc["flags"]) or "-"] for lc in self._slowest()]
        heads = ["COMM", "PID/TID", "UFFD", "ADDR", "REASON", "ROUNDS", *map(str.upper, PHASES), "RESOLVED", "ENDED",
                 "FLAGS"]
        out.write(tabulate(slow, headers=heads) + "\n" if slow else "none\n")

        if self.events:
            out.write(f"\nNon-cooperative events (raised -> read -> the caller resumed), {len(self.events)}\n")
            rows = [[printable(ev.comm), f"{ev.tgid}/{ev.tid}", ev.uffd or "?", ev.name,
                     f"{ev.start:#x}+{ev.length:#x}",
                     ev.reader_tid or "-",
                     duration(None if ev.t_read is None else ev.t_read - ev.t_raised),
                     duration(None if ev.t_done is None else ev.t_done - ev.t_raised), ",".join(ev.flags) or "-"]
                    for ev in self.events]
            out.write(tabulate(rows, headers=["COMM", "PID/TID", "UFFD", "EVENT", "RANGE", "READER", "UNREAD",
                                              "WAIT", "FLAGS"]) + "\n")

        out.write(f"\nFlags: {len(self.flags)}\n")
        text = Text(out, origin_ns=info.get("started_ns") or None)
        for f in self.flags:
            text.flag(f)
            final = self.final.get((f.name, f.tid, f.addr))
            if final is not None:
                out.write(f"{'':>15}finally: {final.state}"
                          + (f" after {duration(final.blocked_ns)}" if final.blocked_ns is not None else "") + "\n")
        return out.getvalue()
