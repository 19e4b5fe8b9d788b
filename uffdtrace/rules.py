"""Race rules (DESIGN §5): which lifecycles are wrong, and the evidence.

The correlator (``lifecycle.py``) records what happened to each fault; the
functions here decide, from those facts and the current time, which flags a
lifecycle earns. Time-based rules (``never_woken``, ``unread``,
``*_without_wake``, ``missed_wakeup``) are evaluated on every watchdog tick
while the thread is still blocked, so they are raised live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import Op

if TYPE_CHECKING:
    from .lifecycle import Attempt, Lifecycle

EEXIST = 17
MS = 1_000_000
WP_MODE_WP = 1  # UFFDIO_WRITEPROTECT_MODE_WP: protecting, not resolving

# Which faults each ioctl brings the page for (fs/userfaultfd.c): COPY,
# ZEROPAGE, MOVE and POISON fill a missing page; CONTINUE maps the page-cache
# page of a minor fault; WRITEPROTECT without MODE_WP lifts a write-protect
# fault. Any other pairing leaves the thread's page as it was (at most it
# wakes the thread, which faults again).
RESOLVES = {Op.COPY: "missing", Op.ZEROPAGE: "missing", Op.MOVE: "missing", Op.POISON: "missing",
            Op.CONTINUE: "minor", Op.WRITEPROTECT: "wp"}

# Stable flag names, in the order DESIGN §5 lists them.
FLAG_NAMES = ("never_woken", "missed_wakeup", "dontwake_without_wake", "eexist_without_wake", "unread",
              "retry_loop", "released_with_waiters", "sigbus", "aio_poll_stuck", "anon_vma_retry")
# Flags that describe a decision of the uffd user, not a defect: not counted by --fail-on-flags.
INFORMATIONAL = frozenset({"sigbus"})
# Flags about a thread that is still blocked: re-reported with the final numbers when it ends.
WHILE_BLOCKED = frozenset({"never_woken", "unread"})
# Flags concluded from an event that did not come: raised only once the kernel
# confirms that the thread still waits for the page, and they say when
# records were lost while it waited.
FROM_ABSENCE = frozenset({"never_woken", "missed_wakeup", "dontwake_without_wake", "eexist_without_wake", "unread"})


def resolves(op: int, mode: int, reason: str | None) -> bool:
    """Whether ioctl ``op`` (with its ``mode``) brings the page a fault of
    ``reason`` waits for (None: the reason is unknown, any resolution counts)."""
    kind = RESOLVES.get(Op(op)) if op in Op._value2member_map_ else None
    if kind is None or (op == Op.WRITEPROTECT and mode & WP_MODE_WP):
        return False
    return reason is None or reason == kind


@dataclass
class Thresholds:
    stuck_ms: float = 1000.0
    wake_ms: float = 100.0
    retry_threshold: int = 3

    @property
    def stuck_ns(self) -> int:
        return int(self.stuck_ms * MS)

    @property
    def wake_ns(self) -> int:
        return int(self.wake_ms * MS)


@dataclass(frozen=True)
class Evidence:
    """One fact behind a flag: an event (with its time) or a conclusion (without)."""

    what: str
    ts_ns: int | None = None
    tid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "tid": self.tid, "what": self.what}


@dataclass
class Flag:
    name: str
    ts_ns: int  # when it was raised (trace clock)
    tgid: int
    tid: int
    comm: str
    uffd: int
    addr: int | None
    blocked_ns: int | None
    state: str  # the lifecycle's state when reported ("blocked" while still blocked)
    evidence: list[Evidence] = field(default_factory=list)
    update: bool = False  # a re-report of a flag raised earlier, with final numbers

    @property
    def counts_as_failure(self) -> bool:
        return self.name not in INFORMATIONAL

    def to_json(self) -> dict[str, Any]:
        return {"type": "flag", "flag": self.name, "tgid": self.tgid, "tid": self.tid, "comm": self.comm,
                "uffd": self.uffd, "addr": self.addr,
                "blocked_ms": None if self.blocked_ns is None else round(self.blocked_ns / MS, 3),
                "state": self.state, "t_ns": self.ts_ns, "update": self.update,
                "evidence": [e.to_json() for e in self.evidence]}


def _since(lc: Lifecycle, outcome: str, dontwake: bool | None = None) -> list[Attempt]:
    """Attempts of this outcome made while the thread waited in its current round."""
    return [a for a in lc.attempts if a.outcome == outcome and a.ts_ns >= lc.wait_since
            and (dontwake is None or a.dontwake == dontwake)]


def timed_flags(lc: Lifecycle, now: int, th: Thresholds) -> list[tuple[str, Evidence]]:
    """Flags a thread still waiting in handle_userfault has earned by ``now``,
    each with the conclusion that completes its evidence."""
    if not lc.waiting or not lc.asleep:
        return []
    out: list[tuple[str, Evidence]] = []
    blocked = now - lc.wait_since
    ok_wake = _since(lc, "ok", dontwake=False)
    ok_dontwake = _since(lc, "ok", dontwake=True)
    eexist = _since(lc, "eexist")
    late = [a for a in ok_wake if now - a.ts_ns > th.wake_ns]
    if late:
        out.append(("missed_wakeup", Evidence(
            f"resolved by {late[0].op} (without DONTWAKE) and not woken within {th.wake_ms:g} ms: "
            "the kernel lost the wake-up")))
    # A DONTWAKE fill followed by a handler's EEXIST: the handler owned the wake-up.
    late = [a for a in ok_dontwake if now - a.ts_ns > th.wake_ns and not any(e.ts_ns > a.ts_ns for e in eexist)]
    if late:
        out.append(("dontwake_without_wake", Evidence(
            f"resolved by {late[0].op} with DONTWAKE and no UFFDIO_WAKE within {th.wake_ms:g} ms")))
    late = [a for a in eexist if now - a.ts_ns > th.wake_ns]
    if late:
        out.append(("eexist_without_wake", Evidence(
            f"{late[0].op} by tid {late[0].tid} failed with EEXIST (page already there) "
            f"and nobody woke the thread within {th.wake_ms:g} ms")))
    if blocked > th.stuck_ns:
        if lc.round_reads == 0 and lc.start_known:  # reads before tracing began are unknown
            out.append(("unread", Evidence(f"queued for {blocked / MS:.0f} ms and no handler read the message")))
        out.append(("never_woken", Evidence(f"still blocked in handle_userfault after {blocked / MS:.0f} ms")))
    return out


def retry_cause(lc: Lifecycle) -> str:
    causes = ", ".join(f"{name} x{n}" for name, n in sorted(lc.round_causes.items()))
    return causes or "unknown"
