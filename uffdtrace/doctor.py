"""`uffdtrace doctor`: what this host offers and what each mode would attach."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UffdtraceError
from .live import kernel, kprobe_mode, offsets, source, tracepoint_mode
from .live.btf import BtfError
from .live.kallsyms import Kallsyms


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)
    modes: dict[str, str | None] = field(default_factory=dict)  # mode -> None if usable, else why not
    probes: list[dict[str, Any]] = field(default_factory=list)
    tracepoint_caps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, key: str, value: str) -> None:
        self.lines.append((key, value))

    @property
    def usable(self) -> list[str]:
        return [m for m, why in self.modes.items() if why is None]


def run() -> Report:
    rep = Report()
    kernel.ensure_tracefs()
    feats = kernel.probe()
    rep.add("kernel", feats.release)
    rep.add("root", "yes" if feats.root else "no")
    rep.add("BTF", "yes (/sys/kernel/btf/vmlinux)" if feats.btf else "no")
    rep.add("kprobes", "yes" if feats.kprobes else "no (no kprobe PMU / kprobe_events)")
    rep.add("fentry", "not used (kprobes are; fentry needs a trampoline some kernels forbid)")
    rep.add("tracepoints", f"yes ({feats.tracefs})" if feats.tracefs else "no tracefs mounted")
    if feats.headers is None:
        rep.add("headers", "missing: run scripts/setup.sh")
    else:
        match = "match the kernel" if feats.headers_match else "DO NOT match the kernel (struct reads come from BTF)"
        rep.add("headers", f"{feats.headers_target} ({match})")
    rep.add("bcc", feats.bcc_version or f"missing ({feats.bcc_error})")

    try:
        kallsyms: Kallsyms | None = Kallsyms.load()
    except OSError as exc:
        kallsyms = None
        rep.add("kallsyms", f"unreadable: {exc}")
    rep.modes["kprobe"] = _kprobe_mode(rep, feats, kallsyms)
    rep.modes["tracepoint"] = _tracepoint_mode(rep, feats, kallsyms)
    return rep


def _environment_problem(feats: kernel.Features, mode: str) -> str | None:
    try:
        source.check_environment(feats, mode)
    except UffdtraceError as exc:
        return str(exc)
    return None


def _kprobe_mode(rep: Report, feats: kernel.Features, kallsyms: Kallsyms | None) -> str | None:
    why = _environment_problem(feats, "kprobe")
    if kallsyms is None:
        return why or "cannot read /proc/kallsyms"
    try:
        member_offsets = offsets.load() if feats.btf else {}
    except BtfError as exc:
        return why or f"cannot read BTF: {exc}"
    if not kallsyms.readable:
        why = why or "kallsyms addresses hidden: run as root"
    the_plan = kprobe_mode.plan(kallsyms, member_offsets)
    rep.probes = [s.to_json() for s in the_plan.status]
    if "fault" not in the_plan.chosen:
        why = why or "handle_userfault not in kallsyms (CONFIG_USERFAULTFD off?)"
    rep.add("transport", "ringbuf" if "bpf_ringbuf_output" in kallsyms else "perf buffer")
    return why


def _tracepoint_mode(rep: Report, feats: kernel.Features, kallsyms: Kallsyms | None) -> str | None:
    why = _environment_problem(feats, "tracepoint")
    if feats.tracefs is None or kallsyms is None:
        return why or "cannot read /proc/kallsyms"
    the_plan = tracepoint_mode.tracepoint_plan(kallsyms, feats.tracefs, feats.btf)
    rep.tracepoint_caps = [s.to_json() for s in the_plan.status]
    return why or tracepoint_mode.tracepoint_mode_unusable(the_plan)


def render(rep: Report) -> str:
    width = max(len(k) for k, _ in rep.lines)
    out = [f"{k:<{width}}  {v}" for k, v in rep.lines]
    out.append("")
    out.append("kprobe-mode attach points:")
    for p in rep.probes:
        state = "ok  " if p["symbol"] else "MISS"
        out.append(f"  {state} {p['probe']:<14} {p['symbol'] or '-':<28} {p['detail']}")
    if rep.tracepoint_caps:
        out.append("")
        out.append("tracepoint-mode capabilities:")
        for p in rep.tracepoint_caps:
            out.append(f"  {'ok  ' if p['attached'] else 'MISS'} {p['probe']:<14} {p['detail']}")
        out.append(f"  not visible in this mode: {', '.join(tracepoint_mode.TRACEPOINT_DEGRADED)}")
    out.append("")
    for mode, why in rep.modes.items():
        out.append(f"mode {mode}: {'usable' if why is None else 'unusable: ' + why}")
    return "\n".join(out)
