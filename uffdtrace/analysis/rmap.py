"""Rmap walks that lock an anon_vma (folio_lock_anon_vma_read), judged once
the UFFDIO_MOVEs around them have returned. A retry is the recheck of
880a99b60d46 (v6.8) doing its job: a UFFDIO_MOVE changed the folio's
anon_vma between the read of folio->mapping and the lock. Retries are
counted (summary, report, metrics, --events); ``anon_vma_retry`` is raised
only for a loop: more than --retry-threshold retries for one folio within
MOVE_WINDOW_NS of each other, naming the moves around them.

A walk that returns holding the lock of an anon_vma that is not the folio's
(kprobe mode reads folio->mapping as the lock function returns) went on
without that recheck: ``anon_vma_stale``, naming the moves around it. With
the recheck the folio cannot move while the lock is held, so a fixed kernel
never earns it."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from ..events import Event
from .model import Flag
from .rules import MOVE_WINDOW_NS, Thresholds, anon_vma_retry, anon_vma_stale

MAX_FOLIOS = 4096  # folios retried within the window, remembered at once
SECOND_NS = 1_000_000_000
MAX_MOVES = 65536  # UFFDIO_MOVEs remembered while walks around them wait to be judged


class RmapWalks:
    def __init__(self, report: Callable[[Flag], None], th: Thresholds) -> None:
        self.report = report
        self.th = th
        self.walks = 0  # folio_lock_anon_vma_read calls seen
        self.retries = 0  # their rechecks that failed (kprobe mode counts them)
        self.stale = 0  # walks that went on under the lock of an anon_vma the folio had left
        # (time, tid), kept while a walk they may be named for waits to be
        # judged (a count would not do: a mover returns thousands a second).
        self.recent_moves: collections.deque[tuple[int, int]] = collections.deque(maxlen=MAX_MOVES)
        self._unjudged: collections.deque[Event] = collections.deque()
        # folio -> (its last retrying walk, the walks retrying it in this window): a loop spans walks.
        self._retrying: dict[int, tuple[int, list[Event]]] = {}

    def moved(self, ev: Event) -> None:
        """A UFFDIO_MOVE returned."""
        self.recent_moves.append((ev.ts_ns, ev.tid))

    def locked(self, ev: Event) -> None:
        # Judged once MOVE_WINDOW_NS has passed: the UFFDIO_MOVE that changed
        # the anon_vma under the walk often returns after it.
        self.walks += 1
        if ev.ret >= 0:
            self.retries += ev.aux
        self._unjudged.append(ev)

    def judge(self, now: int | None) -> None:
        """The walks whose window has passed (all of them when ``now`` is None)."""
        while self._unjudged and (now is None or self._unjudged[0].ts_ns + MOVE_WINDOW_NS <= now):
            ev = self._unjudged.popleft()
            if ev.ret > 0 and ev.mode:
                self.stale += 1
                self.report(Flag(name="anon_vma_stale", ts_ns=ev.ts_ns, tgid=ev.tgid, tid=ev.tid, comm=ev.comm,
                                 uffd=0, addr=None, blocked_ns=None, state="returned",
                                 evidence=anon_vma_stale(ev, self.recent_moves)))
            if ev.ret < 0 or ev.aux < 1:
                continue  # no retry (tracepoint mode cannot count them)
            last, walks = self._retrying.pop(ev.ctx, (0, []))
            if ev.ts_ns - last > MOVE_WINDOW_NS:
                walks = []
            walks.append(ev)
            if len(self._retrying) >= MAX_FOLIOS:
                self._retrying.pop(next(iter(self._retrying)))
            self._retrying[ev.ctx] = (ev.ts_ns, walks)
            retries = sum(w.aux for w in walks)
            if retries - ev.aux <= self.th.retry_threshold < retries:  # crossed now: once per loop
                self.report(Flag(name="anon_vma_retry", ts_ns=ev.ts_ns, tgid=ev.tgid, tid=ev.tid, comm=ev.comm,
                                 uffd=0, addr=None, blocked_ns=None, state="returned",
                                 evidence=anon_vma_retry(walks, self.recent_moves)))
        # Moves no walk judged from now on can be named for (a walk still to
        # come began at most a second ago).
        if self._unjudged:
            oldest = self._unjudged[0].ts_ns - self._unjudged[0].len
        elif now is not None:
            oldest = now - SECOND_NS
        else:
            return
        while self.recent_moves and self.recent_moves[0][0] < oldest - MOVE_WINDOW_NS:
            self.recent_moves.popleft()

    def counts(self) -> dict[str, Any]:
        return {"walks": self.walks, "retries": self.retries, "stale": self.stale}
