"""Capture files (README, "record"; the format: capture/format.py): `record` writes one while tracing, `trace
--from`, `report`, `export` and `dump` read it back without root or BPF.

A capture sits at the Source seam (source.Source), not behind a Sink: it
holds what the correlator consumed (the records, and the answers it got
from /proc, the BPF maps and the clock), so that a replay runs the same
correlator and rules and prints what the live run printed."""
