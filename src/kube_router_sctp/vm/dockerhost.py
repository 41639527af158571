"""A Docker host on a real kernel: a cached Debian VM disk, booted fresh for each use.

The disk is a debootstrapped Debian root (Docker, containerd, iproute2, kmod, iptables,
ipset, conntrack; socat, ipvsadm and tcpdump for the dataplane proof) with the kernel's
modules, written to a sparse raw image with ``mkfs.ext4 -d``. It is built once and
cached under a key of everything that shapes it (kernel, package list, suite, the init
scripts, a recipe version). Every boot runs on a fresh qcow2 overlay of that disk, because
a guest rebooted from a disk it had already run on was seen to stall; the cached disk is
never written, and the overlay is thrown away afterwards, so stopping QEMU is a clean
shutdown.

Boot: the kernel with a small initramfs of our own (busybox-static from the disk plus the
virtio/ext4 modules) that mounts the disk and switches to ``/sbin/krs-init``, which loads
modules, configures the user-mode network (10.0.2.15/24 via 10.0.2.2; the host's
127.0.0.1 is 10.0.2.2 to the guest) and starts containerd and dockerd with the API on
TCP 2375, forwarded to a free port on the host's loopback. Options for a boot (insecure
registries) travel on the kernel command line, so one disk serves every run.
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

from .. import config, log
from ..cache import Cache, default_root, remove_tree
from ..engine import Engine, daemon_answers
from ..errors import DockerError, VMError
from ..treedigest import sha256_file
from . import modules as kmod
from .cpio import open_initramfs
from .kernel import KernelFiles, resolve
from .qemu import Guest, Machine, free_port

RECIPE_VERSION = 2
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
    # Foreign-architecture images (arm64) run under binfmt emulation, as on the build host.
    "qemu-user-static",
    "binfmt-support",
)
GUEST_API_PORT = 2375
HOST_FROM_GUEST = "10.0.2.2"  # user-mode networking's name for the host's 127.0.0.1
DEFAULT_INSECURE = (f"{HOST_FROM_GUEST}:5000",)
DISK_GIB = 8

# Loaded at boot. Docker's own needs (bridge, nf_tables, xt_*) are loaded on demand by
# the kernel through the disk's modprobe; these are the ones nothing would ask for.
BOOT_MODULES = (
    "virtio_net",
    "overlay",
    "br_netfilter",
    "veth",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_sh",
    "sctp",
    "nf_conntrack",
    "nf_nat",
    "ip_set",
    "ip_set_hash_ip",
    "ip_set_hash_ipport",
    "ip_set_hash_ipportip",
    "ip_set_hash_net",
    "dummy",
    "binfmt_misc",
)
ROOT_MODULES = ("virtio_pci", "virtio_blk", "ext4")

_GUEST_INIT = """#!/bin/sh
# Init of the Docker-host VM (tini is PID 1 and reaps orphans; this script is its child).
# It travels in each boot's initramfs, so changing it needs no new disk.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "krs-init: $*"; echo "$*" > /dev/ttyS1; }
fail() { say "failed: $*"; echo o > /proc/sysrq-trigger; sleep 10; exit 1; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
mount -o remount,rw / || fail "cannot remount / read-write"
hostname krs-docker-host
say booting
for module in @MODULES@; do
    modprobe "$module" 2>/dev/null || echo "krs-init: modprobe $module failed"
done
ip link set lo up
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    && update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || echo "krs-init: no arm64 emulation"
# The NIC is named by the kernel (no udev here); pick the first with a device behind it,
# since modules such as dummy create interfaces too.
nic=
tries=0
while [ -z "$nic" ]; do
    for dev in /sys/class/net/*; do
        [ -e "$dev/device" ] && nic=${dev##*/} && break
    done
    [ -n "$nic" ] && break
    tries=$((tries + 1))
    [ "$tries" -gt 300 ] && fail "no network interface appeared"
    sleep 0.1
done
ip addr add 10.0.2.15/24 dev "$nic" || fail "cannot configure $nic"
ip link set "$nic" up
ip route add default via 10.0.2.2 || fail "cannot add the default route"
echo 1 > /proc/sys/net/ipv4/ip_forward
say "network $nic"
insecure=
for word in $(cat /proc/cmdline); do
    case "$word" in krs.insecure=*) insecure=${word#krs.insecure=} ;; esac
done
flags=
for registry in $(echo "$insecure" | tr ',' ' '); do flags="$flags --insecure-registry $registry"; done
mkdir -p /run/containerd
containerd --log-level warn >/dev/console 2>&1 &
tries=0
while [ ! -S /run/containerd/containerd.sock ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 600 ] && fail "containerd did not start"
    sleep 0.1
done
# --tls=false says on purpose what a bare TCP listener implies; without it dockerd
# 20.10 sleeps 15 s to show a deprecation warning. The API is reachable only through
# the host's loopback forward.
# shellcheck disable=SC2086 # flags are words on purpose
dockerd -H tcp://0.0.0.0:@PORT@ -H unix:///run/docker.sock --tls=false \\
    --containerd /run/containerd/containerd.sock $flags >/dev/console 2>&1 &
dockerd=$!
say "dockerd started"
while kill -0 "$dockerd" 2>/dev/null; do sleep 2; done
wait "$dockerd"
fail "dockerd exited with status $?"
"""

_INITRD_INIT = """#!/bin/sh
# Initramfs of the Docker-host VM: load the disk's drivers, mount it, switch to it.
B=/bin/busybox
fail() { echo "failed: $*" > /dev/ttyS1; echo "krs-initrd: $*"; echo o > /proc/sysrq-trigger; sleep 10; exit 1; }
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for module in /modules/*.ko; do
    $B insmod "$module" 2>/dev/null || echo "krs-initrd: insmod ${module##*/} failed"
done
tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 300 ] && fail "the disk /dev/vda did not appear"
    $B sleep 0.1
done
$B mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
$B cp /krs-init /newroot/sbin/krs-init || fail "cannot install the init"
$B umount /proc /sys /dev
# tini as PID 1 reaps the orphans containerd shims leave behind; a shell would not.
for tini in /usr/bin/tini-static /usr/bin/tini; do
    [ -x "/newroot$tini" ] && exec $B switch_root /newroot "$tini" -- /sbin/krs-init
done
exec $B switch_root /newroot /sbin/krs-init
"""


@dataclass(frozen=True)
class HostDisk:
    """A built disk in the cache: never booted itself, only copied."""

    directory: Path
    disk: Path
    busybox: Path  # the disk's busybox-static, for each boot's initramfs
    kernel: KernelFiles
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
def disk_key(kernel: KernelFiles, packages: tuple[str, ...], suite: str) -> str:
    """Everything that shapes the disk: a change to any of it builds a new one."""
    inputs = {
        "recipe": RECIPE_VERSION,
        "kernel": kernel.version,
        "vmlinuz": sha256_file(kernel.vmlinuz),
        "packages": sorted(packages),
        "suite": suite,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def build_disk(
    kernel: KernelFiles,
    cache: Cache,
    *,
    mirror: str | None = None,
    packages: tuple[str, ...] = PACKAGES,
    suite: str = SUITE,
    size_gib: int = DISK_GIB,
    rebuild: bool = False,
) -> HostDisk:
    """The cached disk for these inputs, built first if absent (minutes; needs root)."""
    key = disk_key(kernel, packages, suite)
    target = cache.root / "vm" / "docker-host" / key
    with cache.lock(f"docker-host-{key}"):
        if rebuild and target.exists():
            remove_tree(target)
        manifest = target / "manifest.json"
        if manifest.is_file():
            log.info(f"Docker-host disk {key[:12]}: cached")
            return HostDisk(target, target / "disk.img", target / "busybox", kernel, key, 0.0)
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
            with log.step("docker-host disk", f"Debian {suite} + kernel {kernel.version}"):
                root = work / "root"
                _debootstrap(root, suite, mirror, packages, work / "debootstrap.log")
                _install_kernel_modules(root, kernel)
                _configure(root)
                _keep_busybox(root, work / "busybox")
                _make_ext4(root, work / "disk.img", size_gib)
                _remove_root(root)
                seconds = time.monotonic() - start
                (work / "manifest.json").write_text(
                    json.dumps(
                        {
                            "key": key,
                            "kernel": kernel.version,
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
            return HostDisk(target, target / "disk.img", target / "busybox", kernel, key, seconds)
        finally:
            if work.exists():
                _remove_root(work)


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


def _install_kernel_modules(root: Path, kernel: KernelFiles) -> None:
    # bookworm merges /lib into /usr/lib: write through the real directory.
    target = root / "usr" / "lib" / "modules" / kernel.version
    shutil.copytree(kernel.modules_dir, target, symlinks=True)
    _run(["chroot", str(root), "depmod", "-a", kernel.version], "depmod in the disk's root", timeout=600)


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


def write_initrd(disk: HostDisk, dest: Path) -> None:
    """This boot's initramfs: busybox, the disk's drivers, the init scripts."""
    modules = kmod.ModuleIndex.load(disk.kernel.modules_dir).resolve(ROOT_MODULES)
    guest_init = _GUEST_INIT.replace("@MODULES@", " ".join(BOOT_MODULES)).replace("@PORT@", str(GUEST_API_PORT))
    with open_initramfs(dest, compress=True) as writer:
        writer.file("bin/busybox", disk.busybox.read_bytes(), mode=0o755)
        writer.symlink("bin/sh", "busybox")
        writer.directory("dev")
        writer.device("dev/console", "c", 5, 1, 0o600)
        writer.device("dev/null", "c", 1, 3, 0o666)
        writer.device("dev/ttyS1", "c", 4, 65, 0o660)
        writer.file("init", _INITRD_INIT.encode(), mode=0o755)
        writer.file("krs-init", guest_init.encode(), mode=0o755)
        kmod.add_to_initramfs(writer, modules, "modules")


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
    disk = build_disk(kernel, cache, mirror=mirror)
    work = cache.scratch("docker-host-run-")
    guest: Guest | None = None
    try:
        copy = pristine_overlay(disk.disk, work)
        initrd = work / "initrd.img"
        write_initrd(disk, initrd)
        append = f"console=ttyS0 panic=-1 quiet mitigations=off krs.insecure={','.join(insecure_registries) or 'none'}"
        machine = Machine(
            kernel=kernel.vmlinuz,
            initrd=initrd,
            append=append,
            memory_mb=memory_mb,
            cpus=cpus,
            disks=(copy,),
        )
        guest, chosen = _start_with_port(machine, work, port)
        with log.step("docker-host boot", f"kernel {kernel.version}, API on 127.0.0.1:{chosen}"):
            engine = _wait_for_docker(guest, chosen, boot_timeout)
        boot_seconds = guest.elapsed()
        log.info(f"Docker-host VM ready in {boot_seconds:.1f}s (tcp://127.0.0.1:{chosen})")
        yield DockerHost(f"tcp://127.0.0.1:{chosen}", chosen, boot_seconds, engine, guest, disk)
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
