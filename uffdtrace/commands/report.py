"""`uffdtrace report`."""

from __future__ import annotations

import json

import click

from ..capture.reader import Reader, check_whole, replay
from ..sinks.html import Html
from .options import create_text


@click.command("report")
@click.argument("path", metavar="FILE")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--html", "html_out", metavar="OUT", help="Write the report as one self-contained HTML page to OUT.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def command(path: str, as_json: bool, html_out: str | None, force: bool) -> None:
    """A capture summed up for a bug report: what was traced and what could not
    be seen, per process and uffd, log2 latency histograms per phase, the
    slowest faults, every flag with its evidence."""
    reader = Reader(path)
    out = create_text(html_out, force) if html_out is not None else None  # refused before any work
    report = Html()
    replay(reader, report, reader.header.thresholds, raw_events=True)  # who used each uffd
    if out is not None:
        with out:
            out.write(report.page(path, reader.damage))
    elif as_json:
        click.echo(json.dumps(report.to_json(path, reader.damage)))
    else:
        click.echo(report.render(path, reader.damage), nl=False)
    check_whole(reader)
