"""safefs: nothing is written or read outside a tree, whatever its links say; files for
the user go atomically to regular files only."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp import safefs
from kube_router_sctp.errors import ConfigError, UnsafeSourceError
from kube_router_sctp.safefs import Beneath
from tests.support import hostile


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "sentinel").mkdir()
    return tmp_path / "a" / "b" / "dest"


def nothing_outside(tmp_path: Path) -> None:
    assert list((tmp_path / "sentinel").iterdir()) == []
    assert not list(tmp_path.rglob("evil"))


def test_a_file_through_a_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    with Beneath(dest, "test tree", create=True) as tree:
        tree.symlink("out", "../../../sentinel")
        with pytest.raises(UnsafeSourceError, match="member 'out/evil' passes through the symlink 'out'"):
            tree.write("out/evil", b"x")
        with pytest.raises(UnsafeSourceError, match="passes through the symlink"):
            tree.mkdir("out/deeper")
        with pytest.raises(UnsafeSourceError, match="passes through the symlink"):
            tree.symlink("out/link", "x")
    nothing_outside(tmp_path)


def test_link_chain_that_looks_inside_is_refused(tmp_path: Path, dest: Path) -> None:
    # "a/a/a/../../.." is "." as text; with a -> "." it is really three levels up.
    with Beneath(dest, "test tree", create=True) as tree:
        tree.symlink("a", ".")
        tree.symlink("b", "a/a/a/../../..")
        with pytest.raises(UnsafeSourceError, match="passes through the symlink 'b'"):
            tree.write("b/sentinel/evil", b"x")
        with pytest.raises(UnsafeSourceError, match="member 'b' is a symlink that resolves outside the tree"):
            tree.check_links()
    nothing_outside(tmp_path)


def test_links_are_resolved_against_the_tree_not_its_location(tmp_path: Path) -> None:
    # Out through ".." and back in by the tree's own name: inside where it stands, outside
    # as soon as the tree is renamed (moved into the cache). Refused either way.
    dest = tmp_path / "tree"
    with Beneath(dest, "test tree", create=True) as tree:
        tree.write("file", b"x")
        tree.symlink("back", "../tree/file")
        with pytest.raises(UnsafeSourceError, match="resolves outside"):
            tree.check_links()


def test_good_links_pass(tmp_path: Path) -> None:
    with Beneath(tmp_path / "t", "test tree", create=True) as tree:
        tree.write("docs/readme.md", b"x")
        tree.symlink("contrib/readme.md", "../docs/readme.md")
        tree.symlink("contrib/missing.md", "../docs/not-there/../../x")  # dangling, inside
        tree.symlink("self", ".")
        tree.hardlink("docs/again.md", "docs/readme.md")
        tree.check_links()
    assert (tmp_path / "t" / "docs" / "again.md").read_bytes() == b"x"


def test_a_link_loop_is_refused(tmp_path: Path) -> None:
    with Beneath(tmp_path / "t", "test tree", create=True) as tree:
        tree.symlink("loop", "loop2")
        tree.symlink("loop2", "loop")
        with pytest.raises(UnsafeSourceError, match="member 'loop2?' is a symlink that starts a chain of more than 40"):
            tree.check_links()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil", "contains '..'"),
        ("x/../../evil", "contains '..'"),
        ("/etc/evil", "has an absolute path"),
        ("nul\0byte", "NUL byte"),
        ("bad-\udcff-utf8", "not valid UTF-8"),
        ("x" * 300, "name longer than the file system allows"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, dest: Path, name: str, why: str) -> None:
    with Beneath(dest, "test tree", create=True) as tree, pytest.raises(UnsafeSourceError, match=why):
        tree.write(name, b"x")
    nothing_outside(tmp_path)


def test_a_member_twice_is_refused_not_replaced(tmp_path: Path) -> None:
    with Beneath(tmp_path / "t", "test tree", create=True) as tree:
        tree.write("f", b"first")
        with pytest.raises(UnsafeSourceError, match="appears twice"):
            tree.write("f", b"second")
        tree.symlink("l", "f")
        with pytest.raises(UnsafeSourceError, match="appears twice"):
            tree.write("l", b"through the link")
    assert (tmp_path / "t" / "f").read_bytes() == b"first"


def test_short_member_is_refused(tmp_path: Path) -> None:
    with (
        Beneath(tmp_path / "t", "test tree", create=True) as tree,
        pytest.raises(UnsafeSourceError, match="declares 10 bytes but holds 3"),
    ):
        tree.write("f", io.BytesIO(b"abc"), size=10)


def test_hard_link_to_something_not_a_file_of_the_tree(tmp_path: Path) -> None:
    with Beneath(tmp_path / "t", "test tree", create=True) as tree:
        tree.symlink("l", "/etc/passwd")
        with pytest.raises(UnsafeSourceError, match="not a regular file of the tree"):
            tree.hardlink("h", "l")
        with pytest.raises(UnsafeSourceError, match="not a regular file of the tree"):
            tree.hardlink("h", "missing")


def test_reading_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("secret")
    root = tmp_path / "t"
    root.mkdir()
    (root / "pkg").symlink_to(outside)
    (root / "file").symlink_to(outside / "key")
    (root / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "fifo")
    with Beneath(root, "source tree") as tree:
        with pytest.raises(UnsafeSourceError, match="passes through the symlink 'pkg'"):
            tree.read("pkg/key")
        with pytest.raises(UnsafeSourceError, match="is a symlink, not a regular file"):
            tree.read("file")
        with pytest.raises(UnsafeSourceError, match="is not a regular file"):
            tree.read("fifo")  # opened without blocking, then refused
        assert tree.read("missing") is None
        assert tree.readlink("file") == str(outside / "key")


def test_a_symlinked_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeSourceError, match="is not a directory"):
        Beneath(tmp_path / "link", "test tree")


# -- files for the user -------------------------------------------------------------------
def test_write_output_is_atomic_and_replaces_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    safefs.write_output(target, b"one", "the report")
    safefs.write_output(target, b"two", "the report")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]  # no temporary left


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_write_output_refuses_a_symlink_and_keeps_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "r.json"
    link.symlink_to(victim)
    with pytest.raises(ConfigError, match="refusing to write the report to .*r.json: it is a symlink"):
        safefs.write_output(link, b"x", "the report")
    assert victim.read_text() == "precious"
    assert link.is_symlink()


def test_write_output_refuses_a_fifo_and_a_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="it is a FIFO"):
        safefs.write_output(fifo, b"x", "the report")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    with pytest.raises(ConfigError, match="it is a directory"):
        safefs.write_output(tmp_path, b"x", "the report")


def test_write_output_refuses_a_device(tmp_path: Path) -> None:
    device = hostile.null_device(tmp_path / "null")
    with pytest.raises(ConfigError, match="it is a device"):
        safefs.write_output(device, b"x", "the report")
    assert stat.S_ISCHR(device.lstat().st_mode)


def test_write_tree_goes_through_a_temporary_sibling(tmp_path: Path) -> None:
    def fill(tree: Beneath) -> None:
        tree.write("a/b", b"x", 0o755)
        tree.symlink("c", "a/b")

    safefs.write_tree(tmp_path / "out", fill, "the patched tree")
    assert (tmp_path / "out" / "a" / "b").read_bytes() == b"x"
    assert (tmp_path / "out" / "c").readlink() == Path("a/b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_tree_refuses_and_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / "sentinel").mkdir()

    def fill(tree: Beneath) -> None:
        tree.symlink("a", ".")
        tree.symlink("b", "a/a/../..")

    with pytest.raises(UnsafeSourceError, match="resolves outside"):
        safefs.write_tree(tmp_path / "out", fill, "the patched tree")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel"]
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "sentinel")
    with pytest.raises(ConfigError, match="it is a symlink"):
        safefs.write_tree(link, fill, "the patched tree")


def test_descriptors_do_not_leak(tmp_path: Path) -> None:
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(2):
        with Beneath(tmp_path / "t", "test tree", create=True) as tree:
            for i in range(safefs._OPEN_DIRS + 10):  # more directories than it keeps open
                tree.write(f"d{i}/e/f", b"x")
        subprocess.run(["rm", "-rf", str(tmp_path / "t")], check=True)
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_a_member_nested_too_deep_is_refused_in_one_line(tmp_path: Path, dest: Path) -> None:
    # 1,500 one-letter directories fit in PATH_MAX; walking them recursively (opening each
    # parent, os.fwalk, rmtree) must not end in a RecursionError traceback.
    deep = "a/" * 1500 + "f"
    with Beneath(dest, "test tree", create=True) as tree:
        with pytest.raises(UnsafeSourceError, match=f"nests more than {safefs.MAX_DEPTH} directories"):
            tree.write(deep, b"x")
        with pytest.raises(UnsafeSourceError, match="nests more than"):
            tree.symlink(deep, "x")
        with pytest.raises(UnsafeSourceError, match="nests more than"):
            tree.mkdir(deep)
        # as deep as allowed still works, without recursion
        tree.write("b/" * (safefs.MAX_DEPTH - 1) + "f", b"x")
        tree.check_links()
    nothing_outside(tmp_path)
