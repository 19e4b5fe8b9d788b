"""`uffdtrace demo`: the built-in Python workloads (``workloads.DEMO``) under
the tracer, and whether it found what each of them does."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TextIO

from . import workloads
from .analysis.model import Flag, Lifecycle
from .sinks import Ignoring
from .sinks.jsonl import JsonLines


@dataclass(frozen=True)
class Expectation:
    what: str
    lifecycles: int
    flags: frozenset[str]
    rounds: int


def expectations() -> dict[str, Expectation]:
    """Per faulting thread name (wl-SCENARIO): what the tracer must report."""
    args = dict(workloads.DEMO)
    pages, stall, wakes = int(args["clean"]), float(args["dontwake"]), int(args["retry"])
    return {
        "wl-clean": Expectation(f"{pages} faults, each read and resolved by UFFDIO_COPY", pages, frozenset(), 1),
        "wl-dontwake": Expectation(f"resolved with DONTWAKE, woken only {stall:g} s later", 1,
                                   frozenset({"dontwake_without_wake", "never_woken"}), 1),
        "wl-retry": Expectation(f"woken {wakes} times without being resolved, then resolved", 1,
                                frozenset({"retry_loop"}), wakes + 1),
    }


class Verdicts(Ignoring):
    """Beside the printer (sinks.Tee): remembers what the tracer found, per
    thread name, and says whether it is what each workload did."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout) -> None:
        self.as_json = as_json
        self.out = out
        self.json = JsonLines(out)
        self.seen: dict[str, list[Lifecycle]] = defaultdict(list)
        self.raised: dict[str, set[str]] = defaultdict(set)

    def lifecycle(self, lc: Lifecycle) -> None:
        self.seen[lc.comm].append(lc)

    def flag(self, flag: Flag) -> None:
        self.raised[flag.comm].add(flag.name)

    def intro(self) -> None:
        if self.as_json:
            return
        self.out.write("# uffdtrace demo: built-in workloads (python -m uffdtrace.workloads demo) under the tracer\n")
        for name, exp in expectations().items():
            flags = ", ".join(sorted(exp.flags)) or "no flag"
            self.out.write(f"#   {name:<12} {exp.what}: expect {exp.lifecycles} lifecycle(s), {flags}\n")
        self.out.flush()

    def verdicts(self) -> bool:
        """Print what was found against what was expected; True when all match."""
        all_ok = True
        for name, exp in expectations().items():
            lcs = self.seen.get(name, [])
            flags = self.raised.get(name, set())
            rounds = sorted({lc.rounds for lc in lcs})
            ok = len(lcs) == exp.lifecycles and flags == exp.flags and rounds == [exp.rounds]
            all_ok &= ok
            found: dict[str, Any] = {"lifecycles": len(lcs), "flags": sorted(flags), "rounds": rounds}
            if self.as_json:
                self.json.write({"type": "demo", "scenario": name, "ok": ok, "found": found,
                                 "expected": {"lifecycles": exp.lifecycles, "flags": sorted(exp.flags),
                                              "rounds": [exp.rounds]}})
            else:
                self.out.write(f"# demo {name}: {len(lcs)} lifecycle(s), rounds {rounds}, flags "
                               f"{', '.join(sorted(flags)) or 'none'}: {'as expected' if ok else 'NOT AS EXPECTED'}\n")
        self.out.flush()
        return all_ok
