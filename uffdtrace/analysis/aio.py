"""IOCB_CMD_POLL requests on a uffd, beside the fault lifecycles: a request
whose uffd became readable and that never completed is ``aio_poll_stuck``
(the lost wake-up 363bee27e258 fixed in v5.16)."""

from __future__ import annotations

from collections.abc import Callable

from ..events import Event
from .model import AioPoll, Evidence, Flag
from .rules import Thresholds, aio_poll_stuck

MAX_AIO = 4096


class AioPolls:
    def __init__(self, report: Callable[[Flag], None]) -> None:
        self.report = report
        self.requests: dict[int, AioPoll] = {}  # by user iocb

    def _add(self, req: AioPoll) -> AioPoll:
        if len(self.requests) >= MAX_AIO:
            self.requests.pop(next(iter(self.requests)))
        self.requests[req.iocb] = req
        return req

    def submitted(self, ev: Event) -> None:
        self._add(AioPoll(ev.addr, ev.tgid, ev.tid, ev.comm, ev.ctx, ev.aux,
                          history=[Evidence("IOCB_CMD_POLL submitted", ev.ts_ns, ev.tid)]))

    def fault_queued(self, ev: Event) -> None:
        """Tracepoint mode: a fault on a polled uffd makes it readable."""
        for req in self.requests.values():
            if req.uffd == ev.ctx and req.t_ready is None:
                req.t_ready = ev.ts_ns
                req.history.append(Evidence("uffd became readable (a fault was queued)", ev.ts_ns, ev.tid))

    def woken(self, ev: Event) -> None:
        if ev.ret != 1:
            return
        req = self.requests.get(ev.addr) or self._add(AioPoll(ev.addr, ev.tgid, ev.tid, ev.comm, ev.ctx, ev.aux))
        if req.t_ready is None:
            req.t_ready = ev.ts_ns
            req.history.append(Evidence(f"aio_poll_wake mask {ev.mode:#x}", ev.ts_ns, ev.tid))

    def completed(self, ev: Event) -> None:
        self.requests.pop(ev.addr, None)

    def tick(self, now: int, th: Thresholds) -> None:
        for req in self.requests.values():
            if not req.flagged and (conclusion := aio_poll_stuck(req, now, th)) is not None:
                req.flagged = True
                self.report(Flag(name="aio_poll_stuck", ts_ns=now, tgid=req.tgid, tid=req.tid, comm=req.comm,
                                 uffd=req.uffd, addr=req.iocb, blocked_ns=None, state="pending",
                                 evidence=[*req.history, conclusion]))
