"""Race rules: which lifecycles are wrong, and the evidence (README, "Flags";
adding one: docs/architecture.md, "Add a flag rule").

The correlator (``correlator.py``) records what happened to each fault in the
model (``model.py``); every flag decision is a function here, reading those
facts and the current time, and returning the conclusion that completes the
flag's evidence (or None); which ioctl resolves which fault is decided here
too. The correlator only says when to ask. Time-based rules (``never_woken``, ``unread``,
``*_without_wake``, ``missed_wakeup``) are evaluated on every watchdog tick
while the thread is still blocked, so they are raised live.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..escape import printable
from ..events import (
    PAGEFAULT_FLAG_WP,
    REGISTER_MODE_MINOR,
    REGISTER_MODE_MISSING,
    VM_FAULT_SIGBUS,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    WP_MODE_WP,
    X86_PF_PROT,
    X86_PF_WRITE,
    Event,
    Op,
)
from ..source import Holder
from .handlers import Readers
from .model import MS, Attempt, Evidence, Lifecycle

EEXIST = 17
EAGAIN = 11
MOVE_WINDOW_NS = 10 * MS  # a UFFDIO_MOVE this close to an anon_vma retry is named in its evidence

# Which faults each ioctl brings the page for (fs/userfaultfd.c): COPY,
# ZEROPAGE, MOVE and POISON fill a missing page; CONTINUE maps the page-cache
# page of a minor fault; WRITEPROTECT without MODE_WP lifts a write-protect
# fault. Any other pairing leaves the thread's page as it was (at most it
# wakes the thread, which faults again).
RESOLVES = {Op.COPY: "missing", Op.ZEROPAGE: "missing", Op.MOVE: "missing", Op.POISON: "missing",
            Op.CONTINUE: "minor", Op.WRITEPROTECT: "wp"}

# Flags that describe a decision of the uffd user, not a defect: not counted by --fail-on-flags.
INFORMATIONAL = frozenset({"sigbus"})


def counts_as_failure(name: str) -> bool:
    """Whether --fail-on-flags counts this flag."""
    return name not in INFORMATIONAL
# Flags about a thread that is still blocked: re-reported with the final numbers when it ends.
WHILE_BLOCKED = frozenset({"never_woken", "unread", "no_reader", "eagain_unretried", "aio_poll_stuck"})
# Flags that name why a fault still waits (its handlers are dead; its handler
# gave up on EAGAIN; its handler's aio poll lost the wake-up), and the flags
# that only say that it waits: these are not raised beside them.
EXPLAINS_THE_WAIT = frozenset({"no_reader", "eagain_unretried", "aio_poll_stuck"})
ONLY_SAY_IT_WAITS = frozenset({"never_woken", "unread"})
# Flags concluded from an event that did not come: raised only once the kernel
# confirms that the thread still waits for the page, and they say when
# records were lost while it waited.
FROM_ABSENCE = frozenset({"never_woken", "missed_wakeup", "dontwake_without_wake", "eexist_without_wake", "unread",
                          "no_reader", "eagain_unretried", "event_unread", "aio_poll_stuck"})


REASONS = {VM_UFFD_MISSING: "missing", VM_UFFD_WP: "wp"}  # anything else is VM_UFFD_MINOR


def fault_reason(ev: Event, sees_returns: bool, register_modes: int) -> str | None:
    """Why the fault went to the uffd: kprobe mode reads it from
    handle_userfault; tracepoint mode derives it from the x86 error code
    (present and written: write-protect; not present: missing, or minor
    on a uffd registered for minor faults only)."""
    if sees_returns:
        return REASONS.get(ev.mode, "minor")
    if ev.flags & X86_PF_PROT:
        return "wp" if ev.flags & X86_PF_WRITE else None
    if register_modes & REGISTER_MODE_MINOR:
        return None if register_modes & REGISTER_MODE_MISSING else "minor"
    return "missing"


def message_fits(lc: Lifecycle, msg: Event) -> bool:
    """Whether the page-fault message can be the lifecycle's. A write to a
    present page (wp: in tracepoint mode, the error code's protection and
    write bits) queues only write-protect messages; a missing or minor message on its
    page is another fault's, one this mode may not see (get_user_pages)."""
    return lc.reason != "wp" or bool(msg.flags & PAGEFAULT_FLAG_WP)


def resolves(op: int, mode: int, reason: str | None) -> bool:
    """Whether ioctl ``op`` (with its ``mode``) brings the page a fault of
    ``reason`` waits for (None: the reason is unknown, any resolution counts)."""
    kind = RESOLVES.get(Op(op)) if op in Op._value2member_map_ else None
    if kind is None or (op == Op.WRITEPROTECT and mode & WP_MODE_WP):  # protecting, not resolving
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
            f"the kernel lost the wake-up{during_read(lc, late[0])}")))
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
    if lc.eagain_since is not None and now - lc.eagain_since > th.wake_ns:
        behind = f" (behind it: {lc.eagain_cause})" if lc.eagain_cause else ""
        out.append(("eagain_unretried", Evidence(
            f"its resolution failed with EAGAIN{behind} and nothing tried the page again within {th.wake_ms:g} ms "
            "of the event being read: a handler that defers a fault on EAGAIN must retry it once the event is read")))
    if blocked > th.stuck_ns:
        if lc.round_reads == 0 and lc.start_known:  # reads before tracing began are unknown
            out.append(("unread", Evidence(f"queued for {blocked / MS:.0f} ms and no handler read the message")))
        out.append(("never_woken", Evidence(f"still blocked in handle_userfault after {blocked / MS:.0f} ms")))
    return out


def held_by(holders: list[Holder]) -> str:
    """Who holds a uffd now (an open uffd nobody reads is a hang; a released
    one wakes its faults, which then get a zero page or SIGBUS)."""
    who = ", ".join(f"pid {h.pid} {printable(h.comm)} ({h.threads} thread{'s' * (h.threads != 1)}, "
                    f"{h.waiting} asleep in a userfaultfd wait)" for h in holders)
    return f"the uffd is still open, held by {who}" if holders else "no process holds the uffd"


def held_by_evidence(e: Evidence, holders: list[Holder]) -> Evidence:
    return Evidence(f"{e.what}; {held_by(holders)}", e.ts_ns, e.tid)


def no_reader_evidence(lc: Lifecycle, readers: Readers, now: int) -> Evidence:
    """A fault blocked past --stuck-ms that nobody can read: its uffd's
    readers have all exited, or no holder has a thread left that could."""
    message = "its message was read and never resolved" if lc.round_reads else "its message is still queued"
    blocked = f"blocked {(now - lc.wait_since) / MS:.0f} ms"
    holders = f"; {held_by(readers.holders)}" if readers.holders is not None else ""
    if readers.gone:
        who = ", ".join(f"tid {tid}" for tid in readers.gone)
        return Evidence(f"every thread seen reading uffd {lc.uffd} has exited ({who}): {message}, and no living "
                        f"handler reads the uffd ({blocked}){holders}")
    return Evidence(f"no thread is left that could read uffd {lc.uffd}: every thread of every process holding it "
                    f"sleeps in a userfaultfd wait; {message}, and nothing will resolve it ({blocked}){holders}")


def during_read(lc: Lifecycle, a: Attempt) -> str:
    """Where the lost wake-up ran, when a read() was handing this fault out
    at that moment: the refile from the pending to the waiting queue (the
    race refile_seq closed in v4.3) is inside that call."""
    if lc.read_call is None:
        return ""
    tid, entered, returned = lc.read_call
    if not entered <= a.ts_ns <= returned:
        return ""
    return (f"; {a.op} by tid {a.tid} returned while tid {tid} was inside read() handing this fault out "
            f"({(a.ts_ns - entered) / 1000:.0f} us after it entered, {(returned - a.ts_ns) / 1000:.0f} us "
            "before it returned): its wake-up ran during the refile")


def retry_cause(lc: Lifecycle) -> str:
    causes = ", ".join(f"{name} x{n}" for name, n in sorted(lc.round_causes.items())) or "unknown"
    if lc.fallbacks:  # kprobe mode: VM_FAULT_RETRY passes from the per-VMA lock to mmap_lock (analysis/locks.py)
        causes += "; fell back to mmap_lock: " + ", ".join(f"{name} x{n}" for name, n in sorted(lc.fallbacks.items()))
    return causes


def retry_loop(lc: Lifecycle, th: Thresholds) -> Evidence | None:
    if lc.rounds < th.retry_threshold:
        return None
    return Evidence(f"entered handle_userfault {lc.rounds} times for the same page (causes: {retry_cause(lc)})")


def sigbus(fault_ret: int) -> Evidence | None:
    """Informational: the uffd refused the fault (UFFD_FEATURE_SIGBUS, or a
    fault it cannot take), which the program asked for or must handle."""
    if not fault_ret & VM_FAULT_SIGBUS:
        return None
    return Evidence("handle_userfault refused the fault with VM_FAULT_SIGBUS")


def released_with_waiters(lc: Lifecycle, waker: int) -> Evidence | None:
    """Positive proof only: the thread that closed the uffd woke this waiter
    (the release wakes every waiter). A lifecycle that merely looks open at
    the close, its return record lost, is not accused."""
    if lc.closer is None or lc.closer != waker or "released_with_waiters" in lc.flags:
        return None
    return Evidence(f"the uffd was closed by tid {lc.closer} while the thread waited")


def anon_vma_retry(walks: list[Event], recent_moves: Iterable[tuple[int, int]]) -> list[Evidence]:
    """folio_lock_anon_vma_read retried one folio more than --retry-threshold
    times (kprobe mode counts the trylocks of each walk); UFFDIO_MOVEs
    (time, tid) that returned around the walks are named."""
    start, end = walks[0].ts_ns - walks[0].len, walks[-1].ts_ns
    retries = sum(w.aux for w in walks)
    return [*(Evidence(f"folio_lock_anon_vma_read: {w.flags} trylocks, {w.aux} retries over {w.len / 1000:.1f} us, "
                       f"{'locked' if w.ret else 'returned NULL'}", w.ts_ns, w.tid) for w in walks),
            Evidence(f"{retries} retries for one folio in {len(walks)} walk(s) within "
                     f"{(end - start) / 1000:.1f} us: the anon_vma kept changing under the walk", end, walks[-1].tid),
            *moves_around(start, end, recent_moves)]


def moves_around(start: int, end: int, recent_moves: Iterable[tuple[int, int]]) -> list[Evidence]:
    """The UFFDIO_MOVEs (time, tid) that returned within MOVE_WINDOW_NS of
    [start, end]: one line per mover, at its move nearest the walk."""
    by_tid: dict[int, list[int]] = {}
    for ts, tid in recent_moves:
        if start - MOVE_WINDOW_NS <= ts <= end + MOVE_WINDOW_NS:
            by_tid.setdefault(tid, []).append(ts)
    out = []
    for tid, times in by_tid.items():
        nearest = min(times, key=lambda ts: 0 if start <= ts <= end else min(abs(ts - start), abs(ts - end)))
        where = ("during the walk" if start <= nearest <= end else
                 f"{(start - nearest) / 1000:.0f} us before it" if nearest < start else
                 f"{(nearest - end) / 1000:.0f} us after it")
        count = f"{len(times)} UFFDIO_MOVEs" if len(times) > 1 else "a UFFDIO_MOVE"
        out.append(Evidence(f"concurrent UFFDIO_MOVE: {count} by tid {tid} returned within "
                            f"{MOVE_WINDOW_NS // MS} ms of the walk, the nearest {where}", nearest, tid))
    return out


def anon_vma_stale(walk: Event, recent_moves: Iterable[tuple[int, int]]) -> list[Evidence]:
    """A walk that locked the anon_vma its folio had left, and the moves around it."""
    start = walk.ts_ns - walk.len
    return [Evidence(f"folio_lock_anon_vma_read returned holding anon_vma {walk.addr:#x} after {walk.flags} "
                     f"trylock(s) over {walk.len / 1000:.1f} us, and its folio (id {walk.ctx}) no longer belongs "
                     "to it: the folio moved between the read of folio->mapping and the lock, and the walk goes on "
                     "under the lock of the anon_vma it left (the re-check 880a99b60d46 added in v6.8 walks again)",
                     walk.ts_ns, walk.tid),
            *moves_around(start, walk.ts_ns, recent_moves)]
