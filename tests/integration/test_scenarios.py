"""The SCTP situations operators hit (issue 15), on the wire: `build.py verify IMAGE
--scenarios all` runs the base proof, then adds a second node (a container's network
namespace on the same VM, with its own kube-router, IPVS, iptables and ipsets) and runs
every scenario the release can run, each part against the verdict `dataplane/catalogue.py`
expects of that release. Real kernel (Debian's, QEMU TCG), real control plane, real SCTP
associations from the project's own client and server; only the kubelet is absent.

All of these carry the ``release_tier`` marker, deselected by default (``pytest -m
release_tier tests/integration/test_scenarios.py``): every scenario on v2.7.1, v0.3.2 and
v2.9.0 (native SCTP, the upstream anchor), and two controls of v2.7.1 built without one
series patch each: the DSR patch (sloppy_sctp, a part that depends on it) and the conntrack
flush (on whose absence no part failed on the wire). CI runs all eight scenarios of v2.7.1
inside the v2.7.1 dataplane proof (``tests/integration/test_dataplane.py``: no boot of its
own). docs/dataplane.md
("Scenarios") holds the results of the runs so far and what the wire contradicted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

# The dataplane proof's builds and fixtures: the same images, the same control plane.
from tests.integration.test_dataplane import build, control_plane, node_prerequisites  # noqa: F401
from tests.support import env
from tests.support.scenarios import assert_every_part_as_expected, scenarios_of
from tests.support.upstream import Upstream

SCENARIOS = ("two-nodes", "local-traffic", "affinity", "loadbalancer", "failover", "multihoming", "ipv6", "dsr")
KERNEL = "debian"  # bookworm's 6.1, as the v2.7.1 dataplane proof


def run_scenarios(image: str, tmp_path: Path, name: str, scenarios: str = "all") -> tuple[int, dict[str, Any], str]:
    results = tmp_path / name
    result = env.run_cli(
        "verify", image, "--scenarios", scenarios, "--kernel", KERNEL, "--results", str(results), timeout=3600
    )
    data = json.loads(results.with_name(f"{name}.json").read_text())
    markdown = results.with_name(f"{name}.md").read_text()
    return result.returncode, data, markdown + result.stderr[-5000:]


def only_run(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (run,) = data["runs"]
    return scenarios_of(run)


NODE = ("node_prerequisites", "control_plane")
# Every test here: release-tier (deselected by default), on a node VM against the control plane.
pytestmark = [
    pytest.mark.release_tier,
    pytest.mark.usefixtures(*NODE),
    pytest.mark.vm,
    pytest.mark.docker,
    pytest.mark.upstream,
    pytest.mark.slow,
]


def test_every_scenario_on_the_newest_patched_line(tmp_path: Path, upstream: Upstream) -> None:
    candidate = build("v2.7.1", upstream, control=False)
    code, data, said = run_scenarios(candidate, tmp_path, "scenarios-v2.7.1")
    found = only_run(data)
    assert_every_part_as_expected(found, SCENARIOS)
    assert code == 0, said
    # times are published, not only verdicts
    failover = {p["part"]: p for p in found["failover"]["parts"]}
    assert failover["deleted-new-association"]["measures"]["new_association"] >= 0
    homing = {p["part"]: p for p in found["multihoming"]["parts"]}
    assert "failover" in homing["clusterip-sloppy-on"]["measures"]
    # the chunks that decide multi-homing were captured
    captures = [k for k in found["multihoming"]["evidence"] if k.startswith("capture ")]
    assert len(captures) == 4 and any("INIT addrs=" in found["multihoming"]["evidence"][k] for k in captures)


WITHOUT_IPV6 = (*SCENARIOS[:6], "dsr")


@pytest.mark.parametrize(("version", "expected_scenarios"), [("v0.3.2", WITHOUT_IPV6), ("v2.9.0", SCENARIOS)])
def test_every_scenario_on_another_release(
    version: str, expected_scenarios: tuple[str, ...], tmp_path: Path, upstream: Upstream
) -> None:
    """v0.3.2 has no IPv6 (reported n/a, not run); v2.9.0 is native (nothing applied)."""
    candidate = build(version, upstream, control=False)
    code, data, said = run_scenarios(candidate, tmp_path, f"scenarios-{version}")
    found = only_run(data)
    assert_every_part_as_expected({k: v for k, v in found.items() if k in expected_scenarios}, expected_scenarios)
    if version == "v0.3.2":
        assert found["ipv6"]["result"] == "n/a" and "AF_INET" in found["ipv6"]["expected_reason"]
    assert code == 0, said


def build_without(patch_words: str, upstream: Upstream, tmp_path: Path) -> str:
    """v2.7.1 built from a copy of the project whose series lacks the one patch named by
    ``patch_words``, under an image name of its own (the candidate's tag stays the
    candidate's). Its patches label then sets its expectations."""
    project = tmp_path / f"project-without-{patch_words}"
    for part in ("patches", "images", "ipvsadm"):
        shutil.copytree(env.PROJECT / part, project / part)
    series = project / "patches" / "kube-router" / "v2.6-v2.7"
    (dropped,) = series.glob(f"*-{patch_words}*.patch")
    dropped.unlink()
    args = ["build", "--kube-router-version", "v2.7.1", "--base-family", "debian", "--ipvsadm-version", "1.31"]
    args += ["--image-name", f"kube-router-without-{patch_words}", "-q", *upstream.args("v2.7.1")]
    result = env.run_cli(*args, env={"KUBE_ROUTER_SCTP_PROJECT_DIR": str(project)}, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    image = result.stdout.split()[0]
    inspected = env.docker_engine().image(image)
    assert inspected is not None
    patches = inspected["Config"]["Labels"]["io.github.kube-router-sctp.patches"]
    assert patch_words not in patches and "create-and-recognise-sctp" in patches
    return image


def test_dsr_sloppy_sctp_depends_on_the_series_patch(tmp_path: Path, upstream: Upstream) -> None:
    """The negative control of a scenario: without the series' DSR patch, sloppy_sctp stays 0
    on both directors (as upstream, which sets sloppy_tcp only)."""
    image = build_without("dsr-maglev-sloppy-sctp", upstream, tmp_path)
    code, data, said = run_scenarios(image, tmp_path, "dsr-without-the-patch", "dsr")
    found = only_run(data)
    assert_every_part_as_expected(found, ("dsr",))
    parts = {p["part"]: p for p in found["dsr"]["parts"]}
    assert parts["sloppy-sctp-set"]["expected"] == "fail" and parts["sloppy-sctp-set"]["result"] == "fail"
    assert code == 0, said
    env.docker_engine().remove_image(image)


def test_failover_without_the_series_flush(tmp_path: Path, upstream: Upstream) -> None:
    """The flush's control: the same release without it. On this path the wire showed no
    part depending on it (node B's ABORT closes the old entry, and conntrack takes a new
    INIT on a closed entry), so both runs must meet the same expectations."""
    image = build_without("graceful-flush-sctp-conntrack", upstream, tmp_path)
    code, data, said = run_scenarios(image, tmp_path, "failover-no-flush", "failover")
    found = only_run(data)
    assert_every_part_as_expected(found, ("failover",))
    parts = {p["part"]: p for p in found["failover"]["parts"]}
    assert parts["deleted-survivor-kept"]["result"] == "pass"
    assert code == 0, said
    env.docker_engine().remove_image(image)
