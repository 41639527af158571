"""The kernel QEMU boots: a bzImage's own kernel, taken out and decompressed on the host
(bounded), booted through PVH when it declares that entry point; anything else boots the
bzImage as before. The bzImages here are built by the test to the boot protocol's layout
(setup header, payload fields); the real kernels boot this way in the kernel-smoke and
dataplane integration tests, which pass only if the guest runs."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp.cache import Cache
from kube_router_sctp.errors import VMError
from kube_router_sctp.vm import bootimage, decompress


def elf(*, pvh: bool = True, machine: int = 62, padding: int = 4096) -> bytes:
    """A 64-bit x86 ELF with one PT_NOTE segment (Xen notes, PHYS32_ENTRY if ``pvh``)."""
    notes = b""
    for kind in (5, 18 if pvh else 9):
        name = b"Xen\0"
        desc = b"\0" * 8
        notes += struct.pack("<III", len(name), len(desc), kind) + name + desc
    phoff = 64
    note_offset = phoff + 56
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", header, 0x12, machine)
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(notes), len(notes), 4)
    return bytes(header) + phdr + notes + b"\0" * padding


def bzimage(payload: bytes, *, protocol: int = 0x20F, setup_sectors: int = 3, length: int | None = None) -> bytes:
    """A bzImage: boot sector and setup (``setup_sectors`` + 1 sectors) with a setup
    header, then the protected-mode part holding ``payload`` plus its 4-byte size."""
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    body = b"\0" * 256 + payload + struct.pack("<I", 0)
    struct.pack_into("<II", setup, 0x248, 256, len(payload) + 4 if length is None else length)
    return bytes(setup) + body


def compress(data: bytes, kind: str) -> bytes:
    if kind == "xz":
        return lzma.compress(data, check=lzma.CHECK_CRC32)
    if kind == "gz":
        return gzip.compress(data)
    tool = shutil.which("zstd")
    if tool is None:
        pytest.skip("needs the zstd tool (apt-get install zstd)")
    return subprocess.run([tool, "-c", "-q"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("kind", ["xz", "gz", "zst"])
def test_the_kernel_inside_a_bzimage_is_taken_out(tmp_path: Path, kind: str) -> None:
    kernel = elf()
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(compress(kernel, kind)))
    assert bootimage.uncompressed(image) == kernel


def test_the_uncompressed_kernel_is_cached_and_booted(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(compress(elf(), "xz")))
    first = bootimage.for_qemu(image, "x86_64", cache)
    assert first != image and first.read_bytes() == elf() and first.parent == cache.root / "bootimage"
    assert bootimage.for_qemu(image, "x86_64", cache) == first
    assert not list(first.parent.glob("*.part"))


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (bzimage(compress(elf(pvh=False), "xz")), "no PVH entry point"),
        (bzimage(compress(elf(machine=183), "xz")), "no PVH entry point"),
        (bzimage(compress(elf(), "xz"), protocol=0x207), "boot protocol 2.7 has no payload fields"),
        (bzimage(compress(elf(), "xz"), length=1 << 30), "payload lies outside the file"),
        (bzimage(b"BZh91AY&SY" + b"\0" * 64), "is not xz, gzip or zstd"),
        (bzimage(compress(elf(), "xz")[:-40]), "is damaged"),
        (b"MZ" + b"\0" * 4096, "not a bzImage"),
    ],
    ids=["no-pvh-note", "not-x86", "old-protocol", "payload-outside", "bzip2", "cut-short", "not-bzimage"],
)
def test_a_kernel_that_cannot_boot_uncompressed_boots_as_it_is(tmp_path: Path, image: bytes, why: str) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(image)
    with pytest.raises(VMError, match=why):
        bootimage.uncompressed(path)
    cache = Cache(tmp_path / "cache")
    assert bootimage.for_qemu(path, "x86_64", cache) == path  # the bzImage, as before
    assert not (cache.root / "bootimage").exists() or not any((cache.root / "bootimage").iterdir())


def test_an_arm64_kernel_is_handed_to_qemu_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"\x1f\x8b" + b"\0" * 64)
    assert bootimage.for_qemu(path, "aarch64", Cache(tmp_path / "cache")) == path


@pytest.mark.parametrize("kind", ["xz", "gz", "zst"])
def test_decompression_stops_at_its_limit(kind: str) -> None:
    # 64 MiB of zeros compress to a few kilobytes: a limit of 1 MiB must refuse them
    # without ever holding more than the limit (plus one byte).
    bomb = compress(b"\0" * (64 << 20), kind)
    assert len(bomb) < 1 << 20
    with pytest.raises(VMError, match="decompresses to more than 1 MiB"):
        decompress.decompress(bomb, kind, 1 << 20, "bomb.ko.xz")


def test_a_damaged_zstd_stream_is_one_line() -> None:
    data = compress(b"x" * 100_000, "zst")
    with pytest.raises(VMError, match=r"sctp\.ko\.zst is damaged"):
        decompress.decompress(data[:-20] + b"\xff" * 20, "zst", 1 << 20, "sctp.ko.zst")
