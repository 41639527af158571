"""Small synthetic Debian kernel packages and a signed archive serving them, built in the
test: both layouts (classic, split), modules plain, xz- or zstd-compressed."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kube_router_sctp import kernelfeatures


def elf_module(**info: str | list[str]) -> bytes:
    """A minimal ELF64 LE file whose only real section is .modinfo."""
    pairs = []
    for key, value in info.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{key}={item}".encode() + b"\0")
    modinfo = b"".join(pairs)
    names = b"\0.modinfo\0.shstrtab\0"
    modinfo_off = 64
    names_off = modinfo_off + len(modinfo)
    shoff = (names_off + len(names) + 7) & ~7
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    body = bytes(header) + modinfo + names
    body += b"\0" * (shoff - len(body))
    sections = [
        struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, modinfo_off, len(modinfo), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, names_off, len(names), 0, 0, 1, 0),
    ]
    return body + b"".join(sections)


def bzimage(
    release: str,
    payload: bytes = b"",
    *,
    protocol: int = 0x20F,
    setup_sectors: int = 3,
    length: int | None = None,
    size_suffix: bool = True,
) -> bytes:
    """An x86 bzImage as the boot protocol lays it out: boot sector and setup
    (``setup_sectors`` + 1 sectors) with the setup header and the release string, then the
    protected-mode part holding ``payload`` (plus its 4-byte size, as xz and zstd kernels
    end; a gzip payload does not)."""
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    struct.pack_into("<H", setup, 0x20E, 0x300)  # the release string, at 0x300 + 0x200
    text = f"{release} (debian-kernel@lists.debian.org) #1 SMP\0".encode()
    setup[0x500 : 0x500 + len(text)] = text
    body = b"\0" * 256 + payload + (struct.pack("<I", 0) if size_suffix else b"")
    struct.pack_into("<II", setup, 0x248, 256, len(payload) + (4 if size_suffix else 0) if length is None else length)
    return bytes(setup) + body


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".xz":
        return lzma.compress(data)
    if suffix == ".gz":
        return gzip.compress(data)
    if suffix == ".zst":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    return data


# A kernel's files: path -> bytes, or ("symlink", target), or ("device",) for hostile tests.
Files = dict[str, bytes | tuple[str, ...]]


def tar_bytes(files: Files, compression: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}" if not name.startswith(("/", "../")) else name)
            if isinstance(content, tuple):
                if content[0] == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, content[1]
                else:
                    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                archive.addfile(info)
                continue
            info.size, info.mode = len(content), 0o644
            archive.addfile(info, io.BytesIO(content))
    return compress(buffer.getvalue(), compression)


def deb(path: Path, package: str, version: str, files: Files, depends: str = "", compression: str = ".xz") -> Path:
    """A .deb as dpkg-deb writes one: debian-binary, control.tar.xz, data.tar.*."""
    control = f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@example>\n"
    if depends:
        control += f"Depends: {depends}\n"
    control += "Description: test kernel package\n"
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", tar_bytes({"control": control.encode()}, ".xz")),
        (f"data.tar{compression}", tar_bytes(files, compression)),
    ]
    out = bytearray(b"!<arch>\n")
    for name, content in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode()
        out += content + (b"\n" if len(content) % 2 else b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def ipvs_modules(suffix: str = ".ko") -> dict[str, bytes]:
    """The smoke check's modules with Debian's dependency shape (relative to the modules dir)."""
    mods = {
        "net/netfilter/ipvs/ip_vs": elf_module(name="ip_vs", depends="nf_conntrack"),
        "net/netfilter/ipvs/ip_vs_rr": elf_module(name="ip_vs_rr", depends="ip_vs"),
        "net/netfilter/nf_conntrack": elf_module(name="nf_conntrack", depends="nf_defrag_ipv4"),
        "net/ipv4/netfilter/nf_defrag_ipv4": elf_module(name="nf_defrag_ipv4", depends=""),
        "net/netfilter/nf_nat": elf_module(name="nf_nat", depends="nf_conntrack"),
        "net/sctp/sctp": elf_module(name="sctp", depends="udp_tunnel"),
        "net/ipv4/udp_tunnel": elf_module(name="udp_tunnel", depends=""),
        "net/netfilter/ipset/ip_set": elf_module(name="ip_set", depends=""),
        "net/netfilter/ipset/ip_set_hash_ip": elf_module(name="ip_set_hash_ip", depends="ip_set"),
        "net/netfilter/ipset/ip_set_hash_ipport": elf_module(name="ip_set_hash_ipport", depends="ip_set"),
    }
    return {
        f"kernel/{name}.ko{suffix.removeprefix('.ko')}": compress(data, suffix.removeprefix(".ko"))
        for name, data in mods.items()
    }


def config_text(**overrides: str | None) -> str:
    """A kernel config with everything the smoke check needs (7.x style: nfnetlink
    built in, IPVS SCTP built in); ``NAME=None`` unsets an option."""
    values: dict[str, str | None] = {
        "CONFIG_IP_VS": "m",
        "CONFIG_IP_VS_PROTO_SCTP": "y",
        "CONFIG_IP_VS_RR": "m",
        "CONFIG_IP_SCTP": "m",
        "CONFIG_NF_CONNTRACK": "m",
        "CONFIG_NF_CT_PROTO_SCTP": "y",
        "CONFIG_NF_NAT": "m",
        "CONFIG_NETFILTER_NETLINK": "y",
        "CONFIG_IP_SET": "m",
        "CONFIG_IP_SET_HASH_IP": "m",
        "CONFIG_IP_SET_HASH_IPPORT": "m",
    }
    values.update({f"CONFIG_{k}": v for k, v in overrides.items()})
    lines = [f"{k}={v}" if v is not None else f"# {k} is not set" for k, v in values.items()]
    assert all(n.option in values or not n.required for n in kernelfeatures.SMOKE)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KernelDebs:
    release: str
    version: str
    debs: list[Path]  # the image package first


def classic(directory: Path, release: str = "6.1.0-99-amd64", suffix: str = ".ko", **config: str | None) -> KernelDebs:
    version = "6.1.999-1"
    files: Files = {
        f"boot/vmlinuz-{release}": bzimage(release),
        f"boot/config-{release}": config_text(**config).encode(),
    }
    files |= {f"lib/modules/{release}/{k}": v for k, v in ipvs_modules(suffix).items()}
    files[f"lib/modules/{release}/modules.builtin"] = b"kernel/net/ipv4/netfilter/nf_defrag_ipv6.ko\n"
    path = deb(directory / f"linux-image-{release}_{version}_amd64.deb", f"linux-image-{release}", version, files)
    return KernelDebs(release, version, [path])


def split(
    directory: Path, release: str = "7.2.99+deb14-amd64", suffix: str = ".ko.xz", **config: str | None
) -> KernelDebs:
    """Debian 7.x's layout: an empty image package depending on binary, modules, base."""
    version = "7.2.99-1"
    base = f"usr/lib/modules/{release}"
    pin = f"(= {version})"
    image = deb(
        directory / f"linux-image-{release}_{version}_amd64.deb",
        f"linux-image-{release}",
        version,
        {f"usr/share/doc/linux-image-{release}/README": b"empty\n"},
        depends=f"initramfs-tools | linux-initramfs-tool, linux-base-{release} {pin}, "
        f"linux-binary-{release} {pin}, linux-modules-{release} {pin}",
    )
    binary = deb(
        directory / f"linux-binary-{release}_{version}_amd64.deb",
        f"linux-binary-{release}",
        version,
        {f"{base}/vmlinuz": bzimage(release)},
        depends=f"linux-base-{release} {pin}",
    )
    modules = deb(
        directory / f"linux-modules-{release}_{version}_amd64.deb",
        f"linux-modules-{release}",
        version,
        {f"{base}/{k}": v for k, v in ipvs_modules(suffix).items()},
        depends=f"kmod, linux-base-{release} {pin}",
        compression=".zst" if shutil.which("zstd") else ".xz",
    )
    # nfnetlink is built in (=y) yet in neither list, as on Debian's 7.2.
    builtin_modinfo = b"crc32c_generic.alias=crc32c\0crc32c_generic.license=GPL\0"
    base_deb = deb(
        directory / f"linux-base-{release}_{version}_amd64.deb",
        f"linux-base-{release}",
        version,
        {
            f"{base}/config": config_text(**config).encode(),
            f"{base}/modules.builtin": b"kernel/lib/crc/crc32.ko\n",
            f"{base}/modules.builtin.modinfo": builtin_modinfo,
            f"{base}/System.map": b"ffffffffffffffff stub\n",
        },
    )
    return KernelDebs(release, version, [image, binary, modules, base_deb])


# -- a signed archive ---------------------------------------------------------------------
def gpg_key(home: Path) -> Path:
    """A signing key in a fresh GNUPGHOME; returns the exported public keyring."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Test Archive <archive@example>",
            "ed25519",
            "sign",
            "1d",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    keyring = home / "archive.gpg"
    exported = subprocess.run(["gpg", "--export"], env=env, check=True, capture_output=True).stdout
    keyring.write_bytes(exported)
    _stop_agent(env)
    return keyring


def _stop_agent(env: dict[str, str]) -> None:
    """gpg starts an agent per GNUPGHOME that outlives it: stop it, so a test leaves no
    daemon behind (the next gpg call starts one again if it needs one)."""
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)


def packages_paragraph(path: Path, root: Path, source: str = "linux-signed-amd64 (7.2.99+1)") -> str:
    from kube_router_sctp.vm import deb as debfile

    control = debfile.control(path)
    data = path.read_bytes()
    lines = [
        f"Package: {control.package}",
        f"Source: {source}",
        f"Version: {control.version}",
        "Architecture: amd64",
    ]
    if control.depends:
        lines.append(f"Depends: {control.depends}")
    lines += [
        f"Filename: {path.relative_to(root)}",
        f"Size: {len(data)}",
        f"SHA256: {hashlib.sha256(data).hexdigest()}",
    ]
    return "\n".join(lines)


def archive(root: Path, home: Path, suite: str, paragraphs: list[str], *, codename: str | None = None) -> Path:
    """``dists/SUITE/InRelease`` (clear-signed by the key in ``home``) and its Packages.xz."""
    dists = root / "dists" / suite
    binary = dists / "main" / "binary-amd64"
    binary.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(paragraphs) + "\n"
    (binary / "Packages.xz").write_bytes(lzma.compress(text.encode()))
    packed = (binary / "Packages.xz").read_bytes()
    release = (
        f"Origin: Debian\nSuite: {suite}\nCodename: {codename or suite}\nComponents: main\nArchitectures: amd64\n"
        f"SHA256:\n {hashlib.sha256(packed).hexdigest()} {len(packed)} main/binary-amd64/Packages.xz\n"
    )
    (dists / "Release").write_text(release)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--yes", "--clearsign", "-o", str(dists / "InRelease"), str(dists / "Release")],
        env=env,
        check=True,
        capture_output=True,
    )
    _stop_agent(env)
    return dists / "InRelease"
