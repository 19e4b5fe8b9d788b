"""What each workload scenario must show, in either mode.

Both live tiers (host: tracepoint mode; VM: kprobe and tracepoint mode) parse
`uffdtrace trace --events -j -- WORKLOAD` output into a Scenario and call the
checks below. Where tracepoint mode cannot see something (fault returns,
wake ranges, the aio wake itself, close at process exit) the check says so.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

CLEAN_PAGES = 11  # prime, so that no accidental power-of-two batching can match it
DONTWAKE_STALL_S = 2
VM_FAULT_RETRY = 0x400
POLLIN = 0x1


@dataclass
class Scenario:
    rc: int
    workload: dict[str, Any]
    header: dict[str, Any]
    events: list[dict[str, Any]]
    summary: dict[str, Any]
    stderr: str

    @classmethod
    def parse(cls, stdout: str, rc: int, stderr: str) -> Scenario:
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return cls(
            rc=rc,
            workload=next((x for x in lines if "workload" in x or "skip" in x), {}),
            header=next((x for x in lines if x.get("type") == "header"), {}),
            events=[x for x in lines if x.get("type") == "event"],
            summary=next((x for x in lines if x.get("type") == "summary"), {}),
            stderr=stderr,
        )

    @property
    def mode(self) -> str:
        return str(self.header["mode"])

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind and all(e[k] == v for k, v in match.items())]

    def role_counts(self) -> Counter[tuple[str, str, int]]:
        """(kind, role of the thread, page offset) -> count, comparable across runs."""
        w = self.workload
        roles = {w["faulter_tid"]: "faulter", w["handler_tid"]: "handler"}
        out: Counter[tuple[str, str, int]] = Counter()
        for e in self.events:
            if e["kind"] in ("fault", "read_msg", "resolve", "wake_task"):
                tid = e["peer_tid"] if e["kind"] == "wake_task" else e["tid"]
                out[(e["kind"], roles.get(tid, "other"), e["addr"] - w["base"])] += 1
        return out


def assert_clean_run(s: Scenario) -> None:
    assert s.rc == 0, s.stderr
    assert "Traceback" not in s.stderr
    assert s.summary["lost"] == 0
    assert s.summary["command_status"] == 0


def check_clean_faults(s: Scenario) -> None:
    assert_clean_run(s)
    w = s.workload
    n, faulter, handler = w["pages"], w["faulter_tid"], w["handler_tid"]
    assert n == CLEAN_PAGES and w["msgs_read"] == n
    pages = {w["base"] + i * w["page_size"] for i in range(n)}

    faults = s.of("fault", tid=faulter, tgid=w["pid"])
    assert len(faults) == n and {e["addr"] for e in faults} == pages
    reads = s.of("read_msg", tid=handler, peer_tid=faulter)
    assert len(reads) == n and {e["addr"] for e in reads} == pages
    copies = s.of("resolve", op="copy", tid=handler, ret=0, aux=w["page_size"], dontwake=False)
    assert len(copies) == n and {e["addr"] for e in copies} == pages
    woken = s.of("wake_task", peer_tid=faulter, ret=1)
    assert len(woken) == n and {e["addr"] for e in woken} == pages
    assert len(s.of("uffd_new")) == len(s.of("uffd_api")) == len(s.of("uffd_register")) == 1
    assert {e["ctx"] for e in faults + reads + copies + woken} == {s.of("uffd_api")[0]["ctx"]}
    if s.mode == "kprobe":
        rets = s.of("fault_ret", tid=faulter)
        assert len(rets) == n and all(e["ret"] & VM_FAULT_RETRY for e in rets)
        assert len(s.of("uffd_close")) == 1
    else:
        # A fault woken before its thread reached schedule() never sleeps.
        blocks = s.of("block", tid=faulter)
        assert 0 < len(blocks) <= n and {e["addr"] for e in blocks} <= pages
        assert not s.of("fault_ret")  # not visible in tracepoint mode


def check_dontwake(s: Scenario) -> None:
    assert_clean_run(s)
    w = s.workload
    faulter, addr = w["faulter_tid"], w["addr"]
    [copy] = s.of("resolve", op="copy", addr=addr)
    assert copy["dontwake"] is True and copy["mode"] & 1 and copy["ret"] == 0
    [wake] = s.of("resolve", op="wake", addr=addr)
    [woken] = s.of("wake_task", peer_tid=faulter, ret=1)
    # The copy woke nobody: the one wake-up happened inside UFFDIO_WAKE,
    # which returns after it.
    assert copy["ts_ns"] < woken["ts_ns"] <= wake["ts_ns"]
    if s.mode == "kprobe":
        [fault_ret] = s.of("fault_ret", tid=faulter)
        [wake_range] = s.of("wake_range")
        assert copy["ts_ns"] < wake_range["ts_ns"] <= woken["ts_ns"] <= fault_ret["ts_ns"]
    else:
        [block] = s.of("block", tid=faulter)
        assert block["ts_ns"] < woken["ts_ns"]
        assert woken["mode"] == 1  # it had been read: refiled, woken through __wake_up


def check_aio_poll(s: Scenario) -> None:
    assert_clean_run(s)
    w = s.workload
    assert w["event_res"] == POLLIN and w["event_obj"] == w["iocb"]
    [done] = s.of("aio_complete", addr=w["iocb"], aux=w["aio_data"])
    assert done["ret"] == POLLIN
    assert len(s.of("fault", tid=w["faulter_tid"])) == 1
    if s.mode == "kprobe":
        wakes = s.of("aio_poll_wake", addr=w["iocb"], aux=w["aio_data"], ret=1)
        assert wakes and all(e["mode"] & POLLIN for e in wakes)
        # Woken from the faulting thread: handle_userfault's wake_up_poll.
        assert wakes[0]["tid"] == w["faulter_tid"]
    else:
        [submit] = s.of("aio_poll_submit", addr=w["iocb"], aux=w["aio_data"])
        assert submit["flags"] == POLLIN and submit["ts_ns"] < done["ts_ns"]
