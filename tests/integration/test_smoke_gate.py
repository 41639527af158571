"""Release gating on real parts: build -> push a candidate -> smoke by digest on an IPVS
kernel -> release tags. A release tag never points at an image that failed smoke."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_router_sctp import config
from kube_router_sctp.cache import Cache
from kube_router_sctp.errors import VMError
from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.upstream, pytest.mark.vm, pytest.mark.slow]


@pytest.fixture
def build_args(v032_debian_args: list[str]):  # type: ignore[no-untyped-def]
    """The shared build's whole job, pushed to ``registry/ns``, reported to ``report``."""

    def args(registry: str, ns: str, report: Path) -> list[str]:
        return [*v032_debian_args, "--push", f"{registry}/{ns}", "--report", str(report)]

    return args


@pytest.fixture(scope="module")
def vm_docker_host() -> Iterator[tuple[str, str]]:
    """A fresh Docker host on Debian's kernel (QEMU), its API on a loopback port."""
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    from kube_router_sctp.vm import dockerhost

    cache = Cache(config.load().cache_dir)
    try:
        with dockerhost.docker_host(cache=cache) as host:
            yield host.url, host.guest_registry(env.registry())
    except VMError as exc:
        pytest.fail(f"the Docker-host VM did not come up: {exc.one_line()}")


def test_full_pipeline_smokes_in_the_vm_then_promotes(
    vm_docker_host: tuple[str, str], tmp_path: Path, build_args
) -> None:
    registry = env.registry()
    ns = env.namespace("itest-gate")
    report = tmp_path / "r.json"
    result = env.run_cli(
        *build_args(registry, ns, report), "--smoke-host", vm_docker_host[0], "--smoke-registry", vm_docker_host[1]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(report.read_text())
    stages = data["stages"]
    order = data["stage_order"]
    assert order.index("push_candidate") < order.index("smoke") < order.index("promote")
    smoked = stages["push_candidate"]["digest"]
    assert stages["smoke"]["passed"] is True
    assert stages["smoke"]["image"].endswith(f"@{smoked}")  # smoked by digest
    assert "SCTP 10.254.125.172:32000" in stages["smoke"]["ipvs_table"]
    assert env.registry_digest(f"{ns}/kube-router", env.release_tag("v0.3.2")) == smoked
    assert "SCTP" in result.stderr and "Masq" in result.stderr  # the ipvsadm -Ln table is shown


def test_failed_smoke_leaves_only_the_candidate(tmp_path: Path, build_args) -> None:
    """On this machine's own daemon the kernel has no IPVS: with the fallback kernel off,
    smoke must fail with that class, point at --smoke-host/--kernel, and the registry must
    hold no release tag."""
    engine = env.docker_engine()
    kernel = engine.version().get("KernelVersion", "")
    probe = Path("/proc/net/ip_vs")
    if probe.exists():
        pytest.skip(f"this daemon's kernel ({kernel}) has IPVS; the failure path needs one without")
    registry = env.registry()
    ns = env.namespace("itest-nogate")
    report = tmp_path / "r.json"
    result = env.run_cli(*build_args(registry, ns, report), "--fallback-kernel", "none")
    assert result.returncode == 8, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
    assert len(errors) == 1
    assert "the host kernel has no IPVS" in errors[0]
    assert "--smoke-host" in errors[0] and "--kernel" in errors[0]
    assert env.registry_tags(f"{ns}/kube-router") == [env.release_tag("v0.3.2", "-debian-candidate")]
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and "promote" not in data["stages"]


def test_daemon_without_ipvs_falls_back_to_debians_kernel(tmp_path: Path, build_args) -> None:
    """The main job with no smoke target named, on a daemon whose kernel has no IPVS: the
    image is smoked on Debian's kernel under QEMU instead, loudly, and only then released."""
    if Path("/proc/net/ip_vs").exists():
        pytest.skip("this daemon's kernel has IPVS; the fallback is not taken")
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    registry = env.registry()
    ns = env.namespace("itest-fallback")
    report = tmp_path / "r.json"
    result = env.run_cli(*build_args(registry, ns, report))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "cannot run the smoke test (smoke test on" in result.stderr
    assert "the host kernel has no IPVS" in result.stderr and "--fallback-kernel none" in result.stderr
    smoke = json.loads(report.read_text())["stages"]["smoke"]
    assert smoke["passed"] is True and "under QEMU" in smoke["host"]
    assert "the host kernel has no IPVS" in smoke["fallback_from"]
    digest = json.loads(report.read_text())["stages"]["push_candidate"]["digest"]
    assert smoke["image"].endswith(f"@{digest}")
    assert env.registry_digest(f"{ns}/kube-router", env.release_tag("v0.3.2")) == digest


def test_doctor_says_the_same_about_this_kernel() -> None:
    if Path("/proc/net/ip_vs").exists():
        pytest.skip("this kernel has IPVS")
    result = env.run_cli("doctor", "--base-family", "debian")
    line = next(line for line in result.stdout.splitlines() if "kernel IPVS with SCTP" in line)
    assert line.startswith("[FAIL]") and "the host kernel has no IPVS" in line
    assert "--smoke-host" in result.stdout and "--kernel" in result.stdout


def test_kernel_mode_gates_the_release(tmp_path: Path, build_args) -> None:
    """The main job with --kernel debian: smoke boots Debian's kernel with the pushed image."""
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    registry = env.registry()
    ns = env.namespace("itest-kernel")
    report = tmp_path / "r.json"
    result = env.run_cli(*build_args(registry, ns, report), "--kernel", "debian")
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(report.read_text())
    assert data["stages"]["smoke"]["passed"] is True
    assert "under QEMU" in data["stages"]["smoke"]["host"]
    assert (
        env.registry_digest(f"{ns}/kube-router", env.release_tag("v0.3.2"))
        == data["stages"]["push_candidate"]["digest"]
    )
