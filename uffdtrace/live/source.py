"""The live Source (source.Source): compiles the probes with bcc (or takes
them from the cache of compiled programs), loads and attaches them, follows
the chosen processes, and yields decoded records until told to stop; the
correlator's questions are answered from /proc and the BPF maps."""

from __future__ import annotations

import collections
import ctypes
import errno
import mmap
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UffdtraceError
from ..escape import printable
from ..events import (
    READS_COUNT,
    RECORD,
    RECORD_SIZE,
    Event,
    FaultState,
    Folded,
    Kind,
    LostCause,
    PointerIds,
    QuietCounter,
    decode_comm,
    decode_many,
    op_name,
    reason_name,
    slot_layout,
)
from ..source import BlockedThread, CleanTotals, Holder, LatencySum, RunInfo, TaskState, Totals
from . import kernel, probes, procscan, progcache
from .kallsyms import BootSymbols, Symbols
from .kprobe_mode import KprobeBackend
from .loader import BpfError, PerfReader, Program
from .ringbuf import HEADER_SIZE, RingReader, slot_size
from .tracepoint_mode import TracepointBackend

POLL_MS = 100
TICK_S = 0.05  # how often the main thread correlates what was drained, and checks the rules
# The drain thread reads the ring this often: a few large copies instead of
# many small ones (16 MiB hold ~150k records, a few 100 ms at the worst rate seen).
DRAIN_PAUSE_S = 0.005
# While reads find nothing the pause doubles up to this, so that an idle
# host-wide session costs little; the first records of a burst bring it back
# to DRAIN_PAUSE_S (a burst fills at most this long's worth of the ring first).
DRAIN_IDLE_PAUSE_S = 0.04
DEFAULT_BUFFER_KB = 16384
# Records drained but not correlated yet are kept up to this many kernel
# buffers' worth (then the kernel's buffer fills and counts what it loses);
# a batch decodes at most BATCH_BYTES of them (about 37,000 records).
BACKLOG_BUFFERS = 4
BATCH_BYTES = 4 << 20
SPILL_PAGES_PER_CPU = 16  # per-CPU perf buffer for the records the ring refused (bpf/common.h emit)
# Records reserved before a poll are committed within microseconds; events
# older than (poll start - this) have all been delivered by the poll.
DELIVERY_SLACK_NS = 5_000_000


@dataclass
class Options:
    pids: Sequence[int] = ()
    command: Sequence[str] = ()
    duration: float | None = None
    transport: str = "auto"  # auto | ringbuf | perf
    buffer_kb: int = DEFAULT_BUFFER_KB  # kernel buffer: the ring, or the perf buffers of all CPUs together
    every_record: bool = False  # --events: no in-kernel filtering of resolutions (bpf/common.h)
    flagged_only: bool = False  # --flagged: clean lifecycles folded in the kernel are only counted
    aggregate: bool = False  # serve, top: clean lifecycles folded in the kernel are summed there


def resolve_mode(features: kernel.Features, requested: str) -> str:
    """`auto` is kprobe mode where kprobes exist, tracepoint mode elsewhere."""
    if requested == "auto":
        return "kprobe" if features.kprobes else "tracepoint"
    return requested


def backend(mode: str) -> probes.Backend:
    return KprobeBackend() if mode == "kprobe" else TracepointBackend()


def check_bpf(features: kernel.Features) -> None:
    """What compiling and loading any of the BPF programs needs (the probes,
    and `why`'s walk): one clear line naming the cause and the remedy."""
    if not features.root:
        raise UffdtraceError("must run as root (loading BPF programs needs CAP_BPF/CAP_SYS_ADMIN): try sudo")
    if features.bcc_version is None:
        raise UffdtraceError(
            f"bcc is not importable ({features.bcc_error}): install python3-bpfcc (scripts/setup.sh does)")
    if not features.btf:
        raise UffdtraceError("kernel has no BTF (/sys/kernel/btf/vmlinux): it needs CONFIG_DEBUG_INFO_BTF=y")
    if features.headers is None:
        raise UffdtraceError(
            f"no kernel headers at /lib/modules/{features.release}/build (bcc needs them): run scripts/setup.sh")


def check_environment(features: kernel.Features, mode: str) -> None:
    """Fail early with one clear line naming the cause and the remedy."""
    check_bpf(features)
    if mode == "kprobe" and not features.kprobes:
        raise UffdtraceError(
            "kprobes are unavailable on this kernel (no CONFIG_KPROBE_EVENTS): use --mode tracepoint")
    if mode == "tracepoint" and features.tracefs is None:
        raise UffdtraceError("no tracefs at /sys/kernel/tracing and it cannot be mounted: tracepoint mode needs it")


def choose_transport(kallsyms: Symbols, wanted: str) -> str:
    # The BPF ring buffer arrived in 5.8 (457f44363a88, "bpf: Implement BPF
    # ring buffer and verifier support for it"); older kernels get perf.
    has_ringbuf = "bpf_ringbuf_output" in kallsyms
    if wanted == "auto":
        return "ringbuf" if has_ringbuf else "perf"
    if wanted == "ringbuf" and not has_ringbuf:
        raise UffdtraceError("this kernel has no BPF ring buffer: use --transport perf")
    return wanted


def check_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        if not os.path.isdir(f"/proc/{pid}"):
            raise UffdtraceError(f"no such process: {pid}")


# argv: gate fd, command. EOF before "go" (the tracer died) exits 125 without
# running the command. Python, not sh: dash cannot redirect from fd 10 and up.
COMMAND_GATE = ("import os, sys\n"
                "fd = int(sys.argv[1])\n"
                "if os.read(fd, 3) != b'go\\n':\n"
                "    sys.exit(125)\n"
                "os.close(fd)\n"
                "os.execv(sys.argv[2], sys.argv[2:])\n")


def resolve_command(command: Sequence[str]) -> list[str]:
    import shutil

    path = command[0] if "/" in command[0] else shutil.which(command[0])
    if path is None or not os.path.isfile(path):
        raise UffdtraceError(f"command not found: {command[0]}")
    if not os.access(path, os.X_OK):
        raise UffdtraceError(f"command is not executable: {command[0]}")
    return [path, *command[1:]]


class Stopper:
    """The first SIGINT/SIGTERM ends the session cleanly (probes detached,
    summary printed); a second one ends the process at once, as the signal
    would have (the kernel detaches the probes when their descriptors close;
    kprobe events left in tracefs are removed by the next session)."""

    def __init__(self) -> None:
        self.stopped = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, _frame: Any) -> None:
        if self.stopped:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.stopped = True


LOAD_ATTEMPTS = 3


class LiveSource:
    """Live source in kprobe or tracepoint mode (``auto`` picks at start)."""

    backend: probes.Backend  # chosen by start()

    def __init__(self, opts: Options, mode: str = "auto") -> None:
        self.opts = opts
        self.info = RunInfo(mode=mode, kernel=platform.release(), host=socket.gethostname(),
                            command=list(opts.command), pids=list(opts.pids),
                            output=[name for name, on in (("events", opts.every_record),
                                                          ("flagged", opts.flagged_only),
                                                          ("aggregated", opts.aggregate)) if on])
        self.ids = PointerIds()
        # Raw records from the drain thread, with their layout (ring spans or single perf records).
        self._pending: collections.deque[tuple[struct.Struct, bytes]] = collections.deque()
        self._ring: RingReader | None = None
        self._ring_layout = slot_layout(HEADER_SIZE, slot_size(RECORD_SIZE))
        self._drain_stop = threading.Event()
        # Bytes of records drained (written by the drain thread only) and
        # taken (by the main thread only): their difference is the backlog.
        self._drained = self._taken = 0
        self._previous_poll = 0  # when the last poll began
        self._stalled_at = -1  # the ring position a busy record held the last stalled poll at
        self._backlog_cap = max(1, opts.buffer_kb) * 1024 * BACKLOG_BUFFERS
        self._delivered_before = 0
        self._blocked: list[tuple[int, procscan.BlockedTask]] = []  # (pid, thread) found at start
        self._bpf: Program | None = None
        self._perf: PerfReader | None = None
        self._plan: probes.Plan | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._gate: int | None = None  # write end of the pipe the command waits on
        self.totals = Totals(lost_causes=dict.fromkeys((c.name.lower() for c in LostCause), 0))  # final once closed
        self.stopper = Stopper()
        self._clean_before: dict[tuple[bytes, int, int, int, int], CleanTotals] = {}  # take_clean_totals' last
        self._closing_clean_totals: list[CleanTotals] = []  # what grew in the last second, taken as it closed
        self._command = resolve_command(opts.command) if opts.command else []
        check_pids(opts.pids)

    # -- setup -------------------------------------------------------------
    def start(self) -> None:
        kernel.ensure_tracefs()
        features = kernel.probe()
        self.info.mode = resolve_mode(features, self.info.mode)
        check_environment(features, self.info.mode)
        self.backend = backend(self.info.mode)
        self.info.sees_returns = self.backend.sees_returns
        symbols = BootSymbols.load()
        if not symbols.readable:
            raise UffdtraceError("/proc/kallsyms shows no addresses (kptr_restrict): run as root")
        the_plan = self._plan = self.backend.plan(symbols, features)
        self.info.degraded = self.backend.degraded(the_plan)
        self.info.vma_lock_flag = self.backend.vma_lock_flag(the_plan)
        self.info.transport = choose_transport(symbols, self.opts.transport)
        symbols.save()
        defines = the_plan.defines  # the session's knobs join the plan's: attach() reads them too
        buffer_pages = self.opts.buffer_kb * 1024 // mmap.PAGESIZE
        if self.info.transport == "ringbuf":
            defines["USE_RINGBUF"] = None
            defines["RINGBUF_PAGES"] = buffer_pages
        if self.opts.every_record:
            defines["EVERY_RECORD"] = None
        elif self.opts.flagged_only or self.opts.aggregate:
            defines["QUIET"] = None
            if self.opts.aggregate:
                defines["AGGREGATE"] = None
        if self.opts.pids or self._command:
            defines["FILTER"] = None
        self._bpf = self._load(defines, features)
        self.backend.attach(self._bpf, the_plan)
        self.info.probes = [p.to_json() for p in the_plan.status]  # after attach: it says what attached
        if self._command:
            self._bpf["spawn_parent"][ctypes.c_int(0)] = ctypes.c_uint32(os.getpid())
        follow = self._bpf["follow"]
        for pid in self.opts.pids:
            follow[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
        self._scan_proc(the_plan)
        per_cpu = max(1, buffer_pages // (os.cpu_count() or 1))
        if self.info.transport == "ringbuf":
            self._ring = RingReader(self._bpf["events"].map_fd, buffer_pages * mmap.PAGESIZE, RECORD_SIZE)
            per_cpu = SPILL_PAGES_PER_CPU
        # Lost records are counted in the kernel, per cause (bpf/output.h).
        self._perf = self._bpf.perf_reader("spill" if self._ring else "events", 1 << (per_cpu.bit_length() - 1))
        self.stopper.install()
        self.info.started_ns = time.monotonic_ns()
        self.info.wall_offset_ns = time.time_ns() - self.info.started_ns
        if self._command:
            # The command waits at a gate until release_command(): it shares
            # our stdout, and its first line must not come before the header.
            gate_r, self._gate = os.pipe()
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", COMMAND_GATE, str(gate_r),
                                           *self._command], pass_fds=(gate_r,))
            os.close(gate_r)
            self.info.command_pid = self._proc.pid

    def _load(self, defines: dict[str, int | None], features: kernel.Features,
              obtain: Any = progcache.obtain, program: Any = Program) -> Any:
        """Load the program, from the cache of compiled programs or compiled
        now (progcache.py). Tracepoint mode folds faults with BPF atomics
        (5.12+): a kernel that refuses them gets the program without folding
        (every step sent), and the header says so."""
        def load(compiled: Any) -> Any:
            attempt = 1
            while True:
                try:
                    return program(compiled, features.tracefs)
                except BpfError as exc:
                    # The verifier gives up with EAGAIN when a signal is
                    # pending (a terminal resize, a profiler): load again.
                    if exc.errno != errno.EAGAIN or attempt == LOAD_ATTEMPTS:
                        raise
                    attempt += 1

        def build(defs: dict[str, int | None]) -> Any:
            text = probes.source_text(self.backend.program)
            loaded, self.info.program = obtain(text, probes.cflags(defs), features.bcc_version, features.headers, load)
            return loaded

        try:
            try:
                return build(defines)
            except Exception as refused:  # bcc raises bare Exception for compile errors
                if self.backend.sees_returns or "EVERY_RECORD" in defines:
                    raise
                loaded = build({**defines, "NO_FOLD": None})
                # Said with the refusal's first line: a verifier that refuses
                # something else than the atomics must not pass for an old kernel.
                why = printable(str(refused).strip().splitlines()[0][:200]) if str(refused).strip() else "refused"
                self.info.degraded.append(f"folding in the kernel (needs BPF atomics, 5.12+; {why}): "
                                          "every step is sent")
                return loaded
        except UffdtraceError:
            raise
        except Exception as exc:
            raise UffdtraceError(f"could not compile or load the probes: {exc}") from exc

    def release_command(self) -> None:
        """Let the command run (once the header is out); exec keeps its pid."""
        if self._gate is not None:
            os.write(self._gate, b"go\n")
            os.close(self._gate)
            self._gate = None

    def _scan_proc(self, the_plan: probes.Plan) -> None:
        """One walk of /proc at start (probes attached): tracepoint mode learns
        the uffds that already exist; threads already blocked in
        handle_userfault are kept for the correlator (a command started here
        has none)."""
        want_blocked = not self._command or bool(self.opts.pids)
        if not self.backend.learns_every_uffd and not want_blocked:
            return
        pids = () if self.backend.learns_every_uffd else self.opts.pids
        found = procscan.scan(pids, include_blocked_only=want_blocked).processes  # as root: nothing hidden
        self.info.existing = self.backend.learn(self._bpf, the_plan, [p for p in found if p.fds], self.opts.pids)
        self.info.degraded += self.backend.unseen(self.opts.pids, found)
        if want_blocked:
            self._blocked = [(p.pid, t) for p in found if not self.opts.pids or p.pid in self.opts.pids
                                   for t in p.blocked]

    def _take_perf(self) -> None:
        # A perf sample's raw data is padded to 8 bytes with its size field.
        assert self._perf is not None
        records = self._perf.read()
        self._pending.extend((RECORD, raw[:RECORD_SIZE]) for raw in records)
        self._drained += len(records) * RECORD_SIZE

    # -- running -------------------------------------------------------------
    def _poll(self, timeout_ms: int, pause_s: float = DRAIN_PAUSE_S) -> None:
        """Move what the kernel buffers hold to ``_pending``. With a
        ``timeout_ms``, then wait: the perf buffer up to that long for a
        record, the ring (whose producers send no wake-up) ``pause_s``."""
        started = time.monotonic_ns()
        if self._drained - self._taken >= self._backlog_cap:
            # The correlator is behind: the records stay in the kernel's
            # buffer, where those that do not fit are counted lost (shown
            # everywhere), rather than piling up here without bound.
            time.sleep(DRAIN_PAUSE_S if timeout_ms else 0)
            return
        if self._ring is None:
            assert self._perf is not None
            self._perf.wait(timeout_ms)
            self._take_perf()
        else:
            self._take_perf()  # the spill buffer, first: its records are older than the ring's newest
            span, stalled = self._ring.read()
            if span:
                self._pending.append((self._ring_layout, span))
                self._drained += len(span)
            if timeout_ms:
                time.sleep(pause_s)
            if stalled:
                self._stalled(started)
                return
        # Every record committed before `started` has been consumed now.
        self._delivered_before = started - DELIVERY_SLACK_NS
        self._previous_poll = started

    def _stalled(self, started: int) -> None:
        """A record still being written holds back those after it. One first
        seen busy now was reserved since the previous poll began, and those
        behind it later: all stamped before that poll (less the slack) are
        in. Under a steady load some record is nearly always busy, and the
        horizon must still move (else the correlator's queue grows without
        end); one busy since an earlier poll (its producer preempted) holds it."""
        assert self._ring is not None
        if self._ring.position != self._stalled_at:
            self._stalled_at = self._ring.position
            self._delivered_before = max(self._delivered_before, self._previous_poll - DELIVERY_SLACK_NS)
        self._previous_poll = started

    def _finished(self, deadline: float | None) -> bool:
        if self.stopper.stopped:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return True
        if self._proc is not None and self._proc.poll() is not None:
            self.totals.command_status = self._proc.returncode
            return True
        if self.opts.pids and all(procscan.thread_state(pid, pid) == "gone" for pid in self.opts.pids):
            self.totals.pids_exited = True
            return True
        return False

    def _drain(self) -> None:
        """The drain thread: keeps the kernel buffer empty while the main
        thread correlates and prints (a pause there must not cost records).
        The poll waits without the GIL; callbacks only copy bytes."""
        pause = DRAIN_PAUSE_S
        while not self._drain_stop.is_set():
            drained = self._drained
            self._poll(POLL_MS, pause)
            pause = DRAIN_PAUSE_S if self._drained != drained else min(2 * pause, DRAIN_IDLE_PAUSE_S)

    def _take(self, limit: int | None) -> tuple[list[Event], int | None]:
        """Decode what was drained, up to about ``limit`` bytes of records;
        and, when some remain, a time before which all records are taken:
        the earliest first stamp of the chunks left (records are in the
        order they were reserved, within the slack)."""
        out: list[Event] = []
        taken = 0
        while self._pending and (limit is None or taken < limit):
            layout, data = self._pending.popleft()
            taken += len(data)
            out += decode_many(data, self.ids, layout)
        self._taken += taken
        left = list(self._pending)  # one C call: the drain thread may append meanwhile
        if not left:
            return out, None
        return out, min(layout.unpack_from(data, 0)[0] for layout, data in left) - DELIVERY_SLACK_NS

    def batches(self) -> Iterator[tuple[list[Event], int]]:
        deadline = time.monotonic() + self.opts.duration if self.opts.duration else None
        drainer = threading.Thread(target=self._drain, name="uffdtrace-drain", daemon=True)
        drainer.start()
        horizon = 0
        try:
            while not self._finished(deadline):
                if self._drained - self._taken < BATCH_BYTES:
                    time.sleep(TICK_S)  # else behind: the next batch at once
                delivered = self._delivered_before  # read before taking: all before it is in _pending
                batch, left_from = self._take(BATCH_BYTES)
                horizon = max(horizon, delivered if left_from is None else min(delivered, left_from))
                yield batch, horizon
        finally:
            self._drain_stop.set()
            drainer.join()
        self._poll(0)
        yield self._take(None)[0], time.monotonic_ns()

    def fault_page(self, tid: int) -> int | None:
        """The page of the fault the kernel holds for thread ``tid`` (BPF map
        ``thread_fault``), None when there is none or tracing has ended."""
        if self._bpf is None:
            return None
        entry = self._bpf["thread_fault"].get(ctypes.c_uint32(tid))
        return None if entry is None or entry.over else int(entry.addr)

    def folded_faults(self, include_handed: bool) -> list[Event]:
        """The faults the kernel is folding now (bpf/tracepoint.c), as
        FAULT_STATE events; with ``include_handed``, also those woken inside
        an ioctl that has not returned yet (asked once, at the end)."""
        if self._bpf is None or self.backend.sees_returns or self.opts.every_record:
            return []  # nothing folds in kprobe mode or with --events
        now = time.monotonic_ns()  # entries are copied while the kernel changes them: only the count is masked
        tables = [("thread_fault", FaultState.FOLDING)]
        if include_handed:
            tables.append(("handed_faults", FaultState.HANDED))
        out = []
        for name, state in tables:
            for key, fe in self._bpf[name].items_lookup_batch():
                if fe.state != state:
                    continue
                tid = key.value & 0xFFFFFFFF  # handed_faults keys are waker << 32 | woken
                out.append(Folded.record(
                    kind=Kind.FAULT_STATE, ts_ns=now, cpu=0, tgid=fe.tgid, tid=tid, comm=decode_comm(bytes(fe.comm)),
                    uffd=self.ids(fe.uffd), page=fe.addr, error_code=fe.error_code, raised_ns=fe.ts,
                    slept_ns=fe.slept, read_ns=fe.t_read, reader_tid=fe.reader, messages=fe.reads & READS_COUNT,
                    woken_ns=fe.t_woken, waker_tid=fe.waker, op_bits=fe.op_bits))
        return out

    def take_clean_totals(self) -> list[CleanTotals]:
        """What the kernel summed of clean lifecycles since the last call
        (bpf/aggregate.h: serve's and top's Options.aggregate), per process,
        comm, uffd, reason and op; nothing in kprobe mode, which does not
        fold. The keys of processes that have exited are deleted once read:
        no fault of theirs can end any more."""
        if self._bpf is None or self.backend.sees_returns or not self.opts.aggregate:
            taken, self._closing_clean_totals = self._closing_clean_totals, []
            return taken
        table = self._bpf["clean_totals"]
        out, exited = [], []
        for key, t in table.items_lookup_batch():
            now = CleanTotals(tgid=key.tgid, comm=decode_comm(bytes(key.comm)), uffd=self.ids(key.uffd),
                              reason=reason_name(key.reason), op=op_name(key.op) if key.op else None,
                              faults=t.faults, woken=t.woken, reads=t.reads, last_ns=t.last_ns,
                              pickup=LatencySum(tuple(t.pickup), t.pickup_ns),
                              service=LatencySum(tuple(t.service), t.service_ns),
                              fault=LatencySum(tuple(t.fault), t.fault_ns))
            seen = (bytes(key.comm), key.tgid, key.uffd, key.reason, key.op)
            grown = now.since(self._clean_before.get(seen))
            if os.path.exists(f"/proc/{key.tgid}"):
                self._clean_before[seen] = now
            else:
                exited.append(key)
                self._clean_before.pop(seen, None)
            if grown.faults or grown.reads:
                out.append(grown)
        for key in exited:
            del table[key]
        return out

    def adopt(self, tid: int, raised_ns: int) -> None:
        """User space took over the folded fault of thread ``tid``: its end
        must be sent, even with --flagged."""
        if self._bpf is not None and not self.backend.sees_returns:
            self._bpf["adopted"][ctypes.c_uint32(tid)] = ctypes.c_uint64(raised_ns)

    def _percpu_sum(self, table: str, index: int) -> int:
        """One counter of a BPF per-CPU array, summed over the CPUs."""
        assert self._bpf is not None
        return int(sum(self._bpf[table][ctypes.c_int(index)]))

    def lost(self) -> int:
        """Records lost so far, every cause (bpf/common.h ``enum lost_cause``)."""
        if self._bpf is None:
            return self.totals.lost
        return sum(self._lost_causes().values())

    def _lost_causes(self) -> dict[str, int]:
        return {cause.name.lower(): self._percpu_sum("lost", cause) for cause in LostCause}

    def now(self) -> int:
        return time.monotonic_ns()

    def thread_state(self, pid: int, tid: int) -> TaskState:
        return procscan.thread_state(pid, tid)

    def uffd_holders(self, uffd: int) -> list[Holder] | None:
        """Who holds the uffd now, by its inode (a walk of every process's
        descriptors: asked only of a fault stuck past --stuck-ms)."""
        raw = self.ids.pointer(uffd)
        if self._bpf is None or self._plan is None or raw is None:
            return None
        ino = self.backend.uffd_inode(self._bpf, self._plan, raw)
        return None if ino is None else procscan.holders(ino)

    def blocked_before(self) -> list[BlockedThread]:
        now = time.monotonic_ns()
        return [BlockedThread(pid, t.tid, t.comm, min(t.last_ran_ns or now, now)) for pid, t in self._blocked]

    def close(self) -> Totals:
        if self._gate is not None:  # never released: the gate sees EOF and the command never runs
            os.close(self._gate)
            self._gate = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self.totals.command_status = self._proc.returncode
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._bpf is not None:
            self.totals.lost_causes = self._lost_causes()
            self.totals.filtered = self._percpu_sum("filtered", 0)
            self._closing_clean_totals = self.take_clean_totals()
            if not self.backend.sees_returns:  # tracepoint.c's quiet counters
                self.totals.quiet_lifecycles = self._percpu_sum("quiet", QuietCounter.LIFECYCLES)
                self.totals.quiet_reads = self._percpu_sum("quiet", QuietCounter.READS)
            self._bpf.cleanup()
            self._bpf = None
        return self.totals
