"""Seed-bug tier: the kernels of scripts/seed_kernels.sh (Debian's
linux-source-6.12, an upstream userfaultfd fix reverted, or race windows
widened) booted under virtme-ng by scripts/seed_bugs.py, with the racy
workloads traced in kprobe and tracepoint mode. Opt-in, whether or not the
kernels are cached (marker `seed`: `scripts/test.sh --seed-kernels` builds
them, about 20 minutes the first time, then runs it; plain `scripts/test.sh`
deselects it and says so)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import BUILD, ROOT
from ..scenarios import Scenario, check_aio_poll

SEED_BUGS = ROOT / "scripts" / "seed_bugs.py"
PYTHON = ROOT / ".venv" / "bin" / "python"
RACE_FLAGS = {"missed_wakeup", "never_woken", "eexist_without_wake"}
ASKED = os.environ.get("UFFDTRACE_SEED_TIER") == "1"  # scripts/test.sh --seed-kernels

pytestmark = pytest.mark.seed


@pytest.fixture(scope="module")
def seeded() -> tuple[Path, list[dict[str, Any]]]:
    cached = subprocess.run([str(ROOT / "scripts" / "seed_kernels.sh"), "--cached"], capture_output=True,
                            text=True, check=False)
    if cached.returncode != 0:
        why = f"{cached.stderr.strip()}: `scripts/test.sh --seed-kernels` builds and runs them"
        if ASKED:
            pytest.fail(why)
        pytest.skip(why)
    out = BUILD / "seedbugs"
    results = out / "results.json"
    done = subprocess.run([str(PYTHON), str(SEED_BUGS), "--cached", "--out", str(out), "--json", str(results)],
                          capture_output=True, text=True, check=False, timeout=3600)
    assert done.returncode == 0, done.stderr
    return out, json.loads(results.read_text())


def runs(seeded: tuple[Path, list[dict[str, Any]]], variant: str, scenario: str) -> list[dict[str, Any]]:
    found = [r for r in seeded[1] if r["variant"] == variant and r["scenario"] == scenario]
    assert found, (variant, scenario)
    return found


def scenario(seeded: tuple[Path, list[dict[str, Any]]], r: dict[str, Any]) -> Scenario:
    d = seeded[0] / f"{r['variant']}-{r['run']}"
    name = r["scenario"]
    return Scenario.parse(f"{(d / f'{name}.out').read_text()}\n{(d / f'{name}.trace').read_text()}",
                          int((d / f"{name}.rc").read_text()), (d / f"{name}.err").read_text())


@pytest.mark.parametrize("name", ["postcopy_kprobe", "postcopy_tracepoint", "aio", "move_idle", "aio_drain_kprobe",
                                  "aio_drain_tracepoint"])
def test_stock_flags_nothing(seeded: tuple[Path, list[dict[str, Any]]], name: str) -> None:
    """The kernel as shipped, the same loads: a flag here would be a false accusation."""
    for r in runs(seeded, "stock", name):
        assert r["flags"] == {}, r["first_flag"]
        assert r["summary"]["lost"] == 0
        assert r["workload"] is not None, "the workload hung on the stock kernel"
        assert r["rc"] == 0


def test_anon_vma_retries_counted_and_several_times_stocks_on_windows(
        seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    """UFFDIO_MOVE against a lockless rmap walk races on the stock kernel too:
    folio_lock_anon_vma_read's recheck catches the changed anon_vma and
    walks again. That is the fix working: counted (every retry, from the
    trylocks), not flagged. The widened window makes them several times
    more frequent per walk."""
    def rate(r: dict[str, Any]) -> float:
        rmap = r["summary"]["anon_vma"]
        return float(rmap["retries"]) / rmap["walks"]

    stock, widened = runs(seeded, "stock", "move_idle"), runs(seeded, "windows", "move_idle")
    assert all(r["summary"]["anon_vma"]["walks"] > 0 for r in stock + widened)
    assert min(rate(w) for w in widened) > 3 * max(rate(r) for r in stock), [(r["variant"], r["summary"]["anon_vma"])
                                                                            for r in stock + widened]


def hung_and_flagged(r: dict[str, Any]) -> None:
    """A thread hung (the workload was killed at its deadline) and was
    flagged while it hung; no flag outside the race's own, nothing lost."""
    assert r["workload"] is None, "the race did not hang the workload in its time"
    assert set(r["flags"]) <= RACE_FLAGS, r["flags"]
    assert "never_woken" in r["flags"], r["flags"]
    assert r["summary"]["lost"] == 0


@pytest.mark.parametrize("mode", ["kprobe", "tracepoint"])
def test_refile_missed_wakeup_while_the_thread_hangs(seeded: tuple[Path, list[dict[str, Any]]], mode: str) -> None:
    """refile_seq reverted: the copy's wake-up is lost; missed_wakeup (the
    copy covered the page, without DONTWAKE, while the thread waited, and no
    wake-up reached it) first, then never_woken while it still sleeps."""
    for r in runs(seeded, "refile", f"postcopy_{mode}"):
        assert r["mode"] == mode
        hung_and_flagged(r)
        assert "missed_wakeup" in r["flags"], r["flags"]
        assert r["first_flag"]["flag"] in ("missed_wakeup", "eexist_without_wake"), r["first_flag"]


@pytest.mark.parametrize("mode", ["kprobe", "tracepoint"])
def test_mustwait_hang_flagged(seeded: tuple[Path, list[dict[str, Any]]], mode: str) -> None:
    """userfaultfd_must_wait() reverted: the page was placed while the fault
    was on its way to the queue. Tracepoint mode raises the fault at the
    page-fault exception, before the copy: missed_wakeup. Kprobe mode raises
    it at handle_userfault's entry, which the copy may precede; a copy
    before the raise does not prove the page was there when the thread went
    to sleep (a MADV_DONTNEED may come between), so the thread is flagged by
    what is certain: the reader's EEXIST without a wake-up, and never_woken."""
    for r in runs(seeded, "mustwait", f"postcopy_{mode}"):
        hung_and_flagged(r)
        assert {"missed_wakeup", "eexist_without_wake"} & set(r["flags"]), r["flags"]


def test_stock_why_finds_no_hang(seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    """`why` asked again and again while the races' workload runs untraced on
    the stock kernel: threads blocked for a moment, none hung."""
    for r in runs(seeded, "stock", "why"):
        assert r["rc"] == 0 and r["why"]["asks"] >= 1 and r["why"]["hung"] == [], r["why"]


def test_refile_hang_explained_by_why_with_no_trace(seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    """refile_seq reverted, nothing traced before: `why` finds the hung thread
    and says resolved_not_woken (its page is there, its wake-up was lost)."""
    for r in runs(seeded, "refile", "why"):
        hung = r["why"]["hung"]
        assert r["rc"] != 0 and hung, r["why"]  # killed at its deadline: it hung
        assert all((b["verdict"], b["page"]) == ("resolved_not_woken", "present") for b in hung), hung


def test_refile_evidence_names_the_read(seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    """Kprobe mode sees read()'s entry: the lost wake-up ran inside the read
    that refiled the fault."""
    for r in runs(seeded, "refile", "postcopy_kprobe"):
        s = scenario(seeded, r)
        missed = [f for f in s.flags if f["flag"] == "missed_wakeup"]
        assert any("inside read() handing this fault out" in e["what"] for f in missed for e in f["evidence"]), \
            missed


def test_windows_anon_vma_retry_only_for_a_loop_with_its_move(seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    """UFFDIO_MOVE changed the folio's anon_vma under page_idle's rmap walk:
    anon_vma_retry only where one folio's walks retried past
    --retry-threshold, naming a move by the workload's mover thread."""
    for r in runs(seeded, "windows", "move_idle"):
        assert set(r["flags"]) <= {"anon_vma_retry"}, r["flags"]
        s = scenario(seeded, r)
        for f in s.flags:
            assert re.search(r"(\d+) retries for one folio", " ".join(e["what"] for e in f["evidence"])), f
            assert any(e["what"].startswith("concurrent UFFDIO_MOVE") and e["tid"] == s.workload["mover_tid"]
                       for e in f["evidence"]), f


def test_windows_aio_poll_slow_wake_not_stuck(seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    for r in runs(seeded, "windows", "aio"):
        assert r["flags"] == {}, r["first_flag"]
        check_aio_poll(scenario(seeded, r))


@pytest.mark.parametrize("variant", ["stock", "windows"])
@pytest.mark.parametrize("mode", ["kprobe", "tracepoint"])
def test_aio_drain_served_and_not_flagged(seeded: tuple[Path, list[dict[str, Any]]], variant: str, mode: str) -> None:
    """The event loop that arms an IOCB_CMD_POLL, drains, then waits: its
    polls often find the message already read (drained), and the request
    then rightly waits; nothing is flagged (windows: every wake-up slowed)."""
    for r in runs(seeded, variant, f"aio_drain_{mode}"):
        assert r["flags"] == {}, r["first_flag"]
        w = r["workload"]
        assert w is not None and w["served"] == w["pages"], w
        assert r["summary"]["lost"] == 0 and r["rc"] == 0


@pytest.mark.parametrize("mode", ["kprobe", "tracepoint"])
def test_aiopoll_lost_wakeup_flagged_while_the_loop_hangs(seeded: tuple[Path, list[dict[str, Any]]],
                                                          mode: str) -> None:
    """363bee27e258 undone: a fault queued while the poll request was off the
    uffd's waitqueue wakes nothing; the loop sleeps in io_getevents beside
    its unread message. aio_poll_stuck on the fault, nothing else; kprobe
    mode names the span the request was off the queue."""
    for r in runs(seeded, "aiopoll", f"aio_drain_{mode}"):
        assert r["mode"] == mode
        assert r["workload"] is None, "the race did not hang the loop in its time"
        assert set(r["flags"]) == {"aio_poll_stuck"}, r["flags"]
        assert r["summary"]["lost"] == 0
        evidence = r["first_flag"]["evidence"]
        assert any("sleeps in io_getevents" in e for e in evidence) or mode == "kprobe", evidence
        if mode == "kprobe":
            assert any("queued while the poll request was off the uffd's waitqueue" in e for e in evidence), evidence


def test_moverecheck_stale_walk_flagged_with_its_move(seeded: tuple[Path, list[dict[str, Any]]]) -> None:
    """880a99b60d46's re-check undone: page_idle's walk goes on holding the
    anon_vma a UFFDIO_MOVE just moved the folio out of: anon_vma_stale,
    naming a move by the workload's mover thread; the stock kernel (same
    load) never earns it (test_stock_flags_nothing)."""
    for r in runs(seeded, "moverecheck", "move_idle"):
        assert "anon_vma_stale" in r["flags"], r["flags"]
        assert set(r["flags"]) <= {"anon_vma_stale"}, r["flags"]
        assert r["summary"]["lost"] == 0 and r["summary"]["anon_vma"]["stale"] >= r["flags"]["anon_vma_stale"]
        s = scenario(seeded, r)
        for f in s.flags:
            assert any(e["what"].startswith("concurrent UFFDIO_MOVE") and e["tid"] == s.workload["mover_tid"]
                       for e in f["evidence"]), f

