"""`uffdtrace record`."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import session
from ..capture.writer import Recording
from ..sinks import Summary
from .options import filter_options, live_source, thresholds, tracing_options


@click.command("record", context_settings={"ignore_unknown_options": False})
@click.option("-o", "--output", required=True, metavar="FILE", help="The capture file (created 0600).")
@filter_options
@tracing_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx: click.Context, /, output: str, pids: tuple[int, ...], duration: float | None, force: bool,
               command: tuple[str, ...], **kw: Any) -> int:
    """Write a capture for a bug report (stdout stays the command's; the
    summary goes to stderr); read it with trace --from, report, export."""
    th = thresholds(kw)
    src = Recording(live_source(ctx, pids, command, duration, kw), output, th, force=force)
    summary = session.run(src, Summary(kw["as_json"], sys.stderr), th, raw_events=False)
    click.echo(f"uffdtrace: recorded {src.records} records to {output}", err=True)
    return 3 if kw["fail_on_flags"] and summary["failing_flags"] else 0
