"""`uffdtrace report`."""

from __future__ import annotations

import json

import click

from ..capture.reader import Reader, check_whole, replay


@click.command("report")
@click.argument("path", metavar="FILE")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def command(path: str, as_json: bool) -> None:
    """A capture summed up for a bug report: what was traced and what could not
    be seen, per process and uffd, log2 latency histograms per phase, the
    slowest faults, every flag with its evidence."""
    from ..sinks.report import Report

    reader = Reader(path)
    report = Report()
    replay(reader, report, reader.header.thresholds, raw_events=False)
    if as_json:
        click.echo(json.dumps(report.to_json(path, reader.damage)))
    else:
        click.echo(report.render(path, reader.damage), nl=False)
    check_whole(reader)
