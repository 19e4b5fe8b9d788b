"""`uffdtrace top`: the live terminal dashboard (rich's Live on the
alternate screen, keys read in cbreak mode by a thread of their own)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Any

import click

from .. import session
from ..errors import UffdtraceError
from .options import live_source, pid_options, threshold_options, thresholds


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """Keys one at a time, without echo; the terminal as it was afterwards."""
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


@click.command("top")
@pid_options
@threshold_options
@click.pass_context
def command(ctx: click.Context, /, pids: tuple[int, ...], duration: float | None, **kw: Any) -> None:
    """Live dashboard: per process and uffd faults/s, in flight, the oldest
    blocked fault, phase latencies, resolutions, retries, flags; the faults
    stuck now and the latest flags. Keys: q quit, s sort, / pid filter, p pause."""
    from rich.console import Console
    from rich.live import Live

    from ..sinks.top import Top

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UffdtraceError("top needs a terminal: use trace (text, JSON lines) or serve (Prometheus) instead")
    src = live_source(ctx, pids, (), duration, kw, aggregate=True)
    console = Console()
    click.echo("uffdtrace top: loading the probes...")
    live = Live(console=console, screen=True, auto_refresh=False, transient=True)
    view = Top(lambda: live.update(view.render(console.size.width, console.size.height), refresh=True),
               aggregates=src)
    done = threading.Event()

    def read_keys() -> None:
        fd = sys.stdin.fileno()
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready and not view.key(os.read(fd, 1).decode(errors="replace")):
                src.stopper.stopped = True  # q: the session ends, every probe is detached
                return

    keys = threading.Thread(target=read_keys, name="uffdtrace-keys", daemon=True)
    with cbreak(sys.stdin.fileno()), live:
        keys.start()
        try:
            session.run(src, view, thresholds(kw), raw_events=True)
        finally:
            done.set()
            keys.join()
