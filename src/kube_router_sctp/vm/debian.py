"""Debian's kernels by name, from the Debian mirror's signed indices.

``debian`` (the kernel the host's apt suites carry), ``debian:SUITE`` (``trixie``,
``sid``, ``bookworm-backports``, ``bookworm-security``, ``stable``...) or
``debian:VERSION`` (``6.12.57``, ``6.12.57+deb13-amd64``, ``6.12.57-1``) resolve to the
packages that hold one kernel: ``linux-image-<arch>`` and everything it depends on that
the kernel's source packages build (classic: one ``linux-image-<release>``; split, from
7.x: ``linux-binary-``, ``linux-modules-`` and ``linux-base-<release>``).

The chain of trust is apt's: the suite's ``InRelease`` must carry a valid signature of
a key in Debian's archive keyring (``gpgv``), the ``Packages`` index must match the
SHA256 that InRelease lists, and every ``.deb`` the SHA256 the index lists. Indices and
packages are downloaded by ``download.py`` and cached by content; the kernel subset of
each index is kept beside it, so a cached resolution costs one InRelease. The mirror is
``mirrors.debian`` (default: the host's apt sources); security suites come from the
host's security source or the mirror's ``-security`` sibling.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from debian.deb822 import Deb822, PkgRelation
from debian.debian_support import Version

from .. import aptsources, log, validate
from ..cache import Cache, remove_tree
from ..download import Downloader
from ..errors import FetchError, VerificationError, VMError

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Debian's architecture names for the guest architectures (``uname -m`` names).
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# Where a version with no suite is looked for after the host's own suites: Debian's
# suite aliases, so no release name is written here.
SEARCH_SUITES = (
    "stable-security",
    "stable",
    "stable-backports",
    "testing",
    "unstable",
    "oldstable-security",
    "oldstable",
    "oldstable-backports",
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_INDEX_FORMAT = 1


@dataclass(frozen=True)
class Package:
    """One binary package as the signed index lists it."""

    name: str
    version: str
    architecture: str
    source: str
    depends: str
    filename: str  # pool/main/l/linux/...deb
    sha256: str
    size: int
    suite: str
    base: str  # the mirror's base URL

    @property
    def url(self) -> str:
        return f"{self.base}/{self.filename}"

    @property
    def kernel_source(self) -> bool:
        """Built from the kernel's own source packages (``linux``, ``linux-signed-*``)."""
        name = self.source.split(" ", 1)[0] or self.name
        return name == "linux" or name.startswith("linux-signed-")


@dataclass(frozen=True)
class Resolved:
    spec: str
    suite: str
    packages: tuple[Package, ...]
    release: str  # the kernel release the packages hold, e.g. 7.2.13+deb14-amd64

    def describe(self) -> str:
        return f"{self.spec} -> {self.suite}: " + ", ".join(f"{p.name} {p.version}" for p in self.packages)


def parse_spec(spec: str) -> tuple[str, str] | None:
    """``debian`` -> ("host", ""), ``debian:trixie`` -> ("suite", "trixie"),
    ``debian:6.12.57`` -> ("version", "6.12.57"); None when ``spec`` names no Debian kernel."""
    if spec == "debian":
        return "host", ""
    prefix, sep, rest = spec.partition(":")
    if prefix != "debian" or not sep:
        return None
    if validate.DEBIAN_KERNEL_SUITE_RE.fullmatch(rest):
        return "suite", rest
    if validate.DEBIAN_KERNEL_VERSION_RE.fullmatch(rest) and ".." not in rest:
        return "version", rest
    raise VMError(
        f"--kernel {spec}: {rest!r} is neither a Debian suite nor a kernel version",
        "write debian, debian:SUITE (debian:trixie, debian:sid, debian:bookworm-backports) or debian:VERSION",
    )


class Archive:
    """The Debian mirror's signed indices for kernels, verified and cached."""

    def __init__(
        self,
        mirror: str | None,
        cache: Cache,
        downloader: Downloader | None = None,
        *,
        security: str | None = None,
        keyring: Path = KEYRING,
        apt_dir: Path = aptsources.APT_DIR,
    ) -> None:
        mirror = (mirror or aptsources.debian_mirror(apt_dir) or "").rstrip("/")
        if not mirror:
            raise VMError(
                "no Debian mirror to resolve a kernel from",
                "configure one in the host's apt sources, or set mirrors.debian (--debian-mirror URL)",
            )
        self.mirror = mirror
        self.security = (security or aptsources.security_mirror(mirror, apt_dir) or "").rstrip("/")
        self.cache = cache
        self.downloader = downloader or Downloader(cache)
        self.keyring = keyring
        self.apt_dir = apt_dir
        self._indices: dict[tuple[str, str], dict[str, Package]] = {}

    def base_for(self, suite: str) -> str:
        return self.security if suite.endswith("-security") and self.security else self.mirror

    # -- InRelease -------------------------------------------------------------------
    def release(self, suite: str) -> dict[str, str]:
        """The suite's InRelease fields, after its signature was verified."""
        base = self.base_for(suite)
        url = f"{base}/dists/{suite}/InRelease"
        stored = self._release_dir(base, suite) / "InRelease"
        work = self.cache.scratch("inrelease-")
        try:
            fresh = work / "InRelease"
            problem = self._fetch(suite, url, fresh)
            if problem is not None:
                if not stored.is_file():
                    raise problem
                log.warn(f"{suite}: using the InRelease fetched earlier ({problem.message})")
                shutil.copyfile(stored, fresh)
            text = self._verified(fresh, url)
            fields = _fields(text)
            if suite not in (fields.get("Suite"), fields.get("Codename")):
                raise VerificationError(
                    f"{url} is signed for suite {fields.get('Suite')}/{fields.get('Codename')}, not {suite}",
                    "the mirror serves the wrong index: fix mirrors.debian",
                )
            _warn_if_stale(suite, fields)
            stored.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh, stored)
            return fields
        finally:
            remove_tree(work)

    def _fetch(self, suite: str, url: str, dest: Path) -> FetchError | None:
        if self.downloader.offline:
            return FetchError(
                f"Debian's {suite} index is not in the cache and --offline forbids downloading",
                "resolve the kernel once online, or pass --kernel a .deb",
            )
        try:
            self.downloader.fetch_unpinned(f"{suite} InRelease", [url], dest)
        except FetchError as exc:
            return exc
        return None

    def _release_dir(self, base: str, suite: str) -> Path:
        key = hashlib.sha256(base.encode()).hexdigest()[:16]
        return self.cache.root / "debian" / "releases" / key / suite

    def _verified(self, inrelease: Path, url: str) -> str:
        gpgv = shutil.which("gpgv")
        if gpgv is None:
            raise VMError("gpgv is not installed (it checks Debian's signatures)", "apt-get install gpgv")
        if not self.keyring.is_file():
            raise VMError(
                f"Debian's archive keyring {self.keyring} is missing", "apt-get install debian-archive-keyring"
            )
        plain = inrelease.with_suffix(".plain")
        result = subprocess.run(
            [gpgv, "--status-fd", "1", "--keyring", str(self.keyring), "--output", str(plain), str(inrelease)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        status = [line.split()[1:2] for line in result.stdout.splitlines() if line.startswith("[GNUPG:] ")]
        words = {w[0] for w in status if w}
        # gpgv writes the text even for a bad signature: only the status lines decide.
        if "VALIDSIG" not in words or words & {"BADSIG", "EXPKEYSIG", "REVKEYSIG"} or not plain.is_file():
            seen = ", ".join(sorted(words)) or result.stderr.strip()[:200] or "no signature"
            raise VerificationError(
                f"{url} has no valid signature by Debian's archive keys ({seen})",
                "the mirror serves a tampered or foreign index: fix mirrors.debian; nothing was used",
            )
        return plain.read_text(errors="replace")

    # -- Packages --------------------------------------------------------------------
    def kernels(self, suite: str, arch: str) -> dict[str, Package]:
        """The suite's kernel packages (``linux-*``) for a Debian architecture, by name."""
        key = (suite, arch)
        if key not in self._indices:
            self._indices[key] = self._load_kernels(suite, arch)
        return self._indices[key]

    def _load_kernels(self, suite: str, arch: str) -> dict[str, Package]:
        fields = self.release(suite)
        base = self.base_for(suite)
        listed = _sha256_list(fields.get("SHA256", ""))
        name = path = digest = None
        for suffix in (".xz", ".gz", ""):
            candidate = f"main/binary-{arch}/Packages{suffix}"
            if candidate in listed:
                name, path, digest = f"{suite} {candidate}", candidate, listed[candidate]
                break
        if name is None or path is None or digest is None:
            raise VMError(
                f"Debian's {suite} has no main/binary-{arch} index",
                f"choose a suite that carries {arch} kernels",
            )
        subset = self.cache.root / "debian" / "kernel-index" / f"{digest}-{_INDEX_FORMAT}.json"
        if subset.is_file():
            rows = json.loads(subset.read_text())
        else:
            url = f"{base}/dists/{suite}/{path}"
            blob = self.downloader.fetch(name, digest, [url], "check mirrors.debian").path
            rows = [_row(p) for p in _kernel_paragraphs(_decompress(blob, path))]
            subset.parent.mkdir(parents=True, exist_ok=True)
            part = subset.with_suffix(".part")
            part.write_text(json.dumps(rows))
            part.replace(subset)
        packages: dict[str, Package] = {}
        for row in rows:
            package = _package(row, suite, base)
            if package is not None and package.architecture in (arch, "all"):
                known = packages.get(package.name)
                if known is None or Version(package.version) > Version(known.version):
                    packages[package.name] = package
        return packages

    # -- resolving -------------------------------------------------------------------
    def resolve(self, spec: str, guest_arch: str) -> Resolved:
        """The packages of the kernel ``spec`` names, for a guest architecture."""
        parsed = parse_spec(spec)
        if parsed is None:
            raise VMError(
                f"--kernel {spec} is not a Debian kernel spec", "write debian, debian:SUITE or debian:VERSION"
            )
        kind, value = parsed
        arch = DEBIAN_ARCH[guest_arch]
        if kind == "suite":
            return self._from_suite(spec, value, arch)
        if kind == "host":
            suites = aptsources.debian_suites(self.mirror, self.apt_dir)
            if not suites:
                raise VMError(
                    "the host's apt sources name no suite of the Debian mirror",
                    "name the suite: --kernel debian:trixie (or debian:sid, debian:bookworm...)",
                )
            return self._newest(spec, suites, arch)
        return self._by_version(spec, value, arch)

    def _from_suite(self, spec: str, suite: str, arch: str) -> Resolved:
        index = self.kernels(suite, arch)
        meta = f"linux-image-{arch}"
        if meta not in index:
            raise VMError(f"Debian's {suite} has no {meta}", "choose a suite that carries kernels (debian:trixie)")
        return Resolved(spec, suite, *self._closure(index, meta, suite))

    def _newest(self, spec: str, suites: Iterable[str], arch: str) -> Resolved:
        """What apt would install from these suites: the highest version of the meta-package."""
        best: Resolved | None = None
        best_version: Version | None = None
        for suite in suites:
            try:
                index = self.kernels(suite, arch)
            except VMError:
                continue  # a suite without this architecture (or a partial mirror)
            meta = index.get(f"linux-image-{arch}")
            if meta is None:
                continue  # bookworm-updates and the like carry no kernel
            if best_version is None or Version(meta.version) > best_version:
                best, best_version = (
                    Resolved(spec, suite, *self._closure(index, meta.name, suite)),
                    Version(meta.version),
                )
        if best is None:
            raise VMError(
                f"none of the host's suites ({', '.join(suites)}) carries linux-image-{arch}",
                "name a suite: --kernel debian:trixie",
            )
        return best

    def _by_version(self, spec: str, wanted: str, arch: str) -> Resolved:
        host = aptsources.debian_suites(self.mirror, self.apt_dir)
        searched: list[str] = []
        for suite in dict.fromkeys((*host, *SEARCH_SUITES)):
            try:
                index = self.kernels(suite, arch)
            except (VMError, FetchError) as exc:
                log.info(f"{suite}: not searched ({exc.message})")
                continue
            searched.append(suite)
            matches = [p for p in index.values() if _is_image(p, arch) and _matches(p, wanted, arch)]
            if matches:
                chosen = max(matches, key=lambda p: Version(p.version))
                return Resolved(spec, suite, *self._closure(index, chosen.name, suite))
        raise VMError(
            f"no Debian kernel {wanted} for {arch} in {', '.join(searched) or 'any suite'}",
            "Debian's mirror keeps only current kernels: pick one of debian:SUITE, or pass the .deb files",
        )

    def _closure(self, index: dict[str, Package], root: str, suite: str) -> tuple[tuple[Package, ...], str]:
        """``root`` and, transitively, the kernel packages it depends on (other
        dependencies, such as kmod or initramfs-tools, are the installed system's)."""
        chosen: dict[str, Package] = {}
        queue = [root]
        while queue:
            name = queue.pop(0)
            if name in chosen:
                continue
            package = index[name]
            chosen[name] = package
            for alternatives in PkgRelation.parse_relations(package.depends) if package.depends else []:
                for alternative in alternatives:
                    dep = index.get(str(alternative["name"]))
                    if dep is None or not dep.kernel_source:
                        continue
                    constraint = alternative.get("version")
                    if constraint and constraint[0] == "=" and constraint[1] != dep.version:
                        raise VMError(
                            f"Debian's {suite} index lists {dep.name} {dep.version}, but {name} needs {constraint[1]}",
                            "the mirror is mid-update: try again later, or choose another suite",
                        )
                    queue.append(dep.name)
                    break
        packages = tuple(chosen.values())
        release = next((_release_of(p.name) for p in packages if _release_of(p.name)), "")
        if not release:
            raise VMError(f"{root} in Debian's {suite} leads to no kernel package", "choose another suite or version")
        return packages, release

    def download(self, resolved: Resolved) -> list[Path]:
        """Each package, checked against the index's SHA256, from the cache or the mirror."""
        paths = []
        for package in resolved.packages:
            if not _SHA256_RE.fullmatch(package.sha256):
                raise VerificationError(f"the index lists no SHA256 for {package.name}", "fix mirrors.debian")
            fetched = self.downloader.fetch(f"{package.name}_{package.version}", package.sha256, [package.url])
            paths.append(fetched.path)
        return paths


def record(resolved: Resolved) -> dict[str, Any]:
    """What was resolved, for the report: every package with its version and sha256."""
    return {
        "spec": resolved.spec,
        "suite": resolved.suite,
        "release": resolved.release,
        "packages": [
            {k: v for k, v in asdict(p).items() if k in ("name", "version", "sha256", "filename")}
            for p in resolved.packages
        ],
    }


# -- helpers ---------------------------------------------------------------------------
# A kernel release has three numbers (6.1.0-50-amd64, 7.2.13+deb14-amd64); the
# meta-packages of a series (linux-image-6.12-amd64) have two.
_RELEASE_RE = re.compile(r"^\d+\.\d+\.\d+[-+.~a-z0-9]*$")
_RELEASE_PREFIXES = ("linux-image-", "linux-binary-", "linux-modules-", "linux-base-")


def _release_of(name: str) -> str:
    """``linux-binary-7.2.13+deb14-amd64`` -> ``7.2.13+deb14-amd64``; "" for meta-packages."""
    for prefix in _RELEASE_PREFIXES:
        rest = name.removeprefix(prefix)
        if rest != name and _RELEASE_RE.fullmatch(rest):
            return rest
    return ""


def _is_image(package: Package, arch: str) -> bool:
    release = _release_of(package.name)
    return package.name.startswith("linux-image-") and release.endswith(f"-{arch}") and package.kernel_source


def _matches(package: Package, wanted: str, arch: str) -> bool:
    release = _release_of(package.name)
    if wanted in (package.version, release, release.removesuffix(f"-{arch}")):
        return True
    return any(text.startswith(wanted + sep) for text in (package.version, release) for sep in ("-", "+", "~"))


def _fields(text: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in Deb822(text.splitlines()).items()}


def _sha256_list(text: str) -> dict[str, str]:
    listed = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and _SHA256_RE.fullmatch(words[0]):
            listed[words[2]] = words[0]
    return listed


def _warn_if_stale(suite: str, fields: dict[str, str]) -> None:
    until = fields.get("Valid-Until")
    if not until:
        return
    try:
        expires = email.utils.parsedate_to_datetime(until).timestamp()
    except (TypeError, ValueError):
        return
    if expires < time.time():
        # apt refuses such an index unless told (Check-Valid-Until); snapshot mirrors are
        # like this on purpose. The signature still holds: say it and go on.
        log.warn(f"Debian's {suite} index expired on {until}: the mirror is a snapshot or has stopped updating")


def _decompress(blob: Path, name: str) -> str:
    data = blob.read_bytes()
    if name.endswith(".xz"):
        data = lzma.decompress(data)
    elif name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode(errors="replace")


def _kernel_paragraphs(text: str) -> Iterable[str]:
    """Only ``linux-*`` paragraphs: parsing the other 60 000 would take seconds."""
    start = 0
    while True:
        start = text.find("Package: linux-", start)
        if start < 0:
            return
        if start == 0 or text[start - 1] == "\n":
            end = text.find("\n\n", start)
            end = len(text) if end < 0 else end
            yield text[start:end]
            start = end
        else:
            start += 1


def _row(paragraph: str) -> dict[str, str]:
    fields = Deb822(paragraph.splitlines())
    keys = ("Package", "Version", "Architecture", "Source", "Depends", "Filename", "SHA256", "Size")
    return {key: str(fields.get(key, "")) for key in keys}


def _package(row: dict[str, str], suite: str, base: str) -> Package | None:
    filename = row.get("Filename", "")
    if not filename.startswith("pool/") or ".." in filename.split("/") or not row.get("Size", "").isdigit():
        return None  # not a pool file the mirror serves: never followed
    return Package(
        name=row["Package"],
        version=row["Version"],
        architecture=row["Architecture"],
        source=row.get("Source", ""),
        depends=row.get("Depends", ""),
        filename=filename,
        sha256=row.get("SHA256", ""),
        size=int(row["Size"]),
        suite=suite,
        base=base,
    )
