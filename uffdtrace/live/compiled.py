"""A BPF program as bcc compiles it (``Compiled``): each function's bytecode
and each map's shape. bcc compiles once; ``loader.py`` loads the result, and
``progcache.py`` keeps it so that the next session loads without compiling
(bcc has no cache of its own: iovisor/bcc #534, #3120).

bcc creates the maps while it compiles and writes their fds into the
bytecode; each map's fd is kept so that the loader can point those
references at the maps it creates. The maps bcc made are released with its
module: nothing it compiled is ever attached.
"""

from __future__ import annotations

import base64
import ctypes
import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = 1  # of to_json: bump when its fields change

_SCALARS: dict[str, Any] = {
    "_Bool": ctypes.c_bool, "char": ctypes.c_char, "unsigned char": ctypes.c_ubyte,
    "signed char": ctypes.c_byte, "short": ctypes.c_short, "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int, "unsigned int": ctypes.c_uint, "long": ctypes.c_long, "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong, "unsigned long long": ctypes.c_ulonglong,
    "__int128": ctypes.c_int64 * 2, "unsigned __int128": ctypes.c_uint64 * 2,
}


class CompiledError(ValueError):
    """A compiled program's description is not one this version understands."""


def ctype_of(desc: Any) -> Any:
    """The ctypes type for bcc's JSON description of a map's key or value
    type: a scalar's name, or [name, [fields], "struct"|"union"|"struct_packed"],
    a field being [name, type], [name, type, [count]] or [name, type, bits]."""
    if isinstance(desc, str):
        if desc not in _SCALARS:
            raise CompiledError(f"unknown scalar type {desc!r}")
        return _SCALARS[desc]
    if not isinstance(desc, list) or len(desc) < 2 or not isinstance(desc[1], list):
        raise CompiledError(f"cannot decode type {desc!r}")
    fields: list[tuple[Any, ...]] = []
    anonymous: list[str] = []
    for member in desc[1]:
        if not isinstance(member, list) or len(member) not in (2, 3):
            raise CompiledError(f"cannot decode member {member!r}")
        name = member[0]
        if len(member) == 2:
            fields.append((name, ctype_of(member[1])))
        elif isinstance(member[2], list):
            fields.append((name, ctype_of(member[1]) * int(member[2][0])))
        elif isinstance(member[2], int):
            fields.append((name, ctype_of(member[1]), member[2]))
        elif member[2] in ("struct", "union", "struct_packed"):
            if not name:
                name = f"__anon{len(anonymous)}"
                anonymous.append(name)
            fields.append((name, ctype_of(member)))
        else:
            raise CompiledError(f"cannot decode member {member!r}")
    kind = desc[2] if len(desc) > 2 else "struct"
    base = ctypes.Union if kind == "union" else ctypes.Structure
    body: dict[str, Any] = {"_anonymous_": anonymous, "_fields_": fields}
    if kind == "struct_packed":
        body["_pack_"] = 1
    return type(str(desc[0]) or "anon", (base,), body)


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int  # enum bpf_map_type
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    fd: int  # what bcc's bytecode calls it
    key_desc: str  # bcc's JSON description of the key type
    leaf_desc: str

    def key_ctype(self) -> Any:
        return ctype_of(json.loads(self.key_desc))

    def leaf_ctype(self) -> Any:
        return ctype_of(json.loads(self.leaf_desc))


@dataclass
class Compiled:
    license: str
    kern_version: int
    maps: list[MapSpec] = field(default_factory=list)
    functions: dict[str, bytes] = field(default_factory=dict)  # name -> bytecode

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "license": self.license, "kern_version": self.kern_version,
            "maps": [asdict(m) for m in self.maps],
            "functions": {name: base64.b64encode(code).decode() for name, code in self.functions.items()},
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Compiled:
        try:
            data = json.loads(raw)
            if data["format"] != FORMAT:
                raise CompiledError(f"format {data['format']}, not {FORMAT}")
            out = cls(license=str(data["license"]), kern_version=int(data["kern_version"]),
                      maps=[MapSpec(**m) for m in data["maps"]],
                      functions={str(k): base64.b64decode(v, validate=True) for k, v in data["functions"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CompiledError(f"damaged compiled program: {exc}") from exc
        for code in out.functions.values():
            if not code or len(code) % 8:
                raise CompiledError("damaged compiled program: bytecode is not whole instructions")
        for m in out.maps:
            m.key_ctype(), m.leaf_ctype()  # every type decodes
        return out


def _libbcc() -> Any:
    """bcc's C library, with the prototypes its Python binding leaves out."""
    from bcc.libbcc import lib  # imported only to compile: it maps LLVM

    size_t, char_p, void_p = ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
    for name, restype in (("bpf_num_tables", size_t), ("bpf_table_name", char_p), ("bpf_table_fd_id", ctypes.c_int),
                          ("bpf_table_key_size_id", size_t), ("bpf_table_leaf_size_id", size_t),
                          ("bpf_table_key_desc_id", char_p), ("bpf_table_leaf_desc_id", char_p)):
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = [void_p] if name == "bpf_num_tables" else [void_p, size_t]
    return lib


def compile_program(text: str, cflags: list[str]) -> Compiled:
    """Compile with bcc and take what it produced; raises bcc's bare
    Exception with its message when clang refuses the program."""
    lib = _libbcc()
    flags = (ctypes.c_char_p * len(cflags))(*(f.encode() for f in cflags))
    module = lib.bpf_module_create_c_from_string(text.encode(), 0, flags, len(cflags), True, None)
    if not module:
        raise Exception("Failed to compile BPF module <text>")  # bcc's own words, as BPF() raises them
    try:
        out = Compiled(license=lib.bpf_module_license(module).decode(),
                       kern_version=int(lib.bpf_module_kern_version(module)))
        for i in range(lib.bpf_num_tables(module)):
            out.maps.append(MapSpec(
                name=lib.bpf_table_name(module, i).decode(), type=lib.bpf_table_type_id(module, i),
                key_size=lib.bpf_table_key_size_id(module, i), value_size=lib.bpf_table_leaf_size_id(module, i),
                max_entries=lib.bpf_table_max_entries_id(module, i), flags=lib.bpf_table_flags_id(module, i),
                fd=lib.bpf_table_fd_id(module, i), key_desc=lib.bpf_table_key_desc_id(module, i).decode(),
                leaf_desc=lib.bpf_table_leaf_desc_id(module, i).decode()))
        for i in range(lib.bpf_num_functions(module)):
            name = lib.bpf_function_name(module, i)
            start, size = lib.bpf_function_start(module, name), lib.bpf_function_size(module, name)
            out.functions[name.decode()] = ctypes.string_at(start, size)
        return out
    finally:
        lib.bpf_module_destroy(module)
