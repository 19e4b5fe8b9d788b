"""`uffdtrace trace`: live, recording, or replaying a capture."""

from __future__ import annotations

from typing import Any

import click

from .. import session
from ..capture.reader import Reader, check_whole, replay
from ..capture.writer import Recording
from ..sinks import printer
from ..source import Source
from .options import filter_options, live_source, open_output, replay_thresholds, thresholds, tracing_options


@click.command("trace", context_settings={"ignore_unknown_options": False})
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
def command(ctx: click.Context, /, pids: tuple[int, ...], tids: tuple[int, ...], duration: float | None,
              force: bool, output: str | None, record_to: str | None, from_file: str | None,
              command: tuple[str, ...], **kw: Any) -> int:
    """Per-fault lifecycles and race flags, live; with -- CMD, run CMD and follow it."""
    th = thresholds(kw)
    with open_output(output) as out:
        if from_file is not None:
            if pids or command or record_to or duration:
                raise click.UsageError("--from replays a capture: -p, --duration, --record and a command do not apply")
            reader = Reader(from_file)
            # What the live run printed, unless told more: its --events and --flagged too.
            recorded = reader.header.info.output
            sink = printer(kw["as_json"], out, tids=tids, flagged_only=kw["flagged"] or "flagged" in recorded)
            summary = replay(reader, sink, replay_thresholds(ctx, reader.header.thresholds, kw),
                             raw_events=kw["raw_events"] or "events" in recorded)
            check_whole(reader)
        else:
            sink = printer(kw["as_json"], out, tids=tids, flagged_only=kw["flagged"])
            src: Source = live_source(ctx, pids, command, duration, kw)
            if record_to is not None:
                src = Recording(src, record_to, th, force=force)
            summary = session.run(src, sink, th, raw_events=kw["raw_events"])
    return 3 if kw["fail_on_flags"] and summary["failing_flags"] else 0
