"""Built-in userfaultfd workloads in pure Python (ctypes): `uffdtrace demo`
runs them on hosts without a compiler, and the live tests run them under the
tracer. ``python -m uffdtrace.workloads SCENARIO [ARG]`` prints one JSON line
per scenario saying what it did (tids, pages, messages its handlers read).

A thread that faults on uffd memory while holding the GIL would deadlock the
Python handler thread, so every fault happens inside a foreign call
(``ctypes.memmove`` releases the GIL), and handlers block in ``os.read`` and
``ioctl``, which release it too.

x86-64 only (syscall and ioctl numbers below).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SYS_USERFAULTFD = 323
O_CLOEXEC = 0o2000000
UFFD_API = 0xAA
UFFD_FEATURE_THREAD_ID = 1 << 8
UFFDIO_REGISTER_MODE_MISSING = 1
MODE_DONTWAKE = 1
PAGE = os.sysconf("SC_PAGE_SIZE")
PROT_RW, MAP_PRIVATE_ANON = 0x3, 0x22
MSG_SIZE = 32
EEXIST = 17


def _iowr(nr: int, size: int, read_only: bool = False) -> int:
    return (2 if read_only else 3) << 30 | size << 16 | UFFD_API << 8 | nr


UFFDIO_API = _iowr(0x3F, 24)
UFFDIO_REGISTER = _iowr(0x00, 32)
UFFDIO_WAKE = _iowr(0x02, 16, read_only=True)
UFFDIO_COPY = _iowr(0x03, 40)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class WorkloadError(Exception):
    pass


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise WorkloadError(f"{what}: {os.strerror(err)}")
    return ret


class Uffd:
    """One userfaultfd with a registered anonymous area of ``pages`` pages."""

    def __init__(self, pages: int) -> None:
        self.fd = _check(libc.syscall(SYS_USERFAULTFD, O_CLOEXEC), "userfaultfd")
        api = (ctypes.c_uint64 * 3)(UFFD_API, UFFD_FEATURE_THREAD_ID, 0)
        _check(libc.ioctl(self.fd, UFFDIO_API, api), "UFFDIO_API")
        self.size = pages * PAGE
        base = libc.mmap(None, self.size, PROT_RW, MAP_PRIVATE_ANON, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise WorkloadError("mmap failed")
        self.base: int = base
        reg = (ctypes.c_uint64 * 4)(self.base, self.size, UFFDIO_REGISTER_MODE_MISSING, 0)
        _check(libc.ioctl(self.fd, UFFDIO_REGISTER, reg), "UFFDIO_REGISTER")
        self.source = ctypes.create_string_buffer(b"\x5a" * PAGE)

    def page(self, i: int) -> int:
        return self.base + i * PAGE

    def read_msgs(self, max_msgs: int = 1) -> list[tuple[int, int]]:
        """Blocks; returns (fault address, faulting tid) per pagefault message."""
        data = os.read(self.fd, MSG_SIZE * max_msgs)
        out = []
        for off in range(0, len(data), MSG_SIZE):
            msg = data[off:off + MSG_SIZE]
            addr = int.from_bytes(msg[16:24], "little")
            out.append((addr & ~(PAGE - 1), int.from_bytes(msg[24:28], "little")))
        return out

    def copy(self, addr: int, dontwake: bool = False) -> int:
        """UFFDIO_COPY one page; 0 or -errno."""
        arg = (ctypes.c_uint64 * 5)(addr, ctypes.addressof(self.source), PAGE, MODE_DONTWAKE if dontwake else 0, 0)
        return 0 if libc.ioctl(self.fd, UFFDIO_COPY, arg) == 0 else -ctypes.get_errno()

    def wake(self, addr: int) -> None:
        _check(libc.ioctl(self.fd, UFFDIO_WAKE, (ctypes.c_uint64 * 2)(addr, PAGE)), "UFFDIO_WAKE")

    def close(self) -> None:
        os.close(self.fd)


def touch(addr: int) -> int:
    """Read one byte of uffd memory inside a foreign call (GIL released)."""
    byte = ctypes.create_string_buffer(1)
    ctypes.memmove(byte, addr, 1)
    return byte.raw[0]


PR_SET_NAME = 15


def name_thread(name: str) -> None:
    """The thread's comm, which the tracer shows (so a demo line says its scenario)."""
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


@dataclass
class Faulter:
    """A thread touching pages in order; ``tid`` is known once it runs."""

    addrs: list[int]
    name: str
    tid: int = 0
    values: list[int] = field(default_factory=list)
    thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Faulter:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait()
        return self

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        name_thread(self.name)
        self._ready.set()
        self.values = [touch(a) for a in self.addrs]

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join()


def report(name: str, u: Uffd, handler_tid: int, faulters: list[Faulter], **extra: Any) -> dict[str, Any]:
    return {"workload": name, "pid": os.getpid(), "handler_tid": handler_tid,
            "faulter_tids": [f.tid for f in faulters], "base": u.base, "page_size": PAGE, **extra}


# -- scenarios ---------------------------------------------------------------------


def clean(pages: int = 8) -> dict[str, Any]:
    """Every fault read, resolved with UFFDIO_COPY (which wakes), in order."""
    u = Uffd(pages)
    f = Faulter([u.page(i) for i in range(pages)], "wl-clean").start()
    reads = 0
    for _ in range(pages):
        for addr, _tid in u.read_msgs():
            reads += 1
            _check(u.copy(addr), "UFFDIO_COPY")
    f.join()
    u.close()
    return report("clean", u, threading.get_native_id(), [f], pages=pages, msgs_read=reads)


def slow(delay_s: float = 1.5) -> dict[str, Any]:
    """A handler that reads the fault's message only ``delay_s`` late, then
    resolves it cleanly: unread (and never woken) for that long, then fine."""
    u = Uffd(1)
    f = Faulter([u.page(0)], "wl-slow").start()
    time.sleep(delay_s)
    [(addr, _)] = u.read_msgs()
    _check(u.copy(addr), "UFFDIO_COPY")
    f.join()
    u.close()
    return report("slow", u, threading.get_native_id(), [f], addr=addr, delay_s=delay_s, msgs_read=1)


def dontwake(stall_s: float = 2.0) -> dict[str, Any]:
    """The handler resolves with DONTWAKE and only issues UFFDIO_WAKE after
    ``stall_s``: the thread is stuck that long (a handler bug made visible)."""
    u = Uffd(1)
    f = Faulter([u.page(0)], "wl-dontwake").start()
    [(addr, _)] = u.read_msgs()
    _check(u.copy(addr, dontwake=True), "UFFDIO_COPY")
    time.sleep(stall_s)
    u.wake(addr)
    f.join()
    u.close()
    return report("dontwake", u, threading.get_native_id(), [f], addr=addr, stall_s=stall_s, msgs_read=1)


def retry(wakes: int = 3) -> dict[str, Any]:
    """UFFDIO_WAKE without resolving, ``wakes`` times: each wake-up sends the
    thread back into handle_userfault (a new message); then UFFDIO_COPY."""
    u = Uffd(1)
    f = Faulter([u.page(0)], "wl-retry").start()
    reads = 0
    for _ in range(wakes):
        [(addr, _)] = u.read_msgs()
        reads += 1
        u.wake(addr)
    [(addr, _)] = u.read_msgs()
    reads += 1
    _check(u.copy(addr), "UFFDIO_COPY")
    f.join()
    u.close()
    return report("retry", u, threading.get_native_id(), [f], addr=addr, wakes=wakes, msgs_read=reads)


def eexist(stall_s: float = 2.0) -> dict[str, Any]:
    """Another resolver fills the page with DONTWAKE; the handler's own
    UFFDIO_COPY then fails with EEXIST and the handler (wrongly) does not wake
    the thread. After ``stall_s`` it finally does, so that the workload ends."""
    u = Uffd(1)
    f = Faulter([u.page(0)], "wl-eexist").start()
    [(addr, _)] = u.read_msgs()
    resolver = threading.Thread(target=lambda: _check(u.copy(addr, dontwake=True), "UFFDIO_COPY"))
    resolver.start()
    resolver.join()
    ret = u.copy(addr)
    time.sleep(stall_s)
    u.wake(addr)
    f.join()
    u.close()
    return report("eexist", u, threading.get_native_id(), [f], addr=addr, copy_ret=ret, stall_s=stall_s,
                  msgs_read=1, resolver_tid=resolver.native_id)


def release(after_s: float = 0.3) -> dict[str, Any]:
    """The handler closes the uffd while the thread waits: the kernel releases
    the context and wakes it; it then faults the page in normally."""
    u = Uffd(1)
    f = Faulter([u.page(0)], "wl-release").start()
    [(addr, _)] = u.read_msgs()
    time.sleep(after_s)
    u.close()
    f.join()
    return report("release", u, threading.get_native_id(), [f], addr=addr, msgs_read=1, value=f.values[0])


def stress(threads: int = 8, pages: int = 256, handlers: int = 4) -> dict[str, Any]:
    """``threads`` faulting threads in pairs over shared pages (so both of a
    pair often wait for one page), ``handlers`` handler threads reading
    batches of messages; a copy that loses the race (EEXIST) is followed by
    UFFDIO_WAKE, as a correct handler must. Every fault read is counted."""
    pairs = threads // 2
    u = Uffd(pairs * pages)
    faulters = []
    for t in range(threads):
        block = [u.page((t // 2) * pages + i) for i in range(pages)]
        faulters.append(Faulter(block if t % 2 == 0 else block[::-1], "wl-stress"))
    lock = threading.Lock()
    counts = {"reads": 0, "eexist": 0}
    stop = threading.Event()

    def handle() -> None:
        poller = select.poll()
        poller.register(u.fd, select.POLLIN)
        while not stop.is_set():
            if not poller.poll(50):
                continue
            try:
                msgs = u.read_msgs(16)
            except BlockingIOError:
                continue
            lost_races = 0
            for addr, _tid in msgs:
                ret = u.copy(addr)
                if ret == -EEXIST:
                    lost_races += 1
                    u.wake(addr)
                elif ret != 0:
                    raise WorkloadError(f"UFFDIO_COPY: {os.strerror(-ret)}")
            with lock:
                counts["reads"] += len(msgs)
                counts["eexist"] += lost_races

    os.set_blocking(u.fd, False)
    workers = [threading.Thread(target=handle, daemon=True) for _ in range(handlers)]
    for w in workers:
        w.start()
    for f in faulters:
        f.start()
    for f in faulters:
        f.join()
    stop.set()
    for w in workers:
        w.join()
    u.close()
    return report("stress", u, 0, faulters, pages=pairs * pages, faults_touched=threads * pages,
                  msgs_read=counts["reads"], eexist=counts["eexist"], handler_tids=[w.native_id for w in workers])


# name -> (scenario, type of its arguments)
SCENARIOS: dict[str, tuple[Callable[..., dict[str, Any]], type]] = {
    "clean": (clean, int), "dontwake": (dontwake, float), "retry": (retry, int), "eexist": (eexist, float),
    "release": (release, float), "stress": (stress, int), "slow": (slow, float),
}
# What `uffdtrace demo` runs, in order, quietly: (scenario, argument).
DEMO: tuple[tuple[str, str], ...] = (("clean", "8"), ("dontwake", "2"), ("retry", "3"))


def main(argv: list[str]) -> int:
    if not argv or (argv[0] not in SCENARIOS and argv[0] != "demo"):
        print(f"usage: python -m uffdtrace.workloads {{{','.join(SCENARIOS)},demo}} [ARG...]", file=sys.stderr)
        return 2
    quiet = argv[0] == "demo"
    runs = DEMO if quiet else (tuple(argv),)
    try:
        for name, *args in runs:
            fn, kind = SCENARIOS[name]
            result = fn(*map(kind, args))
            if not quiet:
                print(json.dumps(result), flush=True)
    except (WorkloadError, ValueError) as exc:
        print(f"workload: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
