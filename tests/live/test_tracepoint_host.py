"""Live host tier: tracepoint mode on this machine's own kernel (no kprobes),
driving `uffdtrace trace --events -j` exactly as a user would, against real
userfaultfd workloads."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, require
from ..scenarios import (
    AIO_DRAIN,
    BALLOON_STALL_MS,
    CLEAN_PAGES,
    DONTWAKE_STALL_S,
    GUP_FAULT_ROUNDS,
    HANDLER_DEAD,
    HANDLER_KILLED,
    HANDLER_SERVE,
    PYTHON_SCENARIOS,
    REFAULT,
    UFFD_STRESS_HOST,
    UNREGISTER_RACE,
    UNREGISTER_RACE_STUCK_MS,
    VMA_SPLIT,
    Scenario,
    assert_clean_run,
    assert_replays_the_same,
    check_aio_drain,
    check_aio_poll,
    check_balloon_defer,
    check_balloon_retry,
    check_balloon_unread,
    check_clean_faults,
    check_clean_lifecycles,
    check_demo,
    check_dontwake,
    check_dontwake_lifecycle,
    check_gup_fault,
    check_handler_process_dead,
    check_handler_process_killed,
    check_handler_process_serve,
    check_postcopy_shape,
    check_refault,
    check_uffd_stress,
    check_uffd_stress_flagged,
    check_uffd_unit_tests,
    check_unregister_race,
    check_vma_split,
    uffd_unit_tests_command,
)

UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
PYTHON = ROOT / ".venv" / "bin" / "python"
TIMEOUT_S = 300
POSTCOPY_SHAPE = ("2048", "50", "8")  # pages, rounds, faulting threads


@pytest.fixture(scope="module", autouse=True)
def live_host() -> None:
    require(os.geteuid() == 0, "the host tier needs root")
    require(UFFDTRACE.exists(), "no .venv: run scripts/setup.sh")
    doctor = subprocess.run([str(UFFDTRACE), "doctor"], capture_output=True, text=True, check=False)
    require("mode tracepoint: usable" in doctor.stdout, f"tracepoint mode unusable here:\n{doctor.stdout}")


def trace(*args: str, events: bool = True) -> Scenario:
    """`trace -j -o FILE --record CAPTURE ARGS` (the command keeps stdout to
    itself); the capture, replayed, prints what the live run printed."""
    with tempfile.TemporaryDirectory() as tmp:
        out, capture = Path(tmp) / "trace.jsonl", Path(tmp) / "trace.cap"
        proc = subprocess.run([str(UFFDTRACE), "--mode", "tracepoint", "trace", *(["--events"] if events else []),
                               "-j", "-o", str(out), "--record", str(capture), *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        traced = out.read_text() if out.exists() else ""
        if proc.returncode in (0, 3):
            try:
                assert_replays_the_same(str(UFFDTRACE), str(capture), traced, flagged="--flagged" in args)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{keep_evidence(out, capture)}") from None
    return Scenario.parse(f"{proc.stdout}\n{traced}", proc.returncode, proc.stderr)


def keep_evidence(*files: Path) -> str:
    """A failing live run's trace and capture, kept for whoever looks next
    (.build/failed/ in the checkout, one folder per test): a flake seen once
    is found from its capture, not by waiting for it again."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "unknown").split(" ")[0]
    where = ROOT / ".build" / "failed" / re.sub(r"[^\w.-]+", "_", test)
    where.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.exists():
            shutil.copy2(f, where / f.name)
    return f"the trace and capture are kept in {where}"


def test_a_handler_in_another_process_serves_every_fault(workloads: Path) -> None:
    check_handler_process_serve(trace("--fail-on-flags", "--", str(workloads / "handler_process"), *HANDLER_SERVE,
                                      events=False))


def test_a_handler_process_killed_after_reading_is_no_reader(workloads: Path) -> None:
    check_handler_process_killed(trace("--", str(workloads / "handler_process"), *HANDLER_KILLED, events=False))


def test_a_handler_process_dead_before_reading_is_no_reader(workloads: Path) -> None:
    check_handler_process_dead(trace("--", str(workloads / "handler_process"), *HANDLER_DEAD, events=False))


@pytest.mark.parametrize("mode", ["defer", "retry", "unread"])
def test_a_balloon_beside_the_handler(workloads: Path, mode: str) -> None:
    """MADV_DONTNEED on registered memory raises a REMOVE event; while it is
    unread the handler's copy fails with EAGAIN (Firecracker's balloon)."""
    check = {"defer": check_balloon_defer, "retry": check_balloon_retry, "unread": check_balloon_unread}[mode]
    check(trace("--", str(workloads / "balloon"), mode, BALLOON_STALL_MS, events=False))


def test_clean_faults(workloads: Path) -> None:
    s = trace("--", str(workloads / "clean_faults"), str(CLEAN_PAGES))
    check_clean_faults(s)
    check_clean_lifecycles(s)


def test_dontwake_stall(workloads: Path) -> None:
    s = trace("--", str(workloads / "dontwake"), str(DONTWAKE_STALL_S))
    check_dontwake(s)
    check_dontwake_lifecycle(s)


def test_a_program_from_the_cache_traces_as_one_compiled_now(workloads: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The first session compiles and keeps the program (progcache.py), the
    second loads it without bcc: the same workload gives the same evidence."""
    monkeypatch.setenv("UFFDTRACE_CACHE", str(tmp_path / "cache"))
    cold, warm = (trace("--", str(workloads / "dontwake"), str(DONTWAKE_STALL_S)) for _ in range(2))
    assert (cold.header.get("program"), warm.header.get("program")) == ("compiled", "cached")
    for s in (cold, warm):
        check_dontwake(s)
        check_dontwake_lifecycle(s)
    assert [f["flag"] for f in cold.flags] == [f["flag"] for f in warm.flags]


@pytest.mark.parametrize("name", sorted(PYTHON_SCENARIOS))
def test_python_workload_lifecycles(name: str) -> None:
    args, check = PYTHON_SCENARIOS[name]
    check(trace("--", str(PYTHON), "-m", "uffdtrace.workloads", *args, events=False))


def test_demo() -> None:
    proc = subprocess.run([str(UFFDTRACE), "--mode", "tracepoint", "demo", "-j"], capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    check_demo(proc.stdout, proc.returncode, proc.stderr)


def test_fail_on_flags_exits_3_only_when_flagged(workloads: Path) -> None:
    retry = PYTHON_SCENARIOS["py_retry"][0]
    flagged = trace("--fail-on-flags", "--", str(PYTHON), "-m", "uffdtrace.workloads", *retry, events=False)
    assert flagged.rc == 3 and flagged.summary["failing_flags"] == 1
    clean = trace("--fail-on-flags", "--", str(workloads / "clean_faults"), str(CLEAN_PAGES), events=False)
    assert clean.rc == 0 and clean.summary["lifecycles"] == CLEAN_PAGES


@pytest.mark.parametrize("name", ["py_slow", "py_eexist", "py_retry"])
def test_flagged_output_flags_the_same(name: str) -> None:
    """--flagged (clean lifecycles counted in the kernel, not sent) flags
    exactly what the full output flags, the slow fault taken over by the
    watchdog included."""
    args, check = PYTHON_SCENARIOS[name]
    check(trace("--flagged", "--", str(PYTHON), "-m", "uffdtrace.workloads", *args, events=False))


def test_flagged_output_still_counts_every_fault(workloads: Path) -> None:
    s = trace("--flagged", "--fail-on-flags", "--", str(workloads / "postcopy_shape"), *POSTCOPY_SHAPE, events=False)
    assert_clean_run(s)
    assert not s.flags and not s.lifecycles and s.summary["unmatched_reads"] == 0
    assert s.summary["quiet_lifecycles"] > 0 and s.summary["lifecycles"] >= s.summary["quiet_lifecycles"]
    assert s.summary["messages_read"] == s.workload["msgs_read"] > 0


@pytest.mark.parametrize("output", [["--events"], [], ["--flagged"]], ids=["events", "folded", "flagged"])
def test_refault(workloads: Path, output: list[str]) -> None:
    """A wait after a wake-up, inside the same page fault, is seen in every
    output (folded in the kernel, it once went unseen: a hang there was silent)."""
    s = trace(*output, "--", str(workloads / "refault"), *map(str, REFAULT), events=False)
    check_refault(s)
    assert len(s.lifecycles) == (1 if output == ["--flagged"] else REFAULT[0])


@pytest.mark.parametrize("output", [["--events"], [], ["--flagged"]], ids=["events", "folded", "flagged"])
def test_a_get_user_pages_fault_never_passes_for_the_fault_before_it(workloads: Path, output: list[str]) -> None:
    """Faults taken through get_user_pages (KVM's vCPUs, O_DIRECT, futexes
    on shared memory) have no page-fault exception: their messages match
    nothing here, in every output, and are never counted for the
    copy-on-write fault the thread took on the same page just before."""
    check_gup_fault(trace(*output, "--", str(workloads / "gup_fault"), GUP_FAULT_ROUNDS, events=False))


def test_faults_while_their_vma_splits(workloads: Path) -> None:
    """Tracepoint mode cannot tell which lock a fault ran under (kprobe mode
    does: the VM tier); it must still match every fault of a VMA being split."""
    s = trace("--fail-on-flags", "--", str(workloads / "vma_split"), *VMA_SPLIT, events=False)
    check_vma_split(s)
    assert s.header["vma_lock_flag"] is None and all(lc["lock"] is None for lc in s.lifecycles)


def test_a_fault_the_unregister_of_its_range_did_not_wake(workloads: Path) -> None:
    """The kernel's UNREGISTER wakes the faults of the range so that none
    hangs; a fault under the per-VMA lock can queue after that wake-up and
    wait for good (seen on 6.12 and on this host's 6.18). Each such fault is
    flagged, with the unregister named; faults the unregister woke are not."""
    s = trace("--stuck-ms", UNREGISTER_RACE_STUCK_MS, "--", str(workloads / "unregister_race"), *UNREGISTER_RACE,
              events=False)
    check_unregister_race(s)


def test_aio_poll(workloads: Path) -> None:
    check_aio_poll(trace("--", str(workloads / "aio_poll")))


def test_an_aio_event_loop_that_drains_is_not_flagged(workloads: Path) -> None:
    check_aio_drain(trace("--fail-on-flags", "--", str(workloads / "aio_drain"), *AIO_DRAIN, events=False))


def trace_running_workload(workloads: Path, *args: str) -> tuple[Scenario, list[int]]:
    """Start clean_faults with its uffd set up but no fault yet, attach the
    tracer to it with -p (plus args), let it fault, stop the tracer with
    SIGTERM. Returns the scenario and the uffd pids the tracer found in /proc."""
    wl = subprocess.Popen([str(workloads / "clean_faults"), str(CLEAN_PAGES), "wait"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    assert wl.stdout is not None and wl.stdin is not None
    try:
        pid = json.loads(wl.stdout.readline())["ready"]
        tracer = subprocess.Popen([str(UFFDTRACE), "--mode", "tracepoint", "trace", "--events", "-j",
                                   "-p", str(pid), *[a.replace("PID", str(pid)) for a in args]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tracer.stdout is not None
        header = json.loads(tracer.stdout.readline())  # printed once the probes are live
        wl.stdin.write("go\n")
        wl.stdin.flush()
        result = wl.stdout.read()
        assert wl.wait(timeout=TIMEOUT_S) == 0
        tracer.send_signal(signal.SIGTERM)  # a clean stop: probes detached, summary printed
        out, err = tracer.communicate(timeout=TIMEOUT_S)
    finally:
        wl.kill()
    s = Scenario.parse(json.dumps(header) + "\n" + result + out, tracer.returncode, err)
    assert s.rc == 0, err
    assert s.summary["lost"] == 0
    return s, header["existing_uffd_pids"]


def waiting_thread(pid: int, comm: str) -> int:
    """The tid of the process's thread named ``comm`` once it waits in handle_userfault."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            if (task / "comm").read_text().strip() == comm and (task / "wchan").read_text() == "handle_userfault":
                return int(task.name)
        time.sleep(0.05)
    raise AssertionError(f"no thread {comm} of {pid} blocked in handle_userfault")


def test_ps_and_a_fault_blocked_before_tracing_began() -> None:
    """A thread already stuck when the tracer starts: `ps` shows it with its
    uffd, and `trace -p` reports it as never_woken with an unknown start, then
    ends when the process exits."""
    wl = subprocess.Popen([str(PYTHON), "-m", "uffdtrace.workloads", "dontwake", "5"], stdout=subprocess.PIPE,
                          text=True)
    try:
        tid = waiting_thread(wl.pid, "wl-dontwake")
        ps = subprocess.run([str(UFFDTRACE), "ps", "-j"], capture_output=True, text=True, check=True)
        records = [json.loads(line) for line in ps.stdout.splitlines()]
        assert records[-1] == {"type": "ps_summary", "processes": len(records) - 1, "hidden": 0}  # root sees all
        [proc] = [p for p in records[:-1] if p["pid"] == wl.pid]
        assert proc["comm"] == "python" and len(proc["uffds"]) == 1
        assert proc["uffds"][0]["total"] == 1 and proc["uffds"][0]["pending"] == 0  # read, never woken
        [blocked] = proc["blocked"]
        assert blocked["tid"] == tid and blocked["comm"] == "wl-dontwake" and blocked["asleep_ms"] >= 0
        text = subprocess.run([str(UFFDTRACE), "ps"], capture_output=True, text=True, check=True).stdout
        assert f"{tid}:" in text and "PENDING" in text
        s = trace("-p", str(wl.pid), events=False)
    finally:
        wl.kill()
    assert s.rc == 0, s.stderr
    assert s.summary["pids_exited"] and s.summary["lost"] == 0
    [flag] = s.flags
    assert (flag["flag"], flag["tid"], flag["addr"]) == ("never_woken", tid, None)
    assert "start unknown" in flag["evidence"][0]["what"]
    [lc] = s.lifecycles
    assert lc["tid"] == tid and lc["t_raised_ns"] is None and lc["flags"] == ["never_woken"]
    assert lc["state"] in ("returned", "exited")


def test_uffd_created_before_tracing_started(workloads: Path) -> None:
    """The uffd and its registration predate the tracer: /proc tells it."""
    s, existing = trace_running_workload(workloads)
    check_clean_lifecycles(s)
    w = s.workload
    assert w["pid"] in existing
    pages = {w["base"] + i * w["page_size"] for i in range(CLEAN_PAGES)}
    assert not s.of("uffd_new")  # created before tracing started
    assert {e["addr"] for e in s.of("fault", tid=w["faulter_tid"])} == pages
    assert len(s.of("fault", tid=w["faulter_tid"])) == CLEAN_PAGES
    assert len(s.of("read_msg", peer_tid=w["faulter_tid"])) == CLEAN_PAGES
    assert len(s.of("resolve", op="copy", ret=0)) == CLEAN_PAGES
    assert len(s.of("wake_task", peer_tid=w["faulter_tid"], ret=1)) == CLEAN_PAGES


def test_unrelated_processes_are_not_reported(workloads: Path) -> None:
    """Following one command, another process's uffd traffic stays out."""
    other = subprocess.Popen([str(workloads / "clean_faults"), "5", "wait"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdin is not None
        json.loads(other.stdout.readline())
        other.stdin.write("go\n")
        other.stdin.flush()
        s = trace("--", str(workloads / "clean_faults"), str(CLEAN_PAGES))
    finally:
        other.wait(timeout=TIMEOUT_S)
    check_clean_faults(s)
    assert {e["tgid"] for e in s.events} == {s.workload["pid"]}


def test_a_uffd_made_by_another_process_while_tracing_stays_out(workloads: Path) -> None:
    """Following one process, another that creates and registers its own
    uffd while the tracer runs stays out: its UFFDIO_API and REGISTER must
    not make its uffd one of the followed (and its faults and reads with it)."""
    followed = subprocess.Popen([str(workloads / "clean_faults"), "5", "wait"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert followed.stdout is not None and followed.stdin is not None
    json.loads(followed.stdout.readline())  # its uffd is registered; it faults on "go"
    tracer = subprocess.Popen([str(UFFDTRACE), "--mode", "tracepoint", "trace", "--events", "-j", "-p",
                               str(followed.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    try:
        assert tracer.stdout is not None
        assert json.loads(tracer.stdout.readline())["type"] == "header"  # the probes are attached
        other = subprocess.run([str(workloads / "clean_faults"), "5"], capture_output=True, text=True,
                               timeout=TIMEOUT_S, check=True)
        followed.stdin.write("go\n")
        followed.stdin.flush()
        followed.wait(timeout=TIMEOUT_S)
        out, err = tracer.communicate(timeout=TIMEOUT_S)
    finally:
        followed.kill()
        tracer.kill()
    assert tracer.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert json.loads(other.stdout.splitlines()[0])["pid"] != followed.pid
    assert {r["tgid"] for r in records if "tgid" in r} == {followed.pid}
    assert sum(r.get("kind") == "fault" for r in records) == 5


@pytest.mark.parametrize("keeps", [True, False], ids=["keeps-its-descriptor", "hands-it-over"])
def test_a_handler_process_reading_a_uffd_that_predates_the_tracer(workloads: Path, keeps: bool) -> None:
    """-p the faulting process, whose uffd (registered, handed to a handler
    process that is not followed) exists before the tracer starts. While it
    keeps a descriptor too, /proc names the uffd: the handler's reads and
    copies are its uffd's, every fault is served. Once it closed its own,
    /proc cannot say which uffd its memory belongs to: the header says that
    its faults go unseen, and nothing is guessed (no flag)."""
    pages = 64
    faulting = subprocess.Popen([str(workloads / "handler_process"), "serve", str(pages), "2",
                                 "wait-keep" if keeps else "wait"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert faulting.stdout is not None and faulting.stdin is not None
    ready = json.loads(faulting.stdout.readline())
    tracer = subprocess.Popen([str(UFFDTRACE), "--mode", "tracepoint", "trace", "-j", "-p", str(faulting.pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert tracer.stdout is not None
        header = json.loads(tracer.stdout.readline())  # the probes are attached
        faulting.stdin.write("go\n")
        faulting.stdin.flush()
        done = json.loads(faulting.stdout.readline())
        faulting.wait(timeout=TIMEOUT_S)
        out, err = tracer.communicate(timeout=TIMEOUT_S)
    finally:
        faulting.kill()
        tracer.kill()
    assert tracer.returncode == 0, err
    s = Scenario.parse(out, tracer.returncode, err)
    assert ready["handler_pid"] == done["handler_pid"] and done["handler_reads"] == pages
    assert not s.flags, s.flags
    unseen = [d for d in header["degraded"] if d.startswith(f"faults of pid {faulting.pid} ")]
    if not keeps:
        assert unseen and s.summary["lifecycles"] == 0
        return
    assert not unseen and faulting.pid in header["existing_uffd_pids"]
    assert s.summary["lifecycles"] == pages and s.summary["messages_read"] == pages
    for lc in s.lifecycles:
        assert lc["reads"] == 1 and lc["resolve_op"] == "copy", lc
        assert lc["reader_tid"] not in done["tids"]


def test_perf_buffer_transport(workloads: Path) -> None:
    """The fallback for kernels without a BPF ring buffer delivers the same events."""
    s = trace("--transport", "perf", "--", str(workloads / "clean_faults"), str(CLEAN_PAGES))
    assert s.header["transport"] == "perf"
    check_clean_faults(s)


def test_tid_filter_keeps_the_thread_and_its_peers(workloads: Path) -> None:
    """-t HANDLER: only the handler's events (reads, resolves, the wake-ups it
    issues), none of the faulter's own."""
    s, _ = trace_running_workload(workloads, "-t", "PID")  # the handler is the main thread
    w = s.workload
    assert s.events and all(e["tid"] == w["handler_tid"] or e["peer_tid"] == w["handler_tid"] for e in s.events)
    assert not s.of("fault") and not s.of("block")
    assert len(s.of("read_msg")) == len(s.of("resolve", op="copy")) == len(s.of("wake_task")) == CLEAN_PAGES


@pytest.mark.parametrize("args", UFFD_STRESS_HOST, ids=lambda a: a[0])
def test_uffd_stress(uffd_stress: Path, args: tuple[str, int, int]) -> None:
    """The kernel's own stress test, followed as a command: with --events for
    anon (every record, and exact read counts), lifecycles only for shmem."""
    s = trace("--fail-on-flags", "--", str(uffd_stress), *map(str, args), events=args[0] == "anon")
    check_uffd_stress(s)


def test_uffd_stress_flagged(uffd_stress: Path) -> None:
    """The same load with --flagged: clean faults end in the kernel, counted
    (their late readers too), and the count still matches uffd-stress's."""
    s = trace("--flagged", "--fail-on-flags", "--", str(uffd_stress), *map(str, UFFD_STRESS_HOST[0]), events=False)
    check_uffd_stress_flagged(s)


def trace_host_wide(*command: str) -> Scenario:
    """`trace -j` of the whole host, as an operator would run it while the
    command (not started by the tracer) runs; the command must succeed."""
    tracer = subprocess.Popen([str(UFFDTRACE), "--mode", "tracepoint", "trace", "-j", "--fail-on-flags"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert tracer.stdout is not None
    try:
        header = tracer.stdout.readline()  # printed once the probes are live
        load = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
        tracer.send_signal(signal.SIGTERM)
        out, err = tracer.communicate(timeout=TIMEOUT_S)
    finally:
        tracer.kill()
    s = Scenario.parse(header + out + load.stdout, tracer.returncode, err)
    s.summary["command_status"] = None  # nothing was started by the tracer
    return s


def test_uffd_stress_host_wide(uffd_stress: Path) -> None:
    check_uffd_stress(trace_host_wide(str(uffd_stress), *map(str, UFFD_STRESS_HOST[0])))


def test_the_kernels_uffd_unit_tests_host_wide(uffd_unit_tests: Path) -> None:
    check_uffd_unit_tests(trace_host_wide(*uffd_unit_tests_command(uffd_unit_tests)))


def test_the_kernels_events_tests_followed(uffd_unit_tests: Path) -> None:
    """uffd-unit-tests' events tests started by the tracer, so only their
    processes are followed: each FORK's child gets its parent's ranges whether
    the fork returns before or after the handler's read of its message, and
    every fault of every child is seen (no read left unmatched)."""
    check_uffd_unit_tests(trace("--", *uffd_unit_tests_command(uffd_unit_tests, "-f", "events-wp"), events=False))


def test_postcopy_shape(workloads: Path) -> None:
    """Faulting threads ahead of a background copier, a fault thread that
    copies what it reads and ignores EEXIST: exact reads, no flag."""
    check_postcopy_shape(trace("--fail-on-flags", "--", str(workloads / "postcopy_shape"), *POSTCOPY_SHAPE,
                               events=False))


def test_forced_loss_raises_no_false_flag(workloads: Path) -> None:
    """A 4 KiB ring cannot hold the records of the postcopy workload: records
    are lost, the summary says so, and no flag accuses anyone, since every
    thread was in fact woken (the workload completed)."""
    s = trace("--buffer-kb", "4", "--fail-on-flags", "--", str(workloads / "postcopy_shape"), *POSTCOPY_SHAPE)
    assert s.rc == 0, (s.stderr, s.flags[:3])
    assert s.summary["lost"] > 0 and s.summary["lost_causes"]["buffer_full"] == s.summary["lost"]
    assert not s.flags and not s.summary["flags"]
    # The workload's status first: its stderr says why it printed no report.
    assert s.summary["command_status"] == 0, (s.summary, s.stderr[-2000:], s.text[-5:])
    assert s.workload["msgs_read"] > 0


def test_hostile_process_name_is_shown_not_obeyed(workloads: Path, tmp_path: Path) -> None:
    """A program named with an escape sequence and a carriage return (its
    comm) is printed escaped in text output, as ps(1) does."""
    program = tmp_path / "\x1b[31mred\rx"
    program.symlink_to(workloads / "clean_faults")
    proc = subprocess.run([str(UFFDTRACE), "--mode", "tracepoint", "trace", "--events", "--", str(program), "3"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    assert proc.stdout.count("\\x1b[31mred\\x0dx") >= 3 * 3  # every fault's events and lifecycle


def test_command_output_never_splits_the_tracers(tmp_path: Path) -> None:
    """A command started with -- CMD shares stdout: it waits until the header
    is out (a race once put uffd-stress's first line before it). With -o the
    trace goes to a 0600 file and stdout stays the command's own."""
    base = [str(UFFDTRACE), "--mode", "tracepoint", "trace", "-j"]
    shared = subprocess.run([*base, "--", "/bin/echo", "hello"], capture_output=True, text=True, timeout=TIMEOUT_S,
                            stdin=subprocess.DEVNULL, check=True)
    lines = shared.stdout.splitlines()
    assert json.loads(lines[0])["type"] == "header" and lines[1] == "hello", shared.stdout
    out = tmp_path / "trace.jsonl"
    alone = subprocess.run([*base, "-o", str(out), "--", "/bin/echo", "hello"], capture_output=True, text=True,
                           timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=True)
    assert alone.stdout == "hello\n"
    assert out.stat().st_mode & 0o777 == 0o600
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["type"] == "header" and records[-1]["type"] == "summary"
    assert records[-1]["command_status"] == 0
