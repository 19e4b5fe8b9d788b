"""What each workload scenario must show, in either mode.

Both live tiers (host: tracepoint mode; VM: kprobe and tracepoint mode) parse
`uffdtrace trace -j [--events] -- WORKLOAD` output into a Scenario and call the
checks below: events (C workloads in tests/workloads/), then lifecycles and
flags (C workloads and the Python ones of uffdtrace.workloads). Where
tracepoint mode cannot see something (fault returns, wake ranges, the aio
wake itself, close at process exit) the check says so.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .trace_events import check_trace_events

CLEAN_PAGES = 11  # prime, so that no accidental power-of-two batching can match it
DONTWAKE_STALL_S = 2  # longer than the default --stuck-ms (1 s): never_woken must be raised during it
RETRY_WAKES = 4
STRESS = (8, 512, 4)  # faulting threads (in pairs over shared pages), pages per pair, handler threads
RELEASE_AFTER_S = 0.3  # shorter than --stuck-ms: only released_with_waiters is expected
SLOW_DELAY_S = 1.5  # longer than --stuck-ms (1000)
REFAULT = (4, 1.5)  # messages in all (the page zapped after each of the first 3 copies), stall before the last read
VM_FAULT_RETRY = 0x400
POLLIN = 0x1


@dataclass
class Scenario:
    rc: int
    workload: dict[str, Any]
    header: dict[str, Any]
    events: list[dict[str, Any]]
    lifecycles: list[dict[str, Any]]
    uffd_events: list[dict[str, Any]]  # event lifecycles (non-cooperative events)
    flags: list[dict[str, Any]]  # as raised (updates with final numbers are in `updates`)
    updates: list[dict[str, Any]]
    summary: dict[str, Any]
    stderr: str
    text: list[str]  # what else the workload printed (a program of others: uffd-stress)

    @classmethod
    def parse(cls, stdout: str, rc: int, stderr: str) -> Scenario:
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return cls(
            rc=rc,
            workload=next((x for x in lines if "workload" in x or "skip" in x), {}),
            header=next((x for x in lines if x.get("type") == "header"), {}),
            events=[x for x in lines if x.get("type") == "event"],
            lifecycles=[x for x in lines if x.get("type") == "lifecycle"],
            uffd_events=[x for x in lines if x.get("type") == "uffd_event"],
            flags=[x for x in lines if x.get("type") == "flag" and not x["update"]],
            updates=[x for x in lines if x.get("type") == "flag" and x["update"]],
            summary=next((x for x in lines if x.get("type") == "summary"), {}),
            stderr=stderr,
            text=[line for line in stdout.splitlines() if not line.startswith("{")],
        )

    @property
    def mode(self) -> str:
        return str(self.header["mode"])

    @property
    def faulters(self) -> list[int]:
        w = self.workload
        return list(w.get("faulter_tids") or [w["faulter_tid"]])

    @property
    def ended_state(self) -> str:
        """How a fault resolved normally ends: kprobe mode sees the return."""
        return "returned" if self.mode == "kprobe" else "woken"

    def flag_names(self) -> set[str]:
        return {f["flag"] for f in self.flags}

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


REPLAYED = ("lifecycle", "uffd_event", "flag", "summary")


def replayed(output: str) -> list[str]:
    """The lines of `trace -j` output that a replay of its capture prints again, byte for byte."""
    return [line for line in output.splitlines() if line.startswith("{") and json.loads(line).get("type") in REPLAYED]


def assert_replays_the_same(uffdtrace: str, capture: str, live_output: str, *, flagged: bool = False) -> None:
    """`trace -j --from CAPTURE` (no root needed) prints the lifecycles, flags
    and summary the live run printed, and the events when it printed them;
    `export --format perfetto` of it follows the Trace Event Format."""
    events = ["--events"] if '"type":"event"' in live_output else []
    options = [*events, *(["--flagged"] if flagged else [])]
    proc = subprocess.run([uffdtrace, "trace", "-j", *options, "--from", capture], capture_output=True, text=True,
                          check=False, stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode in (0, 3) and not proc.stderr, proc.stderr
    live, again = replayed(live_output), replayed(proc.stdout)
    assert live and again == live, next(((a, b) for a, b in zip(live, again, strict=False) if a != b), None)
    if events:
        assert [x for x in proc.stdout.splitlines() if '"type":"event"' in x] == \
            [x for x in live_output.splitlines() if '"type":"event"' in x]
    if flagged:
        return  # the export has every lifecycle of the capture, the live output only the flagged ones
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trace.json"
        subprocess.run([uffdtrace, "export", capture, "--format", "perfetto", "-o", str(out)], check=True,
                       stdin=subprocess.DEVNULL, timeout=600)
        lines = [json.loads(line) for line in live_output.splitlines() if line.startswith("{")]
        header = next(x for x in lines if x["type"] == "header")
        check_trace_events(json.loads(out.read_text()), lines, header["started_ns"])


def assert_clean_run(s: Scenario) -> None:
    assert s.rc == 0, s.stderr
    assert "Traceback" not in s.stderr
    assert s.summary["lost"] == 0, s.summary
    assert s.summary["command_status"] == (0 if s.header["command"] else None)  # None: traced with -p


def check_clean_faults(s: Scenario) -> None:
    assert_clean_run(s)
    # The header says what attached: every probe this workload needs did.
    attached = {p["probe"] for p in s.header["probes"] if p["attached"]}
    assert {"fault", "read", "resolve", "wake_task"} <= attached, s.header["probes"]
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
        # Every aio record names the polled uffd: the faulting thread's.
        [fault] = s.of("fault", tid=w["faulter_tid"])
        assert {e["ctx"] for e in [*wakes, done]} == {fault["ctx"]}
        # Woken from the faulting thread: handle_userfault's wake_up_poll.
        assert wakes[0]["tid"] == w["faulter_tid"]
    else:
        [submit] = s.of("aio_poll_submit", addr=w["iocb"], aux=w["aio_data"])
        assert submit["flags"] == POLLIN and submit["ts_ns"] < done["ts_ns"]


# -- lifecycles and flags ----------------------------------------------------------


def check_clean_lifecycles(s: Scenario) -> None:
    """N faults -> N lifecycles, one per page, rounds 1, one read, resolved by
    copy, woken inside the copy; no flag at all."""
    assert_clean_run(s)
    w = s.workload
    n = w["pages"]
    pages = {w["base"] + i * w["page_size"] for i in range(n)}
    assert not s.flags and not s.summary["flags"], s.flags
    lcs = s.lifecycles
    assert len(lcs) == n == s.summary["lifecycles"] and {lc["addr"] for lc in lcs} == pages
    for lc in lcs:
        assert lc["tid"] in s.faulters and lc["tgid"] == w["pid"] and lc["flags"] == []
        assert (lc["rounds"], lc["reads"], lc["resolve_op"], lc["resolve_ret"]) == (1, 1, "copy", 0)
        assert lc["state"] == s.ended_state and lc["reader_tid"] == lc["resolver_tid"] == lc["waker_tid"]
        assert lc["t_raised_ns"] <= lc["t_read_ns"] <= lc["t_resolved_ns"]
        assert lc["latency_ns"]["pickup"] is not None and lc["latency_ns"]["wake"] == 0
        assert (lc["t_returned_ns"] is not None) == (s.mode == "kprobe")
        assert lc["reason"] == "missing"


def check_stuck_lifecycle(s: Scenario, expected_flags: set[str]) -> dict[str, Any]:
    """One fault, stuck for longer than --stuck-ms: the flags are raised while
    it is still blocked (before its wake-up), then the lifecycle closes after
    the late wake-up with the flags and the whole wait."""
    assert_clean_run(s)
    assert s.flag_names() == expected_flags and sorted(s.summary["flags"]) == sorted(expected_flags)
    [lc] = s.lifecycles
    assert lc["tid"] in s.faulters and lc["addr"] == s.workload["addr"]
    assert set(lc["flags"]) == expected_flags and lc["state"] == s.ended_state and lc["rounds"] == 1
    for flag in s.flags:
        assert flag["state"] == "blocked" and flag["tid"] == lc["tid"] and flag["addr"] == lc["addr"]
        assert flag["t_ns"] < lc["t_woken_ns"], "flag not raised while the thread was blocked"
        assert flag["evidence"] and flag["evidence"][0]["ts_ns"] == lc["t_raised_ns"]
        assert flag["verdict"] == "resolved_not_woken", flag  # the page was there: only a wake-up was missing
    [final] = [u for u in s.updates if u["flag"] == "never_woken"]
    stall_ms = s.workload["stall_s"] * 1000
    assert stall_ms * 0.9 <= final["blocked_ms"] <= stall_ms * 2 and final["state"] == s.ended_state
    return lc


def check_dontwake_lifecycle(s: Scenario) -> None:
    lc = check_stuck_lifecycle(s, {"never_woken", "dontwake_without_wake"})
    assert lc["resolve_op"] == "copy" and lc["resolve_dontwake"] is True and lc["reads"] == 1


def check_eexist_lifecycle(s: Scenario) -> None:
    """The handler's copy got EEXIST and it never woke the thread: the blame
    is on it (eexist_without_wake), not on the DONTWAKE filler."""
    assert s.workload["copy_ret"] == -17
    lc = check_stuck_lifecycle(s, {"never_woken", "eexist_without_wake"})
    assert lc["resolver_tid"] == s.workload["resolver_tid"] and lc["resolve_dontwake"] is True
    [flag] = [f for f in s.flags if f["flag"] == "eexist_without_wake"]
    assert any("EEXIST" in e["what"] for e in flag["evidence"])


def check_retry_lifecycle(s: Scenario) -> None:
    """Woken K times without a resolution, then resolved: rounds K+1."""
    assert_clean_run(s)
    k = s.workload["wakes"]
    [lc] = s.lifecycles
    assert (lc["rounds"], lc["reads"], lc["resolve_op"]) == (k + 1, k + 1, "copy") and s.workload["msgs_read"] == k + 1
    assert lc["flags"] == ["retry_loop"] and s.flag_names() == {"retry_loop"}
    [flag] = s.flags
    assert "woken_unresolved" in flag["evidence"][-1]["what"] and flag["t_ns"] <= lc["t_woken_ns"]


def check_release_lifecycle(s: Scenario) -> None:
    assert_clean_run(s)
    assert s.workload["value"] == 0  # after the release the page faulted in normally (zero page)
    [lc] = s.lifecycles
    assert lc["state"] == "released" and lc["flags"] == ["released_with_waiters"] and lc["resolve_op"] is None
    assert s.flag_names() == {"released_with_waiters"}


def check_slow_lifecycle(s: Scenario) -> None:
    """Unread past --stuck-ms, then read and resolved: flagged while it
    waited, and the lifecycle ends resolved with the final flag updates."""
    assert_clean_run(s)
    [lc] = s.lifecycles
    assert lc["state"] in ("woken", "returned") and (lc["reads"], lc["resolve_op"]) == (1, "copy")
    assert lc["flags"] == ["unread", "never_woken"] and s.flag_names() == {"unread", "never_woken"}
    assert {f["verdict"] for f in s.flags} == {"not_read"}, s.flags
    assert {f["flag"] for f in s.updates} == {"unread", "never_woken"}


def check_refault(s: Scenario) -> None:
    """The page taken away after each wake-up: the kernel's retry of the
    same page fault waits again (no new fault in tracepoint mode, a new
    handle_userfault in kprobe mode). Every wait is a lifecycle of its own
    with its message (--flagged only counts the clean ones); the last, read
    late, is flagged while it waits."""
    assert_clean_run(s)
    w = s.workload
    assert w["msgs_read"] == w["rounds"] == REFAULT[0]
    lcs = sorted(s.lifecycles, key=lambda lc: lc["t_raised_ns"])
    assert len(lcs) + s.summary["quiet_lifecycles"] == w["rounds"] and {lc["tid"] for lc in lcs} == {w["faulter_tid"]}
    assert all((lc["reads"], lc["resolve_op"], lc["addr"]) == (1, "copy", w["addr"]) for lc in lcs), lcs
    assert [lc["flags"] for lc in lcs] == [[]] * (len(lcs) - 1) + [["unread", "never_woken"]]
    assert s.flag_names() == {"unread", "never_woken"} and {f["flag"] for f in s.updates} == {"unread", "never_woken"}
    assert s.summary["messages_read"] == w["msgs_read"] and s.summary["unmatched_reads"] == 0, s.summary


def check_stress(s: Scenario) -> None:
    """Thousands of faults from many threads, several handlers, pages raced
    for: no flag, and every message the handlers read belongs to a lifecycle."""
    assert_clean_run(s)
    w = s.workload
    assert not s.flags and not s.summary["flags"], s.flags[:3]
    assert w["msgs_read"] >= w["pages"] and w["faults_touched"] >= 2000
    assert sum(lc["reads"] for lc in s.lifecycles) == w["msgs_read"]
    assert s.summary["unmatched_reads"] == 0 and s.summary["evicted"] == 0, s.summary
    assert {lc["tid"] for lc in s.lifecycles} <= set(s.faulters)
    assert all(lc["rounds"] == 1 for lc in s.lifecycles)
    resolved = [lc for lc in s.lifecycles if lc["reads"]]
    assert all(lc["resolve_op"] == "copy" for lc in resolved)
    # Every page was faulted, read and resolved at least once.
    assert {lc["addr"] for lc in resolved} == {w["base"] + i * w["page_size"] for i in range(w["pages"])}


def assert_nothing_unmatched(s: Scenario) -> None:
    """Nothing lost, every message read matched a fault, no lifecycle evicted."""
    assert_clean_run(s)
    assert s.summary["unmatched_reads"] == 0 and s.summary["evicted"] == 0, s.summary


def assert_nothing_flagged_or_unmatched(s: Scenario) -> None:
    """No flag, nothing lost, every message read matched a fault."""
    assert_nothing_unmatched(s)
    assert not s.flags and not s.summary["flags"], s.flags[:3]


def check_reads_match_lifecycles(s: Scenario) -> int:
    """No flag, nothing lost, and every message read belongs to a lifecycle;
    returns how many were read."""
    assert_nothing_flagged_or_unmatched(s)
    reads = sum(lc["reads"] for lc in s.lifecycles)
    assert reads == s.summary["messages_read"], s.summary
    if s.events:  # every record sent: each message has its own
        assert reads == s.summary["by_kind"].get("read_msg", 0)
    return reads


# uffd-stress arguments per tier: (test type, MiB, bounces).
UFFD_STRESS_HOST = (("anon", 32, 8), ("shmem", 32, 4))
UFFD_STRESS_VM = ("anon", 8, 4)


def uffd_stress_count(s: Scenario) -> int:
    """uffd-stress counts, per bounce, the faults its handlers resolved
    (`userfaults: N missing (...) M wp (...)`)."""
    counted = sum(int(n) for line in s.text if "userfaults:" in line
                  for n in re.findall(r"(\d+) (?:missing|wp|minor)\b", line))
    assert counted > 0, s.text
    return counted


def check_uffd_stress(s: Scenario) -> None:
    """The kernel's own stress test. A handler whose UFFDIO_COPY failed with
    EEXIST (another thread's copy won) read a message uffd-stress does not
    count, so the messages read are its count plus the EEXIST copies of the
    threads that read."""
    counted = uffd_stress_count(s)
    if s.events:  # every record: nothing filtered in the kernel
        reads = check_reads_match_lifecycles(s)
        assert s.summary["filtered_resolves"] == 0
        readers = {e["tid"] for e in s.of("read_msg")}
        eexist = [e for e in s.of("resolve", op="copy", ret=-17) if e["tid"] in readers]
        assert reads == counted + len(eexist)
        return
    # Messages of faults tracepoint mode cannot see (get_user_pages: see
    # check_uffd_stress_flagged) match nothing: a few are allowed, counted.
    # Until 2026-12-05 one of them could pass for the message of a fault the
    # kernel had just ended as never waited (quiet_reads; capture in
    # /work/evidence/quiet_read_default_mode_2026-12-05/): a read begun after
    # a fault ended is no longer counted for it.
    assert_unflagged_but_unseen_faults(s)
    reads, quiet = sum(lc["reads"] for lc in s.lifecycles), s.summary["quiet_reads"]
    assert reads + quiet + s.summary["unmatched_reads"] == s.summary["messages_read"], s.summary
    assert s.summary["messages_read"] >= counted, s.summary


def assert_unflagged_but_unseen_faults(s: Scenario) -> None:
    """No flag, nothing lost or evicted; in tracepoint mode a few of uffd-stress's
    messages may match no fault: those of faults taken through get_user_pages
    (check_uffd_stress_flagged)."""
    assert_clean_run(s)
    assert not s.flags and not s.summary["flags"], s.flags[:3]
    allowed = 0 if s.mode == "kprobe" else 1 + s.summary["messages_read"] // 2000
    assert s.summary["unmatched_reads"] <= allowed and s.summary["evicted"] == 0, s.summary


def check_uffd_stress_flagged(s: Scenario) -> None:
    """The same with --flagged, which prints no clean lifecycle: the reads
    are the summary's, quiet ones (counted in the kernel) included.

    Tracepoint mode cannot see a fault taken through get_user_pages (README
    "Modes"), and uffd-stress keeps a pthread mutex in every page: a contended
    one makes futex() fault the page in through fixup_user_fault, with no
    page-fault exception. Such a fault's message is read and matches nothing:
    the unmatched messages seen have no record of any fault on their page,
    and come more often the busier the CPUs (the mutexes contended more).
    It happens more often the busier the CPUs (2 per 12,000 messages beside
    a VM at full speed; tests/captures/defects/ holds such a run), so a few
    are allowed here, in tracepoint mode only; never a flag."""
    assert_unflagged_but_unseen_faults(s)
    assert s.summary["messages_read"] >= uffd_stress_count(s), s.summary
    assert s.summary["quiet_lifecycles"] > 0 and s.summary["quiet_reads"] > 0, s.summary


def check_postcopy_shape(s: Scenario) -> None:
    """QEMU's shape: every message the fault thread read, seen and matched."""
    reads = check_reads_match_lifecycles(s)
    w = s.workload
    assert reads == w["msgs_read"] > 0 and w["reader_eexist"] + w["reader_copies"] == w["msgs_read"], (w, s.summary)
    # Most background copies cover no waiting fault: counted in the kernel, not sent.
    resolves = s.summary["by_kind"]["resolve"]
    assert s.summary["filtered_resolves"] > 0 and resolves + s.summary["filtered_resolves"] >= w["msgs_read"], \
        s.summary


GUP_FAULT_ROUNDS = "20"  # gup_fault: rounds, each a copy-on-write fault then a get_user_pages fault on the page


def check_gup_fault(s: Scenario) -> None:
    """tests/workloads/gup_fault: each round a copy-on-write fault that
    needs no handler, then a fault on the same page taken through
    get_user_pages, whose message the handler reads after the first fault
    ended. Kprobe mode sees every such fault (handle_userfault), each read
    once and woken. Tracepoint mode sees no page-fault exception for them:
    their messages match nothing (counted), and never pass for the messages
    of the copy-on-write faults before them (a false retry_loop, and a
    missing message counted for a write fault on a present page, until
    2026-12-05). Nothing flagged, nothing lost."""
    w = s.workload
    assert_clean_run(s)
    assert not s.flags and not s.summary["flags"], s.flags[:3]
    assert w["msgs_read"] == w["rounds"] == int(GUP_FAULT_ROUNDS) == s.summary["messages_read"], (w, s.summary)
    if s.mode == "kprobe":
        check_reads_match_lifecycles(s)
        assert len(s.lifecycles) == w["rounds"], s.summary
        assert all(lc["reads"] == 1 and lc["t_woken_ns"] and lc["reason"] == "missing" for lc in s.lifecycles)
        return
    assert s.summary["unmatched_reads"] == w["rounds"] and s.summary["quiet_reads"] == 0, s.summary
    assert all(lc["reads"] == 0 for lc in s.lifecycles), s.lifecycles[:3]


VMA_SPLIT = ("2048", "2")  # vma_split: pages, faulting threads


def check_vma_split(s: Scenario) -> None:
    """tests/workloads/vma_split: faults while another thread splits and
    merges their VMA (on per-VMA-lock kernels some cannot take the VMA lock
    and run under mmap_lock from the start). Each page faulted once, read
    once, served once: nothing flagged, every read matched."""
    w = s.workload
    reads = check_reads_match_lifecycles(s)
    assert w["copies"] == w["pages"] == reads and w["splits"] > 0, (w, s.summary)


UNREGISTER_RACE = ("4000", "1000", "2")  # unregister_race: rounds at most, ms a stranded fault waits, stranded at most
UNREGISTER_RACE_STUCK_MS = "300"  # under UNREGISTER_RACE's wait: its stranded faults are flagged while they wait


def check_unregister_race(s: Scenario, strands: bool = True) -> None:
    """tests/workloads/unregister_race: faults racing the UNREGISTER of
    their page. Every fault the unregister left waiting (the workload saw it
    asleep in handle_userfault) is flagged never_woken while it waits, with
    the unregister named; nothing else is flagged, nothing lost. ``strands``:
    the kernel leaves faults waiting (per-VMA locks, v6.6+); without, none."""
    w = s.workload
    assert_nothing_unmatched(s)
    if not strands:
        assert w["stranded"] == 0 and not s.flags, (w, s.flags[:3])
        return
    # 2026-12-05: 2 stranded within 10 to 229 traced rounds on the 6.18 host, within 2 in a 6.12 guest.
    assert w["stranded"] >= 1, f"no fault stranded in {w['rounds']} rounds: has the kernel closed the race? {w}"
    raised = [f for f in s.flags if not f["update"]]
    missed = f"its range was unregistered by tid {w['pid']} after it was raised, and that did not wake it"
    assert {f["flag"] for f in s.flags} <= {"never_woken"}, s.flags[:3]
    assert len(raised) == w["stranded"], (w, raised)
    for f in raised:
        assert f["tid"] == w["faulter_tid"] and f["addr"] in w["stranded_pages"], f
        assert missed in [e["what"] for e in f["evidence"]] and f["state"] == "blocked", f


HANDLER_SERVE = ("serve", "4096", "4")  # handler_process: pages, faulting threads
HANDLER_KILLED = ("killed", "1500")  # handler_process: how long the fault waits after its handler died (ms)


AIO_DRAIN = ("512", "2", "300")  # aio_drain: pages, faulting threads, microseconds from arming to draining


def check_aio_drain(s: Scenario) -> None:
    """tests/workloads/aio_drain: an event loop arms an IOCB_CMD_POLL on the
    uffd, serves its other sources, drains, then waits for the poll. Many of
    its polls are woken for a message a drain has already read and rightly
    wait on: nothing flagged, every page served and every read matched."""
    w = s.workload
    reads = check_reads_match_lifecycles(s)
    assert w["served"] == w["pages"] == reads, (w, s.summary)


def check_handler_process_serve(s: Scenario) -> None:
    """Firecracker's layout: the handler is another process, holding the
    only descriptor (passed with SCM_RIGHTS). Every read it made is matched
    to its fault, whatever mode; nothing flagged."""
    w = s.workload
    reads = check_reads_match_lifecycles(s)
    assert reads == w["handler_reads"] == w["pages"], (w, s.summary)
    assert {lc["reader_tid"] for lc in s.lifecycles} == {w["handler_pid"]}
    assert {lc["tgid"] for lc in s.lifecycles} != {w["handler_pid"]}


def check_handler_process_killed(s: Scenario) -> None:
    """The handler process read the fault and was killed: no_reader, naming
    it, never unread (its read was seen) nor never_woken."""
    w = s.workload
    assert s.rc == 0 and w["handler_reads"] == 1, (s.rc, w, s.stderr)
    assert s.flag_names() == {"no_reader"}, s.flags
    [flag] = s.flags
    assert flag["tid"] == w["tids"][0] and f"tid {w['handler_pid']}" in flag["evidence"][-1]["what"], flag
    assert flag["verdict"] == "no_reader", flag  # the word `why` uses
    assert any(e["what"] == "message read" and e["tid"] == w["handler_pid"] for e in flag["evidence"]), flag
    [lc] = s.lifecycles
    assert lc["reads"] == 1 and lc["reader_tid"] == w["handler_pid"] and lc["flags"] == ["no_reader"], lc
    assert s.summary["lost"] == 0


HANDLER_DEAD = ("dead", "1500")  # handler_process: how long the fault waits with nobody to read it (ms)


def check_handler_process_dead(s: Scenario) -> None:
    """The handler process died before reading; the only holder left is the
    faulting process, whose one thread waits: no_reader, naming the holder
    and saying the uffd is open (a hang, not a release), never unread."""
    w = s.workload
    assert s.rc == 0 and w["handler_reads"] == 0, (s.rc, w, s.stderr)
    assert s.flag_names() == {"no_reader"}, s.flags
    [flag] = s.flags
    what = flag["evidence"][-1]["what"]
    assert flag["tid"] == w["tids"][0] and "no thread is left that could read" in what and "still queued" in what, what
    assert f"the uffd is still open, held by pid {w['tids'][0]} " in what and "(1 thread, 1 asleep" in what, what
    [lc] = s.lifecycles
    assert lc["reads"] == 0 and lc["resolver_tid"] == w["rescuer_pid"] and lc["flags"] == ["no_reader"], lc
    assert s.summary["lost"] == 0


BALLOON_STALL_MS = "1500"  # longer than --stuck-ms (1000)


def _balloon_event(s: Scenario) -> dict[str, Any]:
    """The balloon's MADV_DONTNEED: one REMOVE event, raised by the balloon
    thread, read by the handler, the caller resumed."""
    w = s.workload
    assert s.rc == 0 and s.summary["lost"] == 0, (s.rc, s.stderr, s.summary)
    [ev] = s.uffd_events
    assert (ev["event"], ev["tid"], ev["reader_tid"], ev["state"]) == ("remove", w["balloon_tid"], w["handler_tid"],
                                                                       "resumed"), ev
    assert ev["start"] == w["balloon_start"] and ev["uffd"] == s.lifecycles[0]["uffd"], (ev, s.lifecycles)
    return ev


def check_balloon_defer(s: Scenario) -> None:
    """The handler's UFFDIO_COPY failed with EAGAIN (the REMOVE unread) and
    it never tried again: eagain_unretried, naming the event and its
    caller; not never_woken beside it."""
    w = s.workload
    assert w["eagain"] == 1, w
    _balloon_event(s)
    assert s.flag_names() == {"eagain_unretried"}, s.flags
    [flag] = s.flags
    assert flag["tid"] == w["faulter_tid"] and flag["addr"] == w["page"], flag
    assert flag["verdict"] == "read_not_resolved", flag  # as `why` says of the same hang
    why = " ".join(e["what"] for e in flag["evidence"])
    assert "EAGAIN" in why and f"remove of {w['balloon_start']:#x}" in why and f"by tid {w['balloon_tid']}" in why, why


def check_balloon_retry(s: Scenario) -> None:
    """The same EAGAIN, retried once the event is read: nothing flagged."""
    assert s.workload["eagain"] >= 1, s.workload
    _balloon_event(s)
    assert not s.flags, s.flags
    [lc] = s.lifecycles
    assert lc["reads"] == 1 and lc["resolve_op"] == "copy" and lc["resolve_ret"] == 0, lc


def check_balloon_unread(s: Scenario) -> None:
    """The handler read nothing while the balloon's madvise waited on its
    event: event_unread on the balloon thread, until the read came."""
    w = s.workload
    ev = _balloon_event(s)
    assert ev["flags"] == ["event_unread"] and ev["unread_ms"] > 1000, ev
    assert s.flag_names() == {"event_unread"}, s.flags
    [flag] = s.flags
    assert flag["tid"] == w["balloon_tid"] and "no handler read its remove event" in flag["evidence"][-1]["what"]
    assert flag["verdict"] == "event_unread", flag


UNIT_TESTS_ATTEMPTS = 3


def uffd_unit_tests_command(binary: Path, *args: str) -> list[str]:
    """The kernel's uffd-unit-tests, tried again (tests/until_passes.sh) when
    an attempt fails: its events tests lose a race of their own."""
    return [str(Path(__file__).parent / "until_passes.sh"), str(UNIT_TESTS_ATTEMPTS), str(binary), *args]


def check_uffd_unit_tests(s: Scenario) -> None:
    """The kernel's uffd-unit-tests (events, fork, remap, remove, poison,
    minor, write-protect; each in its own processes): the last attempt
    passes, every earlier one lost only the selftest's own race, nothing is
    lost or flagged but that race's release, every message read belongs to
    a lifecycle, and every event's caller was seen waiting for it, its read,
    and its return."""
    summaries = [line for line in s.text if "Userfaults unit tests:" in line]
    assert summaries and re.search(r"pass=\d+, skip=\d+, fail=0", summaries[-1]), s.text[-3:]
    # Attempts before the passing one (tests/until_passes.sh) may only have
    # lost the selftest's own REMOVE-versus-UNREGISTER race; the trace spans
    # them too, so they are held to every check below.
    retried = [line for line in s.text if "until_passes: attempt" in line]   # after "Testing … on anon... "
    assert all("UFFDIO_COPY error: -2 " in line for line in retried), retried
    # A lost attempt exits with its late fault still waiting (nothing woke it:
    # it queued after the UNREGISTER's wake-up), and the exit's release wakes
    # it: that flag is true, once per lost attempt, after the failed copy.
    released = [f for f in s.flags if f["flag"] == "released_with_waiters"
                and any(e["what"] == "copy failed (-2)" for e in f["evidence"])]
    raised = sum(not f["update"] for f in released)
    assert raised <= len(retried), (retried, released)
    assert_nothing_unmatched(s)
    assert [f for f in s.flags if f not in released] == [], s.flags[:3]
    assert s.summary["flags"] == ({"released_with_waiters": raised} if raised else {}), s.summary
    assert s.summary["lost"] == 0 and s.summary["messages_read"] > 0, s.summary
    assert {ev["event"] for ev in s.uffd_events} >= {"fork", "remap", "remove"}, s.uffd_events
    unread = [ev for ev in s.uffd_events if ev["state"] != "resumed" or ev["reader_tid"] is None]
    assert not unread, unread


# Python workload scenarios (uffdtrace.workloads), run by both live tiers:
# name -> (workload arguments, check).
PYTHON_SCENARIOS: dict[str, tuple[list[str], Callable[[Scenario], None]]] = {
    "py_clean": (["clean", str(CLEAN_PAGES)], check_clean_lifecycles),
    "py_retry": (["retry", str(RETRY_WAKES)], check_retry_lifecycle),
    "py_eexist": (["eexist", str(DONTWAKE_STALL_S)], check_eexist_lifecycle),
    "py_release": (["release", str(RELEASE_AFTER_S)], check_release_lifecycle),
    "py_stress": (["stress", *map(str, STRESS)], check_stress),
    "py_slow": (["slow", str(SLOW_DELAY_S)], check_slow_lifecycle),
}


def check_demo(stdout: str, rc: int, stderr: str) -> None:
    """`uffdtrace demo -j`: every built-in scenario found as expected."""
    assert rc == 0, stderr
    demo = [json.loads(line) for line in stdout.splitlines() if '"type":"demo"' in line]
    assert [d["scenario"] for d in demo] == ["wl-clean", "wl-dontwake", "wl-retry"]
    assert all(d["ok"] for d in demo), demo
