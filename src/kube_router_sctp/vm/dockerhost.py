"""A Docker host on a real kernel: a cached Debian VM disk, booted fresh for each use.

The system disk is a debootstrapped Debian root (Docker, containerd, iproute2, kmod,
iptables, ipset, conntrack; socat, ipvsadm and tcpdump for the dataplane proof), written
to a sparse raw image with ``mkfs.ext4 -d``. It holds no kernel: it is built once and
cached under a key of everything that shapes it (package list, suite, a recipe version),
and one disk serves every kernel. A kernel's modules travel on a second, read-only disk
of their own (a small ext4 image of ``/lib/modules/<release>`` with depmod's index,
cached per kernel), mounted at ``/usr/lib/modules`` before the system starts, so
``modprobe`` finds whatever Docker asks for. Every boot runs on a fresh qcow2 overlay of
the system disk, because a guest rebooted from a disk it had already run on was seen to
stall; the cached disks are never written, and the overlay is thrown away afterwards, so
stopping QEMU is a clean shutdown.

Boot: the kernel with a small initramfs of our own (busybox-static from the disk plus the
virtio/ext4 modules, decided from the kernel's own config) that mounts both disks and
switches to ``/sbin/krs-init``, which loads modules, configures the user-mode network
(10.0.2.15/24 via 10.0.2.2; the host's 127.0.0.1 is 10.0.2.2 to the guest) and starts
containerd and dockerd with the API on TCP 2375, forwarded to a free port on the host's
loopback. Options for a boot (insecure registries) travel on the kernel command line.
The guest's scripts are files (``resources/guest/dockerhost-*.sh``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import config, guestscripts, log
from .. import kernelfeatures as kf
from ..cache import Cache, default_root, remove_tree
from ..engine import Engine, daemon_answers
from ..errors import DockerError, VMError
from ..treedigest import sha256_file
from . import bootimage, depmod
from . import modules as kmod
from .cpio import open_initramfs
from .kernel import KernelFiles, resolve
from .qemu import Guest, Machine, free_port

# 5: procps (sysctl per namespace); 4: python3 for the scenarios' SCTP program; 3: modules on a disk of their own
RECIPE_VERSION = 5
MODULES_RECIPE = 2  # 2: depmod runs as nobody in namespaces of its own (vm/depmod.py)
SUITE = "bookworm"
PACKAGES = (
    "docker.io",
    "containerd",
    "iproute2",
    "kmod",
    "iptables",
    "ipset",
    "conntrack",
    "tini",
    "busybox-static",  # the initramfs's shell, mount and switch_root
    "ca-certificates",
    # The dataplane proof's tools on the node: SCTP/TCP/UDP echo servers and clients,
    # IPVS listings independent of the image under test, and packet captures as evidence.
    "socat",
    "ipvsadm",
    "tcpdump",
    # The scenarios' multi-homed SCTP client and server (resources/guest/sctp-peer.py).
    "python3",
    # sysctl, for the per-namespace SCTP, IPv6 and IPVS settings of the scenarios.
    "procps",
    # Foreign-architecture images (arm64) run under binfmt emulation, as on the build host.
    "qemu-user-static",
    "binfmt-support",
)
GUEST_API_PORT = 2375
HOST_FROM_GUEST = "10.0.2.2"  # user-mode networking's name for the host's 127.0.0.1
DEFAULT_INSECURE = (f"{HOST_FROM_GUEST}:5000",)
DISK_GIB = 8


@dataclass(frozen=True)
class HostDisk:
    """A built disk in the cache: never booted itself, only copied."""

    directory: Path
    disk: Path
    busybox: Path  # the disk's busybox-static, for each boot's initramfs
    key: str
    build_seconds: float  # 0.0 when it came from the cache


@dataclass
class DockerHost:
    url: str  # tcp://127.0.0.1:PORT
    port: int
    boot_seconds: float  # QEMU start -> Docker API answering
    engine: Engine
    guest: Guest
    disk: HostDisk
    kernel: KernelFiles

    def guest_registry(self, registry: str = "127.0.0.1:5000") -> str:
        """How the guest names a registry of the host's loopback (``127.0.0.1:5000`` ->
        ``10.0.2.2:5000``); other addresses are the same from both sides."""
        host, sep, port = registry.partition(":")
        if host in ("127.0.0.1", "localhost"):
            return f"{HOST_FROM_GUEST}{sep}{port}"
        return registry

    def timed_pull(self, reference: str) -> float:
        """Pull ``reference`` on the guest; return the seconds it took."""
        start = time.monotonic()
        self.engine.pull(reference)
        return time.monotonic() - start


def debian_kernel(cache: Cache) -> KernelFiles:
    """Debian's current amd64 kernel from the host's apt sources, unpacked in the cache."""
    return resolve("debian", None, cache)


# -- the disk ----------------------------------------------------------------------------
def disk_key(packages: tuple[str, ...], suite: str) -> str:
    """Everything that shapes the system disk: a change to any of it builds a new one."""
    inputs = {"recipe": RECIPE_VERSION, "packages": sorted(packages), "suite": suite}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def build_disk(
    cache: Cache,
    *,
    mirror: str | None = None,
    packages: tuple[str, ...] = PACKAGES,
    suite: str = SUITE,
    size_gib: int = DISK_GIB,
    rebuild: bool = False,
) -> HostDisk:
    """The cached system disk for these inputs, built first if absent (minutes; needs root)."""
    key = disk_key(packages, suite)
    target = cache.root / "vm" / "docker-host" / key
    with cache.lock(f"docker-host-{key}"):
        if rebuild and target.exists():
            remove_tree(target)
        manifest = target / "manifest.json"
        if manifest.is_file():
            log.info(f"Docker-host disk {key[:12]}: cached")
            return HostDisk(target, target / "disk.img", target / "busybox", key, 0.0)
        if target.exists():
            remove_tree(target)  # a half-written entry from a killed run
        _check_build_tools()
        mirror = mirror or config.host_debian_mirror()
        if not mirror:
            raise VMError(
                "no Debian mirror for the Docker-host disk",
                "configure one in the host's apt sources or pass --mirror / mirrors.debian",
            )
        start = time.monotonic()
        work = cache.scratch("docker-host-")
        try:
            with log.step("docker-host disk", f"Debian {suite}"):
                root = work / "root"
                _debootstrap(root, suite, mirror, packages, work / "debootstrap.log")
                (root / "usr" / "lib" / "modules").mkdir(parents=True, exist_ok=True)  # the modules disk's mount point
                _configure(root)
                _keep_busybox(root, work / "busybox")
                _make_ext4(root, work / "disk.img", size_gib)
                _remove_root(root)
                seconds = time.monotonic() - start
                (work / "manifest.json").write_text(
                    json.dumps(
                        {
                            "key": key,
                            "suite": suite,
                            "packages": list(packages),
                            "recipe": RECIPE_VERSION,
                            "build_seconds": round(seconds, 1),
                        },
                        indent=2,
                    )
                    + "\n"
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                work.replace(target)
            log.info(f"Docker-host disk {key[:12]} built in {seconds:.0f}s")
            return HostDisk(target, target / "disk.img", target / "busybox", key, seconds)
        finally:
            if work.exists():
                _remove_root(work)


def modules_disk(kernel: KernelFiles, cache: Cache) -> Path:
    """A read-only ext4 image of the kernel's modules with depmod's index, cached per
    kernel: ``<release>/`` at its root, mounted at ``/usr/lib/modules`` in the guest."""
    inputs = {"recipe": MODULES_RECIPE, "release": kernel.version, "modules": str(kernel.modules_dir)}
    inputs["vmlinuz"] = sha256_file(kernel.vmlinuz)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]
    target = cache.root / "vm" / "modules" / f"{key}.img"
    with cache.lock(f"modules-disk-{key}"):
        if target.is_file():
            return target
        if shutil.which("mkfs.ext4") is None:
            raise VMError("mkfs.ext4 is not installed", "apt-get install e2fsprogs")
        work = cache.scratch("modules-disk-")
        try:
            with log.step("modules disk", f"kernel {kernel.version}"):
                tree = work / "root" / "lib" / "modules" / kernel.version
                # build/source point at headers elsewhere: never followed, never needed.
                skip = shutil.ignore_patterns("vmlinuz", "build", "source")
                shutil.copytree(kernel.modules_dir, tree, symlinks=True, ignore=skip)
                depmod.run(work / "root", kernel.version)
                used = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
                image = work / "modules.img"
                with image.open("wb") as handle:
                    handle.truncate(used + used // 4 + (64 << 20))
                _run(
                    ["mkfs.ext4", "-q", "-F", "-L", "krs-modules", "-d", str(tree.parent), str(image)],
                    "mkfs.ext4 -d of the modules disk",
                    600,
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                image.replace(target)
        finally:
            remove_tree(work)
    return target


def _check_build_tools() -> None:
    if os.geteuid() != 0:
        raise VMError("building the Docker-host disk needs root (debootstrap, chroot)", "run it once as root")
    for tool, package in (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("chroot", "coreutils")):
        if shutil.which(tool) is None:
            raise VMError(f"{tool} is not installed", f"apt-get install {package}")


def _run(command: list[str], what: str, timeout: float, log_file: Path | None = None) -> None:
    """Run a build step; on failure say which and show the end of its output."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VMError(f"{what} did not finish within {timeout:.0f}s", "check the mirror and the host's load") from exc
    output = result.stdout + result.stderr
    if log_file is not None:
        log_file.write_text(output)
    if result.returncode != 0:
        log.detail("\n".join(output.strip().splitlines()[-15:]))
        last = (output.strip().splitlines() or ["no output"])[-1]
        raise VMError(f"{what} failed (exit {result.returncode}): {last}", "see the output above")


def _debootstrap(root: Path, suite: str, mirror: str, packages: tuple[str, ...], log_file: Path) -> None:
    with log.step("debootstrap", f"{suite} from {mirror}"):
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                suite,
                str(root),
                mirror,
            ],
            "debootstrap",
            timeout=3600,
            log_file=log_file,
        )


def _configure(root: Path) -> None:
    """The guest's identity and DNS (user-mode networking answers on 10.0.2.3)."""
    (root / "etc" / "hostname").write_text("krs-docker-host\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 krs-docker-host\n")
    (root / "etc" / "resolv.conf").write_text("nameserver 10.0.2.3\n")
    # Downloaded packages and indices only make the disk bigger.
    for directory in (root / "var" / "cache" / "apt" / "archives", root / "var" / "lib" / "apt" / "lists"):
        for entry in directory.glob("*"):
            if entry.is_file():
                entry.unlink()


def _keep_busybox(root: Path, dest: Path) -> None:
    busybox = next((root / p for p in ("usr/bin/busybox", "bin/busybox") if (root / p).is_file()), None)
    if busybox is None:
        raise VMError("busybox-static is missing from the disk's root", "keep busybox-static in the package list")
    shutil.copyfile(busybox, dest)


def write_initrd(disk: HostDisk, kernel: KernelFiles, dest: Path, boot: kmod.ModulePlan) -> None:
    """This boot's initramfs: busybox, the disks' drivers, the init scripts."""
    root = kmod.plan(kernel, kf.ROOT_DISK)
    boot_modules = " ".join(m for m in boot.record()["modules_needed"])
    guest_init = guestscripts.render("dockerhost-init.sh", MODULES=boot_modules, API_PORT=GUEST_API_PORT)
    with open_initramfs(dest, compress=True) as writer:
        writer.file("bin/busybox", disk.busybox.read_bytes(), mode=0o755)
        writer.symlink("bin/sh", "busybox")
        writer.directory("dev")
        writer.device("dev/console", "c", 5, 1, 0o600)
        writer.device("dev/null", "c", 1, 3, 0o666)
        writer.device("dev/ttyS1", "c", 4, 65, 0o660)
        writer.file("init", guestscripts.text("dockerhost-initrd.sh").encode(), mode=0o755)
        writer.file("krs-init", guest_init.encode(), mode=0o755)
        kmod.add_to_initramfs(writer, root.modules, "modules")


def _make_ext4(root: Path, disk: Path, size_gib: int) -> None:
    with log.step("mkfs.ext4", f"{size_gib} GiB sparse disk"):
        with disk.open("wb") as handle:
            handle.truncate(size_gib << 30)
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", "krs-root", "-d", str(root), str(disk)],
            "mkfs.ext4 -d",
            timeout=1200,
        )


def _remove_root(path: Path) -> None:
    # --one-file-system: a debootstrap that failed half-way can leave the host's /proc
    # or /sys mounted inside the tree, and those must not be walked.
    result = subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=600)
    if result.returncode != 0 and path.exists():
        log.warn(f"could not remove {path}")


# -- booting -----------------------------------------------------------------------------
@contextmanager
def docker_host(
    kernel: KernelFiles | None = None,
    cache: Cache | None = None,
    *,
    mirror: str | None = None,
    memory_mb: int = 2048,
    cpus: int = 2,
    boot_timeout: float = 180.0,
    insecure_registries: tuple[str, ...] = DEFAULT_INSECURE,
    port: int | None = None,
) -> Iterator[DockerHost]:
    """Boot a fresh Docker-host VM; yield it once its Docker API answers; stop it after."""
    cache = cache or Cache(default_root())
    kernel = kernel or debian_kernel(cache)
    # What the node needs, from the kernel's own config: a kernel that lacks it stops here.
    boot = kmod.plan(kernel, (*kf.DOCKER_HOST, *kf.SMOKE))
    disk = build_disk(cache, mirror=mirror)
    modules = modules_disk(kernel, cache)
    work = cache.scratch("docker-host-run-")
    guest: Guest | None = None
    try:
        copy = pristine_overlay(disk.disk, work)
        initrd = work / "initrd.img"
        write_initrd(disk, kernel, initrd, boot)
        append = f"console=ttyS0 panic=-1 quiet mitigations=off krs.insecure={','.join(insecure_registries) or 'none'}"
        machine = Machine(
            kernel=bootimage.for_qemu(kernel.vmlinuz, kernel.arch, cache),
            initrd=initrd,
            append=append,
            memory_mb=memory_mb,
            cpus=cpus,
            disks=(copy,),
            readonly_disks=(modules,),
        )
        guest, chosen = _start_with_port(machine, work, port)
        with log.step("docker-host boot", f"kernel {kernel.version}, API on 127.0.0.1:{chosen}"):
            engine = _wait_for_docker(guest, chosen, boot_timeout)
        boot_seconds = guest.elapsed()
        log.info(f"Docker-host VM ready in {boot_seconds:.1f}s (tcp://127.0.0.1:{chosen})")
        yield DockerHost(f"tcp://127.0.0.1:{chosen}", chosen, boot_seconds, engine, guest, disk, kernel)
    finally:
        if guest is not None:
            guest.stop()
        remove_tree(work)


def pristine_overlay(base: Path, work: Path) -> Path:
    """A copy-on-write overlay of the cached disk for one boot: the guest writes only to
    the overlay, so every boot starts from the pristine disk and costs only what it writes
    (a full copy would cost the disk's used size, ~1.3 GB, per boot)."""
    overlay = work / "disk.qcow2"
    if shutil.which("qemu-img") is None:
        raise VMError("qemu-img is not installed", "apt-get install qemu-utils")
    _run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base.resolve()), str(overlay)],
        "creating the VM disk overlay",
        timeout=60,
    )
    return overlay


def _start_with_port(machine: Machine, work: Path, port: int | None) -> tuple[Guest, int]:
    """Start QEMU forwarding a loopback port to the guest's API; a free port found by
    probing can be taken before QEMU binds it, so try another then."""
    for attempt in range(3):
        chosen = port or free_port()
        guest = Guest(dataclasses.replace(machine, forwards={chosen: GUEST_API_PORT}), work, "docker-host")
        guest.start()
        time.sleep(0.5)
        if guest.running() or "hostfwd" not in guest.qemu_error() or port or attempt == 2:
            return guest, chosen
        log.info(f"port {chosen} was taken before QEMU could bind it; trying another")
    raise AssertionError("unreachable")


def _wait_for_docker(guest: Guest, port: int, timeout: float) -> Engine:
    deadline = time.monotonic() + timeout
    url = f"tcp://127.0.0.1:{port}"
    while True:
        reported = guest.status()  # read first: a failing init reports, then powers off
        if "failed:" in reported:
            failure = reported.split("failed:", 1)[1].strip().splitlines()[0]
            log.detail(guest.console_tail(25))
            guest.stop()
            raise VMError(f"the Docker-host VM failed to boot: {failure}", "see the guest console above")
        guest.check_alive("start dockerd")
        if daemon_answers(url):
            break
        if time.monotonic() > deadline:
            log.detail(guest.console_tail(25))
            stage = (reported.strip().splitlines() or ["nothing"])[-1]
            guest.stop()
            raise VMError(
                f"the Docker-host VM's Docker API did not answer within {timeout:.0f}s (last stage: {stage})",
                "the guest may have stalled or the host is overloaded: run again (boots start from the pristine disk)",
            )
        time.sleep(1)
    try:
        return Engine(f"tcp://127.0.0.1:{port}")
    except DockerError as exc:
        raise VMError(f"the Docker-host VM answers /_ping but not the API: {exc.message}", "run again") from exc
