"""Command line (DESIGN §6). Exit codes: 0 ok, 1 usage/environment error."""

from __future__ import annotations

import collections
import json
import platform
import sys
from typing import Any

import click

from . import __version__, doctor
from .errors import UffdtraceError
from .output import Printer
from .source import LiveSource, Options

LOST_CHECK_EVERY = 1024  # events between reads of the in-kernel lost counter


class Group(click.Group):
    """Every usage or environment error is one line on stderr and exit status 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            status = super().main(*args, **kwargs)
        except click.ClickException as exc:
            exc.show()
            sys.exit(1)
        except click.Abort:
            click.echo("uffdtrace: aborted", err=True)
            sys.exit(1)
        except UffdtraceError as exc:
            click.echo(f"uffdtrace: error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, like other CLI tools.
            sys.stderr.close()
            sys.exit(0)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="uffdtrace")
@click.option("--mode", type=click.Choice(["auto", "kprobe", "tracepoint"]), default="auto", show_default=True,
              help="Probe set: kprobe, or tracepoint for kernels without kprobes; auto picks kprobe where it works.")
@click.pass_context
def main(ctx: click.Context, mode: str) -> None:
    """Live tracer and race detector for userfaultfd."""
    ctx.obj = {"mode": mode}


@main.command("doctor")
@click.option("-j", "--json", "as_json", is_flag=True, help="Machine-readable report.")
def doctor_cmd(as_json: bool) -> None:
    """Check kernel, BTF, probes, headers and bcc; exit 0 when a mode works."""
    rep = doctor.run()
    if as_json:
        click.echo(json.dumps({"checks": dict(rep.lines), "probes": rep.probes,
                               "tracepoint_capabilities": rep.tracepoint_caps, "modes": rep.modes}))
    else:
        click.echo(doctor.render(rep))
    sys.exit(0 if rep.usable else 1)


@main.command("trace", context_settings={"ignore_unknown_options": False})
@click.option("-p", "--pid", "pids", type=click.IntRange(min=1), multiple=True,
              help="Trace only this process (repeatable); its children are followed.")
@click.option("-t", "--tid", "tids", type=click.IntRange(min=1), multiple=True,
              help="Show only events of this thread (or whose peer is this thread).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds.")
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON lines instead of text.")
@click.option("--events", "raw_events", is_flag=True, help="Print every decoded event.")
@click.option("--transport", type=click.Choice(["auto", "ringbuf", "perf"]), default="auto", show_default=True,
              help="Kernel-to-user transport (perf buffer for kernels before 5.8).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def trace_cmd(ctx: click.Context, pids: tuple[int, ...], tids: tuple[int, ...], duration: float | None,
              as_json: bool, raw_events: bool, transport: str, command: tuple[str, ...]) -> None:
    """Trace userfaultfd events live; with -- CMD, run CMD and follow it."""
    if not raw_events:
        raise click.UsageError("per-fault lifecycle output is not available yet: use --events")
    src = LiveSource(Options(pids=pids, command=command, duration=duration, transport=transport), ctx.obj["mode"])
    printer = Printer(as_json)
    by_kind: collections.Counter[str] = collections.Counter()
    lost_seen = 0
    try:
        src.start()
        printer.header({
            "version": __version__, "mode": src.info.mode, "transport": src.info.transport,
            "kernel": platform.release(), "probes": [p.to_json() for p in src.info.probes],
            "command": list(command), "command_pid": src.info.command_pid, "pids": list(pids),
            "degraded": src.info.degraded,
            "existing_uffd_pids": src.info.existing,
        })
        for n, ev in enumerate(src, 1):
            if tids and ev.tid not in tids and ev.peer_tid not in tids:
                continue
            by_kind[ev.kind.name.lower()] += 1
            printer.event(ev)
            if n % LOST_CHECK_EVERY == 0 and src.lost > lost_seen:
                lost_seen = src.lost
                printer.lost(lost_seen)
    finally:
        src.close()
    if src.lost > lost_seen:
        printer.lost(src.lost)
    printer.summary({"events": sum(by_kind.values()), "by_kind": dict(by_kind), "lost": src.lost,
                     "command_status": src.info.command_status})
