"""Kernel symbol table (/proc/kallsyms): which functions exist and their ranges.

Attach points are chosen by what the running kernel has, never by version.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import cache

KALLSYMS = Path("/proc/kallsyms")


@dataclass(frozen=True)
class Symbol:
    name: str
    start: int
    end: int  # address of the next symbol: the function's extent


class Symbols(Protocol):
    """What the planners ask: the whole table (Kallsyms) or a boot's answers (BootSymbols)."""

    @property
    def readable(self) -> bool: ...

    def __contains__(self, name: str) -> bool: ...

    def symbol(self, name: str) -> Symbol | None: ...

    def address(self, name: str) -> int | None: ...


class Kallsyms:
    def __init__(self, text: str) -> None:
        entries: list[tuple[int, str, str]] = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                entries.append((int(parts[0], 16), parts[1], parts[2]))
        entries.sort()
        self._addrs = [a for a, _, _ in entries]
        self._by_name: dict[str, int] = {}
        for index, (addr, _kind, name) in enumerate(entries):
            if addr:
                self._by_name.setdefault(name, index)
        self._entries = entries

    @classmethod
    def load(cls, path: Path = KALLSYMS) -> Kallsyms:
        return cls(path.read_text())

    @property
    def readable(self) -> bool:
        """False when addresses are hidden (kptr_restrict, not root)."""
        return bool(self._by_name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def symbol(self, name: str) -> Symbol | None:
        index = self._by_name.get(name)
        if index is None:
            return None
        start = self._entries[index][0]
        nxt = bisect.bisect_right(self._addrs, start)
        end = self._addrs[nxt] if nxt < len(self._addrs) else start
        return Symbol(name, start, end)

    def address(self, name: str) -> int | None:
        sym = self.symbol(name)
        return sym.start if sym else None


class BootSymbols:
    """The answers a session's planning asks of kallsyms, kept per boot and
    set of loaded modules (cache.py): reading and sorting all of
    /proc/kallsyms takes 0.15 s and 35 MiB, and a planner asks of about
    twenty names. A name never asked before reads the whole table, and the
    answer joins the cache."""

    def __init__(self, answers: dict[str, list[int] | None], name: str | None) -> None:
        self._answers = answers
        self._name = name
        self._table: Kallsyms | None = None
        self._learned = False

    @classmethod
    def load(cls) -> BootSymbols:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return cls({}, None)  # nothing tells this boot from another: no cache
        try:
            modules = " ".join(line.split(" ", 1)[0] for line in Path("/proc/modules").read_text().splitlines())
        except OSError:
            modules = ""  # a kernel without loadable modules
        name = f"kallsyms-{cache.key(boot, modules)}.json"
        try:
            answers = json.loads(cache.read(name) or b"{}")
            if not isinstance(answers, dict):
                answers = {}
        except ValueError:
            answers = {}
        return cls(answers, name)

    def _full(self) -> Kallsyms:
        if self._table is None:
            self._table = Kallsyms.load()
        return self._table

    @property
    def readable(self) -> bool:
        return bool(self._answers) or self._full().readable

    def symbol(self, name: str) -> Symbol | None:
        if name in self._answers:
            known = self._answers[name]
            return Symbol(name, int(known[0]), int(known[1])) if known else None
        found = self._full().symbol(name)
        self._answers[name] = [found.start, found.end] if found else None
        self._learned = True
        return found

    def __contains__(self, name: str) -> bool:
        return self.symbol(name) is not None

    def address(self, name: str) -> int | None:
        sym = self.symbol(name)
        return sym.start if sym else None

    def save(self) -> None:
        """Keep what was learned (only answers read with addresses: as root)."""
        if self._name and self._learned and self._full().readable:
            cache.write(self._name, json.dumps(self._answers).encode())
