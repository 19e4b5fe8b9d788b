"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import mmap
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import click

from ..analysis.rules import Thresholds
from ..capture.writer import create
from ..errors import UffdtraceError
from ..live.source import DEFAULT_BUFFER_KB, LiveSource, Options

# Options of `trace`, `record` and `demo`.
json_option = click.option("-j", "--json", "as_json", is_flag=True, help="JSON lines instead of text.")
transport_option = click.option(
    "--transport", type=click.Choice(["auto", "ringbuf", "perf"]), default="auto", show_default=True,
    help="Kernel-to-user transport (perf buffer for kernels before 5.8).")


def _power_of_two_kb(_ctx: click.Context, _param: click.Parameter, kb: int) -> int:
    page_kb = mmap.PAGESIZE // 1024
    if kb < page_kb or kb & (kb - 1):
        raise click.BadParameter(f"must be a power of two of at least {page_kb} (KiB)")
    return kb


buffer_option = click.option(
    "--buffer-kb", type=int, default=DEFAULT_BUFFER_KB, show_default=True, callback=_power_of_two_kb,
    help="Kernel buffer for records, in KiB (a power of two): the ring, or all CPUs' perf buffers together.")


THRESHOLD_OPTIONS = [
    click.option("--stuck-ms", type=click.FloatRange(min=0), default=1000, show_default=True,
                 help="never_woken / unread / aio_poll_stuck after this long."),
    click.option("--wake-ms", type=click.FloatRange(min=0), default=100, show_default=True,
                 help="A resolution must be followed by a wake-up within this long."),
    click.option("--retry-threshold", type=click.IntRange(min=2), default=3, show_default=True,
                 help="retry_loop when a fault enters handle_userfault this many times."),
]


def apply(options: list[Callable[..., Any]], f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(options):
        f = option(f)
    return f


def threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The rule thresholds, and how records reach user space (`serve`)."""
    return apply([*THRESHOLD_OPTIONS, transport_option, buffer_option], f)


def tracing_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `trace` beyond filters: output and rule thresholds."""
    return apply([
        json_option,
        click.option("--events", "raw_events", is_flag=True, help="Also print every decoded event."),
        click.option("--flagged", is_flag=True, help="Print only lifecycles that earned a flag (flags always print)."),
        *THRESHOLD_OPTIONS,
        click.option("--fail-on-flags", is_flag=True,
                     help="Exit 3 when anything was flagged (sanitizer mode; sigbus is informational)."),
        transport_option,
        buffer_option,
    ], f)


PID_OPTIONS = [
    click.option("-p", "--pid", "pids", type=click.IntRange(min=1), multiple=True,
                 help="Trace only this process (repeatable); its children are followed."),
    click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds."),
]


def pid_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Which processes, for how long (`serve`)."""
    return apply(PID_OPTIONS, f)


def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Filters of a live trace, shared by `trace` and `record`."""
    return apply([*PID_OPTIONS, click.option("--force", is_flag=True, help="Overwrite an existing capture file.")],
                 f)


def live_source(ctx: click.Context, pids: tuple[int, ...], command: tuple[str, ...], duration: float | None,
                kw: dict[str, Any], *, aggregate: bool = False) -> LiveSource:
    """The live source of `trace`, `record`, `serve` and `top` (the last two
    have no --events or --flagged: the kernel folds and filters; with
    ``aggregate``, it also sums clean lifecycles instead of sending them)."""
    return LiveSource(Options(pids=pids, command=command, duration=duration, transport=kw["transport"],
                              buffer_kb=kw["buffer_kb"], every_record=kw.get("raw_events", False),
                              flagged_only=kw.get("flagged", False), aggregate=aggregate),
                      ctx.obj["mode"])


def replay_thresholds(ctx: click.Context, recorded: Thresholds, kw: dict[str, Any]) -> Thresholds:
    """The capture's thresholds, except those given on the command line."""
    given = {name: kw[name] for name in ("stuck_ms", "wake_ms", "retry_threshold")
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    return dataclasses.replace(recorded, **given)


def open_output(path: str | None) -> contextlib.AbstractContextManager[TextIO]:
    """FILE for -o (0600: it names others' processes), else stdout, left open."""
    if path is None:
        return contextlib.nullcontext(sys.stdout)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UffdtraceError(f"cannot write {path}: {exc.strerror}") from exc
    return os.fdopen(fd, "w", encoding="utf-8")


def create_text(path: str, force: bool) -> TextIO:
    """An output file, created 0600; an existing one only with ``force``."""
    return io.TextIOWrapper(create(path, force), encoding="utf-8")


def thresholds(kw: dict[str, Any]) -> Thresholds:
    return Thresholds(stuck_ms=kw["stuck_ms"], wake_ms=kw["wake_ms"], retry_threshold=kw["retry_threshold"])
