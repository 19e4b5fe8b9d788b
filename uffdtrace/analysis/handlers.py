"""Who handles each uffd: the threads seen reading its messages, in any
process. A fault whose handlers have all exited waits on a uffd nobody
reads (``no_reader``): a dead handler, not a slow one."""

from __future__ import annotations

from ..source import TaskProbe

MAX_READERS = 64  # per uffd: a handler's thread pool; the oldest are forgotten first



class Handlers:
    def __init__(self) -> None:
        self._readers: dict[int, dict[int, None]] = {}  # uffd -> reader tids, oldest first

    def read_by(self, uffd: int, tid: int) -> None:
        tids = self._readers.setdefault(uffd, {})
        tids.pop(tid, None)
        tids[tid] = None
        if len(tids) > MAX_READERS:
            del tids[next(iter(tids))]

    def seen(self, uffd: int) -> bool:
        return bool(self._readers.get(uffd))

    def all_gone(self, uffd: int, waiter: int, tasks: TaskProbe) -> list[int]:
        """The threads seen reading the uffd, when every one has exited
        (asked of the kernel now); [] when one lives, none was seen, or it
        cannot be told. A reader's process is not known for certain (a
        folded fault names only the thread): /proc/TID finds any thread."""
        readers = [tid for tid in self._readers.get(uffd, ()) if tid != waiter]
        if not readers:
            return []
        for tid in readers:
            if tasks(tid, tid) != "gone":
                return []
        return readers
