"""Rmap walks that lock an anon_vma (folio_lock_anon_vma_read), judged once
the UFFDIO_MOVEs around them have returned: a walk that retried names the
moves that changed the anon_vma under it (the recheck of 880a99b60d46, v6.8)."""

from __future__ import annotations

import collections
from collections.abc import Callable

from ..events import Event
from .model import Flag
from .rules import MOVE_WINDOW_NS, anon_vma_retry


class RmapWalks:
    def __init__(self, report: Callable[[Flag], None]) -> None:
        self.report = report
        self.recent_moves: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)  # (time, tid)
        self._unjudged: collections.deque[Event] = collections.deque()

    def moved(self, ev: Event) -> None:
        """A UFFDIO_MOVE returned."""
        self.recent_moves.append((ev.ts_ns, ev.tid))

    def locked(self, ev: Event) -> None:
        # Judged once MOVE_WINDOW_NS has passed: the UFFDIO_MOVE that changed
        # the anon_vma under the walk often returns after it.
        self._unjudged.append(ev)

    def judge(self, now: int | None) -> None:
        """The walks whose window has passed (all of them when ``now`` is None)."""
        while self._unjudged and (now is None or self._unjudged[0].ts_ns + MOVE_WINDOW_NS <= now):
            ev = self._unjudged.popleft()
            evidence = anon_vma_retry(ev, self.recent_moves)
            if evidence:
                self.report(Flag(name="anon_vma_retry", ts_ns=ev.ts_ns, tgid=ev.tgid, tid=ev.tid, comm=ev.comm,
                                 uffd=0, addr=None, blocked_ns=None, state="returned", evidence=evidence))
