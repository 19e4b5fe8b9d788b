"""Loads a compiled program (``compiled.Compiled``) into the kernel through the
bpf(2) and perf_event_open(2) system calls, without bcc or LLVM in the process:
creates its maps, points the programs' map references at them, loads the
programs, attaches them, and gives the tracer the map operations and the perf
buffer reader it uses. Every session loads this way; bcc only compiles
(``compiled.py``), so a program from the cache and a fresh one run the same code.

Only the system calls' stable ABI is used (``union bpf_attr`` and
``struct perf_event_attr`` grow at their end, and the kernel zero-fills what a
caller does not pass), so no libbpf version is assumed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import mmap
import os
import platform
import select
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UffdtraceError

if TYPE_CHECKING:
    from .compiled import Compiled, MapSpec

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # (bpf, perf_event_open)

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = range(6)
RAW_TRACEPOINT_OPEN = 17
MAP_LOOKUP_BATCH = 24
# enum bpf_prog_type
PROG_KPROBE, PROG_TRACEPOINT, PROG_RAW_TRACEPOINT = 2, 5, 17
# enum bpf_map_type
MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_LRU_PERCPU_HASH = 5, 6, 10
MAP_PERF_EVENT_ARRAY = 4
BPF_PSEUDO_MAP_FD = 1
LD_IMM64 = 0x18
# perf_event_open
PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT = 1, 2
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_RECORD_LOST, PERF_RECORD_SAMPLE = 2, 9
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
KPROBE_GROUP = "uffdtrace"  # tracefs group of the kprobe events a session makes

VERIFIER_LOG_BYTES = 1 << 20
ENOTSUPP = 524  # the kernel's own "operation not supported" (include/linux/errno.h)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def _nr(index: int) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise UffdtraceError(f"loading BPF programs is not supported on {platform.machine()}")
    return numbers[index]


class BpfError(OSError):
    """A bpf(2) or perf_event_open(2) call failed; ``log`` holds the verifier's words."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}" + (f"\n{log}" if log else ""))
        self.log = log


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    ret = _libc.syscall(ctypes.c_long(_nr(0)), ctypes.c_long(cmd), ctypes.byref(attr),
                        ctypes.c_long(ctypes.sizeof(attr)))
    if ret < 0:
        raise BpfError(what, ctypes.get_errno())
    return int(ret)


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16)]


class _MapElem(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapBatch(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16)]


class _RawTracepointOpen(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32)]


class _PerfEventAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("config1", ctypes.c_uint64), ("config2", ctypes.c_uint64)]


def _object_name(name: str) -> bytes:
    """BPF_OBJ_NAME_LEN is 16 with the NUL; the kernel takes [A-Za-z0-9_.] only."""
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:15].encode()


def _perf_event_open(attr: _PerfEventAttr, cpu: int, what: str) -> int:
    attr.size = ctypes.sizeof(attr)
    fd = _libc.syscall(ctypes.c_long(_nr(1)), ctypes.byref(attr), ctypes.c_long(-1), ctypes.c_long(cpu),
                       ctypes.c_long(-1), ctypes.c_long(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        raise BpfError(what, ctypes.get_errno())
    return int(fd)


def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for: /sys's 'possible' range."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class Map:
    """One BPF map, with the subset of bcc's table interface the tracer uses:
    ``get``, ``[key]``, ``[key] = value``, ``del [key]``, ``items``, ``items_lookup_batch``
    and the ``Key``/``Leaf`` ctypes types."""

    def __init__(self, spec: MapSpec, fd: int, key_type: Any, leaf_type: Any) -> None:
        self.name = spec.name
        self.spec = spec
        self.map_fd = fd
        self.Key = key_type
        self.Leaf = leaf_type
        self._cpus = possible_cpus() if spec.type in (MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_LRU_PERCPU_HASH) else 0

    def _value_buffer(self) -> Any:
        if self._cpus:  # the kernel copies one value per possible CPU, each padded to 8 bytes
            return (ctypes.c_uint8 * ((self.spec.value_size + 7) // 8 * 8 * self._cpus))()
        return self.Leaf()

    def _per_cpu(self, raw: Any) -> list[Any]:
        stride = (self.spec.value_size + 7) // 8 * 8
        return [self._leaf_value(self.Leaf.from_buffer_copy(bytes(raw)[i * stride:i * stride + self.spec.value_size]))
                for i in range(self._cpus)]

    @staticmethod
    def _leaf_value(leaf: Any) -> Any:
        return leaf.value if isinstance(leaf, ctypes._SimpleCData) else leaf

    @staticmethod
    def _as(value: Any, ctype: Any) -> Any:
        """``value`` as ``ctype``: a scalar of another ctypes alias (c_uint64
        is c_ulong, a key may be c_ulonglong) or a Python int is converted."""
        if isinstance(value, ctype):
            return value
        return ctype(value.value if isinstance(value, ctypes._SimpleCData) else value)

    def _key(self, key: Any) -> Any:
        return self._as(key, self.Key)

    def get(self, key: Any) -> Any:
        buf = self._value_buffer()
        k = self._key(key)
        attr = _MapElem(map_fd=self.map_fd, key=ctypes.addressof(k), value=ctypes.addressof(buf))
        try:
            _bpf(MAP_LOOKUP_ELEM, attr, f"lookup in map {self.name}")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return self._per_cpu(buf) if self._cpus else buf

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, leaf: Any) -> None:
        k = self._key(key)
        leaf = self._as(leaf, self.Leaf)
        attr = _MapElem(map_fd=self.map_fd, key=ctypes.addressof(k), value=ctypes.addressof(leaf))
        _bpf(MAP_UPDATE_ELEM, attr, f"update of map {self.name}")

    def __delitem__(self, key: Any) -> None:
        k = self._key(key)
        attr = _MapElem(map_fd=self.map_fd, key=ctypes.addressof(k))
        try:
            _bpf(MAP_DELETE_ELEM, attr, f"removal of an entry of map {self.name}")
        except BpfError as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise KeyError(key) from None

    def keys(self) -> Iterator[Any]:
        key, nxt = self.Key(), self.Key()
        attr = _MapElem(map_fd=self.map_fd, key=0, value=ctypes.addressof(nxt))
        while True:
            try:
                _bpf(MAP_GET_NEXT_KEY, attr, f"walk of map {self.name}")
            except BpfError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            yield self.Key.from_buffer_copy(nxt)
            ctypes.memmove(ctypes.addressof(key), ctypes.addressof(nxt), ctypes.sizeof(key))
            attr.key = ctypes.addressof(key)

    def items(self) -> Iterator[tuple[Any, Any]]:
        for key in self.keys():
            value = self.get(key)
            if value is not None:  # deleted between the walk and the lookup
                yield key, value

    def items_lookup_batch(self) -> Iterator[tuple[Any, Any]]:
        """Every entry, a few thousand per system call (BPF_MAP_LOOKUP_BATCH, 5.6)."""
        if self._cpus:
            yield from self.items()
            return
        chunk = 4096
        keys = (self.Key * chunk)()
        leaves = (self.Leaf * chunk)()
        token = ctypes.c_uint64()
        attr = _MapBatch(map_fd=self.map_fd, keys=ctypes.addressof(keys), values=ctypes.addressof(leaves),
                         out_batch=ctypes.addressof(token))
        key_size, leaf_size = ctypes.sizeof(self.Key), ctypes.sizeof(self.Leaf)
        first = True
        while True:
            attr.count = chunk
            done = False
            try:
                _bpf(MAP_LOOKUP_BATCH, attr, f"batch lookup in map {self.name}")
            except BpfError as exc:
                if first and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                    yield from self.items()  # a kernel before 5.6, or a map type without batches
                    return
                if exc.errno != errno.ENOENT:  # ENOENT: the last batch (count says how many it holds)
                    raise
                done = True
            first = False
            # Only the entries returned are copied out (the buffers are 4096 long).
            raw_keys = ctypes.string_at(keys, attr.count * key_size)
            raw_leaves = ctypes.string_at(leaves, attr.count * leaf_size)
            for i in range(attr.count):
                yield (self.Key.from_buffer_copy(raw_keys, i * key_size),
                       self.Leaf.from_buffer_copy(raw_leaves, i * leaf_size))
            if done:
                return
            attr.in_batch = ctypes.addressof(token)


class PerfReader:
    """The per-CPU perf buffers of a BPF_MAP_TYPE_PERF_EVENT_ARRAY: one
    BPF-output perf event per CPU, its fd stored at the CPU's index, its ring
    mmapped. ``read`` returns every record's raw bytes and the count the
    kernel reported lost (PERF_RECORD_LOST)."""

    _HEAD = struct.Struct("<Q")
    _HEADER = struct.Struct("<IHH")  # struct perf_event_header

    def __init__(self, perf_map: Map, pages: int) -> None:
        self._rings: list[tuple[int, mmap.mmap]] = []
        self._poll = select.epoll()
        self._size = pages * mmap.PAGESIZE
        for cpu in _online_cpus():
            attr = _PerfEventAttr(type=PERF_TYPE_SOFTWARE, config=PERF_COUNT_SW_BPF_OUTPUT,
                                  sample_type=PERF_SAMPLE_RAW, sample_period=1, wakeup_events=1)
            fd = _perf_event_open(attr, cpu, f"perf buffer on CPU {cpu}")
            ring = mmap.mmap(fd, mmap.PAGESIZE + self._size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            perf_map[ctypes.c_int(cpu)] = ctypes.c_uint32(fd)
            _libc.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
            self._poll.register(fd, select.EPOLLIN)
            self._rings.append((fd, ring))
        self.lost = 0

    def wait(self, timeout_ms: int) -> None:
        self._poll.poll(timeout_ms / 1000)

    def read(self) -> list[bytes]:
        out: list[bytes] = []
        for _fd, ring in self._rings:
            head = self._HEAD.unpack_from(ring, 1024)[0]  # perf_event_mmap_page.data_head
            tail = self._HEAD.unpack_from(ring, 1032)[0]  # .data_tail
            data = memoryview(ring)[mmap.PAGESIZE:]
            while tail < head:
                at = tail % self._size
                header = self._record(data, at, self._HEADER.size)
                kind, _misc, size = self._HEADER.unpack(header)
                body = self._record(data, (at + self._HEADER.size) % self._size, size - self._HEADER.size)
                if kind == PERF_RECORD_SAMPLE:
                    raw_size = struct.unpack_from("<I", body)[0]
                    out.append(body[4:4 + raw_size])
                elif kind == PERF_RECORD_LOST:
                    self.lost += struct.unpack_from("<QQ", body)[1]
                tail += size
            self._HEAD.pack_into(ring, 1032, tail)
        return out

    def _record(self, data: memoryview, at: int, size: int) -> bytes:
        """``size`` bytes from ``at``, the part past the end taken from the start."""
        first = bytes(data[at:min(at + size, self._size)])
        return first + bytes(data[:size - len(first)])

    def close(self) -> None:
        self._poll.close()
        for fd, ring in self._rings:
            ring.close()
            os.close(fd)
        self._rings = []


def _online_cpus() -> list[int]:
    out: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


class Program:
    """A compiled program loaded into the kernel: its maps by name, its
    programs loaded on demand, what it attached (released by ``cleanup``)."""

    def __init__(self, compiled: Compiled, tracefs: Path | None) -> None:
        self.compiled = compiled
        self._tracefs = tracefs
        self._maps: dict[str, Map] = {}
        self._prog_fds: dict[str, int] = {}
        self._links: list[int] = []  # perf event and raw tracepoint fds: closing one detaches
        self._kprobe_events: list[str] = []  # tracefs kprobe_events lines to remove
        self._readers: list[PerfReader] = []
        try:
            by_old_fd = {spec.fd: self._create_map(spec) for spec in compiled.maps}
            self._relocated = {name: _relocate(insns, by_old_fd) for name, insns in compiled.functions.items()}
            self._attach_auto()
        except BaseException:
            self.cleanup()
            raise

    def _create_map(self, spec: MapSpec) -> int:
        attr = _MapCreate(map_type=spec.type, key_size=spec.key_size, value_size=spec.value_size,
                          max_entries=spec.max_entries, map_flags=spec.flags, map_name=_object_name(spec.name))
        fd = _bpf(MAP_CREATE, attr, f"creating map {spec.name}")
        self._maps[spec.name] = Map(spec, fd, spec.key_ctype(), spec.leaf_ctype())
        return fd

    def __getitem__(self, name: str) -> Map:
        return self._maps[name]

    def load(self, name: str, prog_type: int) -> int:
        """The program's fd, loading it the first time (the verifier's log is
        kept for the error only: a second load with logging on)."""
        if name in self._prog_fds:
            return self._prog_fds[name]
        insns = self._relocated.get(name)
        if insns is None:
            raise UffdtraceError(f"the compiled program has no function {name}")
        license_ = ctypes.create_string_buffer(self.compiled.license.encode())
        attr = _ProgLoad(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(insns),
                         license=ctypes.addressof(license_), kern_version=self.compiled.kern_version,
                         prog_name=_object_name(name))
        try:
            fd = _bpf(PROG_LOAD, attr, f"loading BPF program {name}")
        except BpfError as exc:
            if exc.errno in (errno.EPERM, errno.EAGAIN, errno.E2BIG):
                raise
            log = ctypes.create_string_buffer(VERIFIER_LOG_BYTES)
            attr.log_level, attr.log_size, attr.log_buf = 1, VERIFIER_LOG_BYTES, ctypes.addressof(log)
            ret = _libc.syscall(ctypes.c_long(_nr(0)), ctypes.c_long(PROG_LOAD), ctypes.byref(attr),
                                ctypes.c_long(ctypes.sizeof(attr)))
            if ret >= 0:  # loaded this time (a transient refusal)
                fd = int(ret)
            else:
                tail = log.value.decode(errors="replace").strip().splitlines()[-8:]
                raise BpfError(f"loading BPF program {name}", exc.errno or errno.EINVAL, "\n".join(tail)) from None
        self._prog_fds[name] = fd
        return fd

    def _attach_auto(self) -> None:
        """What bcc's TRACEPOINT_PROBE and RAW_TRACEPOINT_PROBE name for
        itself: ``tracepoint__<category>__<event>`` and ``raw_tracepoint__<event>``."""
        for name in self.compiled.functions:
            if name.startswith("tracepoint__"):
                category, _, event = name[len("tracepoint__"):].partition("__")
                self._attach_tracepoint(category, event, self.load(name, PROG_TRACEPOINT))
            elif name.startswith("raw_tracepoint__"):
                event = name[len("raw_tracepoint__"):]
                c_name = ctypes.create_string_buffer(event.encode())
                attr = _RawTracepointOpen(name=ctypes.addressof(c_name), prog_fd=self.load(name, PROG_RAW_TRACEPOINT))
                self._links.append(_bpf(RAW_TRACEPOINT_OPEN, attr, f"attaching raw tracepoint {event}"))

    def _tracefs_dir(self) -> Path:
        if self._tracefs is None:
            raise UffdtraceError("no tracefs: cannot attach tracepoints")
        return self._tracefs

    def _attach_tracepoint(self, category: str, event: str, prog_fd: int) -> None:
        try:
            tp_id = int((self._tracefs_dir() / "events" / category / event / "id").read_text())
        except OSError as exc:
            raise BpfError(f"tracepoint {category}:{event}", exc.errno or errno.ENOENT) from None
        attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1, wakeup_events=1)
        self._attach_perf_event(attr, prog_fd, f"attaching tracepoint {category}:{event}")

    def _attach_perf_event(self, attr: _PerfEventAttr, prog_fd: int, what: str) -> None:
        # One event on CPU 0 suffices: the program joins the probe's own list and runs on every CPU.
        fd = _perf_event_open(attr, 0, what)
        self._links.append(fd)
        if _libc.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd) < 0 or _libc.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0:
            raise BpfError(what, ctypes.get_errno())

    def attach_kprobe(self, event: str, fn_name: str) -> None:
        self._attach_kprobe(event, fn_name, retprobe=False, maxactive=0)

    def attach_kretprobe(self, event: str, fn_name: str, maxactive: int = 0) -> None:
        self._attach_kprobe(event, fn_name, retprobe=True, maxactive=maxactive)

    def _attach_kprobe(self, symbol: str, fn_name: str, retprobe: bool, maxactive: int) -> None:
        prog_fd = self.load(fn_name, PROG_KPROBE)
        what = f"attaching {'kretprobe' if retprobe else 'kprobe'} on {symbol}"
        if maxactive or not KPROBE_PMU.is_dir():
            # The perf kprobe PMU (e12f03d7031a, v4.17) takes no maxactive:
            # a kretprobe sized for many sleepers is made in tracefs, as bcc does.
            if not self._kprobe_events:
                self._remove_stale_kprobe_events()
            group = KPROBE_GROUP
            event = "".join(c if c.isalnum() else "_" for c in f"{'r' if retprobe else 'p'}_{symbol}_{os.getpid()}")
            kind = (f"r{maxactive or ''}" if retprobe else "p")
            self._kprobe_event(f"{kind}:{group}/{event} {symbol}", what)
            self._kprobe_events.append(f"-:{group}/{event}")
            tp_id = int((self._tracefs_dir() / "events" / group / event / "id").read_text())
            attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1, wakeup_events=1)
        else:
            pmu_type = int((KPROBE_PMU / "type").read_text())
            ret_bit = int((KPROBE_PMU / "format" / "retprobe").read_text().split(":")[1]) if retprobe else -1
            func = ctypes.create_string_buffer(symbol.encode())
            attr = _PerfEventAttr(type=pmu_type, config=1 << ret_bit if retprobe else 0,
                                  config1=ctypes.addressof(func), sample_period=1, wakeup_events=1)
        self._attach_perf_event(attr, prog_fd, what)

    def _kprobe_event(self, line: str, what: str) -> None:
        # One write(2) on an O_APPEND descriptor: Python's open(..., "a")
        # seeks to the end first, and tracefs refuses that seek (EINVAL).
        try:
            fd = os.open(self._tracefs_dir() / "kprobe_events", os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)
        except OSError as exc:
            raise BpfError(what, exc.errno or errno.EINVAL) from None

    def _remove_stale_kprobe_events(self) -> None:
        try:
            listing = (self._tracefs_dir() / "kprobe_events").read_text()
        except OSError:
            return
        for line in stale_kprobe_events(listing, lambda pid: os.path.exists(f"/proc/{pid}")):
            with contextlib.suppress(BpfError):  # in use, or gone meanwhile
                self._kprobe_event(line, "removing a stale kprobe event")

    def perf_reader(self, name: str, pages: int) -> PerfReader:
        reader = PerfReader(self[name], pages)
        self._readers.append(reader)
        return reader

    def cleanup(self) -> None:
        """Detach and release everything (closing the last fd frees a map or program)."""
        for reader in self._readers:
            reader.close()
        # Each detach waits for an RCU grace period (about 20 ms): closed
        # one after another, 90 probes took 2 s; in threads (os.close drops
        # the GIL) they share the grace periods.
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(self._links) or 1)) as pool:
            list(pool.map(os.close, self._links))
        for fd in list(self._prog_fds.values()) + [m.map_fd for m in self._maps.values()]:
            os.close(fd)
        for line in self._kprobe_events:
            with contextlib.suppress(BpfError):  # already gone
                self._kprobe_event(line, "removing a kprobe event")
        self._readers, self._links, self._prog_fds, self._maps, self._kprobe_events = [], [], {}, {}, []


def stale_kprobe_events(listing: str, alive: Callable[[int], bool]) -> list[str]:
    """The lines that remove, from tracefs ``kprobe_events`` (``listing``),
    the events of sessions that ended without cleaning up (killed): each
    is named after its session's pid."""
    out = []
    for line in listing.splitlines():
        name = line.split(" ", 1)[0].partition(":")[2]  # r16:uffdtrace/r_handle_userfault_1234 handle_userfault
        group, _, event = name.partition("/")
        pid = event.rpartition("_")[2]
        if group == KPROBE_GROUP and pid.isdigit() and not alive(int(pid)):
            out.append(f"-:{name}")
    return out


def _relocate(insns: bytes, fds: dict[int, int]) -> Any:
    """The bytecode with every map reference (a BPF_LD_IMM64 whose source
    register is BPF_PSEUDO_MAP_FD) pointed at this process's map: bcc wrote
    the fds of the maps it created while compiling."""
    out = bytearray(insns)
    at = 0
    while at < len(out):
        if out[at] != LD_IMM64:
            at += 8
            continue
        if out[at + 1] >> 4 == BPF_PSEUDO_MAP_FD:
            old = struct.unpack_from("<i", out, at + 4)[0]
            if old not in fds:
                raise UffdtraceError(f"the compiled program refers to an unknown map (fd {old})")
            struct.pack_into("<i", out, at + 4, fds[old])
        at += 16  # a 64-bit immediate takes two instruction slots
    return (ctypes.c_uint8 * len(out)).from_buffer(out)
