"""IOCB_CMD_POLL requests on a uffd, beside the fault lifecycles.

The kernel completes a poll request on a uffd as soon as a message is
queued on it. A fault whose message waits unread past --stuck-ms beside a
request on its uffd that is still pending therefore shows a lost wake-up:
``aio_poll_stuck``, raised on the fault (it explains why the thread
waits). The one upstream fixed, 363bee27e258 (v5.16): the request left the
uffd's waitqueue on a wake-up and its completion work put it back after
polling, and a fault queued in between woke nothing. Kprobe mode sees those
spans (the work says whether the request was on the queue) and names the
fault queued inside one.

A request is pending until the kernel completes it (kprobe mode,
``aio_complete``) or until the process collects it (tracepoint mode,
io_getevents). Tracepoint mode therefore also needs the submitting thread
asleep in io_getevents: a handler busy elsewhere has simply not collected
a completed poll yet."""

from __future__ import annotations

from collections.abc import Callable

from ..events import Event
from ..source import TaskProbe
from .model import MS, AioPoll, Evidence, Lifecycle

MAX_AIO = 4096
MAX_SPANS = 8  # off-queue spans kept per request, the latest
MAX_HISTORY = 8  # history entries kept per request, the latest

RaiseFlag = Callable[[Lifecycle, str, int, Evidence], None]


class AioPolls:
    def __init__(self, unread: Callable[[int], list[Lifecycle]], raise_flag: RaiseFlag,
                 tasks: TaskProbe | None, *, sees_returns: bool) -> None:
        self.unread = unread  # the uffd's faults that wait with their message unread
        self.raise_flag = raise_flag
        self.tasks = tasks
        self.sees_returns = sees_returns  # kprobe mode: completions and work spans are the kernel's
        self.requests: dict[int, AioPoll] = {}  # by user iocb

    def _add(self, req: AioPoll) -> AioPoll:
        if len(self.requests) >= MAX_AIO:
            self.requests.pop(next(iter(self.requests)))
        self.requests[req.iocb] = req
        return req

    @staticmethod
    def _note(req: AioPoll, what: str, ts: int, tid: int) -> None:
        req.history.append(Evidence(what, ts, tid))
        del req.history[:-MAX_HISTORY]

    def submitted(self, ev: Event) -> None:
        req = self._add(AioPoll(ev.addr, ev.tgid, ev.tid, ev.comm, ev.ctx, ev.aux, ev.ts_ns))
        self._note(req, f"IOCB_CMD_POLL (aio_data {ev.aux:#x}) submitted on the uffd", ev.ts_ns, ev.tid)

    def woken(self, ev: Event) -> None:
        if ev.ret != 1:
            return  # the wake-up was not for the events it asked for
        req = self.requests.get(ev.addr) or self._add(
            AioPoll(ev.addr, ev.tgid, ev.tid, ev.comm, ev.ctx, ev.aux, ev.ts_ns))
        req.last_wake = ev.ts_ns
        self._note(req, f"aio_poll_wake (mask {ev.mode:#x}) woke the request", ev.ts_ns, ev.tid)

    def worked(self, ev: Event) -> None:
        """Kprobe mode: the completion work returned (flags: the request was
        on the uffd's waitqueue when it began; ret: it completed the request)."""
        req = self.requests.get(ev.addr)
        if not self.sees_returns or req is None or ev.ret or ev.flags:
            return
        began = ev.ts_ns - ev.len
        since = req.last_wake if req.last_wake is not None and req.last_wake <= began else began
        req.off_queue.append((since, ev.ts_ns))
        del req.off_queue[:-MAX_SPANS]
        self._note(req, f"its completion work found nothing to complete and put it back on the uffd's waitqueue: "
                        f"off the queue for {(ev.ts_ns - since) / 1000:.0f} us since the wake-up", ev.ts_ns, ev.tid)

    def completed(self, ev: Event) -> None:
        self.requests.pop(ev.addr, None)

    def tick(self, now: int, stuck_ns: int) -> None:
        for req in self.requests.values():
            for lc in self.unread(req.uffd):
                if "aio_poll_stuck" not in lc.flags and now - max(lc.wait_since, req.t_seen) > stuck_ns \
                        and self._confirmed(req, lc):
                    self._raise(req, lc, now)

    def _raise(self, req: AioPoll, lc: Lifecycle, now: int) -> None:
        for e in req.history:
            lc.note(e.what, e.ts_ns, e.tid)
        raised = lc.t_raised if lc.t_raised is not None else lc.wait_since
        lost = [(a, b) for a, b in req.off_queue if a <= raised <= b]
        if lost:
            a, b = lost[-1]
            lc.note(f"this fault was queued while the poll request was off the uffd's waitqueue "
                    f"({(raised - a) / 1000:.0f} us after the wake-up that took it off, "
                    f"{(b - raised) / 1000:.0f} us before its work put it back): its wake-up found no "
                    "request to wake (the race 363bee27e258 closed in v5.16)", raised, lc.tid)
        pending = "not completed" if self.sees_returns else \
            f"not completed (tid {req.tid} sleeps in io_getevents)"
        self.raise_flag(lc, "aio_poll_stuck", now, Evidence(
            f"its message is unread {(now - lc.wait_since) / MS:.0f} ms after it was queued, and the "
            f"IOCB_CMD_POLL (aio_data {req.data:#x}) on its uffd is {pending}: the kernel completes a poll "
            "as soon as a message is queued, so a wake-up of the request was lost"))

    def _confirmed(self, req: AioPoll, lc: Lifecycle) -> bool:
        """The fault's thread still waits; in tracepoint mode the submitter
        sleeps in io_getevents too (else the poll may be completed and not
        yet collected). Without the kernel to ask (a replay), the trace decides."""
        if self.tasks is None:
            return True
        if self.tasks(lc.tgid, lc.tid) not in ("uffd", None):
            return False
        return self.sees_returns or self.tasks(req.tgid, req.tid) in ("aio", None)
