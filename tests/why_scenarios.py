"""The hangs `uffdtrace why` must explain, for both live tiers: each started
by a workload of tests/workloads/ before `why` runs (no trace before it).
All of them run at once and one `why -j` (every process) is asked until each
shows its verdict, so that a VM under TCG compiles the walk once or twice,
not once a hang; then every workload's own account says who was who."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Found = list[dict[str, Any]]


@dataclass(frozen=True)
class WhyCase:
    name: str
    command: tuple[str, ...]  # the workload and its arguments; HANG in them is the hang's length (ms)
    verdict: str
    waiter: str  # the workload's key for the thread that hangs
    check: Callable[[dict[str, Any], dict[str, Any]], None]


def holder(b: dict[str, Any], pid: int) -> dict[str, Any]:
    [h] = [h for h in b["holders"] if h["pid"] == pid]
    return h


def _not_read(b: dict[str, Any], w: dict[str, Any]) -> None:
    """A handler process that took the uffd and reads nothing: named, its thread asleep elsewhere."""
    assert (b["kind"], b["message"], b["page"]) == ("fault", "queued", "absent"), b
    [t] = holder(b, w["handler_pid"])["threads"]
    assert t["wchan"] != "running" and not t["asleep_on_uffd"] and f"pid {w['handler_pid']}" in b["explanation"]


def _read_not_resolved(b: dict[str, Any], w: dict[str, Any]) -> None:
    assert (b["message"], b["page"]) == ("read", "absent") and holder(b, w["handler_pid"]), b


def _dead(message: str, why: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def check(b: dict[str, Any], w: dict[str, Any]) -> None:
        assert b["message"] == message, b
        assert [h["pid"] for h in b["holders"]] == [b["pid"]], b  # the handler is gone
        assert why in b["explanation"], b
    return check


def _resolved_not_woken(b: dict[str, Any], w: dict[str, Any]) -> None:
    assert (b["page"], b["addr"], b["message"]) == ("present", w["addr"], "read"), b


def _deferred(b: dict[str, Any], w: dict[str, Any]) -> None:
    """Its copy failed with EAGAIN and the handler polls the uffd again without retrying."""
    assert [t["tid"] for t in b["handler_threads"]] == [w["handler_tid"]], b
    assert b["handler_threads"][0]["on_this_uffd"] in ("poll", "ppoll"), b


def _event_unread(b: dict[str, Any], w: dict[str, Any]) -> None:
    assert (b["kind"], b["event"], b["addr"]) == ("event", "remove", w["balloon_start"]), b
    assert b["range"][0] == w["balloon_start"] and b["range"][1] > 0, b
    assert [(e["event"], e["tid"]) for e in b["events_queued"]] == [("remove", w["balloon_tid"])], b


CASES = (
    WhyCase("unread", ("handler_process", "unread", "HANG"), "not_read", "tids", _not_read),
    WhyCase("stalled", ("handler_process", "stalled", "HANG"), "read_not_resolved", "tids", _read_not_resolved),
    WhyCase("killed", ("handler_process", "killed", "HANG"), "no_reader", "tids", _dead("read", "has gone")),
    WhyCase("dead", ("handler_process", "dead", "HANG"), "no_reader", "tids",
            _dead("queued", "each sleeps in a userfaultfd wait")),
    WhyCase("dontwake", ("dontwake", "HANG_S"), "resolved_not_woken", "faulter_tid", _resolved_not_woken),
    WhyCase("deferred", ("balloon", "defer", "HANG"), "read_not_resolved", "faulter_tid", _deferred),
    WhyCase("balloon", ("balloon", "unread", "HANG"), "event_unread", "balloon_tid", _event_unread),
)


def _exec_start(pid: int, tid: int) -> float | None:
    """The thread's se.exec_start as the kernel prints it, right after `why` read it."""
    try:
        lines = Path(f"/proc/{pid}/task/{tid}/sched").read_text().splitlines()
    except OSError:
        return None
    return next((float(line.split(":")[1]) for line in lines if line.startswith("se.exec_start")), None)


def run_all(uffdtrace: str, workloads: Path, hang_ms: int, settle_s: float) -> dict[str, Any]:
    """Every case at once; `why -j` asked until each shows its verdict (or
    ``settle_s`` passed). Per case: what `why` said of the workload's
    process, and the workload's JSON line."""
    procs = {}
    for case in CASES:
        args = [str(hang_ms) if a == "HANG" else str(hang_ms // 1000) if a == "HANG_S" else a
                for a in case.command[1:]]
        procs[case.name] = subprocess.Popen([str(workloads / case.command[0]), *args], stdout=subprocess.PIPE,
                                            text=True)
    seen: dict[str, Found] = {}
    last: dict[str, Found] = {}  # what the last ask said, kept for a case that never got its verdict
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and len(seen) < len(CASES):
        done = subprocess.run([uffdtrace, "why", "-j"], capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL, check=False)
        assert done.returncode in (0, 3) and not done.stderr, done
        found = [json.loads(line) for line in done.stdout.splitlines()]
        for case in CASES:
            mine = [{**b, "exec_start": _exec_start(b["pid"], b["tid"])}
                    for b in found if b["pid"] == procs[case.name].pid]
            if any(b["verdict"] == case.verdict for b in mine):
                seen.setdefault(case.name, mine)
            last[case.name] = mine
        time.sleep(0.3)
    out = {}
    for case in CASES:
        stdout, _ = procs[case.name].communicate(timeout=hang_ms / 1000 + 120)
        assert procs[case.name].returncode == 0, (case.name, stdout)
        out[case.name] = {"found": seen.get(case.name, last.get(case.name, [])),
                          "workload": json.loads(stdout.splitlines()[-1])}
    return out


def check(case: WhyCase, result: dict[str, Any]) -> None:
    """The hanging thread got the case's verdict, with a sentence; then the case's own checks."""
    w = result["workload"]
    tid = w[case.waiter][0] if isinstance(w[case.waiter], list) else w[case.waiter]
    found = [b for b in result["found"] if b["tid"] == tid]
    assert len(found) == 1, (case.name, result["found"])
    [b] = found
    assert b["verdict"] == case.verdict and b["explanation"] and b["type"] == "blocked", b
    # A sleeping thread moved to another CPU has exec_start 0 (6.12's delayed
    # dequeue): when it last ran is then unknown, never a wait since boot.
    if b["exec_start"] != 0 or b["waiting_s"] is not None:
        assert b["waiting_s"] is not None and 0 <= b["waiting_s"] < 600, b
    case.check(b, w)
