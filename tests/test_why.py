"""`uffdtrace why` without a kernel walk: the iterator's records parsed, the
verdicts, and the /proc readings that need no root (this process's own
pages and threads)."""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import threading
import time
from pathlib import Path

import pytest

from uffdtrace.analysis.verdicts import (
    EVENT_UNREAD,
    NO_READER,
    NOT_READ,
    READ_NOT_RESOLVED,
    RESOLVED_NOT_WOKEN,
    UNKNOWN,
    of_flag,
    verdict,
)
from uffdtrace.live import hang, procscan
from uffdtrace.live.uffd_state import EVENT, FILE, MORE, QUEUED, READ, RECORD, Waiter, parse


def rec(kind: int, holder: int, ino: int, *, fd: int = 0, tid: int = 0, tgid: int = 0, released: int = 0,
        msg: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    return RECORD.pack(kind, fd, holder, tid, tgid, released, ino, *msg)


def test_the_walk_parsed_each_uffd_once_whatever_holds_it() -> None:
    queues = [rec(QUEUED, 100, 5, tid=11, tgid=10, msg=(0x12, 0, 0x7000, 11)),
              rec(READ, 100, 5, tid=12, tgid=10, msg=(0x12, 1, 0x9000, 12)),
              rec(EVENT, 100, 5, tid=13, tgid=10, msg=(0x15, 0x7000, 0xA000, 0))]
    data = b"".join([rec(FILE, 100, 5, fd=3, msg=(0x100, 0, 0, 0)), *queues,
                     rec(FILE, 200, 5, fd=7), *queues,  # the handler's descriptor: the same queues again
                     rec(FILE, 100, 6, fd=4, released=1), rec(MORE, 100, 6, msg=(QUEUED, 0, 0, 0)),
                     b"\0" * 10])  # a record cut short: ignored
    uffds = parse(data)
    u = uffds[5]
    assert u.holders == {100: [3], 200: [7]} and u.features == 0x100 and not u.released and not u.truncated
    assert u.queued == [Waiter(11, 10, 0x12, (0, 0x7000, 11))] and [w.tid for w in u.read] == [12]
    assert [(w.tid, w.event, w.args[:2]) for w in u.events] == [(13, 0x15, (0x7000, 0xA000))]
    assert uffds[6].released and uffds[6].truncated and uffds[6].holders == {100: [4]}


@pytest.mark.parametrize(("kind", "message", "page", "can_read", "handled", "expected"), [
    ("fault", "queued", "absent", True, True, NOT_READ),
    ("fault", "queued", "absent", True, False, NOT_READ),  # a handler of its own process that stopped reading
    ("fault", "read", "absent", True, True, READ_NOT_RESOLVED),
    ("fault", "read", "absent", True, False, NO_READER),  # read, and its reader no longer holds the uffd
    ("fault", "read", "present", True, True, RESOLVED_NOT_WOKEN),
    ("fault", "queued", "present", False, False, RESOLVED_NOT_WOKEN),  # the page is there: only a wake-up is missing
    ("fault", "queued", "absent", False, True, NO_READER),
    ("fault", "read", "unknown", False, True, NO_READER),
    ("event", "queued", "unknown", True, False, EVENT_UNREAD),
    ("event", "queued", "unknown", False, True, NO_READER),
    ("fault", None, "absent", True, True, UNKNOWN),
    ("fault", "read", "absent", None, True, UNKNOWN),  # no living holder: being released, or exiting
    ("fault", "read", "present", None, True, RESOLVED_NOT_WOKEN),
    ("event", "queued", "unknown", None, True, EVENT_UNREAD),
])
def test_verdicts(kind: str, message: str | None, page: str, can_read: bool | None, handled: bool,
                  expected: str) -> None:
    assert verdict(kind, message, page, can_read, handled)[0] == expected


def test_page_state_of_this_process() -> None:
    area = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(area))
    area[0] = 1  # the first page touched, the second not
    assert hang.page_state(os.getpid(), addr) == "present"
    assert hang.page_state(os.getpid(), addr + mmap.PAGESIZE) == "absent"
    assert hang.page_state(2**31 - 1, addr) == "unknown"  # no such process


def test_a_thread_waiting_on_a_descriptor_is_named() -> None:
    """read() and poll() on a descriptor are told by its inode; another
    descriptor is not this one."""
    r, w = os.pipe()
    other_r, other_w = os.pipe()
    ino = os.fstat(r).st_ino
    tids: list[int] = []

    def reader() -> None:
        tids.append(threading.get_native_id())
        os.read(r, 1)

    def poller() -> None:
        tids.append(threading.get_native_id())
        p = select.poll()
        p.register(r, select.POLLIN)
        p.poll(5000)

    threads = [threading.Thread(target=reader), threading.Thread(target=poller)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (len(tids) < 2 or any(
            hang.waits_on(os.getpid(), tid, ino) is None for tid in tids)):
        time.sleep(0.01)
    try:
        assert sorted(hang.waits_on(os.getpid(), tid, ino) or "" for tid in tids) == ["poll", "read"]
        assert all(hang.waits_on(os.getpid(), tid, os.fstat(other_r).st_ino) is None for tid in tids)
    finally:
        os.write(w, b"xx")
        for t in threads:
            t.join()
        for fd in (r, w, other_r, other_w):
            os.close(fd)


def test_when_a_thread_last_ran_is_on_the_monotonic_clock() -> None:
    """The scheduler clock of /proc/PID/sched does not count like
    CLOCK_MONOTONIC (seconds apart on a VM): a running thread last ran now."""
    ran = procscan.last_ran_ns(procscan.PROC / "thread-self")
    assert ran is not None and abs(time.monotonic_ns() - ran) < 50_000_000, (time.monotonic_ns() - (ran or 0)) / 1e9


def test_a_thread_moved_to_another_cpu_asleep_has_no_last_run(tmp_path: Path) -> None:
    """exec_start 0 (zeroed when a sleeping thread was moved to another CPU)
    says nothing of when it last ran: unknown, not a wait since boot."""
    task = tmp_path / "1234"
    task.mkdir()
    (task / "sched").write_text("se.exec_start                                :             0.000000\n")
    assert procscan.last_ran_ns(task) is None
    (task / "sched").write_text("se.exec_start                                :          1234.500000\n")
    assert procscan.exec_start_ns(task) == 1_234_500_000


def test_a_wait_of_unknown_start_is_long_once_the_thread_sleeps_through_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """6.12 CI, the `killed` hang: its waiter's exec_start was 0 at every ask,
    so `why` never concluded its reader gone. Now a thread whose start is
    unknown and that is not switched in once for STUCK_NS has waited that
    long; one that runs meanwhile has not. Real threads: one asleep, one busy."""
    stop = threading.Event()
    asleep = threading.Thread(target=stop.wait)
    busy = threading.Thread(target=lambda: [time.sleep(0.001) for _ in iter(stop.is_set, True)])
    asleep.start()
    busy.start()
    try:
        pid = os.getpid()
        waiting = [(pid, procscan.BlockedTask(t.native_id or 0, "t", None)) for t in (asleep, busy)]
        monkeypatch.setattr(procscan, "thread_state", lambda _pid, _tid: "uffd")  # as if in handle_userfault
        monkeypatch.setattr(hang, "STUCK_NS", 300_000_000)
        assert hang.asleep_for_stuck(waiting) == {asleep.native_id}
        known = [(pid, procscan.BlockedTask(asleep.native_id or 0, "t", time.monotonic_ns()))]
        assert hang.asleep_for_stuck(known) == set()  # its start is known: nothing to wait for
    finally:
        stop.set()
        asleep.join()
        busy.join()


def test_a_process_gone_during_the_walk_is_no_traceback() -> None:
    gone = 2**31 - 1
    assert hang.explain([gone], dict) == []
    view = hang.holder_view(gone, [3], 5)
    assert view.threads == [] and view.comm == "?"
    assert hang.waits_on(gone, gone, 5) is None


def test_trace_flags_carry_the_same_verdicts() -> None:
    """A flag on a waiting thread names its missing step with why's word."""
    assert of_flag("unread", read=False, present=False) == NOT_READ
    assert of_flag("never_woken", read=True, present=False) == READ_NOT_RESOLVED
    assert of_flag("never_woken", read=True, present=True) == RESOLVED_NOT_WOKEN
    assert of_flag("eexist_without_wake", read=True, present=False) == RESOLVED_NOT_WOKEN
    assert of_flag("eagain_unretried", read=True, present=False) == READ_NOT_RESOLVED
    assert of_flag("no_reader", read=True, present=False) == NO_READER
    assert of_flag("event_unread", read=False, present=False) == EVENT_UNREAD
    assert of_flag("retry_loop", read=True, present=True) is None and of_flag("sigbus", False, False) is None
