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
import time
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


HIJACKED = """out="$2/lib/modules/$3/modules.dep"
{{
  echo "uid=$(id -u) pid=$$"
  [ -t 0 ] && echo "stdin-is-a-terminal"
  ( : < /dev/tty ) 2>/dev/null && echo "has-a-controlling-terminal"
  echo owned 2>/dev/null > {forbidden} && echo "wrote-outside"
  echo owned 2>/dev/null > /tmp/owned && echo "wrote-tmp"
  echo owned 2>/dev/null > /dev/shm/owned && echo "wrote-shm"
  echo owned 2>/dev/null > "/tmp/layers/upper/lib/modules/$3/owned" && echo "wrote-the-overlay-s-upper-layer"
  grep -q "CapEff:.0000000000000000" /proc/self/status || echo "has-capabilities"
  [ "$(wc -l < /proc/net/dev)" -le 3 ] || echo "has-a-network"
  [ "$(ls /proc | grep -c '^[0-9]')" -le 8 ] || echo "sees-host-processes"  # itself, a pipeline
  [ -n "${{KRS_SECRET:-}}" ] && echo "read-the-environment"
}} > "$out"
echo owned > "$2/lib/modules/$3/kernel/net/owned" 2>/dev/null  # into the overlay: stays in memory
echo index > "$2/lib/modules/$3/modules.dep.bin"
sleep 3000 &
"""


def run_from_a_terminal(base: Path) -> int:
    """``depmod.run`` in a child whose stdin and controlling terminal are a pty (the
    tool's own, on an operator's machine); its exit status."""
    pid, terminal = pty.fork()
    if pid == 0:
        try:
            depmod.run(base, RELEASE)
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
    return os.waitstatus_to_exitcode(status)


def test_a_hijacked_depmod_reaches_nothing_but_its_index(
    tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a terminal and with a secret in the environment, the stand-in finds no
    terminal, no capability, no network, no host process, no secret and no place on the
    host to write; what it writes into the modules stays in the sandbox's memory; what it
    leaves running ends with it. Its index files come back (the report is one)."""
    forbidden = open_dir / "root-only"
    forbidden.mkdir(mode=0o755)
    stand_in(open_dir, HIJACKED.format(forbidden=forbidden / "file"), monkeypatch)
    monkeypatch.setenv("KRS_SECRET", "hunter2")
    assert run_from_a_terminal(tree.parents[2]) == 0
    report = (tree / "modules.dep").read_text().split()
    # a PID namespace of its own: a small number (the host's run into the thousands)
    assert report[0] == "uid=65534" and int(report[1].removeprefix("pid=")) < 100 and len(report) == 2, report
    assert not (forbidden / "file").exists() and not (tree / "kernel" / "net" / "owned").exists()
    assert (tree / "modules.dep").stat().st_uid == 0 and (tree / "modules.dep.bin").read_text() == "index\n"
    assert subprocess.run(["pgrep", "-x", "-f", "sleep 3000"], capture_output=True, check=False).returncode == 1


def test_a_depmod_that_runs_past_its_time_is_ended_with_all_it_started(
    tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = 4000 + os.getpid() % 1000  # this run's own: no other sleep is mistaken for it
    stand_in(open_dir, f"sleep {seconds} & exec sleep {seconds + 1}", monkeypatch)
    with pytest.raises(VMError, match="depmod did not finish within 2s"):
        depmod.run(tree.parents[2], RELEASE, timeout=2)
    pattern = f"^sleep ({seconds}|{seconds + 1})$"
    for _ in range(50):  # the namespace's teardown is the kernel's, and quick
        alive = subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False)
        if alive.returncode == 1:
            break
        time.sleep(0.1)
    assert alive.returncode == 1, alive.stdout


@pytest.mark.parametrize(
    "plant",
    [
        'mkdir "$2/lib/modules/$3/d" && cd "$2/lib/modules/$3/d" && for i in $(seq 300); do mkdir d; cd d; done',
        'ln -s /etc/shadow "$2/lib/modules/$3/modules.dep"; echo x > "$2/lib/modules/$3/modules.dep.bin"',
        'mkfifo "$2/lib/modules/$3/modules.dep"; echo x > "$2/lib/modules/$3/modules.dep.bin"',
        'mv "$2/lib/modules/$3/kernel" "$2/lib/modules/$3/modules.kernel" 2>/dev/null; true',
        'for i in $(seq 500); do echo x > "$2/lib/modules/$3/modules.extra$i"; done',
    ],
    ids=["deep-directory", "symlink-as-index", "fifo-as-index", "moved-the-modules", "many-files"],
)
def test_what_a_hijacked_depmod_plants_never_reaches_the_host(
    tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    """Nothing but regular files of depmod's names comes back; without an index the run
    is refused; the host's tree is as it was."""
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    stand_in(open_dir, plant, monkeypatch)
    with pytest.raises(VMError, match="depmod wrote no modules.dep"):
        depmod.run(tree.parents[2], RELEASE)
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == before
    assert tree.stat().st_uid == 0


def test_a_failing_depmod_is_one_line(tree: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(open_dir, 'printf "first\\n\\377 the verdict\\n"; exit 3', monkeypatch)
    with pytest.raises(VMError, match="depmod of the kernel's modules failed \\(exit 3\\): .* the verdict"):
        depmod.run(tree.parents[2], RELEASE)
