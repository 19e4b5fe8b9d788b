"""The correlator's two tables of lifecycles, indexed so that no event scans
them all: the open ones (one per waiting thread) and the ended ones, held a
little before they are emitted so that late records still reach them
(docs/architecture.md, "The correlator")."""

from __future__ import annotations

import collections
from typing import Any

from .model import Lifecycle

PAGE_SIZE = 0x1000
PAGE_MASK = ~(PAGE_SIZE - 1)


def in_range(lc: Lifecycle, uffd: int, start: int, length: int) -> bool:
    """Whether the lifecycle's page is in [start, start+length) of ``uffd`` (length 0: all)."""
    return lc.uffd == uffd and lc.page is not None and (length == 0 or start <= lc.page < start + length)


def _discard(index: dict[Any, dict[int, Lifecycle]], key: Any, tid: int) -> None:
    entries = index.get(key)
    if entries is not None:
        entries.pop(tid, None)
        if not entries:
            del index[key]


class OpenTable:
    """Open lifecycles (one per thread), indexed so that a message or an
    ioctl finds its faults without scanning them all: by (uffd, page), and
    by the waker whose ioctl record is due. Fields behind an index change
    only through ``set_page`` and ``set_pending``."""

    def __init__(self) -> None:
        self._by_tid: dict[int, Lifecycle] = {}
        self._by_page: dict[tuple[int, int | None], dict[int, Lifecycle]] = {}
        self._by_waker: dict[int, dict[int, Lifecycle]] = {}

    def __len__(self) -> int:
        return len(self._by_tid)

    def get(self, tid: int) -> Lifecycle | None:
        return self._by_tid.get(tid)

    def holds(self, lc: Lifecycle) -> bool:
        return self._by_tid.get(lc.tid) is lc

    def values(self) -> list[Lifecycle]:
        """A copy: the caller may close lifecycles while it walks them."""
        return list(self._by_tid.values())

    def add(self, lc: Lifecycle) -> None:
        old = self._by_tid.get(lc.tid)
        if old is not None:
            self.remove(old)
        self._by_tid[lc.tid] = lc
        self._by_page.setdefault((lc.uffd, lc.page), {})[lc.tid] = lc
        if lc.pending_waker is not None:
            self._by_waker.setdefault(lc.pending_waker, {})[lc.tid] = lc

    def remove(self, lc: Lifecycle) -> None:
        if self._by_tid.get(lc.tid) is not lc:
            return
        del self._by_tid[lc.tid]
        _discard(self._by_page, (lc.uffd, lc.page), lc.tid)
        if lc.pending_waker is not None:
            _discard(self._by_waker, lc.pending_waker, lc.tid)

    def set_page(self, lc: Lifecycle, page: int, uffd: int | None) -> None:
        """A lifecycle found in /proc learns its page (and uffd) from an event."""
        _discard(self._by_page, (lc.uffd, lc.page), lc.tid)
        lc.page = page
        if uffd:
            lc.uffd = uffd
        self._by_page.setdefault((lc.uffd, lc.page), {})[lc.tid] = lc

    def set_pending(self, lc: Lifecycle, waker: int | None) -> None:
        if lc.pending_waker is not None:
            _discard(self._by_waker, lc.pending_waker, lc.tid)
        lc.pending_waker = waker
        if waker is not None:
            self._by_waker.setdefault(waker, {})[lc.tid] = lc

    def on_page(self, uffd: int, page: int) -> list[Lifecycle]:
        return list(self._by_page.get((uffd, page), {}).values())

    def in_range(self, uffd: int, start: int, length: int) -> list[Lifecycle]:
        """Lifecycles of ``uffd`` whose page is in [start, start+length) (length 0: all)."""
        # Whichever is shorter: the range's pages, or the open lifecycles.
        if length == 0 or length > len(self._by_tid) * PAGE_SIZE:
            return [lc for lc in self._by_tid.values() if in_range(lc, uffd, start, length)]
        return [lc for page in range(start, start + length, PAGE_SIZE)
                for lc in self._by_page.get((uffd, page), {}).values()]

    def woken_by(self, waker: int) -> list[Lifecycle]:
        return list(self._by_waker.get(waker, {}).values())


class EndedTable:
    """Ended lifecycles, kept a little before they are emitted so that late
    records still reach them: a reader's (one --wake-ms), or the ioctl record
    of the thread that woke them (up to --stuck-ms, kept apart by waker)."""

    def __init__(self) -> None:
        self._queue: collections.deque[Lifecycle] = collections.deque()  # by ended_at
        self._by_waker: dict[int, list[Lifecycle]] = {}
        self._by_thread_page: dict[tuple[int, int | None], Lifecycle] = {}
        self._by_page: dict[tuple[int, int | None], Lifecycle] = {}

    def add(self, lc: Lifecycle) -> None:
        if lc.pending_waker is not None:
            self._by_waker.setdefault(lc.pending_waker, []).append(lc)
        else:
            self._queue.append(lc)
        self._by_thread_page[(lc.tid, lc.page)] = lc
        self._by_page[(lc.uffd, lc.page)] = lc

    def waker_reported(self, lc: Lifecycle, waker: int) -> None:
        held = self._by_waker.get(waker, [])
        if lc in held:
            held.remove(lc)
            if not held:
                del self._by_waker[waker]
            self._queue.append(lc)

    def woken_by(self, waker: int) -> list[Lifecycle]:
        return list(self._by_waker.get(waker, ()))

    def of_thread(self, tid: int, page: int) -> Lifecycle | None:
        return self._by_thread_page.get((tid, page))

    def of_page(self, uffd: int, page: int) -> Lifecycle | None:
        return self._by_page.get((uffd, page))

    def due(self, now: int | None, wake_ns: int, stuck_ns: int) -> list[Lifecycle]:
        """Remove and return what is ready at ``now`` (everything when None)."""
        out = []
        while self._queue and (now is None or now - self._queue[0].ended_at > wake_ns):
            out.append(self._queue.popleft())
        for waker, held in list(self._by_waker.items()):
            ready = [lc for lc in held if now is None or now - lc.ended_at > stuck_ns]
            if ready:
                out += ready
                self._by_waker[waker] = [lc for lc in held if lc not in ready]
                if not self._by_waker[waker]:
                    del self._by_waker[waker]
        for lc in out:
            if self._by_thread_page.get((lc.tid, lc.page)) is lc:
                del self._by_thread_page[(lc.tid, lc.page)]
            if self._by_page.get((lc.uffd, lc.page)) is lc:
                del self._by_page[(lc.uffd, lc.page)]
        return out
