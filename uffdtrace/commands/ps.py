"""`uffdtrace ps`."""

from __future__ import annotations

import json

import click
from tabulate import tabulate

from ..escape import printable
from ..live import kernel, procscan


def holders(procs: list[procscan.UffdProcess]) -> dict[int, list[int]]:
    """uffd inode -> the pids holding a descriptor on it (a handler in
    another process, a forked child), when each uffd has an inode of its
    own (5.12+); empty when they share one and /proc cannot tell them apart."""
    if not kernel.uffd_inodes_distinct():
        return {}
    out: dict[int, list[int]] = {}
    for p in procs:
        for f in p.fds:
            if f.ino is not None and p.pid not in out.setdefault(f.ino, []):
                out[f.ino].append(p.pid)
    return out


@click.command("ps")
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def command(as_json: bool) -> None:
    """Every userfaultfd on the host now, from /proc (no BPF): owners, pending
    and total messages, threads blocked in handle_userfault."""
    import time

    now = time.monotonic_ns()
    found = procscan.scan(include_blocked_only=True)
    procs = found.processes
    hidden = (f"{found.hidden} processes of other users could not be looked at: run as root to see them"
              if found.hidden else "")
    held = holders(procs)

    def others(p: procscan.UffdProcess, f: procscan.UffdFd) -> list[int]:
        return [pid for pid in held.get(f.ino or 0, ()) if pid != p.pid]

    if as_json:
        for p in procs:
            click.echo(json.dumps({
                "type": "process", "pid": p.pid, "comm": p.comm,
                "uffds": [{"fd": f.fd, "pending": f.pending, "total": f.total, "also_held_by": others(p, f)}
                          for f in p.fds],
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
                         *(["-", "-", "-", "-"] if f is None else
                           [f.fd, f.pending, f.total, " ".join(map(str, others(p, f))) or "-"]),
                         len(p.ranges) if first else "", blocked if first else ""])
    click.echo(tabulate(rows, headers=["PID", "COMM", "FD", "PENDING", "TOTAL", "ALSO HELD BY", "RANGES",
                                           "BLOCKED (tid:asleep)"],
                        disable_numparse=True,
                        colalign=("right", "left", "right", "right", "right", "left", "right", "left")))
    if hidden:
        click.echo(f"# {hidden}")
