"""The kernel QEMU boots: a bzImage's own kernel, taken out and decompressed on the host
(bounded), booted through PVH when it declares that entry point; anything else boots the
bzImage as before. The bzImages here are built by the test to the boot protocol's layout
(setup header, payload fields); the real kernels boot this way in the kernel-smoke and
dataplane integration tests, which pass only if the guest runs."""

from __future__ import annotations

import lzma
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from kube_router_sctp.cache import Cache
from kube_router_sctp.errors import VMError
from kube_router_sctp.vm import bootimage, decompress
from tests.support import debs


def elf(*, pvh: bool = True, machine: int = 62, entry: int = 0x1000000, flags: int = 0, padding: int = 4096) -> bytes:
    """A 64-bit x86 ELF with one PT_NOTE segment (Xen notes, PHYS32_ENTRY if ``pvh``)."""
    notes = b""
    for kind, value in ((5, 0), (18 if pvh else 9, entry)):
        name = b"Xen\0"
        desc = struct.pack("<Q", value)
        notes += struct.pack("<III", len(name), len(desc), kind) + name + desc
    phoff = 64
    note_offset = phoff + 56
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", header, 0x12, machine)
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<I", header, 0x30, flags)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(notes), len(notes), 4)
    return bytes(header) + phdr + notes + b"\0" * padding


def bzimage(payload: bytes, **layout: Any) -> bytes:
    return debs.bzimage(layout.pop("release", "6.1.0-99-amd64"), payload, **layout)


def compress(data: bytes, kind: str) -> bytes:
    if kind == "zst" and shutil.which("zstd") is None:
        pytest.skip("needs the zstd tool (apt-get install zstd)")
    return debs.compress(data, f".{kind}")


@pytest.mark.parametrize("kind", ["xz", "gz", "zst"])
def test_the_kernel_inside_a_bzimage_is_taken_out(tmp_path: Path, kind: str) -> None:
    # As Linux builds them: xz and zstd payloads end in the size, a gzip payload does not.
    kernel = elf()
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(compress(kernel, kind), size_suffix=kind != "gz"))
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
        (bzimage(compress(elf(), "xz"), release="4.19.0-27-amd64"), "predates Linux 5"),
        (bzimage(compress(elf(entry=0), "xz")), "no PVH entry point"),
        (bzimage(compress(elf(flags=0x10004), "xz")), "no PVH entry point"),
    ],
    ids=[
        "no-pvh-note",
        "not-x86",
        "old-protocol",
        "payload-outside",
        "bzip2",
        "cut-short",
        "not-bzimage",
        "linux-4.19",
        "zero-entry",
        "elf-flags",
    ],
)
def test_a_kernel_that_cannot_boot_uncompressed_boots_as_it_is(tmp_path: Path, image: bytes, why: str) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(image)
    with pytest.raises(VMError, match=why):
        bootimage.uncompressed(path)
    cache = Cache(tmp_path / "cache")
    assert bootimage.for_qemu(path, "x86_64", cache) == path  # the bzImage, as before
    assert not list(cache.root.glob("bootimage/*.elf")) and not list(cache.root.glob("bootimage/*.part"))


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


def test_a_note_segment_cannot_cost_more_than_its_bound(tmp_path: Path) -> None:
    # 64 note segments each claiming 64 MiB of zeros: skipped by size, not walked 12
    # bytes at a time (an 80 KB bzImage used to cost half an hour of CPU).
    body = bytearray(elf(padding=64 << 20))
    struct.pack_into("<HH", body, 0x36, 56, 64)
    for index in range(64):
        struct.pack_into("<IIQQQQQQ", body, 64 + 56 * index, 4, 4, 4096, 0, 0, 64 << 20, 64 << 20, 4)
    start = time.monotonic()
    assert not bootimage.has_pvh_entry(bytes(body))
    assert time.monotonic() - start < 1.0


def test_a_damaged_cached_kernel_is_made_again(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(compress(elf(), "xz")))
    cached = bootimage.for_qemu(image, "x86_64", cache)
    cached.write_bytes(b"")  # what a crash or a racing prune could leave
    assert bootimage.for_qemu(image, "x86_64", cache) == cached and cached.read_bytes() == elf()


def test_an_unwritable_cache_boots_the_bzimage(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    cache.root.mkdir(parents=True)
    (cache.root / "bootimage").write_text("a file where the directory should be")
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(compress(elf(), "xz")))
    assert bootimage.for_qemu(image, "x86_64", cache) == image


def test_a_kernel_refused_once_is_not_decompressed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(compress(elf(pvh=False), "xz")))
    assert bootimage.for_qemu(image, "x86_64", cache) == image
    monkeypatch.setattr(bootimage, "uncompressed", lambda _path: pytest.fail("decompressed again"))
    assert bootimage.for_qemu(image, "x86_64", cache) == image


@pytest.mark.parametrize("kind", ["xz", "gz"])
def test_concatenated_streams_are_read_whole(kind: str) -> None:
    # `xz -d` and `gunzip` read every stream or member; so must the module reader.
    data = compress(b"a" * 5000, kind) + compress(b"b" * 7000, kind)
    assert decompress.decompress(data, kind, 1 << 20, "m.ko") == b"a" * 5000 + b"b" * 7000


def test_an_xz_header_asking_for_a_huge_dictionary_is_refused() -> None:
    # liblzma allocates the dictionary a header names; the reader caps its memory.
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1536 << 20}]
    data = lzma.compress(b"x" * 1000, format=lzma.FORMAT_XZ, filters=filters)
    with pytest.raises(VMError, match="is damaged"):
        decompress.decompress(data, "xz", 1 << 20, "huge.ko.xz")
