"""`verify --manifests DIR` reads the user's directory as every input is read, before
anything boots: regular files only, no link out, bounded in depth, count and bytes; what
kubectl reads is the copy made then. Before, kubectl was handed the directory itself (a
link to /dev/zero took it past a gigabyte of memory; a FIFO blocked it for 120 s; a deep
tree was a RecursionError)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kube_router_sctp import verify
from kube_router_sctp.errors import ConfigError

SERVICE = b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"


def test_the_manifests_are_copied_and_only_manifest_files_taken(tmp_path: Path) -> None:
    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    (src / "a.yaml").write_bytes(SERVICE)
    (src / "sub" / "b.json").write_bytes(b"{}")
    (src / "README.md").write_text("not a manifest")
    (src / "link.yml").symlink_to(src / "a.yaml")  # a link inside the directory is fine
    out = verify.read_manifests(src, tmp_path / "copy")
    copied = sorted(p.name for p in out.iterdir())
    assert copied == ["0000.yaml", "0001.yml", "0002.json"]
    assert (out / "0000.yaml").read_bytes() == SERVICE


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda d: (d / "zero.yaml").symlink_to("/dev/zero"), "links out of"),
        (lambda d: os.mkfifo(d / "fifo.yaml"), "is not a regular file"),
        (lambda d: (d / "out.yaml").symlink_to("/etc/hostname"), "links out of"),
        (lambda d: (d / "big.yaml").write_bytes(b"#" * ((16 << 20) + 1)), "more than 16 MiB"),
    ],
    ids=["dev-zero", "fifo", "link-out", "too-big"],
)
def test_a_hostile_manifest_directory_is_refused_before_anything_boots(tmp_path: Path, make, why: str) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "m"
    src.mkdir()
    (src / "a.yaml").write_bytes(SERVICE)
    make(src)
    with pytest.raises(ConfigError, match=why):
        verify.read_manifests(src, tmp_path / "copy")


def test_a_deep_tree_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    deep = tmp_path / "m"
    path = deep
    for _ in range(140):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "a.yaml").write_bytes(SERVICE)
    with pytest.raises(ConfigError, match="nests more than 128"):
        verify.read_manifests(deep, tmp_path / "copy")


def test_a_link_loop_is_walked_once(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "a.yaml").write_bytes(SERVICE)
    (src / "loop").symlink_to(src)
    assert [p.name for p in verify.read_manifests(src, tmp_path / "copy").iterdir()] == ["0000.yaml"]


def test_a_path_with_a_control_character_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        verify.read_manifests(tmp_path / "m\x1b[2J", tmp_path / "copy")
