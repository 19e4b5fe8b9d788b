"""`top`'s view fed by a real capture (no terminal, no root): what it shows
in 80x24 and when smaller, and its keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from uffdtrace.analysis.model import EventLifecycle
from uffdtrace.capture.reader import Reader, replay
from uffdtrace.events import UFFD_EVENT_REMOVE
from uffdtrace.sinks import top
from uffdtrace.sinks.top import SORTS, Top

from .kernel_sums import KernelSums

CAPTURE = Path(__file__).parent / "captures" / "demo-tracepoint-6.18.cap"


def fed() -> Top:
    reader = Reader(str(CAPTURE))
    view = Top()
    replay(reader, view, reader.header.thresholds, raw_events=True)
    return view


def screen(view: Top, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, force_terminal=False)
    console.print(view.render(width, height))
    return console.export_text().splitlines()


def test_80x24_holds_the_processes_and_the_flags() -> None:
    lines = screen(fed(), 80, 24)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for part in ("uffdtrace top", "mode=tracepoint", "wl-clean", "wl-dontwake", "wl-retry", "LATEST FLAGS",
                 "never_woken wl-dontwake", "q quit  s sort (faults/s)  / pid (all)"):
        assert part in text, part
    [clean] = [line for line in lines if line.split()[1:2] == ["wl-clean"]]
    assert clean.split()[2] == "0.8"  # 8 faults in the 10 s window


def test_too_small_still_says_something() -> None:
    lines = screen(fed(), 40, 6)
    assert lines and len(lines) <= 6 and lines[0].startswith("uffdtrace top")


def test_keys_sort_filter_pause_and_quit() -> None:
    view = fed()
    assert view.key("s") and SORTS[view.sort] == "in flight"
    for ch in "/7339\r":
        assert view.key(ch)
    assert view.pid_filter == 7339
    for ch in "/1\r":
        view.key(ch)
    assert view.pid_filter == 1 and not any("wl-clean" in line for line in screen(view, 80, 24))
    assert "/ pid (1)" in "\n".join(screen(view, 80, 24))
    assert view.key("p") and view.paused
    assert not view.key("q")


def test_an_event_caller_waiting_is_stuck_now() -> None:
    """A balloon's madvise waiting for its REMOVE to be read is shown beside
    the stuck faults, oldest first."""
    view = fed()
    ew = EventLifecycle(tgid=42, tid=43, comm="balloon", event=UFFD_EVENT_REMOVE, start=0x7000, length=0x3000,
                        t_raised=view.now - 5 * 10**9)
    view.tick(view.now, [], [ew])
    stuck = [line for line in screen(view, 80, 24) if "42/43" in line]
    assert stuck == ["  balloon 42/43 0x7000 5000ms waiting for its remove event to be read"], stuck
    ew.t_read = view.now
    view.tick(view.now, [], [ew])
    assert any("waiting for its remove call to return" in line for line in screen(view, 80, 24))


def test_what_the_kernel_summed_is_shown_as_python_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """top with the kernel summing clean lifecycles (read at every tick here)
    shows what it shows when each came to Python: rates, percentiles and
    resolutions, row by row; its head says how many the kernel summed."""
    monkeypatch.setattr(top, "KERNEL_READ_S", 0.0)
    python_side = screen(fed(), 160, 40)
    reader = Reader(str(CAPTURE))
    view = Top()
    kernel = KernelSums(view)
    view.aggregates = kernel
    replay(reader, kernel, reader.header.thresholds, raw_events=True)
    assert kernel.diverted >= 8 and view.summed == kernel.diverted  # wl-clean's, at least
    kernel_side = screen(view, 160, 40)
    assert f"{kernel.diverted} summed in kernel" in kernel_side[0]
    assert kernel_side[1:] == python_side[1:]
    [clean] = [line for line in kernel_side if line.split()[1:2] == ["wl-clean"]]
    assert "copy ok 8" in clean and "<=" in clean, clean
