"""Hostile source tarballs are refused with the member named; good ones are unpacked."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kube_router_sctp import archive
from kube_router_sctp.errors import UnsafeSourceError


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


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)

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
