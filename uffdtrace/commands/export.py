"""`uffdtrace export`."""

from __future__ import annotations

import click
import orjson

from ..capture.reader import Reader, check_whole, replay
from .options import create_text


@click.command("export")
@click.argument("path", metavar="FILE")
@click.option("--format", "fmt", type=click.Choice(["perfetto", "jsonl"]), required=True,
              help="perfetto: Chrome trace-event JSON for ui.perfetto.dev; jsonl: the JSON lines of trace -j.")
@click.option("-o", "--output", required=True, metavar="OUT", help="The file to write (created 0600).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def command(path: str, fmt: str, output: str, force: bool) -> None:
    """A capture as a Perfetto trace (a track per thread, a slice per fault
    phase, flow arrows fault -> read -> resolve -> wake, flags as instants) or
    as JSON lines."""
    from ..sinks.jsonl import JsonLines
    from ..sinks.perfetto import Perfetto

    reader = Reader(path)
    with create_text(output, force) as out:
        if fmt == "jsonl":
            replay(reader, JsonLines(out), reader.header.thresholds, raw_events=False)
        else:
            trace = Perfetto()
            replay(reader, trace, reader.header.thresholds, raw_events=True)
            out.write(orjson.dumps(trace.trace()).decode())
    check_whole(reader)
