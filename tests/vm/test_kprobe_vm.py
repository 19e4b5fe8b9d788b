"""Live VM tier: kprobe mode on real Debian kernels (6.1 and 6.12) booted
under qemu TCG with virtme-ng. All scenarios of one kernel run in one boot,
driving `uffdtrace trace --events -j -- WORKLOAD` exactly as a user would;
the assertions compare the tracer's events with what the workload itself
reports having done."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..conftest import BUILD, ROOT, require

VM_TIMEOUT_S = 1500
CLEAN_PAGES = 11  # prime, so that no accidental power-of-two batching can match it
MOVE_PAGES = 64
DONTWAKE_STALL_S = 2
SCENARIOS = [f"clean:clean_faults:{CLEAN_PAGES}", f"dontwake:dontwake:{DONTWAKE_STALL_S}", "aio:aio_poll",
             f"move_pageout:move_pageout:{MOVE_PAGES}"]
KERNEL_GLOBS = {"6.1": "/boot/vmlinuz-6.1.0-*-amd64", "6.12": "/boot/vmlinuz-6.12.*+deb12-amd64"}
VM_FAULT_RETRY = 0x400
POLLIN = 0x1


def newest_kernel(pattern: str) -> str | None:
    found = sorted(glob.glob(pattern), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    return found[-1] if found else None


@dataclass
class Scenario:
    rc: int
    workload: dict[str, Any]
    events: list[dict[str, Any]]
    summary: dict[str, Any]
    stderr: str

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind and all(e[k] == v for k, v in match.items())]


@dataclass
class VmRun:
    out: Path

    def text(self, name: str) -> str:
        return (self.out / name).read_text()

    def scenario(self, name: str) -> Scenario:
        rc = int(self.text(f"{name}.rc"))
        lines = [json.loads(line) for line in self.text(f"{name}.jsonl").splitlines() if line.startswith("{")]
        workload = next((x for x in lines if "workload" in x or "skip" in x), {})
        events = [x for x in lines if x.get("type") == "event"]
        summary = next((x for x in lines if x.get("type") == "summary"), {})
        return Scenario(rc, workload, events, summary, self.text(f"{name}.err"))


_runs: dict[str, VmRun] = {}


@pytest.fixture(scope="module", params=sorted(KERNEL_GLOBS))
def vm(request: pytest.FixtureRequest, workloads: Path) -> VmRun:
    """Boot one kernel once and run every scenario in it."""
    version = request.param
    if version in _runs:
        return _runs[version]
    kernel = newest_kernel(KERNEL_GLOBS[version])
    require(kernel is not None, f"no Debian {version} kernel in /boot (scripts/setup.sh --test installs it)")
    require(os.geteuid() == 0, "the VM tier needs root (qemu, /boot)")
    vng = ROOT / ".venv" / "bin" / "vng"
    require(vng.exists() and shutil.which("qemu-system-x86_64") is not None, "virtme-ng or qemu missing")
    out = BUILD / f"vm-{version}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    guest = [str(ROOT / "tests" / "vm" / "guest_run.sh"), str(out), str(ROOT / ".venv" / "bin" / "uffdtrace"),
             str(workloads), *SCENARIOS]
    env = {**os.environ, "PATH": f"{vng.parent}:{os.environ['PATH']}"}
    # /dev/kvm exists on these machines but hangs: always TCG.
    cmd = [str(vng), "--run", str(kernel), "--disable-kvm", "--force-9p", "--cpus", "2", "--memory", "2G",
           "--rwdir", str(out), "--exec", " ".join(guest)]
    log = out.parent / f"vm-{version}.log"
    with log.open("w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=VM_TIMEOUT_S,
                       env=env, check=False)
    assert (out / "finished").exists(), f"guest did not finish; see {log}:\n{log.read_text()[-3000:]}"
    _runs[version] = VmRun(out)
    return _runs[version]


def assert_clean_run(s: Scenario) -> None:
    assert s.rc == 0, s.stderr
    assert "Traceback" not in s.stderr
    assert s.summary["lost"] == 0
    assert s.summary["command_status"] == 0


def test_doctor_says_kprobe_mode_works(vm: VmRun) -> None:
    assert int(vm.text("doctor.rc")) == 0, vm.text("doctor.txt")
    report = vm.text("doctor.txt")
    assert "mode kprobe: usable" in report
    for probe in ("fault", "read", "resolve", "wake_task", "aio_poll_wake", "anon_vma_lock", "close"):
        assert re.search(rf"ok\s+{probe}\s", report), probe


def test_clean_faults_counted_exactly(vm: VmRun) -> None:
    s = vm.scenario("clean")
    assert_clean_run(s)
    w = s.workload
    n, faulter, handler = w["pages"], w["faulter_tid"], w["handler_tid"]
    assert n == CLEAN_PAGES and w["msgs_read"] == n
    pages = {w["base"] + i * w["page_size"] for i in range(n)}

    faults = s.of("fault", tid=faulter, tgid=w["pid"])
    assert len(faults) == n and {e["addr"] for e in faults} == pages
    rets = s.of("fault_ret", tid=faulter)
    assert len(rets) == n and all(e["ret"] & VM_FAULT_RETRY for e in rets)
    reads = s.of("read_msg", tid=handler, peer_tid=faulter)
    assert len(reads) == n and {e["addr"] for e in reads} == pages
    copies = s.of("resolve", op="copy", tid=handler, ret=0, aux=w["page_size"], dontwake=False)
    assert len(copies) == n and {e["addr"] for e in copies} == pages
    woken = s.of("wake_task", peer_tid=faulter, ret=1)
    assert len(woken) == n and {e["addr"] for e in woken} == pages
    # One uffd, created, set up and closed; all events carry its id.
    assert len(s.of("uffd_new")) == len(s.of("uffd_api")) == len(s.of("uffd_register")) == 1
    assert len(s.of("uffd_close")) == 1
    assert {e["ctx"] for e in faults + reads + copies + woken} == {s.of("uffd_api")[0]["ctx"]}


def test_dontwake_fault_woken_only_by_uffdio_wake(vm: VmRun) -> None:
    s = vm.scenario("dontwake")
    assert_clean_run(s)
    w = s.workload
    faulter, addr = w["faulter_tid"], w["addr"]
    [copy] = s.of("resolve", op="copy", addr=addr)
    assert copy["dontwake"] is True and copy["mode"] & 1 and copy["ret"] == 0
    [wake] = s.of("resolve", op="wake", addr=addr)
    [woken] = s.of("wake_task", peer_tid=faulter, ret=1)
    [fault_ret] = s.of("fault_ret", tid=faulter)
    # The copy did not wake anyone: the one wake-up happened inside UFFDIO_WAKE.
    assert copy["ts_ns"] < woken["ts_ns"] <= wake["ts_ns"] <= fault_ret["ts_ns"]
    [wake_range] = s.of("wake_range")
    assert copy["ts_ns"] < wake_range["ts_ns"] <= woken["ts_ns"]
    assert fault_ret["aux"] > copy["ts_ns"] - s.of("fault", tid=faulter)[0]["ts_ns"]


def test_aio_poll_on_the_uffd_woken_and_completed(vm: VmRun) -> None:
    s = vm.scenario("aio")
    assert_clean_run(s)
    w = s.workload
    assert w["event_res"] == POLLIN and w["event_obj"] == w["iocb"]
    wakes = s.of("aio_poll_wake", addr=w["iocb"], aux=w["aio_data"], ret=1)
    assert wakes and all(e["mode"] & POLLIN for e in wakes)
    [done] = s.of("aio_complete", addr=w["iocb"], aux=w["aio_data"])
    assert done["ret"] == POLLIN
    # The poll was woken from the faulting thread (handle_userfault's wake_up_poll).
    assert wakes[0]["tid"] == w["faulter_tid"]
    assert len(s.of("fault", tid=w["faulter_tid"])) == 1


def test_uffdio_move_with_pageout_shows_anon_vma_locks(vm: VmRun) -> None:
    s = vm.scenario("move_pageout")
    if "6.1.0" in vm.text("uname"):
        # UFFDIO_MOVE is 6.8+: the workload reports the feature missing.
        assert s.summary["command_status"] == 77 and "skip" in s.workload
        return
    assert_clean_run(s)
    w = s.workload
    assert w["moves"] == MOVE_PAGES
    moves = s.of("resolve", op="move", tgid=w["pid"], ret=0)
    assert len(moves) == MOVE_PAGES
    locks = s.of("anon_vma_lock", tgid=w["pid"])
    assert locks, "no folio_lock_anon_vma_read seen while MADV_PAGEOUT walked the rmap"
    # A successful lock always took the root rwsem with a trylock first: this
    # proves down_read_trylock calls are attributed to the lock function.
    locked = [e for e in locks if e["ret"] == 1]
    assert locked and all(e["flags"] >= 1 for e in locked)


