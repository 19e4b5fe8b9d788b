"""`serve`'s metrics from a real capture (no root): the counters, the
histograms and the exposition that Prometheus's own promtool accepts; the
Grafana dashboard's queries name only metrics serve exports; the alerting
rules pass `promtool check rules`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from uffdtrace.analysis.model import EventLifecycle
from uffdtrace.capture.reader import Reader, replay
from uffdtrace.events import HIST_BOUNDS, UFFD_EVENT_REMOVE, bucket_of
from uffdtrace.sinks.prometheus import BOUNDS, Metrics

from .conftest import ROOT, require
from .kernel_sums import KernelSums

CAPTURES = Path(__file__).parent / "captures"


def exposition(capture: Path) -> tuple[str, list[dict[str, object]]]:
    registry = CollectorRegistry()
    reader = Reader(str(capture))
    replay(reader, Metrics(registry), reader.header.thresholds, raw_events=True)
    live = [json.loads(line) for line in capture.with_suffix(".expected.jsonl").read_text().splitlines()]
    return generate_latest(registry).decode(), live


def value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, series
    return float(m[1])


def exported_names(text: str) -> set[str]:
    return {m[1] for m in re.finditer(r"^# TYPE (\w+) (\w+)$", text, re.M)}


def test_the_metrics_of_a_real_capture() -> None:
    text, live = exposition(CAPTURES / "demo-tracepoint-6.18.cap")
    lifecycles = [x for x in live if x["type"] == "lifecycle"]
    assert value(text, 'uffdtrace_faults_total{comm="wl-clean",reason="missing"}') == 8
    assert sum(float(v) for v in re.findall(r"^uffdtrace_faults_total\{.*\} (\S+)$", text, re.M)) == len(lifecycles)
    assert value(text, 'uffdtrace_flags_total{comm="wl-dontwake",flag="never_woken"}') == 1
    assert value(text, 'uffdtrace_flags_total{comm="wl-retry",flag="retry_loop"}') == 1
    assert value(text, 'uffdtrace_extra_rounds_total{comm="wl-retry"}') == 3
    assert value(text, 'uffdtrace_phase_seconds_count{phase="pickup"}') == \
        sum(lc["latency_ns"]["pickup"] is not None for lc in lifecycles)
    assert value(text, 'uffdtrace_phase_seconds_bucket{le="2.097152",phase="wake"}') == \
        value(text, 'uffdtrace_phase_seconds_count{phase="wake"}') == 10  # exp2 buckets: the 2 s stall fits 2^21 µs
    assert value(text, 'uffdtrace_phase_seconds_bucket{le="1.048576",phase="wake"}') == 9
    assert value(text, 'uffdtrace_fault_seconds_bucket{le="1e-06"}') <= value(text, "uffdtrace_fault_seconds_count")
    assert 'uffdtrace_info{degraded="' in text and 'mode="tracepoint"' in text
    assert not re.search(r"[{,](pid|tid|tgid|addr|uffd)=", text)  # cardinality: no per-thread series
    assert "_created" not in text
    promtool = shutil.which("promtool")
    require(promtool is not None, "no promtool (scripts/setup.sh --test installs Debian's prometheus)")
    assert promtool is not None
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_grafana_dashboard_queries_what_serve_exports() -> None:
    text, _ = exposition(CAPTURES / "demo-tracepoint-6.18.cap")
    names = exported_names(text)
    series = names | {f"{n}_bucket" for n in names} | {f"{n}_total" for n in names}
    dash = json.loads(subprocess.run([sys.executable, "-m", "uffdtrace", "dashboard", "--grafana"],
                                     capture_output=True, text=True, check=True).stdout)
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 8 and dash["templating"]["list"][0]["type"] == "datasource"
    for expr in exprs:
        used = set(re.findall(r"\buffdtrace_\w+", expr))
        assert used and used <= series, (expr, used - series)


def test_the_alerting_rules_pass_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(subprocess.run([sys.executable, "-m", "uffdtrace", "dashboard", "--alerts"],
                                    capture_output=True, text=True, check=True).stdout)
    promtool = shutil.which("promtool")
    require(promtool is not None, "no promtool (scripts/setup.sh --test installs Debian's prometheus)")
    assert promtool is not None
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "3 rules found" in check.stdout, check.stdout + check.stderr


def test_non_cooperative_events_are_counted() -> None:
    """A balloon's REMOVE (its MADV_DONTNEED waited 100 ms for the read):
    counted per event, its unread time in the histogram, the flag behind
    the EAGAIN counted."""
    text, live = exposition(CAPTURES / "balloon-tracepoint-6.18.cap")
    [event] = [x for x in live if x["type"] == "uffd_event"]
    assert value(text, f'uffdtrace_uffd_events_total{{comm="{event["comm"]}",event="remove"}}') == 1
    assert value(text, "uffdtrace_event_unread_seconds_count") == 1
    assert value(text, "uffdtrace_event_unread_seconds_sum") == pytest.approx(event["unread_ms"] / 1000, rel=1e-3)
    assert value(text, f'uffdtrace_flags_total{{comm="{event["comm"]}",flag="eagain_unretried"}}') == 1


def test_event_callers_waiting_now() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ew = EventLifecycle(tgid=42, tid=43, comm="balloon", event=UFFD_EVENT_REMOVE, start=0x7000, length=0x3000,
                        t_raised=0)
    metrics.tick(10**9, [], [ew, ew])
    text = generate_latest(registry).decode()
    assert value(text, 'uffdtrace_event_callers_waiting{comm="balloon"}') == 2
    metrics.tick(2 * 10**9, [], [])
    assert 'uffdtrace_event_callers_waiting{' not in generate_latest(registry).decode()


def _kernel_hist_bucket(tmp_path: Path, values: list[int]) -> list[int]:
    """bpf/aggregate.h's hist_bucket, compiled for this machine."""
    source = (ROOT / "bpf" / "aggregate.h").read_text()
    m = re.search(r"^static __always_inline u32 hist_bucket\(u64 ns\)\n\{.*?^\}", source, re.S | re.M)
    assert m, "hist_bucket is not in bpf/aggregate.h"
    prog = tmp_path / "bucket.c"
    prog.write_text("#include <stdio.h>\n#include <stdlib.h>\n#include \"events.h\"\n"
                    "#ifndef __always_inline\n#define __always_inline inline\n#endif\n"
                    f"{m[0]}\nint main(int argc, char **argv) {{\n"
                    'for (int i = 1; i < argc; i++) printf("%u\\n", hist_bucket(strtoull(argv[i], 0, 10)));\n'
                    "return 0; }\n")
    exe = tmp_path / "bucket"
    subprocess.run(["gcc", "-Wall", "-Werror", f"-I{ROOT / 'bpf'}", "-o", str(exe), str(prog)], check=True)
    out = subprocess.run([str(exe), *map(str, values)], check=True, capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def test_the_kernels_latency_buckets_are_the_metrics_buckets(tmp_path: Path) -> None:
    """A latency the kernel summed lands in the bucket Python would count it in:
    the first whose bound (le, in seconds) it does not exceed."""
    edges = [1000 << i for i in range(HIST_BOUNDS)]
    values = [0, 1, 999, *edges, *(e + 1 for e in edges), *(e - 1 for e in edges), 10**12, 2**64 - 1]
    assert _kernel_hist_bucket(tmp_path, values) == [bucket_of(v) for v in values]
    for v in values:
        i = bucket_of(v)
        assert (i == HIST_BOUNDS or v <= edges[i]) and (i == 0 or v > edges[i - 1]), v
        assert i == HIST_BOUNDS or v / 1e9 <= float(BOUNDS[i])  # what prometheus_client's le means
    assert BOUNDS[0] == "1e-06" and BOUNDS[-1] == "+Inf" and len(BOUNDS) == HIST_BOUNDS + 1


def test_what_the_kernel_summed_is_counted_as_python_counts_it() -> None:
    """serve with the kernel summing clean lifecycles exports what it exports
    when each came to Python: the same counters, buckets and sums."""
    capture = CAPTURES / "demo-tracepoint-6.18.cap"
    python_side, _ = exposition(capture)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    kernel = KernelSums(metrics)
    metrics._aggregates = kernel
    reader = Reader(str(capture))
    replay(reader, kernel, reader.header.thresholds, raw_events=True)
    assert kernel.diverted >= 8  # wl-clean's, at least
    assert sorted(generate_latest(registry).decode().splitlines()) == sorted(python_side.splitlines())


def test_a_read_that_matched_no_fault_is_counted_apart() -> None:
    """A message read whose fault was never seen is not a message of any
    fault (messages_read) and is not dropped either: unmatched_reads."""
    from uffdtrace import session
    from uffdtrace.analysis.rules import Thresholds

    from .synthetic import PAGE, clean, read
    from .test_capture_file import Scripted

    events = [*clean("kprobe"), read(1.0, peer=4321, page=PAGE + 8 * 4096)]  # no fault of its page
    src = Scripted([events])
    src._lost = -1  # Scripted counts a loss per batch: none here
    registry = CollectorRegistry()
    summary = session.run(src, Metrics(registry), Thresholds(), raw_events=True)
    text = generate_latest(registry).decode()
    assert summary["unmatched_reads"] == 1 and summary["messages_read"] == 2, summary
    assert value(text, "uffdtrace_unmatched_reads_total") == 1
    assert value(text, 'uffdtrace_messages_read_total{comm="wl"}') == 1
