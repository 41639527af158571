"""Kernels from Debian packages of either layout, with plain, xz and zstd modules; what
the kernel has, read from its own config; and Debian's signed indices resolving a suite
or a version to the packages that hold a kernel. Every package, index and signature here
is made by the test (tests/support/debs.py); nothing is downloaded."""

from __future__ import annotations

import io
import lzma
import os
import re
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest

from kube_router_sctp import kernelfeatures as kf
from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
from kube_router_sctp.errors import KernelUnsupportedError, UnsafeSourceError, VerificationError, VMError
from kube_router_sctp.vm import cpio, deb, debian, kernel
from kube_router_sctp.vm import modules as kmod
from kube_router_sctp.vm.decompress import XzReader, decompress
from tests.support import debs, env


def needs_tool(name: str) -> None:
    env.require_binary(name, {"gpg": "gpg", "gpgv": "gpgv", "zstd": "zstd"}[name])


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def loaded(found: kernel.KernelFiles) -> list[str]:
    return [m.name for m in kmod.plan(found, kf.SMOKE).modules]


# -- layouts ----------------------------------------------------------------------------
def test_a_classic_package_boots_with_its_own_config(tmp_path: Path, cache: Cache) -> None:
    built = debs.classic(tmp_path)
    found = kernel.resolve(built.debs[0], None, cache)
    assert (found.version, found.arch) == (built.release, "x86_64")
    assert found.config is not None and found.config.name == f"config-{built.release}"
    assert [p.name for p in found.packages] == [f"linux-image-{built.release}"]
    order = loaded(found)
    assert order.index("nf_defrag_ipv4") < order.index("nf_conntrack") < order.index("ip_vs") < order.index("ip_vs_rr")
    assert "nfnetlink" not in order  # CONFIG_NETFILTER_NETLINK=y: built in, nothing to load
    assert kernel.resolve(built.debs[0], None, cache) == found  # unpacked once, reused
    assert not list((cache.root / "tmp").iterdir())


@pytest.mark.parametrize("suffix", [".ko.xz", ".ko.zst"])
def test_the_split_layout_is_found_from_its_image_package(tmp_path: Path, cache: Cache, suffix: str) -> None:
    if suffix == ".ko.zst":
        needs_tool("zstd")
    built = debs.split(tmp_path, suffix=suffix)
    found = kernel.resolve(built.debs[0], None, cache)
    assert found.version == built.release
    assert found.vmlinuz.name == "vmlinuz" and found.vmlinuz.parent.name == built.release
    assert found.config == found.modules_dir / "config"
    assert {p.name for p in found.packages} == {
        f"linux-{k}-{built.release}" for k in ("image", "binary", "modules", "base")
    }
    plan = kmod.plan(found, kf.SMOKE)
    # nfnetlink: =y in the config, in neither modules.builtin nor modules.builtin.modinfo.
    verdict = next(v for v in plan.verdicts if v.need.option == "CONFIG_NETFILTER_NETLINK")
    assert (verdict.state, verdict.evidence) == (kf.BUILT_IN, "CONFIG_NETFILTER_NETLINK=y")
    buffer = io.BytesIO()
    with cpio.CpioWriter(buffer) as writer:
        paths = kmod.add_to_initramfs(writer, plan.modules, ".krs/modules")
    entries = {e.name: e for e in cpio.read_entries(io.BytesIO(buffer.getvalue()))}
    assert all(entries[p.lstrip("/")].data[:4] == b"\x7fELF" for p in paths)  # decompressed on the host


def test_a_directory_of_packages_or_an_unpacked_tree_is_a_kernel(tmp_path: Path, cache: Cache) -> None:
    built = debs.split(tmp_path / "debs")
    from_debs = kernel.resolve(tmp_path / "debs", None, cache)
    assert from_debs.version == built.release and len(from_debs.packages) == 4
    unpacked = kernel.resolve(from_debs.modules_dir.parents[2], None, cache)  # the tree's root
    assert (unpacked.version, unpacked.vmlinuz) == (built.release, from_debs.vmlinuz)
    assert kernel.resolve(from_debs.modules_dir, None, cache).version == built.release  # modules/<release>


def test_a_split_image_package_alone_says_what_is_missing(tmp_path: Path, cache: Cache) -> None:
    built = debs.split(tmp_path)
    for sibling in built.debs[1:]:
        sibling.unlink()
    with pytest.raises(VMError, match=re.escape(f"linux-binary-{built.release}") + ".* not beside it") as caught:
        kernel.from_deb(built.debs[0], cache, archive=None)
    assert "apt-get download" in caught.value.hint


# -- what the kernel has ----------------------------------------------------------------
def test_a_kernel_without_ipvs_sctp_is_a_kernel_verdict(tmp_path: Path, cache: Cache) -> None:
    found = kernel.resolve(debs.classic(tmp_path, IP_VS_PROTO_SCTP=None).debs[0], None, cache)
    with pytest.raises(KernelUnsupportedError, match="CONFIG_IP_VS_PROTO_SCTP is not set") as caught:
        kmod.plan(found, kf.SMOKE)
    assert caught.value.exit_code == 14 and caught.value.smoke_class == 17
    assert "CONFIG_IP_VS_PROTO_SCTP=y or m" in caught.value.hint


def test_a_module_the_config_promises_but_the_package_lacks_is_an_incomplete_package(
    tmp_path: Path, cache: Cache
) -> None:
    found = kernel.resolve(debs.classic(tmp_path, VETH="m", IP_SET_HASH_NET="m").debs[0], None, cache)
    plan = kmod.plan(found, kf.SMOKE)  # optional ones: noted, not fatal
    assert {v.need.option for v in plan.verdicts if v.state == kf.NO_FILE} == {"CONFIG_VETH", "CONFIG_IP_SET_HASH_NET"}
    found = kernel.resolve(debs.classic(tmp_path / "x", IP_SET="y", IP_SET_HASH_IPPORT="m").debs[0], None, cache)
    (found.modules_dir / "kernel/net/netfilter/ipset/ip_set_hash_ipport.ko").unlink()
    with pytest.raises(VMError, match="incomplete: CONFIG_IP_SET_HASH_IPPORT=m but no ip_set_hash_ipport"):
        kmod.plan(found, kf.SMOKE)


def test_without_a_config_the_files_decide_and_the_rest_is_left_to_the_guest() -> None:
    verdicts = kf.assess(kf.SMOKE, None, {"nf_defrag_ipv6"}, {"ip_vs", "sctp"})
    states = {v.need.option: v.state for v in verdicts}
    assert states["CONFIG_IP_VS"] == kf.MODULE
    assert states["CONFIG_IP_VS_PROTO_SCTP"] == kf.UNKNOWN
    assert kf.lacking(verdicts) == []
    # An option a later kernel renamed must not condemn a kernel that carries the module.
    config = kf.KernelConfig.parse("# CONFIG_IP_SCTP is not set\n", "config")
    assert kf.assess([kf.BY_MODULE["sctp"]], config, set(), {"sctp"})[0].state == kf.MODULE


# -- hostile packages -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"dev/evil": ("device",)}, "is a device or FIFO"),
        ({"../escape": b"x"}, "contains '..'"),
        ({"lib/modules/6.1.0-1-amd64/build": ("symlink", "/usr/src/linux-headers")}, "symlink leaving the tree"),
    ],
)
def test_a_hostile_package_is_refused_and_nothing_is_left(tmp_path: Path, cache: Cache, files, message) -> None:
    bad = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", files)
    with pytest.raises(UnsafeSourceError, match=message):
        kernel.resolve(bad, None, cache)
    assert not (tmp_path / "escape").exists()
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", [".xz", ".zst"])
def test_a_refusal_early_in_a_large_member_ends_the_decompressing_tool(
    tmp_path: Path, cache: Cache, compression: str
) -> None:
    # The tool (xz, unzstd) still has megabytes to write when the first member is refused:
    # it must be ended, not waited for while it blocks on a pipe nobody reads.
    if compression == ".zst":
        needs_tool("zstd")
    files: debs.Files = {"../escape": b"x", "boot/big": os.urandom(8 << 20)}
    bad = debs.deb(
        tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", files, "", compression
    )
    with pytest.raises(UnsafeSourceError, match="contains '..'"):
        kernel.resolve(bad, None, cache)
    assert not (tmp_path / "escape").exists()
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


def _with_data_member(deb_path: Path, body: bytes, compression: str) -> Path:
    """``deb_path`` with its data member replaced by ``body``, compressed."""
    raw = deb_path.read_bytes()
    start = raw.index(b"data.tar")
    member = debs.compress(body, compression)
    header = f"{'data.tar' + compression:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(member):<10}`\n".encode()
    deb_path.write_bytes(raw[:start] + header + member + (b"\n" if len(member) % 2 else b""))
    return deb_path


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
@pytest.mark.parametrize("compression", [".xz", ""])
def test_a_huge_extended_header_is_refused_before_it_is_read(
    tmp_path: Path, cache: Cache, kind: bytes, compression: str
) -> None:
    # tarfile reads a pax header or a GNU long name into memory whole: 64 MiB of zeros
    # claimed as one (a few KiB compressed) is refused at its header, not read.
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.type, info.size = kind, 64 << 20
    body = info.tobuf(tarfile.USTAR_FORMAT) + bytes(64 << 20) + bytes(1024)
    path = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", {})
    bad = _with_data_member(path, body, compression)
    with pytest.raises(UnsafeSourceError, match=r"an extended header of 67108864 bytes \(at most 1048576\)"):
        kernel.resolve(bad, None, cache)
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", [".xz", ".zst"])
def test_a_large_tail_after_the_archive_is_refused(tmp_path: Path, cache: Cache, compression: str) -> None:
    # Zeros after the tar's end compress to almost nothing: a few KiB that would unpack to
    # gigabytes nobody reads. The unpacking stops after 1 MiB of them and says why.
    if compression == ".zst":
        needs_tool("zstd")
    body = debs.tar_bytes({"boot/x": b"x"}, "") + bytes(64 << 20)
    path = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", {})
    bad = _with_data_member(path, body, compression)
    with pytest.raises(UnsafeSourceError, match="more than 1 MiB follows the archive's end"):
        kernel.resolve(bad, None, cache)
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


def _gnu_sparse_chain(blocks: int) -> bytes:
    """An old-GNU sparse member whose map goes on for ``blocks`` extension blocks: tarfile
    keeps every entry in memory, and the chain compresses to almost nothing."""
    header = tarfile.TarInfo("boot/sparse")
    header.type = tarfile.GNUTYPE_SPARSE
    raw = bytearray(header.tobuf(tarfile.GNU_FORMAT))
    raw[482] = 1  # isextended
    raw[148:156] = b" " * 8
    raw[148:156] = f"{sum(raw[:512]):06o}\0 ".encode()
    block = bytearray(512)
    for i in range(21):
        block[i * 24 : i * 24 + 24] = b"00000000001\0" * 2
    block[504] = 1
    return bytes(raw[:512]) + bytes(block) * blocks + bytes(1024)


def _pax_sparse() -> bytes:
    """A GNU sparse 1.0 member as pax writes it: its map is read from the member's data."""
    info = tarfile.TarInfo("boot/sparse")
    info.size = 512
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "9"}
    return info.tobuf(tarfile.PAX_FORMAT) + b"1\n0\n9\n".ljust(512, b"\0") + bytes(1024)


@pytest.mark.parametrize("body", [_gnu_sparse_chain(4096), _pax_sparse()], ids=["gnu-chain", "pax-1.0"])
def test_a_sparse_member_is_refused(tmp_path: Path, cache: Cache, body: bytes) -> None:
    # no archive this tool reads holds a sparse member; its map, read block after block
    # or from the data, is memory a few KiB of compressed input could claim by gigabytes
    path = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", {})
    bad = _with_data_member(path, body, ".xz")
    with pytest.raises(UnsafeSourceError, match="is a sparse member"):
        kernel.resolve(bad, None, cache)
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


def test_an_xz_member_unpacks_the_same_without_the_xz_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # xz decompresses in a process of its own where it is installed; Python's lzma reads
    # the member where it is not. Both give the same files.
    env.require_binary("xz", "xz-utils")
    built = debs.classic(tmp_path / "pkg", suffix=".ko.xz")
    with_tool = kernel.resolve(built.debs[0], None, Cache(tmp_path / "a"))
    real_which = deb.shutil.which
    monkeypatch.setattr(deb.shutil, "which", lambda name: None if name == "xz" else real_which(name))
    without = kernel.resolve(built.debs[0], None, Cache(tmp_path / "b"))

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    top = Path("kernels")
    assert tree(tmp_path / "a" / top) == tree(tmp_path / "b" / top) != {}
    assert with_tool.version == without.version == built.release


@pytest.mark.parametrize("compression", [".xz", ".gz", "", ".zst"])
@pytest.mark.parametrize("cut", ["garbage", "half"])
def test_a_damaged_data_member_is_one_line_not_a_traceback(
    tmp_path: Path, cache: Cache, compression: str, cut: str
) -> None:
    # A data.tar* that is not the compression its name says, or stops half-way, is a
    # damaged package (UnsafeSourceError, exit 11) before anything is kept; never tarfile's
    # ReadError or lzma's error as a traceback.
    if compression == ".zst":
        needs_tool("zstd")
    good = debs.deb(tmp_path / "good.deb", "linux-image-6.1.0-1-amd64", "1", {"boot/x": b"x" * 20000}, "", compression)
    raw = good.read_bytes()
    start = raw.index(b"data.tar")
    size = int(raw[start + 48 : start + 58])
    body = raw[start + 60 : start + 60 + size]
    damaged = b"not a tar nor its compression" if cut == "garbage" else body[: len(body) // 2]
    bad = tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb"
    header = f"{'data.tar' + compression:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(damaged):<10}`\n".encode()
    bad.write_bytes(raw[:start] + header + damaged + (b"\n" if len(damaged) % 2 else b""))
    with pytest.raises(UnsafeSourceError, match="is damaged or truncated"):
        kernel.resolve(bad, None, cache)
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


def test_a_control_member_failing_its_crc_is_one_line(tmp_path: Path, cache: Cache) -> None:
    # gzip's CRC failure is an OSError (BadGzipFile): it must not pass for a disk problem
    # (nor for a damaged data member: the control member is read first).
    import gzip

    control = debs.tar_bytes({"control": b"Package: linux-image-x\nVersion: 1\nX: " + bytes(range(256)) * 400}, "")
    packed = bytearray(gzip.compress(control, mtime=0))
    for at in range(200, len(packed) - 100, 55):
        packed[at] ^= 0x55  # damaged deflate data: zlib reads on, the CRC check fails
    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", bytes(packed)), ("data.tar", b"")]
    out = bytearray(b"!<arch>\n")
    for name, content in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode()
        out += content + (b"\n" if len(content) % 2 else b"")
    bad = tmp_path / "linux-image-x_1_amd64.deb"
    bad.write_bytes(bytes(out))
    with pytest.raises(VMError, match="has no readable control file"):
        kernel.resolve(bad, None, cache)


def test_a_file_that_is_not_a_deb_is_refused(tmp_path: Path, cache: Cache) -> None:
    bogus = tmp_path / "x.deb"
    bogus.write_bytes(b"hello")
    with pytest.raises(VMError, match="not a Debian package"):
        kernel.resolve(bogus, None, cache)


# -- Debian's signed indices ------------------------------------------------------------
@pytest.fixture
def mirror(tmp_path: Path) -> tuple[str, Path, Path, debs.KernelDebs]:
    """A mirror (file://) with a split 7.x kernel in suite 'testsuite', signed by a test key."""
    needs_tool("gpg")
    needs_tool("gpgv")
    root = tmp_path / "mirror"
    pool = root / "pool" / "main" / "l" / "linux"
    pool.mkdir(parents=True)
    built = debs.split(pool)
    meta = debs.deb(
        pool / "linux-image-amd64_7.2.99-1_amd64.deb",
        "linux-image-amd64",
        "7.2.99-1",
        {"usr/share/doc/linux-image-amd64/README": b"meta\n"},
        depends=f"linux-image-{built.release} (= 7.2.99-1)",
    )
    kmod_deb = debs.deb(pool / "kmod_30-1_amd64.deb", "kmod", "30-1", {"usr/bin/kmod": b"x"})
    home = tmp_path / "gnupg"
    keyring = debs.gpg_key(home)
    paragraphs = [debs.packages_paragraph(p, root) for p in (meta, *built.debs)]
    paragraphs.append(debs.packages_paragraph(kmod_deb, root, source="kmod"))
    debs.archive(root, home, "testsuite", paragraphs)
    return f"file://{root}", keyring, home, built


def test_a_suite_resolves_through_depends_to_the_kernel_packages(
    mirror: tuple[str, Path, Path, debs.KernelDebs], cache: Cache, tmp_path: Path
) -> None:
    url, keyring, _, built = mirror
    archive = debian.Archive(url, cache, Downloader(cache), keyring=keyring, apt_dir=tmp_path / "no-apt")
    resolved = archive.resolve("debian:testsuite", "x86_64")
    names = [p.name for p in resolved.packages]
    assert names[0] == "linux-image-amd64" and "kmod" not in names  # only the kernel's own packages
    assert set(names[1:]) == {f"linux-{k}-{built.release}" for k in ("image", "binary", "modules", "base")}
    assert resolved.release == built.release
    found = kernel.from_debs(archive.download(resolved), cache, origin="debian:testsuite", suite="testsuite")
    assert found.record()["packages"][0]["sha256"]
    # By version, and as the host's own suite (apt sources name it).
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(f"Types: deb\nURIs: {url}\nSuites: testsuite\n")
    archive = debian.Archive(None, cache, Downloader(cache), keyring=keyring, apt_dir=apt)
    assert archive.resolve("debian:7.2.99", "x86_64").release == built.release
    assert archive.resolve("debian", "x86_64").suite == "testsuite"


def test_a_tampered_index_or_package_is_refused(
    mirror: tuple[str, Path, Path, debs.KernelDebs], cache: Cache, tmp_path: Path
) -> None:
    url, keyring, home, built = mirror
    root = Path(url.removeprefix("file://"))
    inrelease = root / "dists" / "testsuite" / "InRelease"
    signed = inrelease.read_text()
    inrelease.write_text(signed.replace("Components: main", "Components: main contrib"))
    archive = debian.Archive(url, cache, Downloader(cache, attempts=1), keyring=keyring, apt_dir=tmp_path)
    with pytest.raises(VerificationError, match="no valid signature"):
        archive.resolve("debian:testsuite", "x86_64")
    inrelease.write_text(signed)
    # A package whose bytes differ from the index's SHA256.
    built.debs[2].write_bytes(built.debs[2].read_bytes() + b"x")
    archive = debian.Archive(url, cache, Downloader(cache, attempts=1), keyring=keyring, apt_dir=tmp_path)
    with pytest.raises(VerificationError, match="checksum mismatch"):
        archive.download(archive.resolve("debian:testsuite", "x86_64"))
    # An index signed for another suite, served under this name.
    debs.archive(root, home, "testsuite", ["Package: x\nVersion: 1\nArchitecture: amd64"], codename="other")
    (root / "dists" / "testsuite" / "InRelease").write_text(
        (root / "dists" / "testsuite" / "InRelease").read_text().replace("Suite: testsuite", "Suite: elsewhere")
    )
    with pytest.raises(VerificationError):
        debian.Archive(url, Cache(tmp_path / "c2"), keyring=keyring, apt_dir=tmp_path).release("testsuite")


def test_a_foreign_key_is_refused(
    mirror: tuple[str, Path, Path, debs.KernelDebs], cache: Cache, tmp_path: Path
) -> None:
    url, _, _, _ = mirror
    other = debs.gpg_key(tmp_path / "other-gnupg")
    with pytest.raises(VerificationError, match="no valid signature"):
        debian.Archive(url, cache, keyring=other, apt_dir=tmp_path).release("testsuite")


def test_specs_are_parsed_strictly() -> None:
    assert debian.parse_spec("debian") == ("host", "")
    assert debian.parse_spec("debian:bookworm-backports") == ("suite", "bookworm-backports")
    assert debian.parse_spec("debian:6.12.57+deb13-amd64") == ("version", "6.12.57+deb13-amd64")
    assert debian.parse_spec("/boot/vmlinuz") is None
    with pytest.raises(VMError, match="neither a Debian suite nor a kernel version"):
        debian.parse_spec("debian:../../etc")
    for spec in ("debian:trixie\n", "debian:6.12.57\n", "debian:6.1..2"):  # '$' matched before a newline
        with pytest.raises(VMError, match="neither a Debian suite nor a kernel version"):
            debian.parse_spec(spec)


# -- damaged files inside a kernel package ------------------------------------------------
REL = "6.1.0-99-amd64"


def _kernel_with(tmp_path: Path, **changes: bytes) -> kernel.KernelFiles:
    files: debs.Files = {f"boot/vmlinuz-{REL}": debs.bzimage(REL), f"boot/config-{REL}": debs.config_text().encode()}
    files |= {f"lib/modules/{REL}/{k}": v for k, v in debs.ipvs_modules(".ko.xz").items()}
    files |= {path.replace("@", f"lib/modules/{REL}/"): data for path, data in changes.items()}
    package = debs.deb(tmp_path / f"linux-image-{REL}_1_amd64.deb", f"linux-image-{REL}", "1", files)
    return kernel.resolve(package, None, Cache(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"@kernel/net/sctp/sctp.ko.xz": b"\xfd7zXZ\x00 not xz"}, "sctp.ko.xz is damaged"),
        ({"@kernel/net/sctp/sctp.ko.xz": debs.compress(b"x" * 4096, ".xz")[:40]}, "sctp.ko.xz is damaged"),
        ({f"boot/config-{REL}": b"\x1f\x8b not gzip"}, f"config-{REL} is damaged"),
        ({"@modules.dep": b"\xff\xfe kernel/net/sctp/sctp.ko.xz:\n"}, "modules.dep is not UTF-8"),
        ({"@modules.dep": b"kernel/../../../../../../../etc/sctp.ko:\n"}, "modules.dep names a path outside"),
        ({"@modules.dep": b"/etc/sctp.ko:\n"}, "modules.dep names a path outside"),
    ],
)
def test_a_damaged_file_in_a_kernel_is_one_line(tmp_path: Path, changes: dict[str, bytes], message: str) -> None:
    # Corrupt compressed modules, a config that is not gzip, a modules.dep that is not text
    # or points out of the package: a VMError naming the file, before anything boots
    # (before: LZMAError, EOFError and UnicodeDecodeError tracebacks; a path out of the
    # package read into the guest's initramfs).
    with pytest.raises(VMError, match=message):
        found = _kernel_with(tmp_path, **changes)
        for module in kmod.plan(found, kf.SMOKE).modules:
            kmod.module_bytes(module.path)


def test_a_kernel_directory_whose_files_are_fifos_does_not_hang(tmp_path: Path, cache: Cache) -> None:
    # An unpacked kernel directory is hostile input too: a FIFO named like the kernel or a
    # module blocked the first read forever.
    import os

    tree = tmp_path / "kernel"
    (tree / "boot").mkdir(parents=True)
    (tree / "lib" / "modules" / REL / "kernel").mkdir(parents=True)
    os.mkfifo(tree / "boot" / f"vmlinuz-{REL}")
    with pytest.raises(VMError, match="is not an x86 or arm64 kernel"):
        kernel.resolve(tree, None, cache)
    fifo = tmp_path / "sctp.ko"
    os.mkfifo(fifo)
    with pytest.raises(VMError, match="sctp.ko is not a regular file"):
        kmod.module_bytes(fifo)


@pytest.mark.parametrize(("named", "holds"), [(".zst", ".xz"), (".zst", ".gz"), (".xz", ".zst")])
def test_a_data_member_that_is_not_what_its_name_says_is_refused(
    tmp_path: Path, cache: Cache, named: str, holds: str
) -> None:
    # unzstd reads xz and gzip as well: a member named .zst must hold zstd data.
    if "zst" in named + holds:
        needs_tool("zstd")
    body = debs.tar_bytes({"boot/x": b"x"}, "")
    path = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", {})
    raw = path.read_bytes()
    start = raw.index(b"data.tar")
    member = debs.compress(body, holds)
    header = f"{'data.tar' + named:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(member):<10}`\n".encode()
    path.write_bytes(raw[:start] + header + member + (b"\n" if len(member) % 2 else b""))
    refusal = (
        r"data\.tar\.zst: it holds data that is not zstd at byte 0"
        if named == ".zst"
        else r"data\.tar\.xz does not start as xz"
    )
    with pytest.raises(UnsafeSourceError, match=refusal):
        kernel.resolve(path, None, cache)
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


def _huge_dictionary_xz(body: bytes) -> bytes:
    """``body`` as xz whose block claims a 4 GiB dictionary (what liblzma would allocate)."""
    stream = bytearray(lzma.compress(body, format=lzma.FORMAT_XZ))
    size = (stream[12] + 1) * 4  # the first block header, after the 12-byte stream header
    assert stream[13] == 0 and stream[14] == 0x21 and stream[15] == 1  # one filter, LZMA2, one property byte
    stream[16] = 40  # the largest dictionary LZMA2 can name (4 GiB - 1)
    stream[12 + size - 4 : 12 + size] = zlib.crc32(bytes(stream[12 : 12 + size - 4])).to_bytes(4, "little")
    return bytes(stream)


@pytest.mark.parametrize(
    ("named", "prefix", "without_xz", "refusal"),
    [
        (".xz", "", False, r"xz exit 1: .*Memory usage limit reached"),
        (".xz", "", True, r"[Mm]emory usage limit"),  # Python's lzma, where xz is missing
        (".zst", "empty zstd frame", False, r"holds data that is not zstd at byte 13 \(fd377a58\)"),
        (".gz", "", False, r"is damaged or truncated"),  # read as gzip, as named
        ("", "", False, r"is damaged or truncated"),  # read as a plain tar, as named
    ],
)
def test_an_xz_stream_claiming_a_huge_dictionary_is_refused_whatever_the_name(
    tmp_path: Path,
    cache: Cache,
    monkeypatch: pytest.MonkeyPatch,
    named: str,
    prefix: str,
    without_xz: bool,
    refusal: str,
) -> None:
    # The dictionary an xz block claims is what the decoder allocates: a stream of a few
    # hundred bytes claiming 4 GiB is refused by a memory limit, or for not being what
    # its name says (unzstd reads xz frames after a zstd one, with no limit), never decoded.
    if named == ".zst":
        needs_tool("zstd")
    elif named == ".xz" and not without_xz and shutil.which("xz") is None:
        env.missing("needs xz (xz-utils)")
    member = (debs.compress(b"", ".zst") if prefix else b"") + _huge_dictionary_xz(debs.tar_bytes({"boot/x": b"x"}, ""))
    if without_xz:
        real_which = shutil.which
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "xz" else real_which(name, *a, **k))
    path = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", {})
    raw = path.read_bytes()
    start = raw.index(b"data.tar")
    header = f"{'data.tar' + named:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(member):<10}`\n".encode()
    path.write_bytes(raw[:start] + header + member + (b"\n" if len(member) % 2 else b""))
    with pytest.raises(UnsafeSourceError, match=refusal):
        kernel.resolve(path, None, cache)
    assert not list((cache.root / "kernels").glob("*")) and not list((cache.root / "tmp").iterdir())


def test_a_zst_module_holding_another_format_is_refused() -> None:
    needs_tool("zstd")
    data = debs.compress(b"", ".zst") + lzma.compress(b"\x7fELF" + bytes(100))
    with pytest.raises(VMError, match="sctp.ko.zst is damaged \\(it holds data that is not zstd at byte"):
        decompress(data, "zst", 1 << 20, "sctp.ko.zst")
    assert decompress(debs.compress(b"\x7fELF", ".zst") * 2, "zst", 1 << 20, "x.ko.zst") == b"\x7fELF" * 2


def _deb_with_member(tmp_path: Path, name: str, member: bytes) -> Path:
    path = debs.deb(tmp_path / "linux-image-6.1.0-1-amd64_1_amd64.deb", "linux-image-6.1.0-1-amd64", "1", {})
    raw = path.read_bytes()
    start = raw.index(b"data.tar")
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(member):<10}`\n".encode()
    path.write_bytes(raw[:start] + header + member + (b"\n" if len(member) % 2 else b""))
    return path


@pytest.mark.parametrize("without_xz", [False, True], ids=["xz", "python-lzma"])
def test_xz_streams_one_after_another_are_all_read_and_garbage_after_them_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without_xz: bool
) -> None:
    # xz -d reads concatenated streams with zero padding between them: so must the
    # reader used where xz is missing, or a package unpacks in part without a word.
    if without_xz:
        real_which = shutil.which
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "xz" else real_which(name, *a, **k))
    elif shutil.which("xz") is None:
        env.missing("needs xz (xz-utils)")
    whole = debs.tar_bytes({"boot/f1": b"1" * 3000, "boot/f2": b"2", "boot/f3": b"3"}, "")
    parts = [whole[:2048], whole[2048:4096], whole[4096:]]
    member = lzma.compress(parts[0]) + bytes(4) + lzma.compress(parts[1]) + lzma.compress(parts[2])
    (tmp_path / "a").mkdir()
    deb.unpack(_deb_with_member(tmp_path / "a", "data.tar.xz", member), tmp_path / "a" / "out")
    assert sorted(p.name for p in (tmp_path / "a" / "out" / "boot").iterdir()) == ["f1", "f2", "f3"]
    (tmp_path / "b").mkdir()
    bad = _deb_with_member(tmp_path / "b", "data.tar.xz", member + b"garbage!")
    with pytest.raises(UnsafeSourceError, match="is damaged or truncated"):
        deb.unpack(bad, tmp_path / "b" / "out")


def test_the_xz_reader_reads_as_tarfile_and_io_expect() -> None:
    data = os.urandom(3 << 20)
    reader = XzReader(io.BytesIO(lzma.compress(data) + bytes(8) + lzma.compress(b"tail")))
    assert reader.read(0) == b""
    first = reader.read(1000)
    assert 0 < len(first) <= 1000
    rest = b"".join(iter(lambda: reader.read(-1), b""))
    assert first + rest == data + b"tail"


def test_zstd_data_may_begin_with_a_skippable_frame_but_not_hold_millions(tmp_path: Path) -> None:
    needs_tool("zstd")
    body = debs.tar_bytes({"boot/x": b"x"}, "")
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"krs!"  # pzstd's output begins so
    (tmp_path / "ok").mkdir()
    ok = _deb_with_member(tmp_path / "ok", "data.tar.zst", skippable + debs.compress(body, ".zst"))
    deb.unpack(ok, tmp_path / "ok" / "out")
    assert (tmp_path / "ok" / "out" / "boot" / "x").read_bytes() == b"x"
    empty_skippable = b"\x50\x2a\x4d\x18" + bytes(4)
    (tmp_path / "many").mkdir()
    bad = _deb_with_member(tmp_path / "many", "data.tar.zst", debs.compress(body, ".zst") + empty_skippable * 100_001)
    with pytest.raises(UnsafeSourceError, match="more than 100000 zstd blocks"):
        deb.unpack(bad, tmp_path / "many" / "out")
