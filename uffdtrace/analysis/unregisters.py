"""UFFDIO_UNREGISTERs a waiting fault missed.

The unregister wakes the faults of its range "so they will not hang
permanently" (fs/userfaultfd.c), then clears the VMA's uffd. It wakes before
it write-locks the VMA, and since "mm: handle userfaults under VMA lock" (v6.6)
a uffd fault holds only its VMA's lock, which the unregister's mmap_lock does
not hold off: a fault can queue after that wake-up, and nothing wakes it after
that (tests/workloads/unregister_race). The last unregisters are kept so that a
fault flagged waiting, or woken only by the uffd's release, names the one it
missed."""

from __future__ import annotations

import collections

from ..events import Event
from .model import Lifecycle
from .tables import in_range

KEPT = 64  # the last unregisters looked at


class Unregisters:
    def __init__(self) -> None:
        self._last: collections.deque[tuple[int, int, int, int, int]] = collections.deque(maxlen=KEPT)

    def add(self, ev: Event) -> None:
        """A successful UFFDIO_UNREGISTER: (uffd, start, len, ts, tid)."""
        self._last.append((ev.ctx, ev.addr, ev.len, ev.ts_ns, ev.tid))

    def note_missed(self, lc: Lifecycle) -> None:
        """The first unregister of the fault's range since this round began,
        noted once in its history."""
        for uffd, start, length, ts, tid in self._last:
            if ts > lc.wait_since and in_range(lc, uffd, start, length):
                what = f"its range was unregistered by tid {tid} after it was raised, and that did not wake it"
                if all(e.what != what for e in lc.history):
                    lc.note(what, ts, tid)
                return
