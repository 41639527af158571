"""depmod for the Docker-host guest's modules disk, run as if a hostile module had taken
it over (vm/depmod.py). The real depmod on small synthetic modules; and a stand-in for a
hijacked depmod (named as such: a shell script in depmod's place) that reports what it
can reach and tries what such a program would. Needs root, as the tool on release
machines: the sandbox is namespaces and a uid change."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_router_sctp.errors import VMError
from kube_router_sctp.vm import depmod
from tests.support import env
from tests.support.debs import elf_module

RELEASE = "6.1.0-99-amd64"


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        env.missing("depmod runs in namespaces of its own and as nobody, which needs root (as on release machines)")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``base/lib/modules/<release>`` with a few modules, root's and 0644 as unpacked."""
    release = tmp_path / "base" / "lib" / "modules" / RELEASE
    for name, info in {"ip_vs": {"alias": "ipvs"}, "sctp": {"alias": "net-pf-2-proto-132"}, "veth": {}}.items():
        path = release / "kernel" / "net" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(elf_module(name=name, depends="", **info))
    return release


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A root-owned directory any user can enter, outside what the sandbox hides (/tmp,
    /var/tmp, /dev/shm, /run): where the stand-in lives, and what it must not write."""
    directory = Path(tempfile.mkdtemp(prefix="krs-depmod-test-", dir="/var/lib"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def stand_in(open_dir: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    script = open_dir / "bin" / "depmod"
    script.parent.mkdir(mode=0o755)
    script.write_text(f"#!/bin/sh\n# A stand-in for a hijacked depmod: $2 is the base, $3 the release.\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")


def test_the_real_depmod_writes_the_index_it_writes_plainly(tree: Path) -> None:
    env.require_binary("depmod", "kmod")
    depmod.run(tree.parents[2], RELEASE)
    written = {p.name: p.read_bytes() for p in tree.glob("modules.*")}
    assert {"modules.dep", "modules.dep.bin", "modules.alias.bin"} <= set(written)
    assert all((tree / n).stat().st_uid == 0 and (tree / n).stat().st_mode & 0o777 == 0o644 for n in written)
    assert tree.stat().st_uid == 0  # the release directory is root's again
    assert b"net-pf-2-proto-132 sctp" in written["modules.alias"]
    # again over its own index, as for an installed kernel's directory: replaced, accepted
    depmod.run(tree.parents[2], RELEASE)
    assert {p.name: p.read_bytes() for p in tree.glob("modules.*")} == written
    for name in written:
        (tree / name).unlink()
    subprocess.run(["depmod", "-b", str(tree.parents[2]), RELEASE], capture_output=True, check=True, timeout=60)
    assert {p.name: p.read_bytes() for p in tree.glob("modules.*")} == written


HIJACKED = """out="$2/lib/modules/$3/modules.report"
{{
  echo "uid=$(id -u) pid=$$"
  [ -t 0 ] && echo "stdin-is-a-terminal"
  ( : < /dev/tty ) 2>/dev/null && echo "has-a-controlling-terminal"
  echo owned 2>/dev/null > {forbidden} && echo "wrote-outside"
  echo owned 2>/dev/null > "$2/lib/modules/$3/kernel/net/owned" && echo "wrote-into-the-modules"
  echo owned 2>/dev/null > /tmp/owned && echo "wrote-tmp"
  echo owned 2>/dev/null > /dev/shm/owned && echo "wrote-shm"
  grep -q "CapEff:.0000000000000000" /proc/self/status || echo "has-capabilities"
  [ "$(wc -l < /proc/net/dev)" -le 3 ] || echo "has-a-network"
  [ "$(ls /proc | grep -c '^[0-9]')" -le 8 ] || echo "sees-host-processes"  # itself, a pipeline
  [ -n "${{KRS_SECRET:-}}" ] && echo "read-the-environment"
}} > "$out"
sleep 300 &
echo "left=$!" >> "$out"
"""


def test_a_hijacked_depmod_reaches_nothing_but_its_index(
    tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a terminal (a pty: the tool's own, on an operator's machine) and with a
    secret in the environment, the stand-in finds no terminal, no capability, no network,
    no host process, no secret, no place to write but the release directory; and what it
    leaves running ends with it."""
    forbidden = open_dir / "root-only"
    forbidden.mkdir(mode=0o755)
    stand_in(open_dir, HIJACKED.format(forbidden=forbidden / "file"), monkeypatch)
    monkeypatch.setenv("KRS_SECRET", "hunter2")
    pid, terminal = pty.fork()
    if pid == 0:  # the tool, with a controlling terminal as its stdin
        try:
            depmod.run(tree.parents[2], RELEASE)
        except BaseException:  # any failure is the child's exit status
            os._exit(1)
        os._exit(0)
    while True:
        try:
            if not os.read(terminal, 1024):
                break
        except OSError:
            break
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report = (tree / "modules.report").read_text().split()
    assert report[:2] == ["uid=65534", "pid=1"] and report[2].startswith("left="), report
    assert not (forbidden / "file").exists() and not (tree / "kernel" / "net" / "owned").exists()
    left = report[2].removeprefix("left=")
    assert subprocess.run(["pgrep", "-f", "^sleep 300$"], capture_output=True, check=False).returncode == 1, left


@pytest.mark.parametrize(
    "plant",
    [
        'mkdir "$2/lib/modules/$3/d" && cd "$2/lib/modules/$3/d" && for i in $(seq 300); do mkdir d; cd d; done',
        'ln -s /etc/shadow "$2/lib/modules/$3/modules.dep"',
        'mkfifo "$2/lib/modules/$3/modules.fifo"',
        'mv "$2/lib/modules/$3/kernel" "$2/lib/modules/$3/modules.kernel"',
    ],
    ids=["deep-directory", "symlink-as-index", "fifo", "moved-the-modules"],
)
def test_anything_but_an_index_left_behind_is_removed_and_refused(
    tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    stand_in(open_dir, plant, monkeypatch)
    with pytest.raises(VMError, match="depmod left something other than its index"):
        depmod.run(tree.parents[2], RELEASE)
    left = {p.name for p in tree.iterdir()}
    assert left <= {"kernel"}, left
    assert tree.stat().st_uid == 0


def test_a_failing_depmod_is_one_line(tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(open_dir, 'printf "first\\n\\377 the verdict\\n"; exit 3', monkeypatch)
    with pytest.raises(VMError, match="depmod of the kernel's modules failed \\(exit 3\\): .* the verdict"):
        depmod.run(tree.parents[2], RELEASE)
