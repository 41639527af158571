"""Two platforms: Go cross-compiles, ipvsadm builds per platform under binfmt, one
manifest list in the local registry. Before the release tags, each platform's candidate
is pulled back by digest and smoke-tested on Debian's kernel of its own architecture
(arm64 under qemu-system-aarch64): `kube-router --version`, `ipvsadm --version` and SCTP
IPVS rules on a real arm64 kernel. qemu-user alone cannot run `ipvsadm --version` (it
needs IPVS over generic netlink, which qemu-user does not emulate), so full-system
emulation is what makes the arm64 check real; the binaries are also run under binfmt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from kube_router_sctp.engine import Engine
from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.upstream, pytest.mark.vm, pytest.mark.slow]


def test_two_platform_manifest_list_runs_on_both(tmp_path: Path, v032_debian_args: list[str]) -> None:
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        env.missing("needs arm64 binfmt emulation (qemu-user-static; scripts/setup-host.sh enables it)")
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    env.require_binary("qemu-system-aarch64", "qemu-system-arm")
    registry = env.registry()
    ns = env.namespace("itest-multiarch")
    report = tmp_path / "r.json"
    result = env.run_cli(
        *v032_debian_args, "--platform", "linux/amd64",
        "--platform", "linux/arm64", "--push", f"{registry}/{ns}", "--kernel", "debian",
        "--report", str(report), timeout=5400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(report.read_text())
    platforms = data["stages"]["promote"]["platforms"]
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    smoke = data["stages"]["smoke"]
    assert smoke["passed"] is True
    assert set(smoke["platforms"]) == {"linux/amd64", "linux/arm64"}
    for platform, record in smoke["platforms"].items():
        assert record["image"] == platforms[platform], platform
        assert {"linux/amd64": "-amd64 under QEMU", "linux/arm64": "-arm64 under QEMU"}[platform] in record["host"]
        assert "SCTP" in record["ipvs_table"], platform
        # the guest loaded every module with one modprobe, through the tool's index
        assert record["modules_by_one_modprobe"] == len(record["modules_loaded"]) > 0, record

    manifest = requests.get(
        f"http://{registry}/v2/{ns}/kube-router/manifests/{env.release_tag('v0.3.2')}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.list.v2+json"},
        timeout=10,
    ).json()
    listed = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in manifest["manifests"]}
    assert listed == {p: ref.rpartition("@")[2] for p, ref in platforms.items()}

    # The released entries, pulled through the manifest list: each is its architecture
    # and its kube-router runs (arm64 under binfmt emulation).
    engine = Engine(None)
    for platform in listed:
        reference = f"{registry}/{ns}/kube-router:{env.release_tag('v0.3.2')}"
        engine.pull(reference, platform=platform)
        image = engine.image(reference) or {}
        assert f"{image.get('Os')}/{image.get('Architecture')}" == platform
        arch = engine.run(reference, ["-m"], entrypoint=["uname"])
        assert arch.output.strip() == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]
        kube_router = engine.run(reference, ["--version"])
        assert kube_router.exit_code == 0 and f"version {env.release_tag('v0.3.2')}" in kube_router.output, platform
