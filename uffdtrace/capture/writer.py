"""Writing a capture while a session runs: Recording wraps the live Source,
passes every answer through and writes it down (format.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
from collections.abc import Iterator
from typing import BinaryIO

from .. import __version__
from ..analysis.rules import Thresholds
from ..errors import UffdtraceError
from ..events import RECORD, RECORD_SIZE, Event, encode_many
from ..source import BlockedThread, Holder, RunInfo, Source, TaskState, Totals
from .format import FORMAT_VERSION, MAGIC, PREAMBLE, TASK_STATES, Cap

BUFFER = 1 << 20


def create(path: str, force: bool) -> BinaryIO:
    """The file, created 0600 (it names others' processes and addresses);
    an existing one only with ``force``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
        os.fchmod(fd, 0o600)
    except FileExistsError:
        raise UffdtraceError(f"{path} exists: use --force to overwrite it") from None
    except OSError as exc:
        raise UffdtraceError(f"cannot write {path}: {exc.strerror}") from exc
    return os.fdopen(fd, "wb", buffering=BUFFER)


def _mark(kind: Cap, *, ts: int = 0, tgid: int = 0, tid: int = 0, comm: bytes = b"", addr: int = 0,
          length: int = 0, flags: int = 0, mode: int = 0, ret: int = 0, count: int = 0) -> bytes:
    return RECORD.pack(ts, kind, 0, tgid, tid, comm, 0, addr, length, flags, mode, ret, 0, 0, 0, 0, count)


class Recording:
    """A Source that is ``inner``, written to ``path`` as it goes."""

    def __init__(self, inner: Source, path: str, th: Thresholds, *, force: bool = False) -> None:
        self.inner = inner
        self.path = path
        self.th = th
        self.records = 0
        self._out: BinaryIO | None = create(path, force)
        self._started = False

    @property
    def info(self) -> RunInfo:
        return self.inner.info

    def _write(self, data: bytes, *, flush: bool = False) -> None:
        if self._out is None:
            return
        try:
            self._out.write(data)
            if flush:
                self._out.flush()
        except OSError as exc:
            self._abandon()
            why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
            raise UffdtraceError(f"recording to {self.path} stopped: {why}; it keeps the "
                                 f"{self.records} records written before") from exc

    def _abandon(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            with contextlib.suppress(OSError):  # what did not fit is lost; the whole records before it stay
                out.close()

    def _records(self, data: bytes, *, flush: bool = False) -> None:
        self.records += len(data) // RECORD_SIZE
        self._write(data, flush=flush)

    def start(self) -> None:
        try:
            self.inner.start()
        except BaseException:
            self._abandon()
            os.unlink(self.path)  # nothing was traced: no file is better than an empty one
            raise
        header = json.dumps({"format": FORMAT_VERSION, "tool_version": __version__,
                             "run": dataclasses.asdict(self.info), "thresholds": dataclasses.asdict(self.th)})
        data = header.encode()
        self._write(PREAMBLE.pack(MAGIC, FORMAT_VERSION, RECORD_SIZE, len(data), 0) + data)
        self._started = True

    def blocked_before(self) -> list[BlockedThread]:
        found = self.inner.blocked_before()
        self._records(_mark(Cap.BLOCKED, count=len(found)) + b"".join(
            _mark(Cap.BLOCKED_THREAD, ts=t.since_ns, tgid=t.tgid, tid=t.tid, comm=t.comm.encode()) for t in found))
        return found

    def release_command(self) -> None:
        self.inner.release_command()

    def batches(self) -> Iterator[tuple[list[Event], int]]:
        for batch, horizon in self.inner.batches():
            # Flushed per batch: a recorder killed loses at most the batch it was writing.
            self._records(encode_many(batch) + _mark(Cap.BATCH, ts=horizon), flush=True)
            yield batch, horizon

    def lost(self) -> int:
        n = self.inner.lost()
        self._records(_mark(Cap.LOST, length=n))
        return n

    def now(self) -> int:
        ts = self.inner.now()
        self._records(_mark(Cap.NOW, ts=ts))
        return ts

    def thread_state(self, pid: int, tid: int) -> TaskState | None:
        state = self.inner.thread_state(pid, tid)
        self._records(_mark(Cap.TASK, tgid=pid, tid=tid, ret=TASK_STATES.index(state)))
        return state

    def fault_page(self, tid: int) -> int | None:
        page = self.inner.fault_page(tid)
        self._records(_mark(Cap.FAULT_PAGE, tid=tid, addr=page or 0, flags=page is not None))
        return page

    def uffd_holders(self, uffd: int) -> list[Holder] | None:
        found = self.inner.uffd_holders(uffd)
        self._records(_mark(Cap.HOLDERS, addr=uffd, flags=found is not None, count=len(found or ())) + b"".join(
            _mark(Cap.HOLDER, tgid=h.pid, comm=h.comm.encode()[:15], length=h.threads, ret=h.waiting)
            for h in found or ()))
        return found

    def folded_faults(self, include_handed: bool) -> list[Event]:
        found = self.inner.folded_faults(include_handed)
        self._records(_mark(Cap.FOLDED, mode=include_handed, count=len(found)) + encode_many(found))
        return found

    def adopt(self, tid: int, raised_ns: int) -> None:
        self.inner.adopt(tid, raised_ns)  # an action, not an answer: nothing to replay

    def close(self) -> Totals:
        try:
            totals = self.inner.close()
            if self._started and self._out is not None:
                trailer = json.dumps({"totals": totals.to_json(), "records": self.records}).encode()
                with contextlib.suppress(OSError):  # the records are whole; the reader says the trailer is missing
                    self._out.write(_mark(Cap.END, length=len(trailer)) + trailer)
        finally:
            self._abandon()
        return totals
