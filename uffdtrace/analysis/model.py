"""The facts about faults, as the correlator (``correlator.py``) records them
and the rules (``rules.py``) read them: a lifecycle and its resolution
attempts, an aio poll request, a flag and its evidence. No behaviour beyond rendering lives here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import UFFD_EVENT_NAMES

MS = 1_000_000
MAX_HISTORY = 16


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
    verdict: str | None = None  # the missing step, for a flag on a waiting thread (analysis/verdicts.py)

    def to_json(self) -> dict[str, Any]:
        return {"type": "flag", "flag": self.name, "tgid": self.tgid, "tid": self.tid, "comm": self.comm,
                "uffd": self.uffd, "addr": self.addr,
                "blocked_ms": None if self.blocked_ns is None else round(self.blocked_ns / MS, 3),
                "state": self.state, "verdict": self.verdict, "t_ns": self.ts_ns, "update": self.update,
                "evidence": [e.to_json() for e in self.evidence]}


@dataclass(eq=False)
class EventLifecycle:
    """A non-cooperative event (analysis/uffd_events.py): its caller waits
    from the raise until a handler reads it, then resumes."""

    tgid: int
    tid: int
    comm: str
    event: int  # uffd_msg.event (UFFD_EVENT_*)
    start: int
    length: int
    t_raised: int
    uffd: int = 0  # known at the raise in kprobe mode, at the read in tracepoint mode
    t_read: int | None = None
    reader_tid: int | None = None
    t_done: int | None = None
    ret: int | None = None
    history: list[Evidence] = field(default_factory=list)
    flags: dict[str, Flag] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return UFFD_EVENT_NAMES.get(self.event, f"{self.event:#x}")

    @property
    def state(self) -> str:
        return "resumed" if self.t_done is not None else "waiting"

    def to_json(self) -> dict[str, Any]:
        end = self.t_done if self.t_done is not None else self.t_read
        return {"type": "uffd_event", "event": self.name, "tgid": self.tgid, "tid": self.tid, "comm": self.comm,
                "uffd": self.uffd, "start": self.start, "len": self.length, "reader_tid": self.reader_tid,
                "t_raised_ns": self.t_raised, "t_read_ns": self.t_read, "t_done_ns": self.t_done,
                "unread_ms": None if self.t_read is None else round((self.t_read - self.t_raised) / MS, 3),
                "wait_ms": None if end is None else round((end - self.t_raised) / MS, 3),
                "ret": self.ret, "state": self.state, "flags": list(self.flags)}


@dataclass(slots=True)
class Attempt:
    """One resolving ioctl that covered the page."""

    ts_ns: int
    tid: int
    op: str
    ret: int
    dontwake: bool
    outcome: str  # ok | eexist | failed


@dataclass(slots=True, eq=False)
class Lifecycle:
    """One thread's wait for one page of one uffd. An entity: the tables
    hold it by identity, and two lifecycles never compare equal by value."""

    uffd: int  # the uffd's id (its kernel object, mapped to a small id)
    tgid: int
    tid: int
    comm: str
    page: int | None
    wait_since: int  # start of the current round's wait
    last_ts: int
    reason: str | None = None  # missing | wp | minor, None when unknown
    lost_at_start: int = 0  # records lost before this fault began (to tell whether any were lost during it)
    t_raised: int | None = None
    rounds: int = 1
    reads: int = 0
    round_reads: int = 0
    t_read: int | None = None
    t_resolved: int | None = None
    t_woken: int | None = None
    t_returned: int | None = None
    resolve: Attempt | None = None
    attempts: list[Attempt] = field(default_factory=list)
    reader_tid: int | None = None
    read_call: tuple[int, int, int] | None = None  # (tid, entered, returned): the read() that handed it out
    resolver_tid: int | None = None
    waker_tid: int | None = None
    waiting: bool = True  # in handle_userfault, not woken or returned this round
    asleep: bool = False  # proof that this round waits (entered, slept, or its message was read)
    present: bool = False  # the page is known to be there (resolved, or EEXIST)
    returned: bool = False
    round_woken: bool = False
    round_end: int | None = None
    pending_waker: int | None = None  # woke it; its ioctl record will say whether it resolved
    closer: int | None = None  # closed the uffd while this waited
    other_since: int | None = None  # the kernel says the thread left handle_userfault, unseen
    eagain_since: int | None = None  # its last resolution failed with EAGAIN (or the event behind it was read since)
    eagain_cause: str | None = None  # the event queued and unread at that EAGAIN, when one was seen
    handlers_asked: int = 0  # when the kernel was last asked whether its uffd's readers live (no_reader)
    unfolded: int | None = None  # raise time of the fault folded in the kernel whose steps it holds
    state: str = "blocked"
    ended_at: int = 0
    history: list[Evidence] = field(default_factory=list)
    history_dropped: int = 0
    flags: dict[str, Flag] = field(default_factory=dict)
    round_causes: dict[str, int] = field(default_factory=dict)  # rounds beyond the first, per cause
    # Kprobe mode: the lock its first entry into handle_userfault ran under
    # ("vma": the per-VMA lock, "mmap": mmap_lock; None: the session cannot
    # tell), the current round's, and its fallbacks to mmap_lock per cause.
    lock: str | None = None
    round_lock: str | None = None
    fallbacks: dict[str, int] = field(default_factory=dict)

    def note(self, what: str, ts: int | None, tid: int | None = None) -> None:
        """Kept in time order: a fact can arrive late (a sleep the kernel
        reports with the thread's next fault)."""
        if len(self.history) >= MAX_HISTORY:
            self.history_dropped += 1
            return
        i = len(self.history)
        while ts is not None and i and (self.history[i - 1].ts_ns or 0) > ts:
            i -= 1
        self.history.insert(i, Evidence(what, ts, tid))

    def evidence(self, conclusion: Evidence | None = None) -> list[Evidence]:
        out = list(self.history)
        if self.history_dropped:
            out.append(Evidence(f"... {self.history_dropped} more events"))
        if conclusion is not None:
            out.append(conclusion)
        return out

    def note_slept(self, ts: int) -> None:
        """Proof that this round waits: it slept in handle_userfault."""
        if self.waiting and not self.asleep:
            self.asleep = True
            self.last_ts = max(self.last_ts, ts)
            self.note("slept in handle_userfault", ts, self.tid)

    def finished_state(self) -> str:
        """The state of a lifecycle that ended without a flag deciding it."""
        if self.closer is not None:
            return "released"
        return "woken" if self.t_woken is not None and not self.returned else "returned"

    @property
    def start_known(self) -> bool:
        """False for a thread found waiting when tracing began."""
        return self.t_raised is not None

    @property
    def waiting_since(self) -> int:
        """How long the thread has waited for this page: since it was raised, when known."""
        return self.t_raised if self.t_raised is not None else self.wait_since

    def latencies(self) -> dict[str, int | None]:
        def span(a: int | None, b: int | None) -> int | None:
            return b - a if a is not None and b is not None and b >= a else None

        wake = span(self.t_resolved, self.t_woken)
        if wake is None and self.t_woken is not None and self.t_resolved is not None \
                and self.waker_tid == self.resolver_tid:
            wake = 0  # woken inside the resolving ioctl, which is recorded when it returns
        return {"pickup": span(self.t_raised, self.t_read), "service": span(self.t_read, self.t_resolved),
                "wake": wake,
                "resume": span(self.t_woken, self.t_returned)}

    def to_json(self) -> dict[str, Any]:
        res = self.resolve
        return {"type": "lifecycle", "tgid": self.tgid, "tid": self.tid, "comm": self.comm,
                "uffd": self.uffd or None, "addr": self.page, "reason": self.reason,
                "rounds": self.rounds, "reads": self.reads, "lock": self.lock, "fallbacks": dict(self.fallbacks),
                "resolve_op": res.op if res else None, "resolve_ret": res.ret if res else None,
                "resolve_dontwake": res.dontwake if res else None,
                "reader_tid": self.reader_tid, "resolver_tid": self.resolver_tid, "waker_tid": self.waker_tid,
                "t_raised_ns": self.t_raised, "t_read_ns": self.t_read, "t_resolved_ns": self.t_resolved,
                "t_woken_ns": self.t_woken, "t_returned_ns": self.t_returned,
                "latency_ns": self.latencies(), "state": self.state, "flags": list(self.flags)}


@dataclass
class Counters:
    """What the correlator counted, for the summary."""

    lifecycles: int = 0
    evicted: int = 0  # open lifecycles dropped to keep the table bounded
    unmatched_reads: int = 0
    messages_read: int = 0  # page-fault messages handlers read (sent one by one or folded in the kernel)


@dataclass
class AioPoll:
    """An IOCB_CMD_POLL request on a uffd (key: the user iocb pointer)."""

    iocb: int
    tgid: int
    tid: int  # tracepoint mode: the submitter; kprobe mode: the first waker seen
    comm: str
    uffd: int
    data: int
    t_seen: int
    last_wake: int | None = None
    # (from, to): spans the request was off the uffd's waitqueue, from a
    # wake-up to the end of the completion work that put it back (kprobe mode)
    off_queue: list[tuple[int, int]] = field(default_factory=list)
    history: list[Evidence] = field(default_factory=list)
