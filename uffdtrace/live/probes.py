"""What both probe backends share (``kprobe_mode.py``, ``tracepoint_mode.py``):
the plan of what is attached where, its per-probe status, and the BPF
source and compile flags handed to bcc. The backend interface itself
(``Backend``) is here too; ``backend(mode)`` in ``source.py`` picks one."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UffdtraceError

if TYPE_CHECKING:
    from .kallsyms import Symbols
    from .kernel import Features
    from .procscan import UffdProcess

PACKAGE = Path(__file__).resolve().parent.parent
BPF_DIR = PACKAGE / "bpf"  # installed: package data (setup.py)
if not BPF_DIR.is_dir():  # running from a source checkout
    BPF_DIR = PACKAGE.parent / "bpf"


@dataclass(frozen=True)
class Candidate:
    symbol: str
    entry_fn: str
    needs: tuple[str, ...] = ()
    why: str = ""


@dataclass
class ProbeStatus:
    name: str
    symbol: str | None
    attached: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"probe": self.name, "symbol": self.symbol, "attached": self.attached, "detail": self.detail}


@dataclass
class Plan:
    """What will be attached where, and the -D flags for the C code."""

    chosen: dict[str, Candidate] = field(default_factory=dict)
    status: list[ProbeStatus] = field(default_factory=list)
    defines: dict[str, int | None] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)  # why the mode cannot run at all


LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"$', re.M)


def cflags(defines: dict[str, int | None]) -> list[str]:
    # -w: warnings come from the kernel's own headers (often another build's,
    # see scripts/setup.sh); nothing a user can act on. Errors still show.
    flags = [f"-I{BPF_DIR}", "-w"]
    for name, value in sorted(defines.items()):
        flags.append(f"-D{name}" if value is None else f"-D{name}={value}ULL")
    return flags


def source_text(program: str) -> str:
    """The program with every local header (bpf/*.h) pasted in, each once:
    bcc generates tracepoint argument structs, and rewrites the kernel
    memory reads, only for the code of the main file it is given."""
    pasted: set[str] = set()

    def expand(name: str) -> str:
        if name in pasted:
            return ""
        pasted.add(name)
        try:
            text = (BPF_DIR / name).read_text()
        except OSError as exc:
            raise UffdtraceError(f"BPF source missing ({exc.filename}): reinstall uffdtrace") from exc
        return LOCAL_INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return expand(program)


class Backend:
    """One probe mode: what it plans on this kernel, the program it
    compiles, how it attaches, what it learns from /proc at start, and what
    the correlator can expect of its records."""

    mode: ClassVar[str]
    program: ClassVar[str]  # in bpf/
    # Records every entry into and return from handle_userfault (else: the
    # exception, the sleep and the wake-up; see lifecycle.py).
    sees_returns: ClassVar[bool]
    # Needs every uffd on the host from /proc at start (a handler may live
    # in another process than the one traced).
    learns_every_uffd: ClassVar[bool]

    def plan(self, kallsyms: Symbols, features: Features) -> Plan:
        """What to attach where; UffdtraceError when the mode cannot run."""
        raise NotImplementedError

    def degraded(self, the_plan: Plan) -> list[str]:
        """What a session in this mode cannot see on this kernel."""
        raise NotImplementedError

    def attach(self, bpf: Any, the_plan: Plan) -> None:
        """Attach what the loaded program does not attach by itself."""

    def learn(self, bpf: Any, the_plan: Plan, found: list[UffdProcess], followed: Collection[int]) -> list[int]:
        """Seed the maps with the uffds /proc shows at start (``followed``:
        the pids asked for, -p); returns their pids."""
        return []

    def unseen(self, followed: Collection[int], found: list[UffdProcess]) -> list[str]:
        """Followed processes whose faults this mode cannot see, for the
        header's ``degraded`` (``found``: /proc's uffds at start)."""
        return []

    def vma_lock_flag(self, the_plan: Plan) -> int | None:
        """FAULT_FLAG_VMA_LOCK's value where the FAULT records carry
        vm_fault.flags (0: the kernel has no per-VMA locks); None when this
        mode's records cannot tell which lock a fault ran under."""
        return None

    def uffd_inode(self, bpf: Any, the_plan: Plan, uffd: int) -> int | None:
        """The inode /proc shows for the uffd the kernel side calls ``uffd``; None when unknown."""
        return None
