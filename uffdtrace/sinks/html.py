"""`uffdtrace report --html OUT.html`: the report as one self-contained page
(inline CSS and SVG, no script, nothing fetched): the run, per process and
uffd, a timeline per faulting thread with each fault's phases (flagged
faults outlined in red, their flags and evidence shown on hover), the
latency histograms, and every flag with its evidence."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..analysis.model import Lifecycle
from ..analysis.verdicts import MEANING
from .report import PHASES, Report, uffd_users

MAX_TIMELINE = 5000  # faults drawn (all flagged ones, then the first clean ones)
WIDTH = 1100  # of the timeline's drawing area, in px
ROW = 16
LABEL = 170
COLORS = {"pickup": "#4c78a8", "service": "#54a24b", "wake": "#f58518", "resume": "#9d9d9d"}
STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.partial { background: #fde2e1; padding: 0.5em; border-left: 4px solid #d62728; }
.flagged { stroke: #d62728; stroke-width: 2; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


@dataclass
class Drawn:
    tgid: int
    tid: int
    comm: str
    spans: list[tuple[str, int, int]]  # (phase, start, end)
    flags: list[str]
    title: str


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


class Html(Report):
    """The Report, plus what the timeline draws."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn: list[Drawn] = []
        self.undrawn = 0
        self.first_ts: int | None = None
        self.last_ts = 0

    def lifecycle(self, lc: Lifecycle) -> None:
        super().lifecycle(lc)
        lat = lc.latencies()
        start = lc.t_raised if lc.t_raised is not None else lc.wait_since
        points = {"pickup": lc.t_raised, "service": lc.t_read, "wake": lc.t_resolved, "resume": lc.t_woken}
        spans = [(phase, points[phase] or start, (points[phase] or start) + ns)
                 for phase, ns in lat.items() if ns is not None]
        end = max([start, lc.ended_at, *(e for _, _, e in spans)])
        self.first_ts = start if self.first_ts is None else min(self.first_ts, start)
        self.last_ts = max(self.last_ts, end)
        if len(self.drawn) >= MAX_TIMELINE and not lc.flags:
            self.undrawn += 1
            return
        evidence = [f"{e.what}" for f in lc.flags.values() for e in f.evidence]
        title = "\n".join([f"{lc.comm} {lc.tgid}/{lc.tid} addr {lc.page:#x}" if lc.page is not None else
                           f"{lc.comm} {lc.tgid}/{lc.tid}",
                           f"{lc.state}, rounds {lc.rounds}, reads {lc.reads}",
                           *(f"{k} {v / 1000:.1f} us" for k, v in lat.items() if v is not None),
                           *(f"FLAG {name}" for name in lc.flags), *evidence])
        self.drawn.append(Drawn(lc.tgid, lc.tid, lc.comm, spans or [("pickup", start, end)], list(lc.flags), title))

    def _timeline(self) -> str:
        if not self.drawn or self.first_ts is None:
            return "<p>No fault to draw.</p>"
        t0, t1 = self.first_ts, max(self.last_ts, self.first_ts + 1)
        rows = {key: i for i, key in enumerate(sorted({(d.tgid, d.tid, d.comm) for d in self.drawn}))}

        def x(ts: int) -> float:
            return LABEL + (ts - t0) * WIDTH / (t1 - t0)

        parts = [f'<svg width="{LABEL + WIDTH + 10}" '
                 f'height="{len(rows) * ROW + 30}" role="img" aria-label="timeline">']
        for (tgid, tid, comm), i in rows.items():
            parts.append(f'<text x="4" y="{i * ROW + 12}" font-size="11">{esc(comm)} {tgid}/{tid}</text>')
        for d in sorted(self.drawn, key=lambda d: bool(d.flags)):  # flagged on top
            y = rows[(d.tgid, d.tid, d.comm)] * ROW + 2
            cls = ' class="flagged"' if d.flags else ""
            parts.append(f"<g{cls}><title>{esc(d.title)}</title>")
            for phase, a, b in d.spans:
                parts.append(f'<rect x="{x(a):.1f}" y="{y}" width="{max(1.5, x(b) - x(a)):.1f}" height="{ROW - 4}" '
                             f'fill="{COLORS[phase]}"{cls}/>')
            parts.append("</g>")
        span_ms = (t1 - t0) / 1e6
        parts.append(f'<text x="{LABEL}" y="{len(rows) * ROW + 22}" font-size="11">0 ms</text>')
        parts.append(f'<text x="{LABEL + WIDTH}" y="{len(rows) * ROW + 22}" font-size="11" text-anchor="end">'
                     f"{span_ms:.1f} ms</text></svg>")
        legend = "".join(f'<span style="background:{c}"></span>{p}' for p, c in COLORS.items())
        more = f" ({self.undrawn} clean faults beyond the first {MAX_TIMELINE} not drawn)" if self.undrawn else ""
        return f'<p class="legend">Phases:{legend}; red outline: flagged{more}</p>' + "".join(parts)

    def page(self, path: str, damage: str | None) -> str:
        data: dict[str, Any] = self.to_json(path, damage)
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>uffdtrace report: {esc(path)}</title>"
               f"<style>{STYLE}</style></head><body><h1>uffdtrace report: {esc(path)}</h1>"]
        if damage:
            out.append(f'<p class="partial">PARTIAL: {esc(damage)}; this report covers the records before it</p>')
        run, summ = data["run"], data["summary"]
        out.append(f"<p>Kernel {esc(run['kernel'])}, {esc(run['mode'])} mode on {esc(run.get('host', '?'))}; "
                   f"command {esc(' '.join(run['command']) or '-')}; {summ['lifecycles']} lifecycles, "
                   f"{summ['events']} events, {summ['lost']} lost.</p>")
        if run["degraded"]:
            out.append("<p>Could not be seen: " + "; ".join(map(esc, run["degraded"])) + "</p>")
        out.append("<h2>Per process and uffd</h2><table><tr><th>PID</th><th>COMM</th><th>UFFD</th><th>FAULTS</th>"
                   "<th>READS</th><th>ROUNDS&gt;1</th><th>FLAGGED</th><th>RESOLUTIONS</th></tr>")
        for r in data["processes"]:
            res = ", ".join(f"{k} {v}" for k, v in r["resolutions"].items()) or "-"
            out.append(f"<tr><td>{r['pid']}</td><td>{esc(r['comm'])}</td><td>{r['uffd']}</td><td>{r['faults']}</td>"
                       f"<td>{r['reads']}</td><td>{r['extra_rounds']}</td><td>{r['flagged']}</td>"
                       f"<td>{esc(res)}</td></tr>")
        out.append("</table>")
        if data["uffds"]:
            out.append("<h2>Who held each uffd</h2><table><tr><th>UFFD</th><th>USED BY</th>"
                       "<th>HELD BY WHEN STUCK</th></tr>")
            for u in data["uffds"]:
                used, held = uffd_users(u)
                out.append(f"<tr><td>{u['uffd']}</td><td>{esc(used)}</td><td>{esc(held)}</td></tr>")
            out.append("</table>")
        out.append("<h2>Timeline per faulting thread</h2>" + self._timeline())
        out.append("<h2>Latency per phase</h2>")
        for phase in PHASES:
            out.append(f"<pre>{esc(self.hist[phase].render(phase))}</pre>")
        out.append(f"<h2>Flags: {len(self.flags)}</h2>")
        for f in data["flags"]:
            lines = [f"FLAG {f['flag']} {f['comm']} {f['tgid']}/{f['tid']} state={f['state']}",
                     *(f"  {e['tid'] or ''}: {e['what']}" for e in f["evidence"]),
                     *([f"  verdict {f['verdict']}: {MEANING[f['verdict']]}"] if f["verdict"] else [])]
            out.append(f'<pre class="flag">{esc(chr(10).join(lines))}</pre>')
        out.append("</body></html>\n")
        return "".join(out)
