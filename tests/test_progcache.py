"""The cache of compiled programs, kernel symbols and offsets (no kernel needed):
what it trusts, what it refuses, and that a refused or damaged entry means
compiling afresh."""

from __future__ import annotations

import ctypes
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from uffdtrace.errors import UffdtraceError
from uffdtrace.live import cache, kallsyms, loader, progcache
from uffdtrace.live.compiled import Compiled, CompiledError, MapSpec, ctype_of


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("UFFDTRACE_CACHE", str(folder))
    return folder


def test_an_entry_reads_back_whole(cache_dir: Path) -> None:
    cache.write("program-a.json", b"payload")
    assert cache.read("program-a.json") == b"payload"
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((cache_dir / "program-a.json").stat().st_mode & 0o777) == "0o600"


def test_a_damaged_entry_is_a_miss(cache_dir: Path) -> None:
    cache.write("program-a.json", b"payload")
    path = cache_dir / "program-a.json"
    path.write_bytes(path.read_bytes().replace(b"payload", b"paYload"))
    assert cache.read("program-a.json") is None
    path.write_bytes(b"")
    assert cache.read("program-a.json") is None


@pytest.mark.parametrize("what", ["file", "folder"])
def test_an_entry_others_could_write_is_a_miss(cache_dir: Path, what: str) -> None:
    cache.write("program-a.json", b"payload")
    target = cache_dir / "program-a.json" if what == "file" else cache_dir
    target.chmod(target.stat().st_mode | 0o002)
    assert cache.read("program-a.json") is None


def test_a_symlinked_entry_is_a_miss(cache_dir: Path, tmp_path: Path) -> None:
    cache.write("program-a.json", b"payload")
    os.replace(cache_dir / "program-a.json", tmp_path / "elsewhere")
    (cache_dir / "program-a.json").symlink_to(tmp_path / "elsewhere")
    assert cache.read("program-a.json") is None


def test_old_entries_of_a_kind_are_pruned(cache_dir: Path) -> None:
    for i in range(cache.KEEP + 3):
        cache.write(f"program-{i}.json", b"x")
        os.utime(cache_dir / f"program-{i}.json", ns=(i * 10**9, i * 10**9))
    cache.write("offsets-a.json", b"y")
    names = {p.name for p in cache_dir.iterdir()}
    assert len([n for n in names if n.startswith("program-")]) == cache.KEEP
    assert "program-0.json" not in names and f"program-{cache.KEEP + 2}.json" in names and "offsets-a.json" in names


def test_an_unwritable_cache_costs_nothing_but_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UFFDTRACE_CACHE", str(tmp_path / "file" / "below"))
    (tmp_path / "file").write_text("")
    cache.write("program-a.json", b"x")  # no error
    assert cache.read("program-a.json") is None


STRUCT = ["fault_entry", [["ts", "unsigned long long"], ["comm", "char", [16]], ["bits", "unsigned int", 3],
                          ["", [["a", "int"], ["b", "unsigned int"]], "union"]], "struct"]


def test_bcc_type_descriptions_decode_to_ctypes() -> None:
    cls = ctype_of(STRUCT)
    value = cls(ts=5, comm=b"abc", bits=7)
    value.a = -1
    assert (value.ts, value.comm, value.bits, value.b) == (5, b"abc", 7, 0xFFFFFFFF)
    assert ctypes.sizeof(cls) == 8 + 16 + 4 + 4
    assert ctypes.sizeof(ctype_of(["p", [["x", "char"], ["y", "unsigned long long"]], "struct_packed"])) == 9
    with pytest.raises(CompiledError):
        ctype_of("float128")
    with pytest.raises(CompiledError):
        ctype_of(["x", [["y"]], "struct"])


def compiled_example() -> Compiled:
    # r1 = map (fd 7) as a 64-bit immediate; r0 = 0; exit
    insns = (struct.pack("<BBhi", 0x18, 0x11, 0, 7) + struct.pack("<BBhi", 0, 0, 0, 0)
             + struct.pack("<BBhi", 0xB7, 0x00, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0))
    spec = MapSpec(name="follow", type=1, key_size=4, value_size=1, max_entries=16, flags=0, fd=7,
                   key_desc=json.dumps("unsigned int"), leaf_desc=json.dumps("unsigned char"))
    return Compiled(license="GPL", kern_version=0, maps=[spec], functions={"tracepoint__a__b": insns})


def test_a_compiled_program_survives_its_file_form() -> None:
    c = compiled_example()
    assert Compiled.from_json(c.to_json()) == c


@pytest.mark.parametrize("damage", [
    lambda d: d.update(format=99),
    lambda d: d.pop("maps"),
    lambda d: d["functions"].update(x="%%%"),
    lambda d: d["functions"].update(x="AAAA"),  # 3 bytes: not whole instructions
    lambda d: d["maps"][0].update(leaf_desc='"no such type"'),
    lambda d: d["maps"][0].update(extra=1),
])
def test_a_damaged_compiled_program_is_refused(damage: Any) -> None:
    data = json.loads(compiled_example().to_json())
    damage(data)
    with pytest.raises(CompiledError):
        Compiled.from_json(json.dumps(data).encode())


def test_map_references_point_at_this_sessions_maps() -> None:
    code = compiled_example().functions["tracepoint__a__b"]
    out = bytes(loader._relocate(code, {7: 42}))
    assert struct.unpack_from("<i", out, 4)[0] == 42 and out[8:] == code[8:]
    with pytest.raises(UffdtraceError, match="unknown map"):
        loader._relocate(code, {8: 42})


def test_the_second_half_of_a_wide_immediate_is_not_read_as_an_instruction() -> None:
    # A 64-bit constant (src 0) whose upper half starts with the LD_IMM64 opcode byte.
    code = struct.pack("<BBhi", 0x18, 0x01, 0, 0x18) + struct.pack("<BBhi", 0, 0, 0, 0x1118) + b"\x95" + bytes(7)
    assert bytes(loader._relocate(code, {})) == code


def test_obtain_loads_the_cached_program_and_compiles_on_any_doubt(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []

    def compile_program(text: str, cflags: list[str]) -> Compiled:
        compiled.append(text)
        return compiled_example()

    monkeypatch.setattr(progcache, "compile_program", compile_program)
    monkeypatch.setattr(progcache, "possible_cpus", lambda: 2)
    args = ("int x;", ["-DA=1ULL"], "0.26.0", None)
    loaded, how = progcache.obtain(*args, load=lambda c: c)
    assert how == "compiled" and compiled == ["int x;"]
    loaded, how = progcache.obtain(*args, load=lambda c: c)
    assert how == "cached" and loaded == compiled_example() and len(compiled) == 1
    # Another define, another bcc: another program.
    assert progcache.obtain("int x;", ["-DA=2ULL"], "0.26.0", None, load=lambda c: c)[1] == "compiled"
    assert progcache.obtain("int x;", ["-DA=1ULL"], "0.29.1", None, load=lambda c: c)[1] == "compiled"
    # The kernel refuses the cached one: compiled again, and that one loads.
    refusals: list[Compiled] = []

    def refuse_once(c: Compiled) -> Compiled:
        if not refusals:
            refusals.append(c)
            raise loader.BpfError("loading BPF program x", 22)
        return c

    assert progcache.obtain(*args, load=refuse_once)[1] == "compiled" and len(compiled) == 4


class FakeTable:
    def __init__(self) -> None:
        self.readable = True

    def symbol(self, name: str) -> kallsyms.Symbol | None:
        return kallsyms.Symbol(name, 0x1000, 0x1100) if name.startswith("f") else None


def test_kernel_symbols_are_kept_per_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []

    def load() -> FakeTable:
        loads.append(1)
        return FakeTable()

    monkeypatch.setattr(kallsyms.Kallsyms, "load", staticmethod(load))
    first = kallsyms.BootSymbols.load()
    assert first.address("foo") == 0x1000 and "bar" not in first and first.symbol("foo") == first.symbol("foo")
    first.save()
    second = kallsyms.BootSymbols.load()
    assert second.readable and second.symbol("foo") == kallsyms.Symbol("foo", 0x1000, 0x1100) and "bar" not in second
    assert len(loads) == 1  # the second session never read the table
    assert second.address("fresh") == 0x1000 and len(loads) == 2  # a new name reads it


def test_kprobe_events_of_killed_sessions_are_the_stale_ones() -> None:
    listing = ("r16:uffdtrace/r_handle_userfault_1234 handle_userfault\n"
               "r16:uffdtrace/r_userfaultfd_ioctl_99 userfaultfd_ioctl\n"
               "p:kprobes/mine_1234 do_sys_open\n"
               "r:uffdtrace/oddname handle_userfault\n")
    assert loader.stale_kprobe_events(listing, alive=lambda pid: pid == 99) == [
        "-:uffdtrace/r_handle_userfault_1234"]
