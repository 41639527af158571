"""The kernel a guest boots: a vmlinuz, its modules directory and its version.

From ``--kernel VMLINUZ --modules DIR``, or from a kernel ``.deb`` unpacked once into the
cache under ``kernels/<sha256 of the .deb>`` (a .deb is an ar archive whose
``data.tar.*`` holds ``boot/vmlinuz-<version>`` and ``lib/modules/<version>/``). Tests
obtain Debian's kernel package with ``apt-get download``, which verifies it against the
signed archive indices of the host's configured mirror. x86 bzImages and arm64 Images
are told apart by their headers, so a guest boots with the QEMU of its architecture.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import log
from ..archive import extract_tar
from ..cache import Cache, remove_tree
from ..errors import VMError
from ..treedigest import sha256_file

DEBIAN_METAPACKAGE = "linux-image-amd64"
# Debian's architecture names for the guest architectures (``uname -m`` names).
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_VERSION_RE = re.compile(r"^\d+\.\d+")


@dataclass(frozen=True)
class KernelFiles:
    vmlinuz: Path
    modules_dir: Path  # .../lib/modules/<version>
    version: str
    arch: str = "x86_64"

    def describe(self) -> str:
        return f"kernel {self.version}"


def kernel_arch(vmlinuz: Path) -> str | None:
    """``x86_64`` for a bzImage, ``aarch64`` for an arm64 Image (plain or gzipped), else None."""
    try:
        with vmlinuz.open("rb") as handle:
            head = handle.read(0x400)
            if head[:2] == b"\x1f\x8b":
                handle.seek(0)
                with gzip.open(handle) as unpacked:
                    head = unpacked.read(0x400)
    except (OSError, EOFError):
        return None
    if head[0x202:0x206] == b"HdrS":
        return "x86_64"
    if head[0x38:0x3C] == b"ARM\x64":
        return "aarch64"
    return None


def bzimage_version(vmlinuz: Path) -> str | None:
    """The release string a bzImage carries in its setup header (``6.1.0-56-amd64``)."""
    try:
        with vmlinuz.open("rb") as handle:
            header = handle.read(0x280)
            if header[0x202:0x206] != b"HdrS":
                return None
            pointer = int.from_bytes(header[0x20E:0x210], "little")
            if not pointer:
                return None
            handle.seek(pointer + 0x200)
            text = handle.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    release = text.split(" ", 1)[0]
    return release if _VERSION_RE.match(release) else None


def from_paths(vmlinuz: Path, modules: Path) -> KernelFiles:
    """``--kernel VMLINUZ --modules DIR``; DIR may be ``/lib/modules`` or its version subdir."""
    if not vmlinuz.is_file():
        raise VMError(f"kernel image {vmlinuz} does not exist", "pass --kernel the path of a vmlinuz (bzImage)")
    arch = kernel_arch(vmlinuz)
    if arch is None:
        raise VMError(
            f"{vmlinuz} is neither an x86 bzImage nor an arm64 Image kernel",
            "pass --kernel a vmlinuz file (for example /boot/vmlinuz-*)",
        )
    if not modules.is_dir():
        raise VMError(f"kernel modules directory {modules} does not exist", "pass --modules /lib/modules/<version>")
    # An arm64 Image carries no release string in its header: the modules directory names it.
    version = bzimage_version(vmlinuz) if arch == "x86_64" else _release_of(modules)
    if version is None:
        raise VMError(f"{vmlinuz} has no kernel release in its header", "pass --kernel an unmodified vmlinuz")
    if (modules / version).is_dir():
        modules = modules / version
    if modules.name != version and not (modules / "kernel").is_dir():
        raise VMError(
            f"{modules} is not the modules directory of kernel {version}",
            f"pass --modules /lib/modules/{version} (the modules built with that kernel)",
        )
    if modules.name != version:
        log.warn(f"modules directory {modules} is not named {version}; using it as that kernel's modules")
    return KernelFiles(vmlinuz.resolve(), modules.resolve(), version, arch)


def _release_of(modules: Path) -> str | None:
    """The release a modules directory is for: its own name, or its one version subdir's."""
    if (modules / "kernel").is_dir():
        return modules.name
    releases = [d.name for d in modules.iterdir() if (d / "kernel").is_dir()]
    if len(releases) != 1:
        raise VMError(
            f"{modules} holds {len(releases) or 'no'} kernels' modules, and an arm64 Image does not name its release",
            "pass --modules /lib/modules/<version> (the kernel's own modules directory)",
        )
    return releases[0]


def from_deb(deb: Path, cache: Cache) -> KernelFiles:
    """Unpack a kernel package once into ``<cache>/kernels/<sha256>/``; reuse it after."""
    if not deb.is_file():
        raise VMError(f"kernel package {deb} does not exist", "pass the path of a linux-image-*.deb")
    digest = sha256_file(deb)
    target = cache.root / "kernels" / digest
    with cache.lock(f"kernel-{digest}"):
        if not (target / ".complete").is_file():
            if target.exists():
                remove_tree(target)  # a half-written entry from a killed run
            work = cache.scratch("kernel-")
            try:
                with log.step("kernel", f"unpack {deb.name}"):
                    _unpack_deb(deb, work)
                (work / ".complete").write_text(deb.name + "\n")
                target.parent.mkdir(parents=True, exist_ok=True)
                work.replace(target)
            finally:
                if work.exists():
                    remove_tree(work)
    return _locate(target, deb.name)


def _locate(root: Path, origin: str) -> KernelFiles:
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise VMError(
            f"{origin} holds no boot/vmlinuz-*", "pass a linux-image-* package (not headers or a meta-package)"
        )
    vmlinuz = images[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    arch = kernel_arch(vmlinuz)
    if arch is None:
        raise VMError(f"{origin}'s {vmlinuz.name} is not an x86 or arm64 kernel", "pass an amd64 or arm64 package")
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if (base / version).is_dir():
            return KernelFiles(vmlinuz, base / version, version, arch)
    raise VMError(f"{origin} has no lib/modules/{version}", "pass the package that carries that kernel's modules")


def _unpack_deb(deb: Path, dest: Path) -> None:
    """Extract ``data.tar.*`` of an ar archive in Python, so no dpkg is needed."""
    with deb.open("rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise VMError(f"{deb} is not a Debian package (no ar header)", "pass a linux-image-*.deb file")
        while True:
            header = handle.read(60)
            if len(header) < 60:
                raise VMError(f"{deb} has no data.tar member", "pass a complete linux-image-*.deb file")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                _extract_tar(handle, size, name, dest)
                return
            handle.seek(size + size % 2, 1)


def _extract_tar(handle: BinaryIO, size: int, name: str, dest: Path) -> None:
    member = io.BytesIO(handle.read(size))  # a kernel package's data member is ~70 MB
    if not name.endswith(".zst"):
        with tarfile.open(fileobj=member, mode="r:*") as archive:
            extract_tar(archive, dest, name)
        return
    # tarfile reads no zstd before Python 3.14: the zstd tool decompresses as a stream.
    tool = shutil.which("zstd")
    if tool is None:
        raise VMError(f"the package's {name} is zstd-compressed", "apt-get install zstd")
    packed = dest / ".data.tar.zst"
    packed.write_bytes(member.getvalue())
    try:
        with (
            subprocess.Popen([tool, "-dc", str(packed)], stdout=subprocess.PIPE) as proc,
            tarfile.open(fileobj=proc.stdout, mode="r|") as archive,
        ):
            extract_tar(archive, dest, name)
        if proc.returncode != 0:
            raise VMError(f"zstd could not decompress {name} (exit {proc.returncode})", "download the package again")
    finally:
        packed.unlink(missing_ok=True)


def debian_kernel_deb(cache: Cache, package: str = DEBIAN_METAPACKAGE) -> Path:
    """Debian's current kernel package (the one ``linux-image-amd64`` depends on), in
    ``<cache>/debs/``; downloaded by apt from the host's configured mirror, which checks
    it against the archive's signed indices. A foreign architecture's package is named
    ``linux-image-arm64:arm64`` (apt must know that architecture)."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        raise VMError("apt-get is not available to fetch Debian's kernel", "pass --kernel VMLINUZ --modules DIR")
    name = _concrete_package(package)
    directory = cache.root / "debs"
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob(f"{name.partition(':')[0]}_*.deb"))
    if existing:
        return existing[-1]
    with cache.lock(f"deb-{name}"):
        work = cache.scratch("deb-")
        try:
            result = subprocess.run(
                ["apt-get", "download", "-q", name], cwd=work, capture_output=True, text=True, timeout=600, check=False
            )
            downloaded = sorted(work.glob(f"{name.partition(':')[0]}_*.deb"))
            if result.returncode != 0 or not downloaded:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise VMError(
                    f"apt-get download {name} failed: {last}",
                    "run apt-get update, or pass --kernel VMLINUZ --modules DIR",
                )
            target = directory / downloaded[-1].name
            downloaded[-1].replace(target)
            return target
        finally:
            remove_tree(work)


def _concrete_package(package: str) -> str:
    """``linux-image-amd64`` -> ``linux-image-6.1.0-56-amd64`` (what the meta-package
    depends on); a concrete package name is returned as it is."""
    result = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        _, _, foreign = package.partition(":")
        raise VMError(
            f"apt does not know {package}: {result.stderr.strip()[:200]}",
            f"run dpkg --add-architecture {foreign} && apt-get update (scripts/setup-host.sh does)"
            if foreign
            else "run apt-get update (the Debian mirror must be in the apt sources)",
        )
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Depends" and value.strip().startswith("linux-image-"):
            return value.strip()
    return package


def debian_package(arch: str) -> str:
    """Debian's kernel meta-package for a guest architecture, arch-qualified when foreign."""
    debian = DEBIAN_ARCH[arch]
    native = ""
    if shutil.which("dpkg"):
        native = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=False).stdout
    package = f"linux-image-{debian}"
    return package if native.strip() in ("", debian) else f"{package}:{debian}"


def resolve(kernel: Path | str, modules: Path | None, cache: Cache, arch: str = "x86_64") -> KernelFiles:
    """What the CLI's ``--kernel`` names: ``debian`` (Debian's current kernel package for
    ``arch`` from the host's apt sources), a ``.deb`` (modules inside), or a vmlinuz plus
    ``--modules``."""
    if str(kernel) == "debian":
        return from_deb(debian_kernel_deb(cache, debian_package(arch)), cache)
    kernel = Path(kernel)
    if kernel.suffix == ".deb":
        return from_deb(kernel, cache)
    if modules is None:
        raise VMError(
            f"--kernel {kernel} needs --modules DIR (its /lib/modules/<version>)",
            "pass --modules, or pass --kernel a linux-image-*.deb that carries the modules",
        )
    return from_paths(kernel, modules)
