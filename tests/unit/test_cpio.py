"""The newc cpio writer: round trips through our reader and, when installed, GNU cpio;
and the image tar -> initramfs conversion kernel smoke mode uses."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from kube_router_sctp.vm import cpio
from kube_router_sctp.vm.kernelsmoke import add_device_nodes, add_tar
from tests.support import env


def write(build) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    with cpio.CpioWriter(buffer) as writer:
        build(writer)
    return buffer.getvalue()


def entries(data: bytes) -> dict[str, cpio.Entry]:
    return {entry.name: entry for entry in cpio.read_entries(io.BytesIO(data))}


def test_round_trip_of_every_kind() -> None:
    def build(w: cpio.CpioWriter) -> None:
        w.directory("etc", 0o755)
        w.file("etc/hostname", b"node\n", mode=0o644, uid=1, gid=2, mtime=1234)
        w.file("usr/bin/tool", io.BytesIO(b"x" * 5000), size=5000, mode=0o4755)
        w.symlink("bin", "usr/bin")
        w.device("dev/console", "c", 5, 1)
        w.device("dev/vda", "b", 254, 0)
        w.fifo("run/pipe")

    found = entries(write(build))
    assert found["etc/hostname"].data == b"node\n"
    assert (found["etc/hostname"].uid, found["etc/hostname"].gid, found["etc/hostname"].mtime) == (1, 2, 1234)
    assert found["usr/bin/tool"].data == b"x" * 5000
    assert stat.S_IMODE(found["usr/bin/tool"].mode) == 0o4755
    assert found["bin"].kind == "symlink" and found["bin"].data == b"usr/bin"
    assert found["dev/console"].kind == "char" and found["dev/console"].rdev == (5, 1)
    assert found["dev/vda"].kind == "block" and found["dev/vda"].rdev == (254, 0)
    assert found["run/pipe"].kind == "fifo"
    # The kernel creates no parents: the writer emitted them, before their children.
    names = list(found)
    for parent in ("usr", "usr/bin", "dev", "run"):
        assert found[parent].kind == "dir"
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/tool")


def test_every_entry_is_aligned_and_the_archive_ends_with_a_trailer() -> None:
    data = write(lambda w: [w.file(f"f{n}", b"a" * n) for n in range(1, 9)])
    offset = 0
    while True:
        assert offset % 4 == 0
        assert data[offset : offset + 6] == cpio.MAGIC
        namesize = int(data[offset + 94 : offset + 102], 16)
        size = int(data[offset + 54 : offset + 62], 16)
        name = data[offset + 110 : offset + 110 + namesize - 1]
        offset += 110 + namesize
        offset += -offset % 4
        offset += size + (-size % 4)
        if name == b"TRAILER!!!":
            break
    assert offset == len(data)


def test_names_are_normalized_and_cannot_escape() -> None:
    found = entries(write(lambda w: w.file("/./a//b/", b"1")))
    assert "a/b" in found
    with pytest.raises(cpio.CpioError, match="climbs out"):
        write(lambda w: w.file("a/../../etc/passwd", b"1"))


def test_a_name_written_twice_is_an_error() -> None:
    def build(w: cpio.CpioWriter) -> None:
        w.file("init", b"1")
        w.file("init", b"2")

    with pytest.raises(cpio.CpioError, match="twice"):
        write(build)


def test_a_short_stream_is_an_error() -> None:
    with pytest.raises(cpio.CpioError, match="early"):
        write(lambda w: w.file("f", io.BytesIO(b"abc"), size=10))


def test_hard_links_share_an_inode_and_carry_no_data() -> None:
    def build(w: cpio.CpioWriter) -> None:
        ino = w.allocate_ino()
        w.file("usr/bin/perl5.36", b"ELF...", ino=ino, nlink=2, mode=0o755)
        w.hardlink("usr/bin/perl", ino=ino, nlink=2, mode=0o755)

    found = entries(write(build))
    first, second = found["usr/bin/perl5.36"], found["usr/bin/perl"]
    assert first.ino == second.ino and first.nlink == second.nlink == 2
    assert first.data == b"ELF..." and second.data == b""


def test_gzip_archive_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "initrd.img"
    with cpio.open_initramfs(path, compress=True) as writer:
        writer.file("init", b"#!/bin/sh\n", mode=0o755)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    with path.open("rb") as handle:
        assert entries(handle.read())["init"].data == b"#!/bin/sh\n"


@pytest.mark.skipif(shutil.which("cpio") is None and not env.in_ci(), reason="GNU cpio is not installed")
def test_gnu_cpio_reads_the_archive(tmp_path: Path) -> None:
    def build(w: cpio.CpioWriter) -> None:
        w.file("etc/motd", b"hello\n")
        w.symlink("etc/link", "motd")
        ino = w.allocate_ino()
        w.file("bin/a", b"binary", ino=ino, nlink=2, mode=0o755)
        w.hardlink("bin/b", ino=ino, nlink=2, mode=0o755)

    archive = tmp_path / "a.cpio"
    archive.write_bytes(write(build))
    out = tmp_path / "out"
    out.mkdir()
    with archive.open("rb") as stdin:
        result = subprocess.run(
            ["cpio", "-idm", "--quiet", "--no-absolute-filenames"], stdin=stdin, cwd=out, capture_output=True
        )
    assert result.returncode == 0, result.stderr
    assert (out / "etc/motd").read_text() == "hello\n"
    assert (out / "etc/link").readlink() == Path("motd")
    assert (out / "bin/b").read_bytes() == b"binary"
    assert (out / "bin/a").stat().st_ino == (out / "bin/b").stat().st_ino


def make_tar(path: Path) -> None:
    with tarfile.open(path, "w") as archive:

        def add(name: str, kind: bytes, data: bytes = b"", **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            info.mode = int(fields.pop("mode", 0o644))  # type: ignore[call-overload]
            for key, value in fields.items():
                setattr(info, key, value)
            archive.addfile(info, io.BytesIO(data) if data else None)

        add("bin", tarfile.DIRTYPE, mode=0o755)
        add("bin/sh", tarfile.REGTYPE, b"#!shell", mode=0o755)
        add("bin/dash", tarfile.LNKTYPE, linkname="bin/sh", mode=0o755)
        add("bin/bash", tarfile.LNKTYPE, linkname="bin/sh", mode=0o755)
        add("usr/sbin/ipvsadm", tarfile.REGTYPE, b"ipvs", mode=0o755)
        add("sbin", tarfile.SYMTYPE, linkname="usr/sbin")
        add("dev", tarfile.DIRTYPE, mode=0o755)
        add("dev/console", tarfile.REGTYPE, b"")  # Docker's mount point, not a device
        add("init", tarfile.REGTYPE, b"the image's own")
        add("tmp", tarfile.DIRTYPE, mode=0o1777)


def test_image_tar_becomes_an_initramfs_tree(tmp_path: Path) -> None:
    tar = tmp_path / "rootfs.tar"
    make_tar(tar)

    def build(w: cpio.CpioWriter) -> None:
        add_tar(w, tar, skip=lambda name: name == "init" or name.startswith("dev/"))
        add_device_nodes(w)
        w.file("init", b"ours", mode=0o755)

    found = entries(write(build))
    assert found["init"].data == b"ours"
    assert found["dev/console"].kind == "char"
    assert found["sbin"].kind == "symlink" and found["sbin"].data == b"usr/sbin"
    assert stat.S_IMODE(found["tmp"].mode) == 0o1777
    sh, dash, bash = found["bin/sh"], found["bin/dash"], found["bin/bash"]
    assert sh.data == b"#!shell" and dash.data == bash.data == b""
    assert sh.ino == dash.ino == bash.ino and sh.nlink == dash.nlink == bash.nlink == 3
