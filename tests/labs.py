"""What the real-client labs of scripts/postcopy_lab.py must show, on the
host (tracepoint mode) and in the VMs (kprobe mode): QEMU's post-copy and
CRIU's lazy restore, seen whole by uffdtrace and tied to the clients' own
counts."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .conftest import ROOT

LAB = ROOT / "scripts" / "postcopy_lab.py"
PYTHON = ROOT / ".venv" / "bin" / "python"
FAULT_THREAD = "fault-default"
NUL = b"\0"


def lab_command(*args: str) -> list[str]:
    return [str(PYTHON), str(LAB), *args]


def check_clean_capture(t: dict[str, Any]) -> None:
    """Every fault ended resolved and woken; nothing lost, unmatched or flagged."""
    assert t["faults"] > 0, t
    assert t["lost"] == 0 and t["unmatched_reads"] == 0, t["summary"]
    assert t["flags"] == [] and t["summary"]["flags"] == {}, t["flags"]
    assert set(t["states"]) <= {"woken", "returned"}, t["states"]
    assert sum(t["states"].values()) == t["faults"]
    assert t["resolutions"] and all(k.endswith(":ok") for k in t["resolutions"]), t["resolutions"]


def check_postcopy_lab(r: dict[str, Any]) -> None:
    """QEMU's count of page requests (the source's query-migrate) against the
    messages uffdtrace saw the destination's fault thread read. QEMU 7.2's
    fault thread asks for every page it reads a message for, except a page
    that has arrived by the time it checks (migrate_send_rp_req_pages): those
    are among the messages whose page uffdtrace saw placed before, or within
    100 us after, the read (`placed_by_read`). Seen here: equal in every run."""
    q, t = r["qemu"], r["uffdtrace"]
    assert q["postcopy_requests"] > 0, f"the guest asked for no page after the switch to post-copy: {q}"
    check_clean_capture(t)
    assert t["readers"] == {FAULT_THREAD: t["messages_read"]}, t["readers"]
    reads = t["fault_thread_reads"]
    assert q["postcopy_requests"] <= reads <= q["postcopy_requests"] + t["placed_by_read"], (q, t)
    # Every message read became a request or a page already there; a fault is
    # never read twice (one message each), and faults the background stream
    # placed before any read are faults without a message.
    assert reads <= t["faults"]
    assert all(v["n"] > 0 for p, v in t["latency_ms"].items() if p in ("pickup", "service")), t["latency_ms"]


def check_criu_lab(r: dict[str, Any]) -> None:
    """The restored process read back its pattern intact; every fault CRIU's
    lazy-pages daemon read a message for (its own log) is a message
    uffdtrace saw read and a fault resolved with UFFDIO_COPY, no flag."""
    t = r["uffdtrace"]
    assert r["pattern"] == "ok", r["workload_log"]
    check_clean_capture(t)
    assert r["criu_faults_read"] > 0, "the daemon logged no fault: nothing was restored lazily"
    assert t["messages_read"] == r["criu_faults_read"], (t["messages_read"], r["criu_faults_read"])
    assert set(t["resolutions"]) == {"copy:ok"}, t["resolutions"]


def leftovers() -> list[str]:
    """Anything a lab run leaves behind: namespaces, veths, its processes, its temporary dirs."""
    found = [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith("uffdlab")] \
        if os.path.isdir("/run/netns") else []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    found += [f"link {x.split(':')[1].strip()}" for x in links.splitlines() if "uffdlab" in x]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"/uffdlab." in cmd or b"criu_pattern" in cmd:
                found.append(f"process {proc.name}: {cmd.replace(NUL, b' ')[:120]!r}")
    found += [f"dir {p}" for p in Path(tempfile.gettempdir()).glob("uffdlab.*")]
    return found
