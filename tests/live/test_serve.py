"""`uffdtrace serve` scraped by a real Prometheus server (Debian's
`prometheus`, 1 s scrape interval, temporary storage) while a DONTWAKE
stall and clean faults run on this host: asked through Prometheus's HTTP
query API, as a fleet dashboard would ask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..conftest import ROOT, require
from ..scenarios import CLEAN_PAGES
from ..serve_driver import check_clean_served, free_port, serve_while

UFFDTRACE = ROOT / ".venv" / "bin" / "uffdtrace"
STALL_S = 3


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (a local URL built here)
        return json.loads(resp.read())


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    answer = get(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def scalar(prom: str, expr: str) -> float:
    result = query(prom, expr)
    return max((float(r["value"][1]) for r in result), default=0.0)


def wait_for(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_prometheus_sees_the_stuck_fault(workloads: Path, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "serve needs root")
    prometheus = shutil.which("prometheus")
    require(prometheus is not None, "no prometheus (scripts/setup.sh --test installs Debian's package)")
    assert prometheus is not None
    serve_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                      f"  - job_name: uffdtrace\n    static_configs:\n      - targets: ['127.0.0.1:{serve_port}']\n")
    prom_url = f"http://127.0.0.1:{prom_port}"
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = subprocess.Popen([str(UFFDTRACE), "--mode", "tracepoint", "serve", "--listen", f"127.0.0.1:{serve_port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None
        announce = serve.stderr.readline()  # once the probes are live
        assert f"metrics at http://127.0.0.1:{serve_port}/metrics" in announce, announce
        wait_for(lambda: urllib.request.urlopen(f"{prom_url}/-/ready", timeout=2).status == 200,  # noqa: S310
                 "prometheus to be ready")
        wait_for(lambda: scalar(prom_url, 'up{job="uffdtrace"}') == 1, "the first scrape")

        subprocess.run([str(workloads / "dontwake"), str(STALL_S)], check=True, capture_output=True, timeout=60)
        subprocess.run([str(workloads / "clean_faults"), str(CLEAN_PAGES)], check=True, capture_output=True,
                       timeout=60)
        wait_for(lambda: scalar(prom_url, "sum(uffdtrace_faults_total)") >= CLEAN_PAGES + 1, "the faults")

        assert scalar(prom_url, "max_over_time(uffdtrace_faults_in_flight[5m])") >= 1  # the stuck one, while stuck
        assert scalar(prom_url, "max_over_time(uffdtrace_oldest_blocked_seconds[5m])") > 1
        assert scalar(prom_url, 'sum(uffdtrace_flags_total{flag="never_woken"})') >= 1
        assert scalar(prom_url, 'sum(uffdtrace_flags_total{flag="dontwake_without_wake"})') >= 1
        assert scalar(prom_url, 'sum(uffdtrace_phase_seconds_count{phase="pickup"})') >= CLEAN_PAGES
        assert scalar(prom_url, "uffdtrace_lost_records_total") == 0
        [info] = query(prom_url, "uffdtrace_info")
        assert info["metric"]["mode"] == "tracepoint" and info["metric"]["version"]
        assert not any("pid" in s["metric"] or "tid" in s["metric"] for s in query(prom_url, '{job="uffdtrace"}'))
        # Every query of the Grafana dashboard parses and runs on the real server.
        dash = json.loads(subprocess.run([str(UFFDTRACE), "dashboard", "--grafana"], capture_output=True, text=True,
                                         check=True).stdout)
        for panel in dash["panels"]:
            for target in panel["targets"]:
                query(prom_url, target["expr"])

        # Port in use: one line, exit 1, before any probe is loaded.
        taken = subprocess.run([str(UFFDTRACE), "serve", "--listen", f"127.0.0.1:{prom_port}"],
                               capture_output=True, text=True, timeout=60, check=False)
        assert taken.returncode == 1 and taken.stderr.count("\n") == 1, taken.stderr
        assert "cannot listen on 127.0.0.1" in taken.stderr and "Address already in use" in taken.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        prom.terminate()
        prom.wait(timeout=30)
    assert serve.returncode == 0, err
    flags = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {"never_woken", "dontwake_without_wake"} <= {f["flag"] for f in flags}  # evidence on stderr
    assert all(f["evidence"] for f in flags)



def test_clean_faults_are_summed_in_the_kernel(workloads: Path) -> None:
    """serve's clean lifecycles never reach Python: the kernel sums them
    (bpf/aggregate.h) and they count in every metric as before: faults,
    messages, resolutions, wake-ups and each phase's histogram, one per fault."""
    require(os.geteuid() == 0, "serve needs root")
    run = serve_while(str(UFFDTRACE), "tracepoint", CLEAN_PAGES, [str(workloads / "clean_faults"), str(CLEAN_PAGES)])
    check_clean_served(run, "clean_faults", CLEAN_PAGES, summed_in_kernel=True)
