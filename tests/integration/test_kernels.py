"""Debian kernels by suite, as a user names them: one `smoke` run boots a 6.12 kernel
(trixie, classic layout) and a 7.x kernel (sid, split layout) under QEMU with the real
image, resolved from the Debian mirror's signed indices; and a real kernel whose config
lacks IPVS SCTP gets the kernel verdict, not an image failure.

Needs qemu-system-x86_64, gpgv with Debian's keyring, the Debian mirror of the host's apt
sources, and the Docker daemon. Under CI=true a missing part fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kube_router_sctp import config
from kube_router_sctp.cache import Cache
from kube_router_sctp.errors import PipelineError
from kube_router_sctp.vm.kernel import KernelFiles, resolve
from tests.support import env

pytestmark = [pytest.mark.vm, pytest.mark.docker]


missing = env.missing


@pytest.fixture(scope="module")
def prerequisites() -> None:
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    env.require_binary("gpgv", "gpgv")
    env.docker_engine()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def kernel(spec: str) -> KernelFiles:
    try:
        return resolve(spec, None, Cache(config.load().cache_dir), mirror=config.load().mirrors.debian)
    except PipelineError as exc:
        missing(f"needs Debian's {spec} kernel from the mirror: {exc.one_line()}")
        raise


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_6_12_and_a_7_x_kernel_pass_in_one_run(
    prerequisites: None, debian_image: str, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    report = tmp_path / "report.json"
    result = env.run_cli(
        "smoke", debian_image, "--kernel", "debian:trixie", "--kernel", "debian:sid", "--report", str(report)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = json.loads(report.read_text())["stages"]["smoke"]["kernels"]
    assert [r["spec"] for r in rows] == ["debian:trixie", "debian:sid"]
    assert all(r["passed"] and r["verdict"] == "pass" for r in rows)
    trixie, sid = (r["kernel"] for r in rows)
    assert trixie["release"].startswith("6.12.") and int(sid["release"].split(".")[0]) >= 7
    assert {"binary", "modules", "base"} <= {p["name"].split("-")[1] for p in sid["packages"]}  # the split layout
    assert all(len(p["sha256"]) == 64 for r in rows for p in r["kernel"]["packages"])
    # Both zstd-compressed bzImages were decompressed on the host and booted through PVH.
    assert [r["kernel"]["booted_as"] for r in rows] == ["uncompressed (PVH)"] * 2
    # 7.x builds nfnetlink in yet lists it nowhere: the config said so.
    assert "CONFIG_NETFILTER_NETLINK" in rows[1]["options_built_in"]
    assert "SCTP 10.254.125.172:32000 rr" in rows[1]["ipvs_table"]
    assert "| debian:sid |" in result.stdout
    # each guest loaded all its modules with one modprobe, through the tool's index of them
    assert all(r["modules_by_one_modprobe"] == len(r["modules_loaded"]) >= 15 for r in rows), rows
    assert result.stderr.count("modules loaded by one modprobe") == 2
    for row in rows:
        record_property(f"{row['spec']}_seconds", row["timings"]["total"])


def test_a_kernel_without_ipvs_sctp_gets_the_kernel_verdict(
    prerequisites: None, debian_image: str, tmp_path: Path
) -> None:
    """Debian's trixie kernel with its config saying CONFIG_IP_VS_PROTO_SCTP is not set:
    the verdict names the option and exits 14 before any guest boots."""
    real = kernel("debian:trixie")
    assert real.config is not None
    modules = tmp_path / "modules" / real.version
    # Hard links: the modules without a copy of 100 MB (the cache is on the same disk).
    shutil.copytree(real.modules_dir, modules, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("config"))
    text = real.config.read_text().replace("CONFIG_IP_VS_PROTO_SCTP=y", "# CONFIG_IP_VS_PROTO_SCTP is not set")
    (modules / "config").write_text(text)
    result = env.run_cli("smoke", debian_image, "--kernel", str(real.vmlinuz), "--modules", str(modules))
    assert result.returncode == 14, result.stderr[-3000:]
    assert "CONFIG_IP_VS_PROTO_SCTP is not set" in result.stderr
    assert "smoke-guest" not in result.stderr  # decided from the config: nothing booted


@pytest.mark.parametrize("suite", ["forky", "sid"])
def test_debian_means_the_hosts_suite_even_forky_or_sid(prerequisites: None, tmp_path: Path, suite: str) -> None:
    """A host whose apt sources point at forky or sid: `--kernel debian` is that suite's
    kernel (7.x, split layout), resolved from the real mirror."""
    from kube_router_sctp.vm import debian

    mirror = config.load().mirrors.debian
    if not mirror:
        missing("needs a Debian mirror in the apt sources")
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(f"Types: deb\nURIs: {mirror}\nSuites: {suite}\n")
    resolved = debian.Archive(None, Cache(config.load().cache_dir), apt_dir=apt).resolve("debian", "x86_64")
    assert resolved.suite == suite
    assert int(resolved.release.split(".")[0]) >= 7
    assert any(p.name.startswith("linux-binary-") for p in resolved.packages)
