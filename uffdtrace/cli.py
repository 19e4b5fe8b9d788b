"""Command line (DESIGN §6). Exit codes: 0 ok, 1 usage/environment error, 3 flags found
with --fail-on-flags."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import mmap
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import click
import orjson
from tabulate import tabulate

from . import __version__, doctor, procscan, session
from .capture.reader import Reader, check_whole, dump, replay
from .capture.writer import Recording, create
from .errors import UffdtraceError
from .escape import printable
from .rules import Thresholds
from .sinks import Summary, Tee, printer
from .source import DEFAULT_BUFFER_KB, LiveSource, Options


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
        click.echo("\n".join(map(printable, doctor.render(rep).split("\n"))))
    sys.exit(0 if rep.usable else 1)


# Options of both `trace` and `demo`.
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


def tracing_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `trace` beyond filters: output and rule thresholds."""
    for option in reversed([
        json_option,
        click.option("--events", "raw_events", is_flag=True, help="Also print every decoded event."),
        click.option("--flagged", is_flag=True, help="Print only lifecycles that earned a flag (flags always print)."),
        click.option("--stuck-ms", type=click.FloatRange(min=0), default=1000, show_default=True,
                     help="never_woken / unread / aio_poll_stuck after this long."),
        click.option("--wake-ms", type=click.FloatRange(min=0), default=100, show_default=True,
                     help="A resolution must be followed by a wake-up within this long."),
        click.option("--retry-threshold", type=click.IntRange(min=2), default=3, show_default=True,
                     help="retry_loop when a fault enters handle_userfault this many times."),
        click.option("--fail-on-flags", is_flag=True,
                     help="Exit 3 when anything was flagged (sanitizer mode; sigbus is informational)."),
        transport_option,
        buffer_option,
    ]):
        f = option(f)
    return f


# Filters of a live trace, shared by `trace` and `record`.
def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("-p", "--pid", "pids", type=click.IntRange(min=1), multiple=True,
                     help="Trace only this process (repeatable); its children are followed."),
        click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds."),
        click.option("--force", is_flag=True, help="Overwrite an existing capture file."),
    ]):
        f = option(f)
    return f


def live_source(ctx: click.Context, pids: tuple[int, ...], command: tuple[str, ...], duration: float | None,
                kw: dict[str, Any]) -> LiveSource:
    return LiveSource(Options(pids=pids, command=command, duration=duration, transport=kw["transport"],
                              buffer_kb=kw["buffer_kb"], every_record=kw["raw_events"], flagged_only=kw["flagged"]),
                      ctx.obj["mode"])


@main.command("trace", context_settings={"ignore_unknown_options": False})
@filter_options
@click.option("-t", "--tid", "tids", type=click.IntRange(min=1), multiple=True,
              help="Show only what concerns this thread (its faults, or the ones it read, resolved or woke).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write to FILE (created 0600) instead of stdout, which then stays the command's own.")
@click.option("--record", "record_to", metavar="FILE",
              help="Also write a capture to FILE (created 0600) for trace --from, report and export.")
@click.option("--from", "from_file", metavar="FILE",
              help="Replay a capture instead of tracing live (no root, no BPF); thresholds default to the capture's.")
@tracing_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def trace_cmd(ctx: click.Context, /, pids: tuple[int, ...], tids: tuple[int, ...], duration: float | None,
              force: bool, output: str | None, record_to: str | None, from_file: str | None,
              command: tuple[str, ...], **kw: Any) -> int:
    """Per-fault lifecycles and race flags, live; with -- CMD, run CMD and follow it."""
    th = thresholds(kw)
    with open_output(output) as out:
        sink = printer(kw["as_json"], out, tids=tids, flagged_only=kw["flagged"])
        if from_file is not None:
            if pids or command or record_to or duration:
                raise click.UsageError("--from replays a capture: -p, --duration, --record and a command do not apply")
            reader = Reader(from_file)
            summary = replay(reader, sink, replay_thresholds(ctx, reader.header.thresholds, kw),
                             raw_events=kw["raw_events"])
            check_whole(reader)
        else:
            src: session.Source = live_source(ctx, pids, command, duration, kw)
            if record_to is not None:
                src = Recording(src, record_to, th, force=force)
            summary = session.run(src, sink, th, raw_events=kw["raw_events"])
    return 3 if kw["fail_on_flags"] and summary["failing_flags"] else 0


def replay_thresholds(ctx: click.Context, recorded: Thresholds, kw: dict[str, Any]) -> Thresholds:
    """The capture's thresholds, except those given on the command line."""
    given = {name: kw[name] for name in ("stuck_ms", "wake_ms", "retry_threshold")
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    return dataclasses.replace(recorded, **given)


@main.command("record", context_settings={"ignore_unknown_options": False})
@click.option("-o", "--output", required=True, metavar="FILE", help="The capture file (created 0600).")
@filter_options
@tracing_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def record_cmd(ctx: click.Context, /, output: str, pids: tuple[int, ...], duration: float | None, force: bool,
               command: tuple[str, ...], **kw: Any) -> int:
    """Write a capture for a bug report (stdout stays the command's; the
    summary goes to stderr); read it with trace --from, report, export."""
    th = thresholds(kw)
    src = Recording(live_source(ctx, pids, command, duration, kw), output, th, force=force)
    summary = session.run(src, Summary(kw["as_json"], sys.stderr), th, raw_events=False)
    click.echo(f"uffdtrace: recorded {src.records} records to {output}", err=True)
    return 3 if kw["fail_on_flags"] and summary["failing_flags"] else 0


@main.command("report")
@click.argument("path", metavar="FILE")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def report_cmd(path: str, as_json: bool) -> None:
    """A capture summed up for a bug report: what was traced and what could not
    be seen, per process and uffd, log2 latency histograms per phase, the
    slowest faults, every flag with its evidence."""
    from .sinks.report import Report

    reader = Reader(path)
    report = Report()
    replay(reader, report, reader.header.thresholds, raw_events=False)
    if as_json:
        click.echo(json.dumps(report.to_json(path, reader.damage)))
    else:
        click.echo(report.render(path, reader.damage), nl=False)
    check_whole(reader)


@main.command("export")
@click.argument("path", metavar="FILE")
@click.option("--format", "fmt", type=click.Choice(["perfetto", "jsonl"]), required=True,
              help="perfetto: Chrome trace-event JSON for ui.perfetto.dev; jsonl: the JSON lines of trace -j.")
@click.option("-o", "--output", required=True, metavar="OUT", help="The file to write (created 0600).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def export_cmd(path: str, fmt: str, output: str, force: bool) -> None:
    """A capture as a Perfetto trace (a track per thread, a slice per fault
    phase, flow arrows fault -> read -> resolve -> wake, flags as instants) or
    as JSON lines."""
    from .sinks.jsonl import JsonLines
    from .sinks.perfetto import Perfetto

    reader = Reader(path)
    with create_text(output, force) as out:
        if fmt == "jsonl":
            replay(reader, JsonLines(out), reader.header.thresholds, raw_events=False)
        else:
            trace = Perfetto()
            replay(reader, trace, reader.header.thresholds, raw_events=True)
            out.write(orjson.dumps(trace.trace()).decode())
    check_whole(reader)


@main.command("dump")
@click.argument("path", metavar="FILE")
def dump_cmd(path: str) -> None:
    """A capture's header, records and trailer, one per line (for debugging the format)."""
    dump(Reader(path), sys.stdout)


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


@main.command("demo")
@json_option
@transport_option
@click.pass_context
def demo_cmd(ctx: click.Context, /, as_json: bool, transport: str) -> None:
    """Run built-in workloads (clean faults, a stuck DONTWAKE fault, a retry
    loop) under the tracer and show the lifecycles and flags it finds."""
    from .demo import Verdicts

    command = [sys.executable, "-m", "uffdtrace.workloads", "demo"]
    verdicts = Verdicts(as_json)
    verdicts.intro()
    src = LiveSource(Options(command=command, transport=transport), ctx.obj["mode"])
    summary = session.run(src, Tee(printer(as_json, sys.stdout), verdicts), Thresholds(), raw_events=False)
    if not verdicts.verdicts() or summary["command_status"] != 0:
        raise UffdtraceError(f"demo: the tracer did not find what the workloads did (workload exit status "
                             f"{summary['command_status']}, {summary['lost']} records lost)")


@main.command("ps")
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def ps_cmd(as_json: bool) -> None:
    """Every userfaultfd on the host now, from /proc (no BPF): owners, pending
    and total messages, threads blocked in handle_userfault."""
    import time

    now = time.monotonic_ns()
    found = procscan.scan(include_blocked_only=True)
    procs = found.processes
    hidden = (f"{found.hidden} processes of other users could not be looked at: run as root to see them"
              if found.hidden else "")
    if as_json:
        for p in procs:
            click.echo(json.dumps({
                "type": "process", "pid": p.pid, "comm": p.comm,
                "uffds": [{"fd": f.fd, "pending": f.pending, "total": f.total} for f in p.fds],
                "registered_ranges": len(p.ranges),
                "blocked": [{"tid": t.tid, "comm": t.comm,
                             "asleep_ms": None if t.last_ran_ns is None else round((now - t.last_ran_ns) / 1e6, 1)}
                            for t in p.blocked]}))
        click.echo(json.dumps({"type": "ps_summary", "processes": len(procs), "hidden": found.hidden}))
        return
    if not procs:
        click.echo("no userfaultfd in use (and no thread blocked in handle_userfault)"
                   + (f" among the processes visible; {hidden}" if hidden else ""))
        return
    rows = []
    for p in procs:
        fds: list[procscan.UffdFd | None] = [*p.fds] or [None]
        blocked = " ".join(f"{t.tid}:{'?' if t.last_ran_ns is None else f'{(now - t.last_ran_ns) / 1e9:.1f}s'}"
                           for t in p.blocked) or "-"
        for i, f in enumerate(fds):
            first = i == 0
            rows.append([p.pid if first else "", printable(p.comm) if first else "",
                         *(["-", "-", "-"] if f is None else [f.fd, f.pending, f.total]),
                         len(p.ranges) if first else "", blocked if first else ""])
    click.echo(tabulate(rows, headers=["PID", "COMM", "FD", "PENDING", "TOTAL", "RANGES", "BLOCKED (tid:asleep)"],
                        disable_numparse=True, colalign=("right", "left", "right", "right", "right", "right", "left")))
    if hidden:
        click.echo(f"# {hidden}")
