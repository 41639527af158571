"""The kernel file QEMU boots: an x86 bzImage's own kernel, decompressed once on the host.

Under TCG a bzImage spends about five seconds decompressing itself before the kernel's
first line (measured: 6.2 s to ``Linux version`` for Debian's 6.1 bzImage, 0.9 s for the
same kernel handed over uncompressed). QEMU boots an uncompressed x86 kernel (an ELF
``vmlinux``) through the PVH entry point when the kernel declares one
(``CONFIG_PVH=y``, a Xen ``PHYS32_ENTRY`` ELF note), which Debian's amd64 kernels do.

So for an x86 kernel the compressed payload is taken out of the bzImage (its setup
header says where: ``payload_offset``/``payload_length``, boot protocol 2.08 and later),
decompressed with a bound (xz, gzip or zstd; :mod:`.decompress`), checked to be a 64-bit
x86 ELF with a PVH note, and cached under the bzImage's sha256. Anything else — an arm64
kernel (QEMU unpacks those itself), an old boot protocol, another compression, no PVH
note, a damaged payload — boots the bzImage as before, with one line saying why.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import time
from pathlib import Path

from .. import log, safefs
from ..cache import Cache, prune_recent
from ..errors import VMError
from ..treedigest import sha256_file
from .decompress import decompress
from .kernel import bzimage_version

MAX_BZIMAGE = 64 << 20
MAX_VMLINUX = 512 << 20
_KEEP = 6  # uncompressed kernels kept (about 60-70 MB each)
_MAGIC = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gz", b"\x28\xb5\x2f\xfd": "zst"}
_PT_NOTE = 4
_MAX_NOTES = 64 << 10  # a kernel's notes are a few hundred bytes
_PVH_SINCE = 5
_RULES = 1  # the version of what decides a refusal: a change here retries refused kernels
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_EM_X86_64 = 62


def for_qemu(vmlinuz: Path, arch: str, cache: Cache) -> Path:
    """The file to pass to ``-kernel``: the cached uncompressed kernel where it can boot
    through PVH, else ``vmlinuz`` itself."""
    if arch != "x86_64":
        return vmlinuz
    digest = sha256_file(vmlinuz)
    directory = cache.root / "bootimage"
    target = directory / f"vmlinux-{digest}.elf"
    refused = directory / f"vmlinux-{digest}-{_RULES}.refused"
    with cache.lock(f"bootimage-{digest}"):
        if _reusable(target):
            return target
        if refused.is_file():  # decided before: not worth decompressing again
            with contextlib.suppress(OSError):
                why = refused.read_text(errors="replace")[:300].strip()
                log.info(f"booting {vmlinuz.name} compressed (about 5 s slower under TCG): {why}")
            return vmlinuz
        for stale in directory.glob(f"vmlinux-{digest}.*.part"):  # a killed run's; the lock is ours
            stale.unlink(missing_ok=True)
        start = time.monotonic()
        try:
            elf = uncompressed(vmlinuz)
        except VMError as exc:
            log.info(f"booting {vmlinuz.name} compressed (about 5 s slower under TCG): {exc.message}")
            with contextlib.suppress(OSError):
                directory.mkdir(parents=True, exist_ok=True)
                refused.write_text(exc.message + "\n")
            return vmlinuz
        try:
            _store(elf, target)
        except OSError as exc:  # a full disk, an unwritable cache: boot as before
            log.info(f"booting {vmlinuz.name} compressed: cannot cache its kernel ({exc.strerror or exc})")
            return vmlinuz
        log.detail(f"{vmlinuz.name}: kernel decompressed for a PVH boot in {time.monotonic() - start:.1f}s")
    prune_recent(directory, "vmlinux-*.elf", _KEEP)
    prune_recent(directory, "vmlinux-*.refused", _KEEP * 4)
    return target


def _reusable(target: Path) -> bool:
    """A cached kernel that is still there (marked most recently used, without ever
    creating an empty file) and still an ELF with its PVH note."""
    try:
        os.utime(target)
        with target.open("rb") as handle:
            elf = handle.read(MAX_VMLINUX + 1)
    except OSError:
        return False
    if len(elf) <= MAX_VMLINUX and has_pvh_entry(elf):
        return True
    target.unlink(missing_ok=True)  # damaged (a crash mid-write on another filesystem)
    return False


def _store(elf: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(f".{time.monotonic_ns()}.part")
    try:
        with part.open("wb") as handle:
            handle.write(elf)
            handle.flush()
            os.fsync(handle.fileno())
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)


def uncompressed(vmlinuz: Path) -> bytes:
    """The ELF kernel inside an x86 bzImage, if it can boot through PVH; VMError saying why not."""
    opened = safefs.open_regular(vmlinuz)
    if opened is None:
        raise VMError(f"{vmlinuz} is not a regular file", "pass a vmlinuz file")
    with opened as handle:
        image = handle.read(MAX_BZIMAGE + 1)
    if len(image) > MAX_BZIMAGE or len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise VMError("not a bzImage of a size this tool reads")
    protocol = struct.unpack_from("<H", image, 0x206)[0]
    if protocol < 0x208:
        raise VMError(f"boot protocol {protocol >> 8}.{protocol & 0xFF} has no payload fields")
    release = bzimage_version(vmlinuz) or ""
    major = re.match(r"(\d+)\.", release)
    if major is None or int(major.group(1)) < _PVH_SINCE:
        # 4.11-4.20 enter as a Xen guest through PVH whatever the hypervisor: not under QEMU.
        raise VMError(f"kernel {release or '(no release)'} predates Linux {_PVH_SINCE}'s PVH boot outside Xen")
    setup_sectors = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    if length < 8 or start + length > len(image):
        raise VMError("its payload lies outside the file")
    payload = image[start : start + length]
    kind = next((k for magic, k in _MAGIC.items() if payload.startswith(magic)), None)
    if kind is None:
        raise VMError(f"its payload's compression ({payload[:4].hex()}) is not xz, gzip or zstd")
    # xz and zstd payloads end in the decompressed size (the kernel's own decompressor
    # reads it); a gzip payload is a plain gzip file, whose trailer holds its size.
    body = payload if kind == "gz" else payload[:-4]
    elf = decompress(body, kind, MAX_VMLINUX, f"{vmlinuz.name}'s kernel")
    if not has_pvh_entry(elf):
        raise VMError("its kernel has no PVH entry point (CONFIG_PVH)")
    return elf


def has_pvh_entry(elf: bytes) -> bool:
    """A 64-bit little-endian x86 ELF that QEMU boots through PVH: no flags QEMU refuses,
    and a note segment (small, 4- or 8-aligned, inside the file) whose first note of type
    PHYS32_ENTRY, read as QEMU reads it, names a non-zero entry point. Only the program
    headers and note segments are read, so a few bytes of header cannot cost more."""
    view = memoryview(elf)
    if len(view) < 64 or bytes(view[:4]) != b"\x7fELF" or view[4] != 2 or view[5] != 1:
        return False
    machine = struct.unpack_from("<H", view, 0x12)[0]
    flags = struct.unpack_from("<I", view, 0x30)[0]
    phoff = struct.unpack_from("<Q", view, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", view, 0x36)
    if machine != _EM_X86_64 or flags or phentsize < 56 or phnum > 64 or phoff + phentsize * phnum > len(view):
        return False
    for index in range(phnum):
        header = phoff + index * phentsize
        kind = struct.unpack_from("<I", view, header)[0]
        offset, _vaddr, _paddr, size, _memsz, align = struct.unpack_from("<QQQQQQ", view, header + 8)
        if kind != _PT_NOTE or align not in (4, 8) or size > _MAX_NOTES or offset + size > len(view):
            continue
        entry = _phys32_entry(view[offset : offset + size], align)
        if entry is not None:
            return entry != 0
    return False


def _phys32_entry(notes: memoryview, align: int) -> int | None:
    """The entry point of the first PHYS32_ENTRY note (whatever its name, as QEMU takes
    it), or None; every note must lie inside the segment."""
    position = 0
    while position + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, position)
        desc = position + 12 + _aligned(namesz, align)
        end = desc + _aligned(descsz, align)
        if end > len(notes):
            return None
        if kind == _XEN_ELFNOTE_PHYS32_ENTRY:
            if descsz == 8:
                return int(struct.unpack_from("<Q", notes, desc)[0])
            return int(struct.unpack_from("<I", notes, desc)[0]) if descsz == 4 else 0
        position = end
    return None


def _aligned(size: int, align: int) -> int:
    return (size + align - 1) & ~(align - 1)
