"""`uffdtrace why` on this host: each hang started by a workload of
tests/workloads/ before `why` runs (no trace before it), explained while
it lasts; then the workload's own account says who was who."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, require

UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
HANG_MS = "5000"  # long enough for `why` to look, whatever the host's load
SETTLE_S = 4.0  # how long `why` is asked, again and again, until the hang shows


@pytest.fixture(scope="module", autouse=True)
def root() -> None:
    require(os.geteuid() == 0, "why needs root")
    require(UFFDTRACE.exists(), "no .venv: run scripts/setup.sh")


def why(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(UFFDTRACE), "why", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def during(cmd: list[str], want: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start the workload, ask `why -j PID` until a thread of it has verdict
    ``want`` (or SETTLE_S passed), let the workload end; the blocked threads
    `why` saw, and the workload's JSON line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        time.sleep(0.3)
        done = why("-j", str(proc.pid))
        assert done.returncode in (0, 3) and not done.stderr, done.stderr
        found = [json.loads(line) for line in done.stdout.splitlines()]
        assert (done.returncode == 3) == bool(found), done
        if any(b["verdict"] == want for b in found):
            break
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return found, json.loads(out.splitlines()[-1])


def the_one(found: list[dict[str, Any]], tid: int, verdict: str) -> dict[str, Any]:
    [b] = [b for b in found if b["tid"] == tid]
    assert b["verdict"] == verdict, b
    assert b["explanation"] and b["type"] == "blocked" and b["waiting_s"] is not None and b["waiting_s"] < 60, b
    return b


def holder(b: dict[str, Any], pid: int) -> dict[str, Any]:
    [h] = [h for h in b["holders"] if h["pid"] == pid]
    return h


def test_a_handler_process_that_reads_nothing_is_not_read(workloads: Path) -> None:
    found, w = during([str(workloads / "handler_process"), "unread", HANG_MS], "not_read")
    b = the_one(found, w["tids"][0], "not_read")
    assert (b["kind"], b["message"], b["page"]) == ("fault", "queued", "absent"), b
    [t] = holder(b, w["handler_pid"])["threads"]
    assert t["wchan"] != "running" and not t["asleep_on_uffd"] and f"pid {w['handler_pid']}" in b["explanation"]


def test_a_handler_process_that_read_and_does_nothing_is_read_not_resolved(workloads: Path) -> None:
    found, w = during([str(workloads / "handler_process"), "stalled", HANG_MS], "read_not_resolved")
    b = the_one(found, w["tids"][0], "read_not_resolved")
    assert (b["message"], b["page"]) == ("read", "absent") and holder(b, w["handler_pid"]), b


@pytest.mark.parametrize("mode", ["killed", "dead"])
def test_a_dead_handler_is_no_reader(workloads: Path, mode: str) -> None:
    """Killed after its read (the faulting process still holds the uffd, its
    main thread asleep elsewhere), or before reading anything (the faulting
    process's only thread waits): nobody is left."""
    found, w = during([str(workloads / "handler_process"), mode, HANG_MS], "no_reader")
    b = the_one(found, w["tids"][0], "no_reader")
    assert b["message"] == ("read" if mode == "killed" else "queued"), b
    assert [h["pid"] for h in b["holders"]] == [b["pid"]], b  # the handler is gone
    assert ("has gone" if mode == "killed" else "each sleeps in a userfaultfd wait") in b["explanation"], b


def test_a_dontwake_never_followed_by_a_wake_is_resolved_not_woken(workloads: Path) -> None:
    found, w = during([str(workloads / "dontwake"), str(int(HANG_MS) // 1000)], "resolved_not_woken")
    b = the_one(found, w["faulter_tid"], "resolved_not_woken")
    assert (b["page"], b["addr"], b["message"]) == ("present", w["addr"], "read"), b


def test_a_fault_deferred_on_eagain_and_forgotten(workloads: Path) -> None:
    """The balloon's handler read the fault, its copy failed with EAGAIN, and
    it polls the uffd again without retrying: read_not_resolved, the
    handler thread named waiting in poll on this uffd."""
    found, w = during([str(workloads / "balloon"), "defer", HANG_MS], "read_not_resolved")
    b = the_one(found, w["faulter_tid"], "read_not_resolved")
    assert [t["tid"] for t in b["handler_threads"]] == [w["handler_tid"]], b
    assert b["handler_threads"][0]["on_this_uffd"] in ("poll", "ppoll"), b


def test_a_balloons_unread_remove_is_event_unread(workloads: Path) -> None:
    found, w = during([str(workloads / "balloon"), "unread", HANG_MS], "event_unread")
    b = the_one(found, w["balloon_tid"], "event_unread")
    assert (b["kind"], b["event"], b["addr"]) == ("event", "remove", w["balloon_start"]), b
    assert b["range"] == [w["balloon_start"], b["range"][1]] and b["range"][1] > 0, b
    assert [(e["event"], e["tid"]) for e in b["events_queued"]] == [("remove", w["balloon_tid"])], b


def test_nothing_blocked_is_one_line_and_exit_0() -> None:
    done = why(str(os.getpid()))
    assert done.returncode == 0 and done.stdout == f"no thread is blocked on userfaultfd in {os.getpid()}\n", done
    assert not done.stderr


def test_bad_input_is_one_line_and_exit_1() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    done = why(str(gone.pid))
    assert done.returncode == 1 and not done.stdout and len(done.stderr.splitlines()) == 1, done
    nobody = subprocess.run(["runuser", "-u", "nobody", "--", str(UFFDTRACE), "why"], capture_output=True,
                            text=True, check=False, timeout=60)
    assert nobody.returncode == 1 and nobody.stderr.startswith("uffdtrace: error: must run as root"), nobody
    assert len(nobody.stderr.splitlines()) == 1


def test_ten_thousand_idle_threads(capsys: pytest.CaptureFixture[str]) -> None:
    """The cost on a busy host: the walk of every process's files and threads
    with 10,000 idle threads more (printed; never asserted as a time)."""
    threading.stack_size(64 * 1024)
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(10_000)]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        done = why()
        took = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join()
        threading.stack_size(0)
    assert done.returncode == 0 and "no thread is blocked" in done.stdout, done
    with capsys.disabled():
        print(f"\n`uffdtrace why` with 10,000 idle threads: {took:.2f} s")
