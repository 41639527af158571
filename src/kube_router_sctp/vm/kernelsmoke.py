"""Kernel smoke mode: boot a given kernel under QEMU with the image's root file system
as the initramfs, and run the smoke script as the guest's init.

The image's file system comes out of the Docker daemon as a tar (a created, never
started container, exported), is rewritten as a cpio archive together with the kernel
modules the check needs (dependency order computed on the host, loaded with ``insmod``
by explicit path, since the image has no index for this kernel) and a small POSIX-sh
``/init``. The init runs :func:`kube_router_sctp.smoke.script`, writes its exit status
to the status port and powers the guest off; the status decides the verdict, the
console is the evidence. The kernel's architecture picks the QEMU: an arm64 kernel boots
an arm64 image's file system under ``qemu-system-aarch64`` (full-system emulation, so
ipvsadm talks generic netlink to a real arm64 kernel, which qemu-user cannot emulate).
"""

from __future__ import annotations

import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from .. import log, smoke
from ..cache import Cache, default_root, remove_tree
from ..engine import Engine
from ..errors import VMError
from ..smoke import SmokeResult
from . import modules as kmod
from .cpio import CpioWriter, normalize, open_initramfs
from .kernel import KernelFiles
from .qemu import ARCHES, Guest, Machine

_DIR = ".krs"  # everything the harness adds to the image's tree lives here (and /init, /dev)
_BEGIN, _END = "KRS-SMOKE-BEGIN", "KRS-SMOKE-END"
# The init's own failures (no mount, no insmod): exit statuses no smoke class uses.
_INIT_FAILURES = {96: "the image has no mount command", 97: "the image has no insmod (kmod or busybox)"}

_INIT = """#!/bin/sh
# PID 1 of the kernel smoke guest, in the image's root file system.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
report() {
    # The status port is a file on the host: the exit status travels there, not in
    # console text. Closing the port drains it, so the number is out before poweroff.
    for port in @STATUS@; do echo "$1" > "$port"; done
    echo o > /proc/sysrq-trigger
    sleep 10
    exit "$1"  # no sysrq? PID 1 exiting panics the kernel, and panic=-1 + -no-reboot ends QEMU
}
command -v mount >/dev/null 2>&1 || { echo "KRS-INIT: no mount command in the image"; report 96; }
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
command -v insmod >/dev/null 2>&1 || { echo "KRS-INIT: no insmod in the image"; report 97; }
for module in /@DIR@/modules/*.ko; do
    [ -e "$module" ] || continue
    # A failure here is not fatal (crc32c-intel needs SSE4.2, which TCG may lack); a
    # module the check needs shows up as the smoke failure class instead.
    insmod "$module" 2>/dev/null || echo "KRS-INIT: insmod ${module##*/} failed"
done
ip link set lo up 2>/dev/null || /sbin/ip link set lo up 2>/dev/null
echo "@BEGIN@"
/bin/sh /@DIR@/smoke.sh </dev/null 2>&1
status=$?
echo "@END@ $status"
report "$status"
"""


def run(
    engine: Engine,
    image: str,
    kernel_files: KernelFiles,
    kube_router_version: str,
    ipvsadm_version: str,
    *,
    versions: bool = True,
    cache: Cache | None = None,
    memory_mb: int = 1024,
    timeout: float = 180.0,
    wanted_modules: tuple[str, ...] = kmod.SMOKE_MODULES,
    compress: bool = False,
) -> SmokeResult:
    """Boot ``kernel_files`` with ``image``'s root file system and run the smoke check.

    Returns the SmokeResult of a pass; raises SmokeError naming the failure class the
    guest's exit status reports, or VMError when the guest itself could not run.
    """
    cache = cache or Cache(default_root())
    where = f"{kernel_files.describe()} under QEMU"
    start = time.monotonic()
    work = cache.scratch("kernelsmoke-")
    try:
        with log.step("kernel smoke", f"{image} on {where}"):
            arch = ARCHES[kernel_files.arch]
            index = kmod.ModuleIndex.load(kernel_files.modules_dir)
            # The status port's drivers load first: a later module's failure still reports.
            needed = index.resolve((*arch.status_modules, *wanted_modules))
            rootfs = work / "rootfs.tar"
            export_rootfs(engine, image, rootfs)
            initrd = work / "initramfs.cpio"
            build_initramfs(
                rootfs,
                initrd,
                needed,
                smoke.script(kube_router_version, ipvsadm_version, versions),
                compress,
                status_device=arch.status_device,
            )
            rootfs.unlink()
            log.info(
                f"initramfs: {initrd.stat().st_size / 1048576:.0f} MiB, {len(needed)} modules "
                f"({', '.join(m.name for m in needed)}); prepared in {time.monotonic() - start:.1f}s"
            )
            machine = Machine(
                kernel=kernel_files.vmlinuz,
                initrd=initrd,
                append=f"console={arch.console} panic=-1 quiet rdinit=/init mitigations=off",
                memory_mb=memory_mb,
                arch=arch.name,
            )
            with Guest(machine, work, "smoke-guest") as guest:
                guest.wait(timeout, "run the smoke check")
                booted = guest.elapsed()
                exit_code = _exit_status(guest)
                output = _smoke_output(guest.console())
            for note in re.findall(r"^KRS-INIT: .*$", guest.console(), re.M):
                log.info(note)
            log.info(f"guest ran for {booted:.1f}s; smoke exit status {exit_code}")
            smoke.show(output)
            smoke.interpret(exit_code, output, where)
            return SmokeResult(True, where, image, smoke.ipvs_table(output), output, time.monotonic() - start)
    finally:
        remove_tree(work)


def _exit_status(guest: Guest) -> int:
    reported = re.findall(r"-?\d+", guest.status())
    if not reported:
        log.detail(guest.console_tail(30))
        panic = re.search(r"Kernel panic - not syncing:?(.*)", guest.console())
        if panic:
            raise VMError(
                f"the smoke guest's kernel panicked before reporting a status: {panic[1].strip()}",
                "see the guest console above; 'No working init found' means the image has no /bin/sh",
            )
        raise VMError(
            f"the smoke guest stopped without reporting an exit status (console ends: {guest.console_tail(1)})",
            "see the guest console above: the kernel or the image's /bin/sh could not run the init",
        )
    code = int(reported[-1])
    if code in _INIT_FAILURES:
        raise VMError(
            f"the smoke guest could not start: {_INIT_FAILURES[code]}", "the image must ship mount and insmod"
        )
    return code


def _smoke_output(console: str) -> str:
    """The smoke script's own lines, without the kernel's messages around them."""
    begin = console.find(_BEGIN)
    if begin < 0:
        return console
    end = console.find(_END, begin)
    body = console[begin + len(_BEGIN) : end if end >= 0 else len(console)]
    return body.strip("\n") + "\n"


# -- the initramfs -----------------------------------------------------------------------
def export_rootfs(engine: Engine, image: str, dest: Path) -> None:
    """Write the image's root file system as a tar (owners, modes and devices kept)."""
    engine.export(image, dest)


def build_initramfs(
    rootfs: Path,
    dest: Path,
    modules: list[kmod.Module],
    script: str,
    compress: bool = False,
    status_device: str = ARCHES["x86_64"].status_device,
) -> None:
    with open_initramfs(dest, compress=compress) as writer:
        add_tar(writer, rootfs, skip=_reserved)
        writer.directory("dev")
        add_device_nodes(writer)
        writer.file("init", _init_script(status_device).encode(), mode=0o755)
        writer.file(f"{_DIR}/smoke.sh", script.encode(), mode=0o755)
        kmod.add_to_initramfs(writer, modules, f"{_DIR}/modules")


def _init_script(status_device: str) -> str:
    return (
        _INIT.replace("@DIR@", _DIR)
        .replace("@BEGIN@", _BEGIN)
        .replace("@END@", _END)
        .replace("@STATUS@", status_device)
    )


def _reserved(name: str) -> bool:
    """Paths the harness provides itself: the tar's versions are left out."""
    return name in ("init", _DIR) or name.startswith((f"{_DIR}/", "dev/"))


def add_device_nodes(writer: CpioWriter) -> None:
    """The nodes PID 1 needs before devtmpfs is mounted (the kernel opens /dev/console
    for init's stdio), and the status port."""
    writer.device("dev/console", "c", 5, 1, 0o600)
    writer.device("dev/null", "c", 1, 3, 0o666)
    writer.device("dev/zero", "c", 1, 5, 0o666)
    writer.device("dev/tty", "c", 5, 0, 0o666)
    writer.device("dev/ttyS0", "c", 4, 64, 0o660)
    writer.device("dev/ttyS1", "c", 4, 65, 0o660)
    writer.device("dev/kmsg", "c", 1, 11, 0o644)
    writer.device("dev/urandom", "c", 1, 9, 0o666)


def add_tar(writer: CpioWriter, tar_path: Path, skip: Callable[[str], bool] = lambda _name: False) -> int:
    """Copy a tar's entries into the archive; returns how many. Hard links become cpio
    hard-link groups (the kernel links entries that share an inode number)."""
    count = 0
    with tarfile.open(tar_path, mode="r:") as archive:
        members = archive.getmembers()
        links: dict[str, int] = {}
        for member in members:
            if member.islnk():
                target = normalize(member.linkname)
                links[target] = links.get(target, 1) + 1
        inodes: dict[str, int] = {}
        for member in members:
            name = normalize(member.name)
            if not name or skip(name):
                continue
            owner = {"uid": member.uid, "gid": member.gid}
            if member.isdir():
                writer.directory(name, member.mode, mtime=int(member.mtime), **owner)
            elif member.isreg():
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                extra: dict[str, int] = {}
                if name in links:
                    inodes[name] = extra["ino"] = writer.allocate_ino()
                    extra["nlink"] = links[name]
                writer.file(name, handle, size=member.size, mode=member.mode, mtime=int(member.mtime), **owner, **extra)
            elif member.islnk():
                target = normalize(member.linkname)
                if target in inodes:
                    writer.hardlink(name, ino=inodes[target], nlink=links[target], mode=member.mode, **owner)
                else:  # the target was skipped: keep the content under this name
                    handle = archive.extractfile(member)
                    if handle is None:
                        continue
                    data = handle.read()
                    writer.file(name, data, mode=member.mode, mtime=int(member.mtime), **owner)
            elif member.issym():
                writer.symlink(name, member.linkname, mtime=int(member.mtime), **owner)
            elif member.ischr() or member.isblk():
                writer.device(name, "c" if member.ischr() else "b", member.devmajor, member.devminor, member.mode)
            elif member.isfifo():
                writer.fifo(name, member.mode)
            else:
                continue
            count += 1
    return count
