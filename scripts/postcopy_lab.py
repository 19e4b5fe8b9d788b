#!/usr/bin/env python3
"""uffdtrace meets its real clients: a QEMU post-copy live migration across
two network namespaces, and a CRIU lazy-pages restore, both traced.

`qemu`: two network namespaces joined by a veth pair (pyroute2), an optional
netem qdisc on both ends (each direction delayed by --delay ms); a source
QEMU (TCG) in one booting a small Linux guest (a Debian kernel and a busybox
initramfs built here, whose init dirties memory in a loop), an incoming QEMU
in the other; both driven over QMP. Post-copy starts as soon as the migration
does, so the destination's vCPUs fault on guest RAM the source has not sent
yet. `uffdtrace record -p` follows the destination QEMU throughout; the
capture is then replayed (`trace --from -j`) and tied to QEMU's own figures:
the source's count of page requests received (query-migrate
ram.postcopy-requests) beside the messages uffdtrace saw QEMU's fault thread
read, and the faults, resolutions, flags and latency per phase. One run per
--delay given.

`criu`: dumps a small process that filled its memory with a known pattern,
restores it with --lazy-pages and the `criu lazy-pages` daemon while
uffdtrace records host-wide, and checks the pattern after the restore; every
page the daemon placed must show as a resolved lifecycle with no flag.

Everything the lab creates (namespaces, veths, qdiscs, QEMU and CRIU
processes, temporary files) is removed on every exit path, Ctrl-C included.
Bad input (not root, no qemu/criu/busybox/kernel, a namespace name taken, a
migration that fails or times out) is one line on stderr and exit 1.

Usage (root, from the checkout; pyroute2 comes with `.venv`'s test extras):
  .venv/bin/python scripts/postcopy_lab.py qemu [--delay MS]... [--jitter MS] [--loss PCT]
                                                [--rate MBIT] [--guest-mib N] [--dirty-mib N]
                                                [--json FILE] [--keep DIR]
  .venv/bin/python scripts/postcopy_lab.py criu [--pages N] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from postcopy.common import LabError
from postcopy.criu import criu_lab
from postcopy.qemu import print_qemu_table, qemu_lab

LAB_PID = os.getpid()


def interrupted(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, in the lab itself only: pyroute2 forks
    helpers (multiprocessing) and terminates them, and a helper must never
    run the lab's cleanup (it would delete the namespaces under the lab)."""
    if os.getpid() != LAB_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


# --------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="lab", required=True)
    q = sub.add_parser("qemu", help="post-copy migration between two namespaces")
    q.add_argument("--delay", type=float, action="append", metavar="MS",
                   help="netem delay per direction (repeatable: one migration each; default 0)")
    q.add_argument("--jitter", type=float, default=0.0, metavar="MS")
    q.add_argument("--loss", type=float, default=0.0, metavar="PCT")
    q.add_argument("--rate", type=float, default=None, metavar="MBIT")
    q.add_argument("--bandwidth-mib", type=int, default=0, metavar="MIB",
                   help="QEMU's migration bandwidth limit, MiB/s (default: QEMU's own)")
    q.add_argument("--untraced", action="store_true", help="migrate without uffdtrace (the baseline of a benchmark)")
    q.add_argument("--preempt", action="store_true", help="QEMU's postcopy-preempt (a channel for requested pages)")
    q.add_argument("--guest-mib", type=int, default=256)
    q.add_argument("--dirty-mib", type=int, default=128, help="what the guest's init rewrites each round")
    q.add_argument("--kernel", help="the guest kernel (default: the newest /boot/vmlinuz-*)")
    q.add_argument("--busybox", help="a static busybox (default: busybox on PATH)")
    q.add_argument("--ns-prefix", default="uffdlab")
    q.add_argument("--boot-timeout", type=float, default=180.0)
    c = sub.add_parser("criu", help="CRIU lazy-pages restore")
    c.add_argument("--pages", type=int, default=2048)
    for p in (q, c):
        p.add_argument("--timeout", type=float, default=300.0, help="seconds for the migration or restore")
        p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
        p.add_argument("--keep", metavar="DIR", help="keep logs and captures in DIR (default: removed)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    # Local always: QEMU's QMP and CRIU's sockets cannot live on 9p (a VM's shared dir).
    work = Path(tempfile.mkdtemp(prefix="uffdlab."))
    try:
        if args.lab == "qemu":
            result: Any = qemu_lab(args, work)
            print_qemu_table(result)
        else:
            result = criu_lab(args, work)
            t = result["uffdtrace"]
            print(f"pages {result['pages']}  pattern {result['pattern']}  criu read {result['criu_faults_read']} "
                  f"faults  uffdtrace: faults {t['faults']} messages read {t['messages_read']} "
                  f"resolutions {t['resolutions']} lost {t['lost']} flags {len(t['flags'])}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
        return 0
    except LabError as exc:
        print(f"postcopy_lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("postcopy_lab: interrupted; everything the lab started was removed", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True, ignore=sockets)
        shutil.rmtree(work, ignore_errors=True)


def sockets(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not (Path(folder) / n).is_file() and not (Path(folder) / n).is_dir()]


if __name__ == "__main__":
    sys.exit(main())
