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

import struct
import time
from pathlib import Path

from .. import log, safefs
from ..cache import Cache, prune_recent
from ..errors import VMError
from ..treedigest import sha256_file
from .decompress import decompress

MAX_BZIMAGE = 64 << 20
MAX_VMLINUX = 512 << 20
_KEEP = 6  # uncompressed kernels kept (about 60-70 MB each)
_MAGIC = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gz", b"\x28\xb5\x2f\xfd": "zst"}
_PT_NOTE = 4
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
    with cache.lock(f"bootimage-{digest}"):
        if target.is_file():
            target.touch()  # most recently used: kept when older ones are pruned
            return target
        start = time.monotonic()
        try:
            elf = uncompressed(vmlinuz)
        except VMError as exc:
            log.info(f"booting {vmlinuz.name} compressed (about 5 s slower under TCG): {exc.message}")
            return vmlinuz
        directory.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(f".{time.monotonic_ns()}.part")
        try:
            part.write_bytes(elf)
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
        log.detail(f"{vmlinuz.name}: kernel decompressed for a PVH boot in {time.monotonic() - start:.1f}s")
    prune_recent(directory, "vmlinux-*.elf", _KEEP)
    return target


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
    setup_sectors = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    if length < 8 or start + length > len(image):
        raise VMError("its payload lies outside the file")
    payload = image[start : start + length]
    kind = next((k for magic, k in _MAGIC.items() if payload.startswith(magic)), None)
    if kind is None:
        raise VMError(f"its payload's compression ({payload[:4].hex()}) is not xz, gzip or zstd")
    # The last four bytes are the decompressed size (the kernel's own decompressor reads them).
    elf = decompress(payload[:-4], kind, MAX_VMLINUX, f"{vmlinuz.name}'s kernel")
    if not has_pvh_entry(elf):
        raise VMError("its kernel has no PVH entry point (CONFIG_PVH)")
    return elf


def has_pvh_entry(elf: bytes) -> bool:
    """A 64-bit little-endian x86 ELF whose notes include Xen's PHYS32_ENTRY (what QEMU
    needs to boot an uncompressed kernel)."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    machine = struct.unpack_from("<H", elf, 0x12)[0]
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    if machine != _EM_X86_64 or phentsize < 56 or phnum > 64 or phoff + phentsize * phnum > len(elf):
        return False
    for index in range(phnum):
        header = phoff + index * phentsize
        kind = struct.unpack_from("<I", elf, header)[0]
        offset, _vaddr, _paddr, size = struct.unpack_from("<QQQQ", elf, header + 8)
        if kind == _PT_NOTE and offset + size <= len(elf) and _has_note(elf[offset : offset + size]):
            return True
    return False


def _has_note(notes: bytes) -> bool:
    position = 0
    while position + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, position)
        name = notes[position + 12 : position + 12 + namesz]
        if name.rstrip(b"\0") == b"Xen" and kind == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        position += 12 + _aligned(namesz) + _aligned(descsz)
    return False


def _aligned(size: int) -> int:
    return (size + 3) & ~3
