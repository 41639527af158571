"""Kernel smoke mode: boot a given kernel under QEMU with the image's root file system
as the initramfs, and run the smoke check as the guest's init.

The initramfs is two cpio archives end to end, which the kernel unpacks in turn:
- the image's part: its file system as the Docker daemon exports it (a created, never
  started container), rewritten as cpio. It depends on the image alone, so it is built
  once per image ID and cached (``<cache>/initramfs/``): a new kernel costs nothing here;
- the kernel's part: the modules the check needs (decided from the kernel's own config,
  dependencies first, decompressed, with an index of just them: the init loads them with
  one ``modprobe -a``, and with ``insmod`` by path what that did not load), the device
  nodes, the init and the check (``resources/guest/``). Small; also cached, per kernel and
  check.
The init runs the check, writes its exit status to the status port and powers the guest
off; the status decides the verdict, the console is the evidence. The kernel's
architecture picks the QEMU: an arm64 kernel boots an arm64 image's file system under
``qemu-system-aarch64`` (full-system emulation, so ipvsadm talks generic netlink to a real
arm64 kernel, which qemu-user cannot emulate).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import guestscripts, log, smoke
from .. import kernelfeatures as kf
from ..archive import BoundedTarInfo
from ..cache import Cache, default_root, prune_recent, remove_tree
from ..engine import Engine
from ..errors import DockerError, VMError
from ..smoke import SmokeResult
from . import bootimage
from . import modules as kmod
from .cpio import CpioWriter, normalize, open_initramfs
from .kernel import KernelFiles
from .qemu import ARCHES, Guest, Machine

_DIR = ".krs"  # everything the harness adds to the image's tree lives here (and /init, /dev)
_BEGIN, _END = "KRS-SMOKE-BEGIN", "KRS-SMOKE-END"
# The init's own failures (no mount, no insmod): exit statuses no smoke class uses.
_INIT_FAILURES = {96: "the image has no mount command", 97: "the image has no insmod (kmod or busybox)"}
# Bump when the image part's layout changes: older cached parts are then not used.
_IMAGE_PART_FORMAT = 1
_KEEP_IMAGE_PARTS = 6  # the image parts kept in the cache (each is the image's size)
_KEEP_KERNEL_PARTS = 24  # a few MiB each


@dataclass(frozen=True)
class Prepared:
    initrd: Path
    plan: kmod.ModulePlan
    image_part_cached: bool
    seconds: float


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
    needs: tuple[kf.Need, ...] = kf.SMOKE,
) -> SmokeResult:
    """Boot ``kernel_files`` with ``image``'s root file system and run the smoke check.

    Returns the SmokeResult of a pass; raises SmokeError naming the failure class the
    guest's exit status reports (KernelUnsupportedError, before booting, when the kernel's
    config lacks what the check needs), or VMError when the guest itself could not run.
    """
    cache = cache or Cache(default_root())
    where = f"{kernel_files.describe()} under QEMU"
    start = time.monotonic()
    work = cache.scratch("kernelsmoke-")
    try:
        with log.step("kernel smoke", f"{image} on {where}"):
            arch = ARCHES[kernel_files.arch]
            script = smoke.script(kube_router_version, ipvsadm_version, versions)
            status_needs = tuple(kf.BY_MODULE[name] for name in arch.status_modules)
            prepared = prepare(engine, image, kernel_files, script, cache, work, (*status_needs, *needs))
            log.info(
                f"initramfs: {prepared.initrd.stat().st_size / 1048576:.0f} MiB "
                f"(image part {'cached' if prepared.image_part_cached else 'built'}), "
                f"{len(prepared.plan.modules)} modules ({', '.join(m.name for m in prepared.plan.modules)}); "
                f"prepared in {prepared.seconds:.1f}s"
            )
            boot_kernel = bootimage.for_qemu(kernel_files.vmlinuz, kernel_files.arch, cache)
            machine = Machine(
                kernel=boot_kernel,
                initrd=prepared.initrd,
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
            timings = {"prepare": round(prepared.seconds, 2), "boot_and_check": round(booted, 2)}
            details: dict[str, Any] = {"kernel": kernel_files.record(), **prepared.plan.record(), "timings": timings}
            one = re.search(r"^KRS-INIT: (\d{1,4}) of \d{1,4} modules loaded by one modprobe", guest.console(), re.M)
            details["modules_by_one_modprobe"] = int(one[1]) if one else 0
            details["kernel"]["booted_as"] = "bzImage" if boot_kernel == kernel_files.vmlinuz else "uncompressed (PVH)"
            return SmokeResult(True, where, image, smoke.ipvs_table(output), output, time.monotonic() - start, details)
    finally:
        remove_tree(work)


def prepare(
    engine: Engine,
    image: str,
    kernel_files: KernelFiles,
    script: str,
    cache: Cache,
    work: Path,
    needs: tuple[kf.Need, ...],
) -> Prepared:
    """The initramfs for this image on this kernel: the cached image part, then the
    kernel part, end to end in ``work``."""
    start = time.monotonic()
    plan = kmod.plan(kernel_files, needs)  # before any work: a kernel that lacks something stops here
    status_device = ARCHES[kernel_files.arch].status_device
    kernel_part = _kernel_part(kernel_files, plan, script, status_device, cache)
    image_part, cached = _image_part(engine, image, cache)
    initrd = work / "initramfs.cpio"
    with initrd.open("wb") as out:
        for part in (image_part, kernel_part):
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    return Prepared(initrd, plan, cached, time.monotonic() - start)


def _image_part(engine: Engine, image: str, cache: Cache) -> tuple[Path, bool]:
    details = engine.image(image)
    if details is None:
        raise DockerError(f"{image} is not on {engine.describe()}", "build or pull the image first")
    image_id = str(details["Id"]).removeprefix("sha256:")
    directory = cache.root / "initramfs"
    target = directory / f"image-{image_id}-{_IMAGE_PART_FORMAT}.cpio"
    with cache.lock(f"initramfs-image-{image_id}"):
        if target.is_file():
            target.touch()  # most recently used: kept when older parts are pruned
            return target, True
        work = cache.scratch("image-part-")
        try:
            rootfs = work / "rootfs.tar"
            export_rootfs(engine, image, rootfs)
            part = work / "image.cpio"
            with open_initramfs(part) as writer:
                add_tar(writer, rootfs, skip=_reserved)
            directory.mkdir(parents=True, exist_ok=True)
            part.replace(target)
        finally:
            remove_tree(work)
    prune_recent(directory, "image-*.cpio", _KEEP_IMAGE_PARTS)
    return target, False


def _kernel_part(
    kernel_files: KernelFiles, plan: kmod.ModulePlan, script: str, status_device: str, cache: Cache
) -> Path:
    init = _init_script(status_device)
    inputs = {
        "modules": [(str(m.path), m.path.stat().st_size, m.path.stat().st_mtime_ns) for m in plan.modules],
        "kernel": str(kernel_files.modules_dir),
        "init": init,
        "script": script,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]
    target = cache.root / "initramfs" / f"kernel-{key}.cpio"
    if target.is_file():
        target.touch()
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(f".{time.monotonic_ns()}.part")
    try:
        with open_initramfs(part) as writer:
            writer.directory("dev")
            add_device_nodes(writer)
            writer.file("init", init.encode(), mode=0o755)
            writer.file(f"{_DIR}/smoke.sh", script.encode(), mode=0o755)
            writer.file(f"{_DIR}/modprobe.conf", b"# the smoke guest's modprobe: no options, no aliases\n")
            kmod.add_indexed(writer, plan.modules, _DIR)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    prune_recent(target.parent, "kernel-*.cpio", _KEEP_KERNEL_PARTS)
    return target


def _exit_status(guest: Guest) -> int:
    reported = re.findall(r"(?<!\d)-?\d{1,4}(?!\d)", guest.status())  # whole numbers only: no int() of 5000 digits
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


def _init_script(status_device: str) -> str:
    return guestscripts.render(
        "kernelsmoke-init.sh", STATUS_PORTS=status_device, HARNESS=f"/{_DIR}", BEGIN=_BEGIN, END=_END
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
    with tarfile.open(tar_path, mode="r:", tarinfo=BoundedTarInfo) as archive:
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
