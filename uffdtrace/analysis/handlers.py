"""Who handles each uffd: the threads seen reading its messages, in any
process, and the processes holding a descriptor on it now (asked of the
kernel). A fault waits on a uffd nobody reads (``no_reader``) when every
reader seen has exited, or when no holder has a thread that could read it
(each one asleep in a userfaultfd wait): a dead handler, not a slow one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..source import Holder, HolderProbe, TaskProbe

MAX_READERS = 64  # per uffd: a handler's thread pool; the oldest are forgotten first


@dataclass
class Readers:
    """What was found about who could read a uffd."""

    gone: list[int]  # the readers seen, when every one has exited ([] otherwise)
    holders: list[Holder] | None  # the processes holding it now; None: cannot tell

    @property
    def nobody(self) -> bool:
        # No holder at all is no conclusion: the uffd is being released (its
        # faults are woken), or its last holder is exiting (seen on the seed
        # tier's `refile` kernel as the hung workload was killed).
        return bool(self.gone) or (bool(self.holders) and not any(h.can_read for h in self.holders or ()))


class Handlers:
    def __init__(self, tasks: TaskProbe | None, holders: HolderProbe | None,
                 on_holders: Callable[[int, list[Holder], int], None] | None = None) -> None:
        self.tasks = tasks
        self.holders = holders
        self.on_holders = on_holders  # each answer, for the report
        self._readers: dict[int, dict[int, None]] = {}  # uffd -> reader tids, oldest first
        self._asked: tuple[int, dict[int, list[Holder] | None]] = (0, {})  # holders per uffd, asked at one time

    def read_by(self, uffd: int, tid: int) -> None:
        tids = self._readers.setdefault(uffd, {})
        tids.pop(tid, None)
        tids[tid] = None
        if len(tids) > MAX_READERS:
            del tids[next(iter(tids))]

    def can_ask(self) -> bool:
        return self.tasks is not None

    def readers(self, uffd: int, waiter: int, now: int) -> Readers:
        return Readers(self._all_gone(uffd, waiter), self.holders_now(uffd, now))

    def holders_now(self, uffd: int, now: int) -> list[Holder] | None:
        """Asked once per uffd per tick: many threads may wait on one uffd."""
        if self.holders is None or not uffd:
            return None
        at, answers = self._asked
        if at != now:
            answers = {}
            self._asked = (now, answers)
        if uffd not in answers:
            found = answers[uffd] = self.holders(uffd)
            if found is not None and self.on_holders is not None:
                self.on_holders(uffd, found, now)
        return answers[uffd]

    def _all_gone(self, uffd: int, waiter: int) -> list[int]:
        """The threads seen reading the uffd, when every one has exited
        (asked of the kernel now); [] when one lives, none was seen, or it
        cannot be told. A reader's process is not known for certain (a
        folded fault names only the thread): /proc/TID finds any thread."""
        readers = [tid for tid in self._readers.get(uffd, ()) if tid != waiter]
        if not readers or self.tasks is None:
            return []
        for tid in readers:
            if self.tasks(tid, tid) != "gone":
                return []
        return readers
