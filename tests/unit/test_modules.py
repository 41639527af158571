"""Kernel module resolution (modules.dep or each module's .modinfo), decompression and
load order; and locating a kernel in a vmlinuz or a .deb. No kernel needed: the modules
are tiny ELF files made here."""

from __future__ import annotations

import gzip
import io
import lzma
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp.cache import Cache
from kube_router_sctp.errors import VMError
from kube_router_sctp.vm import cpio, kernel
from kube_router_sctp.vm import modules as kmod
from tests.support import env
from tests.support.debs import bzimage, elf_module

VERSION = "6.1.0-99-amd64"


def modules_dir(tmp_path: Path, modules: dict[str, bytes], builtin: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "lib" / "modules" / VERSION
    for relative, data in modules.items():
        path = root / "kernel" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".xz"):
            data = lzma.compress(data)
        elif relative.endswith(".gz"):
            data = gzip.compress(data)
        path.write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modules.builtin").write_text("".join(f"kernel/{name}.ko\n" for name in builtin))
    return root


@pytest.fixture
def ipvs_tree(tmp_path: Path) -> Path:
    """The shape of Debian's ipvs/sctp modules: hard and soft dependencies, an alias, a
    dash in a file name, compression, and a built-in dependency."""
    return modules_dir(
        tmp_path,
        {
            "net/netfilter/ipvs/ip_vs.ko": elf_module(name="ip_vs", depends="nf_conntrack,libcrc32c"),
            "net/netfilter/ipvs/ip_vs_rr.ko.xz": elf_module(name="ip_vs_rr", depends="ip_vs"),
            "net/netfilter/nf_conntrack.ko.gz": elf_module(name="nf_conntrack", depends="nf_defrag_ipv4,libcrc32c"),
            "net/ipv4/netfilter/nf_defrag_ipv4.ko": elf_module(name="nf_defrag_ipv4", depends=""),
            "lib/libcrc32c.ko": elf_module(name="libcrc32c", depends="", softdep="pre: crc32c"),
            "crypto/crc32c_generic.ko": elf_module(depends="", alias=["crc32c", "crypto-crc32c"]),
            "arch/x86/crypto/crc32c-intel.ko": elf_module(depends="", alias=["crc32c", "crypto-crc32c"]),
            "net/sctp/sctp.ko": elf_module(depends="udp_tunnel,libcrc32c"),
        },
        builtin=("net/ipv4/udp_tunnel",),
    )


def names(modules: list[kmod.Module]) -> list[str]:
    return [module.name for module in modules]


def test_module_names_follow_the_kernel() -> None:
    assert kmod.module_name("crc32c-intel.ko.xz") == "crc32c_intel"
    assert kmod.module_name("ip_vs.ko") == "ip_vs"
    assert kmod.module_name("nf_nat.ko.zst") == "nf_nat"


def test_pre_softdeps_only() -> None:
    assert kmod._pre_softdeps("pre: crc32c ghash post: after") == ["crc32c", "ghash"]
    assert kmod._pre_softdeps("post: x") == []


def test_modinfo_is_read_from_the_elf_section() -> None:
    info = kmod.modinfo(elf_module(depends="a,b", alias=["x", "y"]))
    assert info == {"depends": ["a,b"], "alias": ["x", "y"]}


def test_dependencies_come_first_from_modinfo(ipvs_tree: Path) -> None:
    order = names(kmod.ModuleIndex.load(ipvs_tree).resolve(["ip_vs_rr", "sctp"]))
    assert set(order) == {
        "ip_vs_rr",
        "ip_vs",
        "nf_conntrack",
        "nf_defrag_ipv4",
        "libcrc32c",
        "crc32c_generic",
        "crc32c_intel",
        "sctp",
    }
    for before, after in [
        ("ip_vs", "ip_vs_rr"),
        ("nf_conntrack", "ip_vs"),
        ("nf_defrag_ipv4", "nf_conntrack"),
        ("libcrc32c", "nf_conntrack"),
        ("crc32c_generic", "libcrc32c"),  # the soft dependency, found by its alias
        ("libcrc32c", "sctp"),
    ]:
        assert order.index(before) < order.index(after), (before, after, order)
    assert order.count("libcrc32c") == 1


def test_modules_dep_is_used_when_present(tmp_path: Path) -> None:
    root = modules_dir(tmp_path, {"a.ko": b"not even ELF", "b.ko": b"", "c.ko": b"", "e.ko": b""})
    (root / "modules.dep").write_text(
        "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/e.ko:\n"
    )
    (root / "modules.softdep").write_text("# comment\nsoftdep c pre: d\nsoftdep e pre: c\n")
    (root / "modules.alias").write_text("alias d e\n")
    order = names(kmod.ModuleIndex.load(root).resolve(["a"]))
    # c's soft dependency d is e (whose own soft dependency on c is a loop, broken).
    assert order == ["e", "c", "b", "a"]


def test_a_nul_byte_in_modules_dep_is_a_damaged_package(tmp_path: Path) -> None:
    root = modules_dir(tmp_path, {"a.ko": elf_module(depends="")})
    (root / "modules.dep").write_text("kernel/a\0.ko:\n")
    with pytest.raises(VMError, match="NUL byte"):
        kmod.ModuleIndex.load(root).resolve(["a"])


def test_builtin_modules_are_skipped_and_missing_ones_named(ipvs_tree: Path) -> None:
    index = kmod.ModuleIndex.load(ipvs_tree)
    assert index.resolve(["udp_tunnel"]) == []
    with pytest.raises(VMError, match="nf_tables is neither built into the kernel"):
        index.resolve(["nf_tables"])
    assert names(index.resolve([], optional=["nf_tables", "ip_vs_rr"]))[-1] == "ip_vs_rr"


def test_a_dependency_loop_is_reported(tmp_path: Path) -> None:
    root = modules_dir(tmp_path, {"a.ko": elf_module(depends="b"), "b.ko": elf_module(depends="a")})
    with pytest.raises(VMError, match="loop: a -> b -> a"):
        kmod.ModuleIndex.load(root).resolve(["a"])


def test_an_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VMError, match="holds no kernel modules"):
        kmod.ModuleIndex.load(tmp_path)


def test_modules_land_decompressed_in_load_order(ipvs_tree: Path) -> None:
    modules = kmod.ModuleIndex.load(ipvs_tree).resolve(["ip_vs_rr"])
    buffer = io.BytesIO()
    with cpio.CpioWriter(buffer) as writer:
        paths = kmod.add_to_initramfs(writer, modules, ".krs/modules")
    assert paths == sorted(paths)
    assert [p.rsplit("-", 1)[-1] for p in paths][-1] == "ip_vs_rr.ko"
    found = {e.name: e for e in cpio.read_entries(io.BytesIO(buffer.getvalue()))}
    for path in paths:
        assert found[path.lstrip("/")].data[:4] == b"\x7fELF"  # .xz and .gz were unpacked


def indexed(modules: list[kmod.Module]) -> tuple[list[str], dict[str, bytes]]:
    buffer = io.BytesIO()
    with cpio.CpioWriter(buffer) as writer:
        paths = kmod.add_indexed(writer, modules, ".krs")
    return paths, {e.name: e.data for e in cpio.read_entries(io.BytesIO(buffer.getvalue())) if e.data}


def test_one_modprobe_finds_every_module_through_the_index(ipvs_tree: Path, tmp_path: Path) -> None:
    """The kernel smoke's modules: decompressed, in load order, with a ``modules.dep.bin``
    the tool writes itself under a fixed release name, so that the guest's one ``modprobe
    -d .krs -S 0.0-krs -a -- NAMES`` finds each and loads them in the order named. Read
    here by the host's own kmod modprobe (the guest's program), dry run."""
    modprobe = env.require_binary("modprobe", "kmod")
    modules = kmod.ModuleIndex.load(ipvs_tree).resolve(["ip_vs_rr", "sctp"])
    paths, files = indexed(modules)
    assert paths == sorted(paths) and paths[-1].endswith("/sctp.ko")
    assert all(p.startswith("/.krs/lib/modules/0.0-krs/") for p in paths)
    assert all(files[p.lstrip("/")][:4] == b"\x7fELF" for p in paths)  # .xz and .gz were unpacked
    guest = tmp_path / "guest"
    for name, data in files.items():
        (guest / name).parent.mkdir(parents=True, exist_ok=True)
        (guest / name).write_bytes(data)
    (guest / ".krs" / "modprobe.conf").write_text("")
    names = [p.rsplit("/", 1)[-1].removesuffix(".ko") for p in paths]
    harness = guest / ".krs"
    command = [modprobe, "-n", "-v", "-d", str(harness), "-S", "0.0-krs", "-C", str(harness / "modprobe.conf")]
    shown = subprocess.run([*command, "-a", "--", *names], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    loaded = [line.split()[1] for line in shown.stdout.splitlines() if line.startswith("insmod ")]
    assert loaded == [str(guest) + p for p in paths], shown.stdout  # each once, in the order named
    # a name the index lacks is not found: the lookup really goes through it
    missing = subprocess.run([*command, "nf_nat"], capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_the_index_holds_many_names_sharing_prefixes(tmp_path: Path) -> None:
    """ip_set, ip_set_hash_ip, ip_set_hash_ipport...: keys that are prefixes of others."""
    modprobe = env.require_binary("modprobe", "kmod")
    names = ["ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip", "ip_vs", "ip_vs_rr", "x" * 55]
    root = tmp_path / "lib" / "modules" / "0.0-krs"
    root.mkdir(parents=True)
    (root / "modules.dep.bin").write_bytes(kmod.kmod_index({n: f"{i}/{n}.ko:" for i, n in enumerate(names)}))
    for i, name in enumerate(names):
        (root / str(i)).mkdir()
        (root / str(i) / f"{name}.ko").write_bytes(b"\x7fELF")
    (tmp_path / "empty.conf").write_text("")
    command = [modprobe, "-n", "-v", "-d", str(tmp_path), "-S", "0.0-krs", "-C", str(tmp_path / "empty.conf")]
    shown = subprocess.run([*command, "-a", "--", *reversed(names)], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    loaded = [Path(line.split()[1]).name for line in shown.stdout.splitlines() if line.startswith("insmod ")]
    assert loaded == [f"{n}.ko" for n in reversed(names)]
    for absent in ("ip_se", "ip_set_hash", "ip_vs_r", "x" * 54):
        result = subprocess.run([*command, absent], capture_output=True, text=True, check=False)
        assert result.returncode != 0, absent


@pytest.mark.parametrize("name", [".", "a.b", "a b", "-r", "x" * 56, "nf\nconntrack", "ip_vs*"])
def test_a_module_name_no_kernel_would_take_is_refused(tmp_path: Path, name: str) -> None:
    """The names reach the guest's shell and modprobe: only what a kernel module's name
    can be passes (letters, digits, underscore, at most 55)."""
    path = tmp_path / "odd.ko"
    path.write_bytes(elf_module(name="odd", depends=""))
    with pytest.raises(VMError, match="no kernel module's name"):
        indexed([kmod.Module(name, path)])


# -- locating a kernel ----------------------------------------------------------------
def test_bzimage_version_is_read_from_the_setup_header(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(bzimage(VERSION))
    assert kernel.bzimage_version(path) == VERSION
    path.write_bytes(b"\0" * 4096)
    assert kernel.bzimage_version(path) is None


def arm64_image() -> bytes:
    """The arm64 boot header: the magic ``ARM\\x64`` at 0x38; no release string in it."""
    image = bytearray(4096)
    image[0x38:0x3C] = b"ARM\x64"
    return bytes(image)


def test_kernel_architecture_is_read_from_the_image_header(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz"
    for content, arch in (
        (bzimage(VERSION), "x86_64"),
        (arm64_image(), "aarch64"),
        (gzip.compress(arm64_image()), "aarch64"),  # some distributions gzip the Image
        (b"\0" * 4096, None),
        (b"\x1f\x8b not really gzip", None),
    ):
        path.write_bytes(content)
        assert kernel.kernel_arch(path) == arch, content[:8]


def test_an_arm64_kernel_takes_its_release_from_the_modules_directory(tmp_path: Path, ipvs_tree: Path) -> None:
    vmlinuz = tmp_path / "Image"
    vmlinuz.write_bytes(arm64_image())
    found = kernel.from_paths(vmlinuz, ipvs_tree.parent)
    assert (found.arch, found.version) == ("aarch64", VERSION)


def test_from_paths_accepts_the_parent_modules_directory(tmp_path: Path, ipvs_tree: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(bzimage(VERSION))
    found = kernel.from_paths(vmlinuz, ipvs_tree.parent)
    assert found.version == VERSION and found.modules_dir == ipvs_tree.resolve()
    with pytest.raises(VMError, match="neither an x86 bzImage nor an arm64 Image"):
        kernel.from_paths(ipvs_tree / "modules.builtin", ipvs_tree)
    with pytest.raises(VMError, match="needs --modules"):
        kernel.resolve(vmlinuz, None, Cache(tmp_path / "cache"))
