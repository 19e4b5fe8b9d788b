"""`uffdtrace serve` while a workload runs, scraped once its faults are
counted: the host's live tests run it in pytest, the VM tier's guests as

  serve_driver.py OUT UFFDTRACE MODE PAGES CMD...

(the run written to OUT as JSON), and both judge it with check_clean_served."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SCRAPED_WITHIN_S = 120  # TCG: the first compile alone takes a minute
LIVE_WITHIN_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[str, float]:
    """serve's exposition as {series: value}."""
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (a local URL built here)
        text = resp.read().decode()
    return {series: float(v) for series, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                                if line and not line.startswith("#"))}


def serve_while(uffdtrace: str, mode: str, wakeups: int, cmd: list[str]) -> dict[str, Any]:
    """serve host-wide; CMD once its probes are live; the metrics once
    ``wakeups`` faults were woken (or SCRAPED_WITHIN_S passed); then SIGTERM."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    serve = subprocess.Popen([uffdtrace, "--mode", mode, "serve", "--listen", f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    metrics: dict[str, float] = {}
    try:
        assert serve.stderr is not None
        # Once the probes are live; a serve that never says so fails the
        # check below instead of hanging its caller.
        ready, _, _ = select.select([serve.stderr], [], [], LIVE_WITHIN_S)
        announce = serve.stderr.readline() if ready else f"nothing said within {LIVE_WITHIN_S} s"
        if "probes live" in announce:
            subprocess.run(cmd, check=True, capture_output=True, timeout=SCRAPED_WITHIN_S)
            deadline = time.monotonic() + SCRAPED_WITHIN_S
            while time.monotonic() < deadline:
                metrics = scrape(url)
                if sum(v for k, v in metrics.items() if k.startswith("uffdtrace_wakeups_total")) >= wakeups:
                    break
                time.sleep(0.2)
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
    return {"announce": announce, "metrics": metrics, "rc": serve.returncode, "stderr": err}


def check_clean_served(run: dict[str, Any], comm: str, pages: int, *, summed_in_kernel: bool) -> None:
    """Every clean fault counted once in every metric; in tracepoint mode
    summed in the kernel (bpf/aggregate.h): no lifecycle record received."""
    assert "probes live" in run["announce"], run  # and nothing before it: no compiler warning
    assert run["rc"] == 0, run["stderr"]
    m = run["metrics"]
    c = f'comm="{comm}"'
    assert m[f"uffdtrace_faults_total{{{c},reason=\"missing\"}}"] == pages, m
    assert m[f"uffdtrace_messages_read_total{{{c}}}"] == pages
    assert m[f'uffdtrace_resolutions_total{{{c},op="copy",result="ok"}}'] == pages
    assert m[f"uffdtrace_wakeups_total{{{c}}}"] == pages
    for phase in ("pickup", "service", "wake"):
        assert m[f'uffdtrace_phase_seconds_count{{phase="{phase}"}}'] == pages, phase
        assert m[f'uffdtrace_phase_seconds_bucket{{le="+Inf",phase="{phase}"}}'] == pages, phase
    assert 0 < m['uffdtrace_phase_seconds_sum{phase="service"}'] < m["uffdtrace_fault_seconds_sum"]
    assert m["uffdtrace_fault_seconds_count"] == pages
    assert m["uffdtrace_lost_records_total"] == 0 and m["uffdtrace_uffds_traced"] >= 1
    assert not any(k.startswith("uffdtrace_flags_total") for k in m)
    if summed_in_kernel:
        assert m['uffdtrace_phase_seconds_bucket{le="1e-06",phase="wake"}'] == pages  # woken inside the ioctl
        sent = {k: v for k, v in m.items() if k.startswith("uffdtrace_events_total") and "uffd_" not in k}
        assert not sent, sent  # not a step of a fault was sent, nor its lifecycle: all summed


def main() -> int:
    out, uffdtrace, mode, pages, *cmd = sys.argv[1:]
    Path(out).write_text(json.dumps(serve_while(uffdtrace, mode, int(pages), cmd)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
