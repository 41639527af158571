"""Hostile source tarballs are refused with the member named; good ones are unpacked."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kube_router_sctp import archive
from kube_router_sctp.errors import UnsafeSourceError
from tests.support import hostile


def make_tar(path: Path, add: Callable[[tarfile.TarFile], None], prefix: str = "kube-router-0.3.2") -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "a" * 40}) as tar:
        root = tarfile.TarInfo(prefix)
        root.type = tarfile.DIRTYPE
        root.mode = 0o755
        tar.addfile(root)
        data = b"package main\n"
        info = tarfile.TarInfo(f"{prefix}/cmd/main.go")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        add(tar)
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b""
) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    return add


def test_good_archive_is_unpacked_and_prefix_stripped(tmp_path: Path) -> None:
    tarball = make_tar(
        tmp_path / "good.tar.gz", member("kube-router-0.3.2/docs/link.md", tarfile.SYMTYPE, "../cmd/main.go")
    )
    result = archive.extract(tarball, tmp_path / "out")
    assert (tmp_path / "out" / "cmd" / "main.go").read_text() == "package main\n"
    assert (tmp_path / "out" / "docs" / "link.md").is_symlink()
    assert result.commit == "a" * 40


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (member("kube-router-0.3.2/../../etc/cron.d/x"), "contains '..'"),
        (member("/etc/passwd"), "has an absolute path"),
        (member("kube-router-0.3.2/evil", tarfile.SYMTYPE, "/etc/shadow"), "symlink leaving the tree"),
        (member("kube-router-0.3.2/evil", tarfile.SYMTYPE, "../../../etc"), "symlink leaving the tree"),
        (member("kube-router-0.3.2/hard", tarfile.LNKTYPE, "/etc/passwd"), "hard link leaving the tree"),
        (
            member("kube-router-0.3.2/hard", tarfile.LNKTYPE, "kube-router-0.3.2/../x"),
            "hard link leaving the tree",
        ),
        (member("kube-router-0.3.2/dev/sda", tarfile.BLKTYPE), "is a device or FIFO"),
        (member("kube-router-0.3.2/dev/tty", tarfile.CHRTYPE), "is a device or FIFO"),
        (member("kube-router-0.3.2/fifo", tarfile.FIFOTYPE), "is a device or FIFO"),
    ],
)
def test_hostile_members_are_refused_by_name(tmp_path: Path, bad: Callable[[tarfile.TarFile], None], why: str) -> None:
    tarball = make_tar(tmp_path / "bad.tar.gz", bad)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeSourceError, match=f"refusing bad.tar.gz: member .* {why}"):
        archive.extract(tarball, out)
    assert not (tmp_path / "etc").exists()
    assert list(out.iterdir()) == []  # nothing written before the check


def test_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar archive")
    with pytest.raises(UnsafeSourceError, match="not a readable tar archive"):
        archive.extract(junk, tmp_path)


# -- what tarfile's own filter misses here, and damaged archives ------------------------------
def nothing_outside(tmp_path: Path) -> None:
    assert list((tmp_path / "sentinel").iterdir()) == []
    assert not list(tmp_path.rglob("evil"))


def test_realpath_overflow_bypass_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sentinel").mkdir()
    tarball = hostile.realpath_overflow_tarball(tmp_path / "poc.tar")
    dest = tmp_path / "x" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeSourceError, match="passes through the symlink 'a'"):
        archive.extract(tarball, dest)
    nothing_outside(tmp_path)


def test_kernel_package_uses_the_same_extractor(tmp_path: Path) -> None:
    from kube_router_sctp.cache import Cache
    from kube_router_sctp.vm import kernel

    (tmp_path / "sentinel").mkdir()
    data = hostile.realpath_overflow_tarball(tmp_path / "data.tar", escape_to="../../../../../../sentinel")
    package = hostile.deb(tmp_path / "linux-image-evil.deb", data)
    with pytest.raises(UnsafeSourceError, match="passes through the symlink 'a'"):
        kernel.from_deb(package, Cache(tmp_path / "cache"))
    nothing_outside(tmp_path)
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # the scratch is gone
    assert not (tmp_path / "cache" / "kernels").exists() or not list((tmp_path / "cache" / "kernels").iterdir())


def test_link_chain_tarball_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sentinel").mkdir()
    dest = tmp_path / "x" / "dest"
    dest.mkdir(parents=True)
    tarball = hostile.link_chain_tarball(tmp_path / "chain.tar.gz", chain="a/a/a/../../..")
    # tarfile's filter sees this simple chain (its realpath is short); safefs would too.
    with pytest.raises(UnsafeSourceError, match="refusing chain.tar.gz: member 'kube-router-0.3.2/b"):
        archive.extract(tarball, dest)
    nothing_outside(tmp_path)


def test_truncated_archive_is_one_line(tmp_path: Path) -> None:
    whole = make_tar(tmp_path / "whole.tar.gz", member("kube-router-0.3.2/big", data=b"x" * 200_000))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(UnsafeSourceError, match="cut.tar.gz is damaged or truncated"):
        archive.extract(cut, tmp_path / "out")


def test_member_declaring_more_bytes_than_it_holds(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("kube-router-0.3.2/main.go")
        info.size = 4096
        tar.addfile(info, io.BytesIO(b"y" * 4096))
    data = raw.getvalue()[: 512 + 100]  # the header says 4096 bytes; 100 follow
    short = tmp_path / "short.tar"
    short.write_bytes(data)
    with pytest.raises(UnsafeSourceError) as caught:
        archive.extract(short, tmp_path / "out")
    line = caught.value.one_line()
    assert "short.tar" in line and ("truncated" in line or "declares 4096 bytes but holds 100" in line), line


def test_non_utf8_member_name(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("kube-router-0.3.2/caf\xe9.go")
        tar.addfile(info, io.BytesIO(b""))
    path = tmp_path / "latin.tar"
    path.write_bytes(raw.getvalue())
    with pytest.raises(UnsafeSourceError, match="not valid UTF-8"):
        archive.extract(path, tmp_path / "out")


def test_over_long_member_name(tmp_path: Path) -> None:
    tarball = make_tar(tmp_path / "long.tar.gz", member("kube-router-0.3.2/" + "n" * 300))
    with pytest.raises(UnsafeSourceError, match="name longer than the file system allows"):
        archive.extract(tarball, tmp_path / "out")


def test_a_member_twice_is_refused(tmp_path: Path) -> None:
    tarball = make_tar(tmp_path / "twice.tar.gz", member("kube-router-0.3.2/cmd/main.go", data=b"evil"))
    with pytest.raises(UnsafeSourceError, match="appears twice"):
        archive.extract(tarball, tmp_path / "out")
