"""The dataplane proof, end to end: `build.py verify` boots a fresh node per image (Debian's
kernel under QEMU), runs kube-router there against the Kubernetes API stand-in (the only
stand-in: kernel, network and kube-router are real) and sends real SCTP, TCP and UDP
messages through ClusterIP, NodePort and ExternalIP.

For each release: the patched image passes all nine cells and every extra check; the
negative control (the same release with only the series' compat patches) fails exactly
the three SCTP cells. Both images are built here through the pipeline CLI (cache hits
after the first build), never assumed to be left over.

Needs qemu-system-x86_64, Debian's kernel package (apt, host mirror), a Docker daemon,
root for the VM disk's first build, and the kube-router source (user config or cache).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from kube_router_sctp import config
from tests.support import env
from tests.support.upstream import Upstream

PROTOCOLS = {"SCTP", "TCP", "UDP"}
ADDRESSES = {"ClusterIP", "NodePort", "ExternalIP"}
# Module-era releases fetch from the Go module proxy inside the build (HTTPS).
MODULE_ERA = {"v2.7.1"}


@pytest.fixture(scope="module")
def node_prerequisites() -> None:
    """Skip, saying what is missing, when the node cannot be booted here."""
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    env.docker_engine()
    from kube_router_sctp.cache import Cache
    from kube_router_sctp.errors import PipelineError
    from kube_router_sctp.vm.kernel import resolve

    try:
        resolve("debian", None, Cache(config.load().cache_dir))
    except PipelineError as exc:
        env.missing(f"needs Debian's kernel package: {exc.one_line()}")


def _series_exists(version: str) -> bool:
    from kube_router_sctp import patch
    from kube_router_sctp.errors import ConfigError

    try:
        patch.select(patch.load_index(), version)
    except ConfigError:
        return False
    return True


def _ca_bundle() -> list[str]:
    """The CA bundle HTTPS inside the build needs: the user's setting, else this
    system's default (where a local CA is installed for the Go module proxy)."""
    if config.load().mirrors.ca_bundle is not None:
        return []
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return ["--ca-bundle", candidate]
    return []


def build(version: str, upstream: Upstream, *, control: bool) -> str:
    """The image of ``version`` (patched, or the negative control), built by the pipeline."""
    if not _series_exists(version):
        pytest.skip(f"no patch series for kube-router {version} yet (patches/kube-router/series.toml)")
    args = ["build", "--kube-router-version", version, "--base-family", "debian", "--ipvsadm-version", "1.31", "-q"]
    args += upstream.args(version)
    args += _ca_bundle() if version in MODULE_ERA else []
    args += ["--negative-control"] if control else []
    result = env.run_cli(*args, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[0]


def cells(run: dict[str, Any]) -> dict[tuple[str, str], bool]:
    return {(o["address"], o["protocol"]): o["passed"] for o in run["outcomes"] if o["kind"] == "cell"}


# One proof runs on a kernel of another generation than Debian 12's 6.1 (trixie's 6.12):
# the node boots whatever --kernel names, with that kernel's modules on a disk of their own.
KERNELS = {"v0.3.2": "debian:trixie", "v2.7.1": "debian"}


@pytest.mark.parametrize("version", ["v0.3.2", "v2.7.1"])
@pytest.mark.vm
@pytest.mark.docker
@pytest.mark.upstream
@pytest.mark.slow
def test_patched_image_forwards_sctp_and_its_control_does_not(
    version: str,
    node_prerequisites: None,
    tmp_path: Path,
    record_property: pytest.RecordProperty,
    upstream: Upstream,
) -> None:
    candidate = build(version, upstream, control=False)
    control = build(version, upstream, control=True)
    results = tmp_path / f"dataplane-{version}"
    result = env.run_cli(
        "verify", candidate, "--control", control, "--kernel", KERNELS[version], "--results", str(results), timeout=1800
    )
    data = json.loads(results.with_name(f"{results.name}.json").read_text())
    assert result.returncode == 0, result.stderr[-5000:]
    assert data["met"] is True and not data["failures"]
    patched, unpatched = data["runs"]
    for run in data["runs"]:
        record_property(f"{run['role']}_seconds", run["timings"]["total"])
        assert run["kube_router_version"] == version
        assert run["booted"]["spec"] == KERNELS[version] and run["booted"]["packages"]
        assert set(cells(run)) == {(a, p) for a in ADDRESSES for p in PROTOCOLS}

    # the candidate: every cell and every extra check
    assert all(cells(patched).values()), cells(patched)
    checks = {o["name"]: o["passed"] for o in patched["outcomes"] if o["kind"] == "check"}
    assert all(checks.values()), checks
    assert len(checks) >= 6, checks

    # the control: exactly the SCTP cells fail
    failed = {cell for cell, passed in cells(unpatched).items() if not passed}
    assert failed == {(a, "SCTP") for a in ADDRESSES}, cells(unpatched)

    # the table on stdout and the markdown say the same
    markdown = results.with_name(f"{results.name}.md").read_text()
    assert "| ExternalIP 10.120.10.120 | external host | pass" in markdown
    assert "| ExternalIP 10.120.10.120 | external host | fail" in result.stdout


@pytest.mark.docker
def test_verify_reports_an_image_that_is_not_there() -> None:
    env.docker_engine()
    result = env.run_cli("verify", "krs-test-absent:none")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "is not on" in result.stderr and "build it first" in result.stderr


# -- the readers of the kernel's tables (no node needed) ----------------------------------
IPVSADM = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.254.125.172:32001 rr
  -> 172.20.1.6:32001             Masq    1      0          1
SCTP 10.120.10.120:32000 rr
  -> 172.20.1.6:32000             Masq    1      0          1
  -> 172.20.1.7:32000             Masq    1      0          0
SCTP 127.0.0.1:32000 rr
"""
IPSET = """Name: kube-router-local-ips
Type: hash:ip
Members:
10.101.50.117 timeout 0

Name: kube-router-ipvs-services
Type: hash:ip,port
Header: family inet hashsize 1024 maxelem 65536 timeout 0
Members:
10.120.10.120,tcp:32001 timeout 0
10.120.10.120,sctp:32000 timeout 0
"""


def test_ipvs_table_is_read_per_service() -> None:
    from kube_router_sctp.dataplane.scenario import parse_ipvs

    table = parse_ipvs(IPVSADM)
    assert table[("SCTP", "10.120.10.120", 32000)] == ["172.20.1.6", "172.20.1.7"]
    assert table[("TCP", "10.254.125.172", 32001)] == ["172.20.1.6"]
    assert table[("SCTP", "127.0.0.1", 32000)] == []


def test_the_sctp_entry_of_the_service_firewall_is_found_by_name_or_number() -> None:
    from kube_router_sctp.dataplane.scenario import _sctp_entry, parse_ipsets

    assert parse_ipsets(IPSET)["kube-router-local-ips"] == ["10.101.50.117"]
    assert _sctp_entry(IPSET, "10.120.10.120", 32000) == ("kube-router-ipvs-services", "10.120.10.120,sctp:32000")
    numeric = IPSET.replace("sctp:32000", "132:32000")
    assert _sctp_entry(numeric, "10.120.10.120", 32000) == ("kube-router-ipvs-services", "10.120.10.120,132:32000")
    the_2019_entry = IPSET.replace("sctp:32000", "udp:32000")
    assert _sctp_entry(the_2019_entry, "10.120.10.120", 32000) is None


def test_kube_router_gets_only_the_flags_its_release_knows() -> None:
    from kube_router_sctp.dataplane.node import BASE_FLAGS, kube_router_flags

    old = kube_router_flags("Usage of kube-router:\n      --cluster-cidr string\n")
    assert old == [*BASE_FLAGS, "--cluster-cidr=172.20.0.0/16"]
    new = kube_router_flags("      --service-cluster-ip-range strings\n      --service-external-ip-range strings\n")
    assert "--service-cluster-ip-range=10.254.0.0/16" in new
    assert "--service-external-ip-range=10.120.10.120/32" in new


def test_results_keep_the_dots_of_a_version(tmp_path: Path) -> None:
    from kube_router_sctp.verify import Run, write_results

    md, js = write_results(tmp_path / "v0.3.2", [Run("candidate", "img", error="not run")])
    assert (md.name, js.name) == ("v0.3.2.md", "v0.3.2.json")
    assert json.loads(js.read_text())["met"] is False


def test_a_protocol_error_is_told_from_an_object_named_sctp() -> None:
    from kube_router_sctp.dataplane.scenario import _PROTOCOL_WORDS

    assert not _PROTOCOL_WORDS.search("W1126 failed to lookup any service as an owner for default/sctp-expserver")
    assert not _PROTOCOL_WORDS.search("I1126 run through nw policy allow-sctp")
    assert _PROTOCOL_WORDS.search("E1126 Failed to create ipvs service: UNKNOWN:10.254.125.172:32000")
    assert _PROTOCOL_WORDS.search("W1126 failed to convert protocol 132 to a valid IPVS protocol")
