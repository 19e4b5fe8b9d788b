#!/usr/bin/env python3
"""uffdtrace meets its real clients: a QEMU post-copy live migration across
two network namespaces, and a CRIU lazy-pages restore, both traced.

`qemu`: two network namespaces joined by a veth pair (pyroute2), an optional
netem qdisc on both ends (each direction delayed by --delay ms); a source
QEMU (TCG) in one booting a small Linux guest (a Debian kernel and a busybox
initramfs built here, whose init dirties memory in a loop), an incoming QEMU
in the other; both driven over QMP. Post-copy starts as soon as the migration
does, so the destination's vCPUs fault on guest RAM the source has not sent
yet. `uffdtrace record -p` follows the destination QEMU throughout; the
capture is then replayed (`trace --from -j`) and tied to QEMU's own figures:
the source's count of page requests received (query-migrate
ram.postcopy-requests) beside the messages uffdtrace saw QEMU's fault thread
read, and the faults, resolutions, flags and latency per phase. One run per
--delay given.

`criu`: dumps a small process that filled its memory with a known pattern,
restores it with --lazy-pages and the `criu lazy-pages` daemon while
uffdtrace records host-wide, and checks the pattern after the restore; every
page the daemon placed must show as a resolved lifecycle with no flag.

Everything the lab creates (namespaces, veths, qdiscs, QEMU and CRIU
processes, temporary files) is removed on every exit path, Ctrl-C included.
Bad input (not root, no qemu/criu/busybox/kernel, a namespace name taken, a
migration that fails or times out) is one line on stderr and exit 1.

Usage (root, from the checkout; pyroute2 comes with `.venv`'s test extras):
  .venv/bin/python scripts/postcopy_lab.py qemu [--delay MS]... [--jitter MS] [--loss PCT]
                                                [--rate MBIT] [--guest-mib N] [--dirty-mib N]
                                                [--json FILE] [--keep DIR]
  .venv/bin/python scripts/postcopy_lab.py criu [--pages N] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
CRIU_WORKLOAD = ROOT / "tests" / "workloads" / "criu_pattern.c"
SRC_ADDR, DST_ADDR, PREFIX_LEN, PORT = "10.77.0.1", "10.77.0.2", 24, 4444
PHASES = ("pickup", "service", "wake", "resume")
PLACED_BY_READ_NS = 100_000
# QEMU names its threads (-name debug-threads=on); its post-copy fault thread
# (migration/postcopy-ram.c; QEMU 7.2 names it "fault-default") reads the uffd.
FAULT_THREAD = "fault-default"


class LabError(Exception):
    """Ends the lab with one line on stderr and exit 1."""


LAB_PID = os.getpid()


def interrupted(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, in the lab itself only: pyroute2 forks
    helpers (multiprocessing) and terminates them, and a helper must never
    run the lab's cleanup (it would delete the namespaces under the lab)."""
    if os.getpid() != LAB_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


# --------------------------------------------------------------- preflight

def need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces, QEMU's userfaultfd, BPF)")


def need_program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LabError(f"{name} not found (Debian package {package})")
    return path


def newest_kernel() -> str:
    found = sorted(glob.glob("/boot/vmlinuz-*"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if not found:
        raise LabError("no kernel in /boot for the guest (give one with --kernel)")
    return found[-1]


# --------------------------------------------------------------- guest image

def cpio_entry(name: str, mode: int, data: bytes = b"") -> bytes:
    """One entry of a newc cpio archive (what the kernel unpacks as an initramfs)."""
    encoded = name.encode() + b"\0"
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
    return head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)


GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mount -t tmpfs -o size={dirty}m tmpfs /tmp
round=0
while :; do
    round=$((round + 1))
    yes "uffdlab round $round" | head -c {dirty}m > /tmp/dirty 2>/dev/null
    echo "uffdlab: round $round"
done
"""


def build_initramfs(path: Path, busybox: str, dirty_mib: int) -> None:
    """busybox and an init that rewrites dirty_mib MiB of tmpfs, round after round."""
    archive = b"".join([
        *(cpio_entry(d, 0o040755) for d in ("bin", "proc", "dev", "tmp")),
        cpio_entry("bin/busybox", 0o100755, Path(busybox).read_bytes()),
        cpio_entry("init", 0o100755, GUEST_INIT.format(dirty=dirty_mib).encode()),
        cpio_entry("TRAILER!!!", 0),
    ])
    path.write_bytes(archive)


def check_static(busybox: str) -> None:
    if b"ld-linux" in Path(busybox).read_bytes()[:8192] or "interpreter" in subprocess.run(
            ["file", "-b", busybox], capture_output=True, text=True, check=False).stdout:
        raise LabError(f"{busybox} is not a static busybox (Debian package busybox-static)")


# --------------------------------------------------------------- network

class Network:
    """Two namespaces, a veth pair between them, netem on both ends."""

    def __init__(self, prefix: str) -> None:
        from pyroute2 import IPRoute, netns  # noqa: F401  (imported here: the lab's only dependency)

        self.src, self.dst = f"{prefix}-src", f"{prefix}-dst"
        taken = sorted({self.src, self.dst} & set(netns.listnetns()))
        if taken:
            raise LabError(f"network namespace {taken[0]} already exists (another lab running? "
                           f"remove it with `ip netns del {taken[0]}` or choose --ns-prefix)")
        self.created: list[str] = []
        self.veth = (f"{prefix[:8]}-s", f"{prefix[:8]}-d")

    def __enter__(self) -> Network:
        from pyroute2 import IPRoute, netns

        try:
            for ns in (self.src, self.dst):
                netns.create(ns)
                self.created.append(ns)
            with IPRoute() as ipr:
                ipr.link("add", ifname=self.veth[0], kind="veth", peer=self.veth[1])
                for ifname, ns in zip(self.veth, (self.src, self.dst), strict=True):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], net_ns_fd=ns)
            for ifname, ns, addr in ((self.veth[0], self.src, SRC_ADDR), (self.veth[1], self.dst, DST_ADDR)):
                with IPRoute(netns=ns, flags=0) as ipr:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    idx = ipr.link_lookup(ifname=ifname)[0]
                    ipr.addr("add", index=idx, address=addr, prefixlen=PREFIX_LEN)
                    ipr.link("set", index=idx, state="up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def shape(self, delay_ms: float, jitter_ms: float, loss_pct: float, rate_mbit: float | None) -> None:
        """netem on both veth ends: each direction is delayed by delay_ms."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if not (delay_ms or jitter_ms or loss_pct or rate_mbit):
            return
        opts: dict[str, Any] = {"delay": int(delay_ms * 1000), "jitter": int(jitter_ms * 1000), "loss": loss_pct,
                                "limit": 100000}
        if rate_mbit:
            opts["rate"] = f"{rate_mbit}mbit"
        subprocess.run(["modprobe", "-q", "sch_netem"], check=False)  # a module on Debian kernels
        for ifname, ns in zip(self.veth, (self.src, self.dst), strict=True):
            with IPRoute(netns=ns, flags=0) as ipr:  # flags=0: never create the namespace anew
                try:
                    ipr.tc("add", "netem", index=ipr.link_lookup(ifname=ifname)[0], handle="1:", **opts)
                except NetlinkError as exc:
                    why = "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM)" if exc.code == errno.ENOENT \
                        else str(exc)
                    raise LabError(f"cannot shape the link: {why}") from exc

    def __exit__(self, *_exc: object) -> None:
        """Deleting a namespace deletes its veth end, the peer and the qdiscs with it."""
        from pyroute2 import netns

        for ns in reversed(self.created):
            with contextlib.suppress(OSError):
                netns.remove(ns)
        self.created.clear()


def in_namespace(ns: str, argv: list[str]) -> list[str]:
    """nsenter execs argv: the child's pid is the program's own."""
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]


# --------------------------------------------------------------- processes

@contextlib.contextmanager
def process(argv: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child that is terminated (then killed) however the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what: str, ready: Any, timeout: float, alive: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ready()
        if got:
            return got
        if alive is not None and alive.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log else []
            raise LabError(f"{what}: the process exited ({alive.returncode}){': ' + tail[0] if tail else ''}")
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


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


# --------------------------------------------------------------- uffdtrace

def record(argv: list[str], cap: Path, work: Path, name: str) -> contextlib.AbstractContextManager[
        subprocess.Popen[bytes]]:
    return process([str(UFFDTRACE), "record", "-j", "-o", str(cap), *argv], work / f"{name}.record.log")


def wait_recording(proc: subprocess.Popen[bytes], cap: Path, work: Path, name: str) -> None:
    """The capture's header is written once every probe is attached."""
    wait_for("uffdtrace to attach", lambda: cap.exists() and cap.stat().st_size > 0, 180, proc,
             work / f"{name}.record.log")


def stop_recording(proc: subprocess.Popen[bytes], work: Path, name: str) -> None:
    """Ctrl-C, as a user would (the capture is what is read next)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired as exc:
        raise LabError("uffdtrace record did not stop within 60 s of SIGINT") from exc
    log = (work / f"{name}.record.log").read_text(errors="replace")
    if proc.returncode != 0:
        raise LabError(f"uffdtrace record failed ({proc.returncode}): {one_line(log)}")


def replay(cap: Path) -> list[dict[str, Any]]:
    """Every line `trace --from` prints for the capture (lifecycles, flags, summary)."""
    out = subprocess.run([str(UFFDTRACE), "trace", "--from", str(cap), "-j"], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise LabError(f"uffdtrace trace --from {cap} failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6


def tracer_view(lines: list[dict[str, Any]], tgid: int) -> dict[str, Any]:
    """Faults, messages read, resolutions, flags and latency of one process."""
    lcs = [x for x in lines if x["type"] == "lifecycle" and x["tgid"] == tgid]
    summary = next(x for x in lines if x["type"] == "summary")
    phases: dict[str, list[int]] = {p: [] for p in PHASES}
    for lc in lcs:
        for p in PHASES:
            if lc["latency_ns"].get(p) is not None:
                phases[p].append(lc["latency_ns"][p])
    return {
        "faults": len(lcs),
        "messages_read": sum(lc["reads"] for lc in lcs),
        "readers": Counter(lc["reader_tid"] for lc in lcs if lc["reads"]),
        # Messages whose page was placed before (or right after) they were read: a
        # client that checks what it already has may not ask for them (QEMU does).
        "placed_by_read": sum(1 for lc in lcs if lc["reads"] and lc["t_resolved_ns"] is not None
                              and lc["t_read_ns"] is not None
                              and lc["t_resolved_ns"] - lc["t_read_ns"] < PLACED_BY_READ_NS),
        "resolutions": dict(Counter(f"{lc['resolve_op']}:{'ok' if lc['resolve_ret'] == 0 else lc['resolve_ret']}"
                                    for lc in lcs if lc["resolve_op"])),
        "states": dict(Counter(lc["state"] for lc in lcs)),
        "flags": [x for x in lines if x["type"] == "flag"],
        "latency_ms": {p: {"p50": percentile(v, 0.50), "p99": percentile(v, 0.99), "n": len(v)}
                       for p, v in phases.items()},
        "lost": summary["lost"],
        "unmatched_reads": summary["unmatched_reads"],
        "summary": summary,
    }


# --------------------------------------------------------------- QEMU post-copy

def say(what: str) -> None:
    """Progress, as comments: the one line that starts "postcopy_lab:" is an error."""
    print(f"# {what}", file=sys.stderr, flush=True)


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


# --------------------------------------------------------------- CRIU lazy restore

def criu_lab(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    need_root()
    criu = need_program("criu", "criu")
    need_program("gcc", "gcc")
    check = subprocess.run([criu, "check", "--feature", "uffd-noncoop"], capture_output=True, text=True,
                           check=False)
    if check.returncode != 0:
        raise LabError(f"criu cannot restore lazily on this kernel: {one_line(check.stdout + check.stderr)}")
    binary = work / "criu_pattern"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(CRIU_WORKLOAD)], check=True)
    images = work / "images"
    images.mkdir()
    wl_log = work / "workload.log"
    with contextlib.ExitStack() as stack:
        # A session of its own: CRIU dumps it without --shell-job; its output is a file CRIU restores.
        wl = stack.enter_context(process([str(binary), str(args.pages)], wl_log, start_new_session=True))
        wait_for("the workload to fill its pages", lambda: b"filled" in wl_log.read_bytes(), 30, wl, wl_log)
        pid = wl.pid
        run_criu([criu, "dump", "-t", str(pid), "-D", str(images), "-v4", "-o", "dump.log"], images / "dump.log")
        wl.wait(10)  # CRIU killed it once dumped; the restore brings it back with the same pid
        cap = work / "criu.cap"
        tracer = stack.enter_context(record([], cap, work, "criu"))
        wait_recording(tracer, cap, work, "criu")
        daemon = stack.enter_context(process([criu, "lazy-pages", "-D", str(images), "-v4", "-o", "lazy.log"],
                                             work / "lazy-pages.log"))
        wait_for("the lazy-pages daemon's socket", (images / "lazy-pages.socket").exists, 30, daemon,
                 work / "lazy-pages.log")
        stack.callback(kill_pid, pid)
        run_criu([criu, "restore", "-D", str(images), "--lazy-pages", "-d", "-v4", "-o", "restore.log"],
                 images / "restore.log")
        os.kill(pid, signal.SIGUSR1)  # read every page back: each first touch faults to the daemon
        wait_for("the restored workload to check its pages", lambda: not running(pid), args.timeout)
        try:
            daemon.wait(args.timeout)  # it ends once every page has been placed
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"criu lazy-pages did not finish within {args.timeout:.0f} s") from exc
        stop_recording(tracer, work, "criu")
    verdict = re.findall(r"pattern (ok|BAD.*)", wl_log.read_text(errors="replace"))
    lazy_log = (images / "lazy.log").read_text(errors="replace")
    view = tracer_view(replay(cap), pid)
    return {"pages": args.pages, "pid": pid, "pattern": verdict[-1] if verdict else None, "capture": cap.name,
            "workload_log": wl_log.read_text(errors="replace").strip(),
            # criu/uffd.c logs every fault message it reads ("#PF at ADDR") at -v4.
            "criu_faults_read": len(re.findall(r"#PF at ", lazy_log)),
            "uffdtrace": {**view, "readers": dict(view["readers"])}}


def run_criu(argv: list[str], log: Path) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"criu {argv[1]} failed: {last_error(log)}")


def running(pid: int) -> bool:
    """Alive and not a zombie (whoever reaps the restored process, if anyone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_pid(pid: int) -> None:
    if running(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def one_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def last_error(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"no log at {path}"
    errors = [x for x in lines if "Error" in x]
    return one_line(errors[-1] if errors else "\n".join(lines))


# --------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="lab", required=True)
    q = sub.add_parser("qemu", help="post-copy migration between two namespaces")
    q.add_argument("--delay", type=float, action="append", metavar="MS",
                   help="netem delay per direction (repeatable: one migration each; default 0)")
    q.add_argument("--jitter", type=float, default=0.0, metavar="MS")
    q.add_argument("--loss", type=float, default=0.0, metavar="PCT")
    q.add_argument("--rate", type=float, default=None, metavar="MBIT")
    q.add_argument("--bandwidth-mib", type=int, default=0, metavar="MIB",
                   help="QEMU's migration bandwidth limit, MiB/s (default: QEMU's own)")
    q.add_argument("--untraced", action="store_true", help="migrate without uffdtrace (the baseline of a benchmark)")
    q.add_argument("--preempt", action="store_true", help="QEMU's postcopy-preempt (a channel for requested pages)")
    q.add_argument("--guest-mib", type=int, default=256)
    q.add_argument("--dirty-mib", type=int, default=128, help="what the guest's init rewrites each round")
    q.add_argument("--kernel", help="the guest kernel (default: the newest /boot/vmlinuz-*)")
    q.add_argument("--busybox", help="a static busybox (default: busybox on PATH)")
    q.add_argument("--ns-prefix", default="uffdlab")
    q.add_argument("--boot-timeout", type=float, default=180.0)
    c = sub.add_parser("criu", help="CRIU lazy-pages restore")
    c.add_argument("--pages", type=int, default=2048)
    for p in (q, c):
        p.add_argument("--timeout", type=float, default=300.0, help="seconds for the migration or restore")
        p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
        p.add_argument("--keep", metavar="DIR", help="keep logs and captures in DIR (default: removed)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    # Local always: QEMU's QMP and CRIU's sockets cannot live on 9p (a VM's shared dir).
    work = Path(tempfile.mkdtemp(prefix="uffdlab."))
    try:
        if args.lab == "qemu":
            result: Any = qemu_lab(args, work)
            print_qemu_table(result)
        else:
            result = criu_lab(args, work)
            t = result["uffdtrace"]
            print(f"pages {result['pages']}  pattern {result['pattern']}  criu read {result['criu_faults_read']} "
                  f"faults  uffdtrace: faults {t['faults']} messages read {t['messages_read']} "
                  f"resolutions {t['resolutions']} lost {t['lost']} flags {len(t['flags'])}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
        return 0
    except LabError as exc:
        print(f"postcopy_lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("postcopy_lab: interrupted; everything the lab started was removed", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True, ignore=sockets)
        shutil.rmtree(work, ignore_errors=True)


def sockets(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not (Path(folder) / n).is_file() and not (Path(folder) / n).is_dir()]


if __name__ == "__main__":
    sys.exit(main())
