"""Kernel modules for a guest: which files, in which order, decompressed.

A guest without a module index (the image's userland, a bare initramfs) loads modules
with ``insmod`` and explicit paths, so the order is computed here: dependencies first,
``pre:`` soft dependencies before the module that asks for them.

The dependency data comes from ``modules.dep`` / ``modules.softdep`` / ``modules.alias``
when the directory has them (an installed kernel). A kernel package unpacked without
running ``depmod`` has none, so the same facts are read from each module's own
``.modinfo`` ELF section (``depends=``, ``softdep=``, ``alias=``), which is where depmod
takes them from.
"""

from __future__ import annotations

import fnmatch
import io
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .. import kernelfeatures as kf
from .. import log, safefs, smoke
from ..errors import KernelUnsupportedError, VMError
from .cpio import CpioWriter
from .decompress import decompress
from .kernel import KernelFiles

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def builtin_names(modules_dir: Path) -> set[str]:
    """Module names the kernel lists as built in: ``modules.builtin`` (paths) and
    ``modules.builtin.modinfo`` (``name.key=value`` records), where present."""
    names: set[str] = set()
    listing = modules_dir / "modules.builtin"
    if listing.is_file():
        names |= {module_name(Path(line).name) for line in listing.read_text(errors="replace").split()}
    records = modules_dir / "modules.builtin.modinfo"
    if records.is_file():
        for record in records.read_bytes().split(b"\0"):
            name, dot, _ = record.partition(b".")
            if dot and name:
                names.add(module_name(name.decode(errors="replace")))
    return names


def module_name(filename: str) -> str:
    """``crc32c-intel.ko.xz`` -> ``crc32c_intel``: the kernel's name for a module file."""
    for suffix in SUFFIXES:
        if filename.endswith(suffix):
            filename = filename[: -len(suffix)]
            break
    return filename.replace("-", "_")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path  # absolute: the file under the modules directory (maybe compressed)

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith((".xz", ".zst", ".gz"))


@dataclass
class ModuleIndex:
    """The modules of one kernel: name -> file, dependencies, soft dependencies, aliases."""

    root: Path  # /lib/modules/<version>
    paths: dict[str, Path]
    builtin: set[str]
    _deps: dict[str, list[str]] = field(default_factory=dict)
    _softdeps: dict[str, list[str]] = field(default_factory=dict)
    _aliases: list[tuple[str, str]] | None = None  # (pattern, module); None = not read yet
    _from_index: bool = False

    @classmethod
    def load(cls, root: Path) -> ModuleIndex:
        if not root.is_dir():
            raise VMError(f"kernel modules directory {root} does not exist", "pass --modules /lib/modules/<version>")
        builtin = builtin_names(root)
        dep_file = root / "modules.dep"
        if dep_file.is_file():
            return cls._from_depmod(root, builtin)
        paths: dict[str, Path] = {}
        for path in sorted(root.rglob("*.ko*")):
            if path.name.endswith(SUFFIXES) and path.is_file():
                paths.setdefault(module_name(path.name), path)
        if not paths:
            raise VMError(
                f"{root} holds no kernel modules (*.ko)",
                "pass --modules the directory /lib/modules/<version> of the kernel you boot",
            )
        return cls(root, paths, builtin)

    @classmethod
    def _from_depmod(cls, root: Path, builtin: set[str]) -> ModuleIndex:
        paths: dict[str, Path] = {}
        deps: dict[str, list[str]] = {}
        for line in _text(root / "modules.dep").splitlines():
            target, sep, rest = line.partition(":")
            if not sep:
                continue
            if "\0" in line:
                raise VMError(
                    f"{root}/modules.dep has a NUL byte in a line ({line[:80]!r})",
                    "the kernel package is damaged or hostile: use the package as Debian publishes it",
                )
            if target.startswith("/") or ".." in Path(target).parts:
                raise VMError(
                    f"{root}/modules.dep names a path outside the modules directory ({target!r})",
                    "the kernel package is damaged or hostile: use the package as Debian publishes it",
                )
            name = module_name(Path(target).name)
            paths[name] = root / target
            deps[name] = [module_name(Path(dep).name) for dep in rest.split()]
        softdeps: dict[str, list[str]] = {}
        soft_file = root / "modules.softdep"
        if soft_file.is_file():
            for line in _text(soft_file).splitlines():
                words = line.split()
                if len(words) >= 3 and words[0] == "softdep":
                    softdeps[module_name(words[1])] = _pre_softdeps(" ".join(words[2:]))
        aliases: list[tuple[str, str]] = []
        alias_file = root / "modules.alias"
        if alias_file.is_file():
            for line in _text(alias_file).splitlines():
                words = line.split()
                if len(words) == 3 and words[0] == "alias":
                    aliases.append((words[1], module_name(words[2])))
        return cls(root, paths, builtin, deps, softdeps, aliases, _from_index=True)

    # -- queries ----------------------------------------------------------------------
    def deps(self, name: str) -> list[str]:
        self._read_modinfo(name)
        return self._deps.get(name, [])

    def softdeps(self, name: str) -> list[str]:
        self._read_modinfo(name)
        return self._softdeps.get(name, [])

    def lookup(self, wanted: str) -> list[str]:
        """Module names providing ``wanted`` (a module name or an alias such as
        ``crypto-crc32c``); empty when it is built in or unknown."""
        name = module_name(wanted)
        if name in self.paths:
            return [name]
        if name in self.builtin:
            return []
        matches = [module for pattern, module in self._alias_table(wanted) if fnmatch.fnmatchcase(wanted, pattern)]
        return list(dict.fromkeys(m for m in matches if m in self.paths))

    def resolve(self, wanted: Iterable[str], optional: Iterable[str] = ()) -> list[Module]:
        """Modules to load for ``wanted`` (each must exist, as a module or built in) and
        ``optional`` (skipped when absent), in a valid load order."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "active":
                raise VMError(
                    f"kernel module dependency loop: {' -> '.join((*chain, name))}",
                    "the modules directory is inconsistent; unpack the kernel package again",
                )
            state[name] = "active"
            # A soft dependency only improves things (crc32c before libcrc32c); a missing
            # one is skipped, exactly as modprobe does.
            for soft in self.softdeps(name):
                for provider in self.lookup(soft):
                    if state.get(provider) != "active":  # a soft loop is broken, not fatal
                        visit(provider, (*chain, name))
            for dep in self.deps(name):
                if dep in self.paths:
                    visit(dep, (*chain, name))
                elif dep not in self.builtin:
                    raise VMError(
                        f"kernel module {name} needs {dep}, which is not in {self.root}",
                        "pass the complete modules directory of the kernel",
                    )
            state[name] = "done"
            order.append(name)

        for item in wanted:
            providers = self.lookup(item)
            if not providers and module_name(item) not in self.builtin:
                raise VMError(
                    f"kernel module {item} is neither built into the kernel nor in {self.root}",
                    "use a kernel built with it (Debian's linux-image-amd64 has everything the smoke test needs)",
                )
            for provider in providers:
                visit(provider, ())
        for item in optional:
            for provider in self.lookup(item):
                visit(provider, ())
        return [Module(name, self.paths[name]) for name in order]

    # -- .modinfo fallback --------------------------------------------------------------
    def _read_modinfo(self, name: str) -> None:
        if self._from_index or name in self._deps or name not in self.paths:
            return
        info = modinfo(module_bytes(self.paths[name]))
        self._deps[name] = [module_name(d) for v in info.get("depends", []) for d in v.split(",") if d]
        self._softdeps[name] = [dep for v in info.get("softdep", []) for dep in _pre_softdeps(v)]

    def _alias_table(self, wanted: str) -> list[tuple[str, str]]:
        """(alias pattern, module) pairs that may provide ``wanted``. Only soft
        dependencies name aliases (``crypto-crc32c``), and reading every module's
        ``.modinfo`` means decompressing thousands of files: the modules whose file names
        share a word with the alias are read first, and everything only when none of
        them provides it. A soft dependency is optional, so a provider missed this way
        costs nothing but the optimisation it would have brought."""
        if self._aliases is not None:
            return self._aliases
        words = {w for w in re.split(r"[-_]", wanted) if len(w) > 2} - {"crypto", "alias"}
        likely = [n for n in self.paths if any(w in n for w in words)]
        table = self._read_aliases(likely)
        if any(fnmatch.fnmatchcase(wanted, pattern) for pattern, _ in table):
            return table
        self._aliases = self._read_aliases(list(self.paths))
        return self._aliases

    def _read_aliases(self, names: list[str]) -> list[tuple[str, str]]:
        table: list[tuple[str, str]] = []
        for name in names:
            path = self.paths[name]
            section = _modinfo_section(path) if path.name.endswith(".ko") else module_bytes(path)
            table.extend((alias, name) for alias in modinfo(section).get("alias", []))
        return table


def _pre_softdeps(text: str) -> list[str]:
    """``pre: a b post: c`` -> ``[a, b]``: only modules that must be loaded first."""
    result: list[str] = []
    current = ""
    for word in text.split():
        if word.endswith(":"):
            current = word[:-1]
        elif current == "pre":
            result.append(word)
    return result


# -- files ---------------------------------------------------------------------------
def _text(path: Path) -> str:
    """A depmod index as text; one that is not UTF-8 is a damaged package, not a traceback."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VMError(
            f"{path} is not UTF-8 text (byte {exc.start})", "the kernel package is damaged: download it again"
        ) from exc


# The largest module Debian ships is a few tens of MiB uncompressed: far more is a bomb.
MAX_MODULE = 256 << 20
_COMPRESSED = {".xz": "xz", ".gz": "gz", ".zst": "zst"}


def module_bytes(path: Path) -> bytes:
    """The module's ELF bytes, decompressed on the host: ``insmod`` in a minimal guest
    (busybox, or a kmod built without xz/zstd) cannot be relied on to do it."""
    name = path.name
    opened = safefs.open_regular(path)
    if opened is None:
        raise VMError(f"{path} is not a regular file", "pass a modules directory of module files")
    with opened as handle:
        data = handle.read(MAX_MODULE + 1)
    if len(data) > MAX_MODULE:
        raise VMError(
            f"{name} is larger than {MAX_MODULE >> 20} MiB", "the kernel package is damaged: download it again"
        )
    if name.endswith(".ko"):
        return data
    kind = next((k for suffix, k in _COMPRESSED.items() if name.endswith(f".ko{suffix}")), None)
    if kind is None:
        raise VMError(f"{path} is not a kernel module file", "pass a modules directory with *.ko files")
    return decompress(data, kind, MAX_MODULE, name)


def _modinfo_section(path: Path) -> bytes:
    """Just the ``.modinfo`` section of an uncompressed module (a few hundred bytes read
    instead of the whole file: the alias scan touches thousands of modules)."""
    opened = safefs.open_regular(path)
    if opened is None:
        raise VMError(f"{path} is not a regular file", "pass a modules directory of module files")
    with opened as handle:
        return _find_section(handle, ".modinfo", str(path))


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """``key=value`` pairs of a module's ``.modinfo`` section (``elf`` may be the whole
    module or the section alone)."""
    if elf[:4] == b"\x7fELF":
        elf = _find_section(io.BytesIO(elf), ".modinfo", "a kernel module")
    info: dict[str, list[str]] = {}
    for item in elf.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def _find_section(handle: BinaryIO, wanted: str, what: str) -> bytes:
    """One section of a 64-bit little-endian ELF file (the kernel's module format)."""
    header = handle.read(64)
    if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        raise VMError(f"{what} is not a 64-bit little-endian ELF file", "use an x86_64 kernel's modules")
    shoff = struct.unpack_from("<Q", header, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
    handle.seek(shoff)
    table = handle.read(shentsize * shnum)
    sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    names_offset, names_size = sections[shstrndx][4:6]
    handle.seek(names_offset)
    names = handle.read(names_size)
    for name_offset, _, _, _, offset, size in sections:
        end = names.find(b"\0", name_offset)
        if names[name_offset:end].decode(errors="replace") == wanted:
            handle.seek(offset)
            return handle.read(size)
    return b""


# The modules a guest loads from its initramfs live under ``<harness>/lib/modules/0.0-krs/``:
# a fixed name, so that no release string a package chose reaches a path or a command line
# (the guest's ``modprobe -S 0.0-krs`` reads the same directory whatever ``uname -r`` says).
INDEX_RELEASE = "0.0-krs"
# What the kernel accepts as a module's name (MODULE_NAME_LEN is 64 with the NUL and the
# pointer-sized tail), and what a guest's shell and modprobe are given.
_MODULE_NAME = re.compile(r"[A-Za-z0-9_]{1,55}")
# kmod's index format (libkmod-index.c): a big-endian header, then trie nodes whose offset
# carries what the node holds.
_INDEX_MAGIC, _INDEX_VERSION = 0xB007F457, 0x00020001
_NODE_CHILDREN, _NODE_VALUES = 0x20000000, 0x40000000


def add_to_initramfs(writer: CpioWriter, modules: list[Module], directory: str) -> list[str]:
    """Write the modules, decompressed, as ``DIR/NN-name.ko``: the names sort in load
    order, so a guest's ``for m in DIR/*.ko`` loads them correctly (busybox's static
    ``insmod``). Returns the paths."""
    width = len(str(len(modules)))
    written = []
    for number, module in enumerate(modules, 1):
        path = f"{directory}/{number:0{width}d}-{module.name}.ko"
        writer.file(path, module_bytes(module.path), mode=0o644)
        written.append("/" + path.lstrip("/"))
    return written


def add_indexed(writer: CpioWriter, modules: list[Module], directory: str) -> list[str]:
    """Write the modules, decompressed, as ``DIR/lib/modules/0.0-krs/NN/name.ko`` (``NN``
    sorts in load order, so a guest's loop over ``*/*.ko`` loads them correctly) with a
    ``modules.dep.bin`` naming each: one ``modprobe -a NAMES`` in the guest then loads them
    all, in the order given (each ``insmod`` of the image's kmod is the exec of a
    dynamically linked program, about 0.1 s under TCG). The index is written here, not by
    the host's ``depmod``: that would parse the package's module bytes, hostile input, in a
    C program running as root. Returns the modules' paths in the archive."""
    for module in modules:
        if not _MODULE_NAME.fullmatch(module.name):
            raise VMError(
                f"{module.path} is named {module.name!r}, which is no kernel module's name",
                "the kernel package is damaged or hostile: use the package as Debian publishes it",
            )
    width = len(str(len(modules)))
    base = f"{directory.strip('/')}/lib/modules/{INDEX_RELEASE}"
    written, lines = [], {}
    for number, module in enumerate(modules, 1):
        rel = f"{number:0{width}d}/{module.name}.ko"
        writer.file(f"{base}/{rel}", module_bytes(module.path), mode=0o644)
        written.append(f"/{base}/{rel}")
        # No dependencies listed: the guest names every module, dependencies first.
        lines[module.name] = f"{rel}:"
    writer.file(f"{base}/modules.dep", "".join(f"{line}\n" for line in lines.values()).encode(), mode=0o644)
    writer.file(f"{base}/modules.dep.bin", kmod_index(lines), mode=0o644)
    return written


def kmod_index(entries: dict[str, str]) -> bytes:
    """A kmod index file mapping each key to its one value: a trie with a node per
    character (no prefix nodes), children before their parent, as ``index_mm_search``
    reads it. Keys are module names (ASCII, at most 55 characters)."""
    trie: dict[int | None, object] = {}
    for key, value in entries.items():
        node = trie
        for char in key.encode("ascii"):
            node = node.setdefault(char, {})  # type: ignore[assignment]
        node[None] = value
    out = bytearray(12)

    def write(node: dict[int | None, object]) -> int:
        children = {char: write(child) for char, child in node.items() if char is not None}  # type: ignore[arg-type]
        offset, flags = len(out), 0
        if children:
            flags |= _NODE_CHILDREN
            first, last = min(children), max(children)
            out.extend(bytes((first, last)))
            for char in range(first, last + 1):
                out.extend(struct.pack(">I", children.get(char, 0)))
        if None in node:
            flags |= _NODE_VALUES
            out.extend(struct.pack(">II", 1, 0) + str(node[None]).encode() + b"\0")
        return offset | flags

    root = write(trie)
    struct.pack_into(">III", out, 0, _INDEX_MAGIC, _INDEX_VERSION, root)
    return bytes(out)


# -- from what the kernel needs to what a guest loads ------------------------------------
@dataclass(frozen=True)
class ModulePlan:
    """What a guest on one kernel loads (in order, dependencies included), and why."""

    modules: list[Module]
    verdicts: list[kf.Verdict]

    def record(self) -> dict[str, list[str]]:
        summary = kf.summary(self.verdicts)
        return {
            "options_built_in": summary["built_in"],
            "modules_needed": summary["modules"],
            "modules_loaded": [m.name for m in self.modules],
            "absent_optional": summary["absent"],
            "unknown": summary["unknown"],
        }


def plan(kernel: KernelFiles, needs: Iterable[kf.Need]) -> ModulePlan:
    """Decide each need from the kernel's config, built-in lists and module files; raise
    KernelUnsupportedError naming every required option the kernel lacks."""
    index = ModuleIndex.load(kernel.modules_dir)
    config = kf.KernelConfig.read(kernel.config) if kernel.config is not None else None
    verdicts = kf.assess(needs, config, index.builtin, set(index.paths))
    lacking = kf.lacking(verdicts)
    if lacking:
        options = "; ".join(v.evidence for v in lacking)
        raise KernelUnsupportedError(
            f"kernel {kernel.version} lacks what SCTP through IPVS needs: {options}",
            "use a kernel built with " + ", ".join(f"{v.need.option}=y or m" for v in lacking),
            smoke_class=smoke.KERNEL_LACKS,
        )
    broken = [v for v in verdicts if v.state == kf.NO_FILE and v.need.required]
    if broken:
        raise VMError(
            f"{kernel.modules_dir} is incomplete: " + "; ".join(v.evidence for v in broken),
            "pass the kernel's complete modules (linux-modules-<release> in Debian's split layout)",
        )
    for verdict in verdicts:
        if verdict.state == kf.UNKNOWN:
            log.info(f"{verdict.need.option}: no kernel config to tell; the guest will show")
    wanted = [v.need.module for v in verdicts if v.state == kf.MODULE and v.need.module]
    optional = [v.need.module for v in verdicts if v.state == kf.UNKNOWN and v.need.module]
    return ModulePlan(index.resolve(wanted, optional), verdicts)
