"""Reading a capture (format.py): the header checked field by field, the
records decoded in bulk, and Replay, the Source that answers the
correlator's questions from what the live run was told. A capture comes
from someone else: no length or field in it is trusted."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, BinaryIO, TextIO

from .. import session
from ..analysis.rules import Thresholds
from ..errors import UffdtraceError
from ..events import FIELD_NAMES, RECORD, RECORD_SIZE, Event, Kind, decode_comm
from ..events import RawField as F
from ..sinks import Sink
from ..sinks.jsonl import JsonLines
from ..source import BlockedThread, Holder, RunInfo, TaskState, Totals
from .format import FOLLOWERS, FORMAT_VERSION, MAGIC, MAX_HEADER, MAX_TRAILER, PREAMBLE, TASK_STATES, Cap

CHUNK_RECORDS = 32768  # records decoded per read
_KINDS = {k.value: k for k in Kind}
_CAPS = {c.value: c for c in Cap}
Raw = tuple[Any, ...]  # one record as events.RECORD unpacks it


class CaptureError(UffdtraceError):
    pass


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) for x in v)


def _is_probe(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("probe"), str) and isinstance(v.get("attached"), bool)
            and isinstance(v.get("detail"), str) and isinstance(v.get("symbol"), str | None))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


RUN_FIELDS: dict[str, Callable[[Any], bool]] = {
    "mode": lambda v: v in ("kprobe", "tracepoint"), "transport": lambda v: isinstance(v, str),
    "kernel": lambda v: isinstance(v, str), "host": lambda v: isinstance(v, str),
    "probes": lambda v: isinstance(v, list) and all(map(_is_probe, v)), "command": _is_str_list,
    "command_pid": lambda v: v is None or _is_int(v), "pids": _is_int_list, "existing": _is_int_list,
    "degraded": _is_str_list, "sees_returns": lambda v: isinstance(v, bool), "started_ns": _is_int,
    "wall_offset_ns": _is_int,
    "output": lambda v: _is_str_list(v) and set(v) <= {"events", "flagged"},
    "program": lambda v: v in ("", "compiled", "cached"),
    "vma_lock_flag": lambda v: v is None or (_is_int(v) and v >= 0),
}
# Fields newer than the first captures of format 1.
RUN_DEFAULTS: dict[str, Any] = {"output": [], "program": "", "vma_lock_flag": None}
THRESHOLD_FIELDS: dict[str, Callable[[Any], bool]] = {
    "stuck_ms": _is_number, "wake_ms": _is_number, "retry_threshold": lambda v: _is_int(v) and v >= 2,
}
TOTALS_FIELDS: dict[str, Callable[[Any], bool]] = {
    "lost_causes": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_int(n) for k, n in v.items()),
    "filtered": _is_int, "quiet_lifecycles": _is_int, "quiet_reads": _is_int,
    "command_status": lambda v: v is None or _is_int(v), "pids_exited": lambda v: isinstance(v, bool),
}
assert set(RUN_FIELDS) == {f.name for f in fields(RunInfo)}
assert set(TOTALS_FIELDS) == {f.name for f in fields(Totals)}


def _checked(obj: Any, want: dict[str, Callable[[Any], bool]], what: str,
             defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} is not an object")
    obj = {**(defaults or {}), **obj}
    for name, ok in want.items():
        if name not in obj:
            raise ValueError(f"{what} has no {name}")
        if not ok(obj[name]):
            raise ValueError(f"{what}.{name} is invalid: {str(obj[name])[:60]!r}")
    return {name: obj[name] for name in want}


@dataclass
class Header:
    info: RunInfo
    thresholds: Thresholds
    tool_version: str


class Reader:
    """One capture file. Damage found while reading records (a cut, an
    unknown kind, a bad trailer) ends the records there: ``damage`` says
    what, and every whole record before it has been read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.damage: str | None = None
        self.trailer: dict[str, Any] | None = None
        self.records = 0
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise CaptureError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def fail(self, what: str) -> CaptureError:
        return CaptureError(f"{self.path}: {what}")

    def _read_header(self) -> Header:
        pre = self._file.read(PREAMBLE.size)
        if len(pre) < PREAMBLE.size or not pre.startswith(MAGIC):
            raise self.fail("not a uffdtrace capture (no capture header at its start)")
        _, version, rec_size, hdr_len, _ = PREAMBLE.unpack(pre)
        if version > FORMAT_VERSION:
            raise self.fail(f"capture format version {version} is newer than this uffdtrace reads "
                             f"({FORMAT_VERSION}): upgrade uffdtrace")
        if version < 1:
            raise self.fail(f"unknown capture format version {version}")
        if rec_size != RECORD_SIZE:
            raise self.fail(f"records of {rec_size} bytes, not {RECORD_SIZE}: another record ABI")
        if hdr_len > MAX_HEADER or PREAMBLE.size + hdr_len > self.size:
            raise self.fail(f"header length {hdr_len} runs past the end of the file ({self.size} bytes)")
        try:
            raw = json.loads(self._file.read(hdr_len))
            if not isinstance(raw, dict) or not isinstance(raw.get("tool_version"), str):
                raise ValueError("the header has no tool_version")
            run = _checked(raw.get("run"), RUN_FIELDS, "run", RUN_DEFAULTS)
            th = _checked(raw.get("thresholds"), THRESHOLD_FIELDS, "thresholds")
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.fail(f"damaged header: {exc}") from None
        self.data_start = PREAMBLE.size + hdr_len
        return Header(RunInfo(**run), Thresholds(**th), raw["tool_version"])

    def chunks(self) -> Iterator[list[Raw]]:
        """The records in file order, in lists of unpacked tuples."""
        self._file.seek(self.data_start)
        while True:
            data = self._file.read(CHUNK_RECORDS * RECORD_SIZE)
            whole = len(data) - len(data) % RECORD_SIZE
            out: list[Raw] = []
            kind_at = int(F.KIND)
            for rec in RECORD.iter_unpack(data[:whole]):
                kind = rec[kind_at]
                if kind == Cap.END:
                    self._read_trailer(self.data_start + (self.records + 1) * RECORD_SIZE, rec[F.LEN])
                    yield out
                    return
                if kind not in _KINDS and kind not in _CAPS:
                    self.damage = f"record {self.records} has an unknown kind ({kind:#x})"
                    yield out
                    return
                out.append(rec)
                self.records += 1
            if out:
                yield out
            if len(data) < CHUNK_RECORDS * RECORD_SIZE:
                cut = f", and {len(data) - whole} bytes of a cut record" if whole != len(data) else ""
                self.damage = (f"cut after {self.records} records{cut}, before its trailer "
                               "(the recorder was killed, or its disk filled)")
                return

    def _read_trailer(self, offset: int, length: int) -> None:
        if length > MAX_TRAILER or offset + length > self.size:
            self.damage = f"trailer length {length} runs past the end of the file"
            return
        self._file.seek(offset)
        try:
            raw = json.loads(self._file.read(length))
            if not isinstance(raw, dict) or not _is_int(raw.get("records")):
                raise ValueError("no record count")
            totals = _checked(raw.get("totals"), TOTALS_FIELDS, "totals")
        except (ValueError, UnicodeDecodeError) as exc:
            self.damage = f"damaged trailer: {exc}"
            return
        if raw["records"] != self.records:
            self.damage = f"the trailer counts {raw['records']} records, the file holds {self.records}"
        elif offset + length != self.size:
            self.damage = f"{self.size - offset - length} bytes after the trailer"
        self.trailer = {"totals": totals, "records": raw["records"]}

    def close(self) -> None:
        self._file.close()


def to_event(rec: Raw) -> Event:
    (ts_ns, kind, cpu, tgid, tid, comm, ctx, addr, length, flags, mode, ret, peer_tid, op, aux, peer2_tid,
     count) = rec
    return Event(ts_ns, _KINDS[kind], cpu, tgid, tid, decode_comm(comm), ctx, addr, length, flags, mode, ret,
                 peer_tid, op, aux, peer2_tid, count)


class Replay:
    """The Source of a replay. Its answers come in the order the live run
    asked; a question the capture holds no answer for (other thresholds make
    the watchdog ask others) gets "cannot tell", as the live source gives
    when it cannot see."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.info = reader.header.info
        self._records = itertools.chain.from_iterable(reader.chunks())
        self._next: Raw | None = None
        self._held: collections.deque[Raw] = collections.deque()  # answers after the last batch
        self._lost = 0
        self._clock = self.info.started_ns

    def _peek(self) -> Raw | None:
        if self._next is None:
            self._next = self._held.popleft() if self._held else next(self._records, None)
        return self._next

    def _take(self, cap: Cap, match: Callable[[Raw], bool] = lambda _r: True) -> Raw | None:
        rec = self._peek()
        if rec is None or rec[F.KIND] != cap or not match(rec):
            return None
        self._next = None
        return rec

    def _following(self, count: int, cap: int) -> Iterator[Raw]:
        for _ in range(count):
            rec = self._peek()
            if rec is None or rec[F.KIND] != cap:
                return
            self._next = None
            yield rec

    def start(self) -> None:
        pass

    def release_command(self) -> None:
        pass

    def blocked_before(self) -> list[BlockedThread]:
        head = self._take(Cap.BLOCKED)
        return [BlockedThread(r[F.TGID], r[F.TID], decode_comm(r[F.COMM]), r[F.TS_NS])
                for r in self._following(head[F.COUNT] if head else 0, FOLLOWERS[Cap.BLOCKED])]

    def batches(self) -> Iterator[tuple[list[Event], int]]:
        batch: list[Event] = []
        unasked: list[Raw] = []
        while (rec := self._peek()) is not None:
            self._next = None
            kind = rec[F.KIND]
            if kind == Cap.BATCH:
                self._clock = max(self._clock, rec[F.TS_NS])
                yield batch, rec[F.TS_NS]
                batch = []
            elif kind in _KINDS:
                batch.append(to_event(rec))
                self._clock = max(self._clock, rec[F.TS_NS])
            else:
                unasked.append(rec)
                unasked.extend(self._following(rec[F.COUNT], FOLLOWERS[kind]) if kind in FOLLOWERS else ())
                continue
            # Answers nobody asked for this time (other thresholds) before more records: passed over.
            unasked = []
        self._held.extend(unasked)  # after the last batch: the answers to the questions of the end
        if batch:  # cut before its end: what arrived is all there is
            yield batch, self._clock

    def lost(self) -> int:
        rec = self._take(Cap.LOST)
        if rec is not None:
            self._lost = rec[F.LEN]
        return self._lost

    def now(self) -> int:
        rec = self._take(Cap.NOW)
        return rec[F.TS_NS] if rec is not None else self._clock

    def thread_state(self, pid: int, tid: int) -> TaskState | None:
        rec = self._take(Cap.TASK, lambda r: r[F.TGID] == pid and r[F.TID] == tid)
        return TASK_STATES[rec[F.RET]] if rec is not None and 0 <= rec[F.RET] < len(TASK_STATES) else None

    def fault_page(self, tid: int) -> int | None:
        rec = self._take(Cap.FAULT_PAGE, lambda r: r[F.TID] == tid)
        return rec[F.ADDR] if rec is not None and rec[F.FLAGS] else None

    def uffd_holders(self, uffd: int) -> list[Holder] | None:
        head = self._take(Cap.HOLDERS, lambda r: r[F.ADDR] == uffd)
        if head is None:
            return None
        found = [Holder(r[F.TGID], decode_comm(r[F.COMM]), r[F.LEN], r[F.RET])
                 for r in self._following(head[F.COUNT], FOLLOWERS[Cap.HOLDERS])]
        return found if head[F.FLAGS] else None

    def folded_faults(self, include_handed: bool) -> list[Event]:
        head = self._take(Cap.FOLDED, lambda r: r[F.MODE] == include_handed)
        return [to_event(r) for r in self._following(head[F.COUNT] if head else 0, FOLLOWERS[Cap.FOLDED])]

    def adopt(self, tid: int, raised_ns: int) -> None:
        pass

    def close(self) -> Totals:
        self.reader.close()
        if self.reader.trailer is not None:
            return Totals(**self.reader.trailer["totals"])
        return Totals(lost_causes={"unknown": self._lost})


def replay(reader: Reader, sink: Sink, th: Thresholds, *, raw_events: bool) -> dict[str, Any]:
    """A session on the capture, up to its end or its damage (``reader.damage``,
    for the caller to report once the output is complete: see ``check_whole``)."""
    # Damage is found where it is read (Reader.chunks, the header and trailer
    # checks): any other exception is a defect of the correlator or a sink,
    # and must surface as one, not as a damaged capture.
    return session.run(Replay(reader), sink, th, raw_events=raw_events)


def check_whole(reader: Reader) -> None:
    """After a replay: one line naming the damage, if the capture had any."""
    if reader.damage:
        raise reader.fail(f"{reader.damage}; every whole record before it was replayed")


def dump(reader: Reader, out: TextIO) -> None:
    """Header, every record (ABI field names) and trailer, as JSON lines."""
    lines = JsonLines(out)
    h = reader.header
    lines.write({"type": "capture_header", "tool_version": h.tool_version, "run": dataclasses.asdict(h.info),
                 "thresholds": dataclasses.asdict(h.thresholds)})
    for chunk in reader.chunks():
        for rec in chunk:
            if rec[F.KIND] in _KINDS:
                lines.write(to_event(rec).to_json())
            else:
                fields_ = {n: v for n, v in zip(FIELD_NAMES, rec, strict=True) if v and n not in ("kind", "comm")}
                lines.write({"type": "capture", "kind": _CAPS[rec[F.KIND]].name.lower(), **fields_})
    lines.write({"type": "capture_trailer", **(reader.trailer or {}), "damage": reader.damage})
    reader.close()
    if reader.damage:
        raise reader.fail(reader.damage)
