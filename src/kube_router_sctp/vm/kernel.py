"""The kernel a guest boots: a vmlinuz, its modules directory, its config and its release.

What ``--kernel`` names:
- ``debian``, ``debian:SUITE`` or ``debian:VERSION``: resolved from the Debian mirror's
  signed indices (``vm.debian``) to the packages that hold one kernel, downloaded and
  verified;
- a kernel ``.deb`` of either layout: classic (``boot/vmlinuz-<release>`` and
  ``lib/modules/<release>/`` in one ``linux-image-<release>``) or split (from 7.x: an
  empty ``linux-image-<release>`` depending on ``linux-binary-`` with
  ``usr/lib/modules/<release>/vmlinuz``, ``linux-modules-`` with the modules and
  ``linux-base-`` with ``config`` and ``modules.builtin``). A split package's siblings are
  taken from its directory (``apt-get download`` puts them there) or, failing that, from
  the mirror;
- a directory: of ``.deb`` files, or an unpacked kernel (a root with ``boot/`` or
  ``usr/lib/modules/``, or one ``modules/<release>`` directory holding ``vmlinuz``);
- a vmlinuz with ``--modules DIR``.

Packages are unpacked once into ``<cache>/kernels/<digest of their sha256s>/``. Modules
stay as packaged (``.ko``, ``.ko.xz``, ``.ko.zst``); x86 bzImages and arm64 Images are
told apart by their headers, so a guest boots with the QEMU of its architecture.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import log, safefs
from ..cache import Cache, remove_tree
from ..download import Downloader
from ..errors import VMError
from ..treedigest import sha256_file
from . import deb as debfile
from . import debian

_KERNEL_PACKAGE_RE = re.compile(r"^linux-(image|binary|modules|base)-\d")
_RELEASE_STRING_RE = re.compile(r"\d+\.\d+[A-Za-z0-9._+~-]*")


@dataclass(frozen=True)
class PackageRef:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class KernelFiles:
    vmlinuz: Path
    modules_dir: Path  # .../lib/modules/<version>
    version: str
    arch: str = "x86_64"
    config: Path | None = None  # the kernel's build configuration, when it came with one
    origin: str = ""  # what --kernel named
    packages: tuple[PackageRef, ...] = ()  # the packages it came from
    suite: str = ""  # the Debian suite a spec resolved to

    def describe(self) -> str:
        return f"kernel {self.version}"

    def record(self) -> dict[str, Any]:
        """Exactly what was booted, for reports and the kernel matrix."""
        return {
            "spec": self.origin,
            "release": self.version,
            "arch": self.arch,
            "suite": self.suite,
            "vmlinuz_sha256": sha256_file(self.vmlinuz),
            "config": self.config is not None,
            "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256} for p in self.packages],
        }


def kernel_arch(vmlinuz: Path) -> str | None:
    """``x86_64`` for a bzImage, ``aarch64`` for an arm64 Image (plain or gzipped), else None."""
    opened = safefs.open_regular(vmlinuz)
    if opened is None:
        return None
    try:
        with opened as handle:
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
    opened = safefs.open_regular(vmlinuz)
    if opened is None:
        return None
    try:
        with opened as handle:
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
    # The whole string, not a prefix: the release names directories (modules/<release>).
    return release if _RELEASE_STRING_RE.fullmatch(release) and ".." not in release else None


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
    config = _config_beside(modules, vmlinuz, version)
    return KernelFiles(vmlinuz.resolve(), modules.resolve(), version, arch, config, str(vmlinuz))


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


def _config_beside(modules: Path, vmlinuz: Path, version: str) -> Path | None:
    for candidate in (modules / "config", vmlinuz.parent / f"config-{version}"):
        if candidate.is_file():
            return candidate.resolve()
    return None


# -- packages ------------------------------------------------------------------------------
def from_debs(debs: Sequence[Path], cache: Cache, origin: str = "", suite: str = "") -> KernelFiles:
    """Unpack kernel packages (one kernel's, any layout) once into the cache; reuse after."""
    for deb in debs:
        if not deb.is_file():
            raise VMError(f"kernel package {deb} does not exist", "pass the path of a linux-image-*.deb")
    digests = sorted({sha256_file(deb): deb for deb in debs}.items())
    key = hashlib.sha256(" ".join(d for d, _ in digests).encode()).hexdigest()
    target = cache.root / "kernels" / key
    with cache.lock(f"kernel-{key}"):
        if not (target / ".complete").is_file():
            if target.exists():
                remove_tree(target)  # a half-written entry from a killed run
            controls = [(digest, deb, debfile.control(deb)) for digest, deb in digests]
            names = ", ".join(f"{c.package} {c.version}" for _, _, c in controls)
            work = cache.scratch("kernel-")
            try:
                with log.step("kernel", f"unpack {names}"):
                    for _, deb, _ in controls:
                        debfile.unpack(deb, work)
                packaged = [{"name": c.package, "version": c.version, "sha256": d} for d, _, c in controls]
                (work / ".packages.json").write_text(json.dumps(packaged, indent=1) + "\n")
                (work / ".complete").write_text(names + "\n")
                target.parent.mkdir(parents=True, exist_ok=True)
                work.replace(target)
            finally:
                if work.exists():
                    remove_tree(work)
    refs = tuple(PackageRef(**r) for r in json.loads((target / ".packages.json").read_text()))
    names = ", ".join(r.name for r in refs)
    found = _locate(target, names)
    return KernelFiles(
        found.vmlinuz, found.modules_dir, found.version, found.arch, found.config, origin or names, refs, suite
    )


def from_deb(deb: Path, cache: Cache, archive: debian.Archive | None = None) -> KernelFiles:
    """One ``.deb``: complete (classic layout, or a ``linux-binary``/``-modules`` set's
    member) or the empty ``linux-image-<release>`` of the split layout, whose siblings
    come from the same directory or else from the mirror."""
    if not deb.is_file():
        raise VMError(f"kernel package {deb} does not exist", "pass the path of a linux-image-*.deb")
    control = debfile.control(deb)
    wanted = _kernel_depends(control.depends)
    if not wanted:
        return from_debs([deb], cache, origin=str(deb))
    found = [deb]
    missing = []
    for name, version in wanted:
        sibling = _sibling(deb.parent, name, version)
        if sibling is None:
            missing.append(f"{name} {version}".strip())
        else:
            found.append(sibling)
    if not missing:
        return from_debs(found, cache, origin=str(deb))
    if archive is None:
        raise VMError(
            f"{deb.name} is the split layout's image package; {', '.join(missing)} are not beside it",
            f"download them into {deb.parent} (apt-get download {' '.join(n.split()[0] for n in missing)}), "
            "or pass --kernel debian:VERSION",
        )
    log.info(f"{deb.name}: {', '.join(missing)} not beside it; resolving {control.version} from the mirror")
    resolved = archive.resolve(f"debian:{control.version}", _DEB_TO_GUEST.get(control.architecture, "x86_64"))
    if (control.package, control.version) not in {(p.name, p.version) for p in resolved.packages}:
        raise VMError(
            f"the mirror's {control.version} kernel is not {control.package}",
            f"put {', '.join(missing)} beside {deb.name}",
        )
    return from_debs(archive.download(resolved), cache, origin=str(deb), suite=resolved.suite)


_DEB_TO_GUEST = {deb: guest for guest, deb in debian.DEBIAN_ARCH.items()}


def _kernel_depends(depends: str) -> list[tuple[str, str]]:
    """The kernel packages a split image package depends on: (name, exact version)."""
    wanted = []
    for clause in depends.split(","):
        first = clause.split("|")[0].strip()
        name, _, rest = first.partition(" ")
        if _KERNEL_PACKAGE_RE.match(name):
            version = rest.strip("() ").removeprefix("=").strip()
            wanted.append((name, version))
    return wanted


def _sibling(directory: Path, name: str, version: str) -> Path | None:
    for candidate in sorted(directory.glob(f"{name}_*.deb")):
        try:
            control = debfile.control(candidate)
        except VMError:
            continue
        if control.package == name and (not version or control.version == version):
            return candidate
    return None


def from_directory(directory: Path, cache: Cache, archive: debian.Archive | None = None) -> KernelFiles:
    """A directory of kernel ``.deb`` files, or an unpacked kernel."""
    debs = sorted(p for p in directory.glob("*.deb") if _KERNEL_PACKAGE_RE.match(p.name))
    if debs:
        releases = {_release_in_name(p.name) for p in debs}
        if len(releases) > 1:
            raise VMError(
                f"{directory} holds packages of several kernels ({', '.join(sorted(releases))})",
                "keep one kernel's packages per directory",
            )
        images = [p for p in debs if p.name.startswith("linux-image-")]
        if len(debs) == 1 or not images:
            return from_debs(debs, cache, origin=str(directory))
        return from_deb(images[0], cache, archive) if len(images) == 1 else from_debs(debs, cache)
    found = _locate(directory, str(directory))
    return KernelFiles(found.vmlinuz, found.modules_dir, found.version, found.arch, found.config, str(directory))


def _release_in_name(filename: str) -> str:
    return re.sub(r"^linux-(image|binary|modules|base)-", "", filename.split("_", 1)[0])


def _locate(root: Path, origin: str) -> KernelFiles:
    """The kernel in an unpacked tree of either layout (or a bare modules directory)."""
    candidates: dict[str, Path] = {}
    for image in sorted((root / "boot").glob("vmlinuz-*")):
        candidates[image.name.removeprefix("vmlinuz-")] = image
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        for image in sorted(base.glob("*/vmlinuz")):
            candidates.setdefault(image.parent.name, image)
    if (root / "vmlinuz").is_file() and (root / "kernel").is_dir():
        candidates.setdefault(root.name, root / "vmlinuz")
    if not candidates:
        raise VMError(
            f"{origin} holds no kernel (no boot/vmlinuz-* nor modules/<release>/vmlinuz)",
            "pass a linux-image package with its dependencies, or --kernel debian:SUITE",
        )
    if len(candidates) > 1:
        raise VMError(f"{origin} holds several kernels ({', '.join(sorted(candidates))})", "pass one kernel")
    version, vmlinuz = next(iter(candidates.items()))
    arch = kernel_arch(vmlinuz)
    if arch is None:
        raise VMError(f"{origin}'s {vmlinuz.name} is not an x86 or arm64 kernel", "pass an amd64 or arm64 package")
    for modules in (root / "lib" / "modules" / version, root / "usr" / "lib" / "modules" / version, root):
        if modules.name == version and (modules / "kernel").is_dir():
            config = next((c for c in (root / "boot" / f"config-{version}", modules / "config") if c.is_file()), None)
            return KernelFiles(vmlinuz, modules, version, arch, config)
    raise VMError(
        f"{origin} has no modules for kernel {version}",
        "pass the package that carries that kernel's modules too (linux-modules-<release> in the split layout)",
    )


# -- what --kernel names --------------------------------------------------------------------
def resolve(
    kernel: Path | str,
    modules: Path | None,
    cache: Cache,
    arch: str = "x86_64",
    *,
    mirror: str | None = None,
    downloader: Downloader | None = None,
) -> KernelFiles:
    """A Debian spec (for ``arch``), a ``.deb``, a directory, or a vmlinuz plus ``--modules``."""
    text = str(kernel)
    if debian.parse_spec(text) is not None:
        archive = debian.Archive(mirror, cache, downloader)
        with log.step("kernel", f"resolve {text} ({debian.DEBIAN_ARCH[arch]})"):
            resolved = archive.resolve(text, arch)
            log.info(resolved.describe())
            paths = archive.download(resolved)
        return from_debs(paths, cache, origin=text, suite=resolved.suite)
    path = Path(kernel)
    if path.suffix == ".deb":
        return from_deb(path, cache, _archive_or_none(mirror, cache, downloader))
    if path.is_dir() and modules is None:
        return from_directory(path, cache, _archive_or_none(mirror, cache, downloader))
    if modules is None:
        raise VMError(
            f"--kernel {kernel} needs --modules DIR (its /lib/modules/<version>)",
            "pass --modules, or pass --kernel a kernel .deb, a directory of them, or debian:SUITE",
        )
    return from_paths(path, modules)


def _archive_or_none(mirror: str | None, cache: Cache, downloader: Downloader | None) -> debian.Archive | None:
    """The mirror, asked only when a split package's siblings are missing: a host without
    one can still boot complete packages."""
    try:
        return debian.Archive(mirror, cache, downloader)
    except VMError:
        return None
