"""QEMU post-copy: QMP, the two QEMUs, one migration, and its table."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

from .common import DST_ADDR, FAULT_THREAD, PHASES, PORT, LabError, process, say, wait_for
from .guest import build_initramfs, check_static, need_program, need_root, newest_kernel
from .network import Network, in_namespace
from .recording import record, replay, stop_recording, tracer_view, wait_recording


class Qmp:
    """QEMU's machine protocol over a unix socket: commands in, replies out, events skipped."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._reply()  # greeting
        self.cmd("qmp_capabilities")

    def _reply(self) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise LabError("QEMU closed its QMP socket")
            msg: dict[str, Any] = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name: str, **args: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        reply = self._reply()
        if "error" in reply:
            raise LabError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
        return reply["return"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


def qemu_argv(name: str, work: Path, kernel: str, initrd: Path, guest_mib: int, incoming: bool) -> list[str]:
    return ["qemu-system-x86_64", "-name", f"{name},debug-threads=on", "-machine", "pc,accel=tcg",
            "-m", f"{guest_mib}M", "-nodefaults", "-display", "none", "-vga", "none",
            "-kernel", kernel, "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1",
            "-serial", f"file:{work / (name + '.console')}",
            "-qmp", f"unix:{work / (name + '.qmp')},server=on,wait=off",
            *(["-incoming", "defer"] if incoming else [])]


def thread_names(pid: int) -> dict[int, str]:
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            names[int(task.name)] = (task / "comm").read_text().strip()
    return names



def migrate(src: Qmp, dst: Qmp, args: argparse.Namespace, dst_threads: dict[int, str],
            dst_pid: int) -> dict[str, Any]:
    """Post-copy from the start; the destination's thread names are gathered
    while it migrates (its fault thread ends with the migration)."""
    # postcopy-preempt (QEMU 7.1+): requested pages go over a channel of their own,
    # not queued behind the background stream.
    both = ["postcopy-ram", *(["postcopy-preempt"] if args.preempt else [])]
    for qmp, caps in ((src, both), (dst, [*both, "postcopy-blocktime"])):
        qmp.cmd("migrate-set-capabilities",
                capabilities=[{"capability": c, "state": True} for c in caps])
    if args.bandwidth_mib:
        # The background stream's pace: slower means more pages the guest asks for first.
        limit = args.bandwidth_mib << 20
        src.cmd("migrate-set-parameters", **{"max-bandwidth": limit, "max-postcopy-bandwidth": limit})
    dst.cmd("migrate-incoming", uri=f"tcp:{DST_ADDR}:{PORT}")
    src.cmd("migrate", uri=f"tcp:{DST_ADDR}:{PORT}")
    src.cmd("migrate-start-postcopy")
    deadline = time.monotonic() + args.timeout
    say("migrating")
    while True:
        dst_threads.update(thread_names(dst_pid))
        info = src.cmd("query-migrate")
        status = info.get("status")
        if status == "completed":
            return info  # type: ignore[no-any-return]
        if status in ("failed", "cancelled"):
            raise LabError(f"migration {status}: {info.get('error-desc', 'no reason given by QEMU')}")
        if time.monotonic() > deadline:
            raise LabError(f"migration timed out after {args.timeout:g} s (status {status})")
        time.sleep(0.05)


def run_migration(args: argparse.Namespace, work: Path, delay_ms: float) -> dict[str, Any]:
    name = f"delay{delay_ms:g}"
    initrd = work / "initramfs.cpio"
    cap = work / f"{name}.cap"
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(Network(args.ns_prefix))
        net.shape(delay_ms, args.jitter, args.loss, args.rate)
        logs = {side: work / f"{name}.{side}.log" for side in ("src", "dst")}
        procs, qmps = {}, {}
        for side, ns, incoming in (("src", net.src, False), ("dst", net.dst, True)):
            argv = qemu_argv(f"{name}-{side}", work, args.kernel, initrd, args.guest_mib, incoming)
            procs[side] = stack.enter_context(process(in_namespace(ns, argv), logs[side]))
        for side in ("src", "dst"):
            sock = work / f"{name}-{side}.qmp"
            wait_for(f"QEMU's QMP socket ({side})", sock.exists, 60, procs[side], logs[side])
            qmps[side] = Qmp(sock, args.timeout)
            stack.callback(qmps[side].close)
        say(f"{name}: booting the source guest")
        console = work / f"{name}-src.console"
        wait_for("the guest to start dirtying memory",
                 lambda: console.exists() and b"uffdlab: round 1" in console.read_bytes(),
                 args.boot_timeout, procs["src"], logs["src"])
        dst_pid = procs["dst"].pid
        tracer = None if args.untraced else stack.enter_context(record(["-p", str(dst_pid)], cap, work, name))
        if tracer is not None:
            wait_recording(tracer, cap, work, name)
            say(f"{name}: tracing the destination QEMU (pid {dst_pid})")
        started = time.monotonic()
        threads: dict[int, str] = {}
        info = migrate(qmps["src"], qmps["dst"], args, threads, dst_pid)
        took = time.monotonic() - started
        say(f"{name}: migrated in {took:.1f} s")
        dst_info = qmps["dst"].cmd("query-migrate")
        # The guest runs on at the destination: it must still be dirtying memory.
        if qmps["dst"].cmd("query-status").get("status") != "running":
            raise LabError("the destination guest is not running after the migration")
        if tracer is not None:
            stop_recording(tracer, work, name)
    ram = info.get("ram", {})
    result = {"delay_ms": delay_ms, "preempt": args.preempt, "migration_s": round(took, 2),
              "qemu": {"postcopy_requests": ram.get("postcopy-requests"), "pages": ram.get("normal"),
                       "transferred_bytes": ram.get("transferred"), "total_time_ms": info.get("total-time"),
                       "postcopy_blocktime_ms": dst_info.get("postcopy-blocktime")},
              "uffdtrace": None}
    if tracer is not None:
        view = tracer_view(replay(cap), dst_pid)
        readers = {threads.get(tid, str(tid)): n for tid, n in view.pop("readers").items()}
        result |= {"capture": cap.name,
                   "uffdtrace": {**view, "readers": readers, "fault_thread_reads": readers.get(FAULT_THREAD, 0)}}
    return result


def qemu_lab(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    need_root()
    need_program("qemu-system-x86_64", "qemu-system-x86")
    need_program("nsenter", "util-linux")
    busybox = args.busybox or need_program("busybox", "busybox-static")
    check_static(busybox)
    try:
        import pyroute2  # noqa: F401
    except ImportError as exc:
        raise LabError("pyroute2 is not installed (pip install pyroute2, or scripts/setup.sh --test)") from exc
    args.kernel = args.kernel or newest_kernel()
    if not Path(args.kernel).is_file():
        raise LabError(f"no guest kernel at {args.kernel}")
    build_initramfs(work / "initramfs.cpio", busybox, args.dirty_mib)
    return [run_migration(args, work, delay) for delay in args.delay or [0.0]]


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_qemu_table(results: list[dict[str, Any]]) -> None:
    print(f"{'delay':>6} {'migr s':>7} {'qemu ms':>8} {'blocktime ms':>12} {'qemu requests':>13} "
          f"{'fault-thread reads':>18} {'placed by read':>14} {'faults':>7} {'lost':>5} {'flags':>5}  resolutions")
    for r in results:
        t, q = r["uffdtrace"], r["qemu"]
        traced = (f"{t['fault_thread_reads']:>18} {t['placed_by_read']:>14} {t['faults']:>7} {t['lost']:>5} "
                  f"{len(t['flags']):>5}  {t['resolutions']}") if t else f"{'(untraced)':>18}"
        print(f"{r['delay_ms']:>4g}ms {r['migration_s']:>7} {q['total_time_ms']!s:>8} "
              f"{q['postcopy_blocktime_ms']!s:>12} {q['postcopy_requests']!s:>13} {traced}")
    traced_runs = [r for r in results if r["uffdtrace"]]
    if not traced_runs:
        return
    print()
    print(f"{'delay':>6} " + " ".join(f"{p + ' p50/p99 ms':>22}" for p in PHASES))
    for r in traced_runs:
        lat = r["uffdtrace"]["latency_ms"]
        print(f"{r['delay_ms']:>4g}ms " + " ".join(
            f"{ms(lat[p]['p50']) + ' / ' + ms(lat[p]['p99']):>22}" for p in PHASES))
