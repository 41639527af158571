"""The dataplane proof's control plane, on its own (no VM): etcd, and kube-apiserver and
kube-controller-manager as the project builds them from its pin.

The real controllers make Endpoints and EndpointSlices from a pod that the kubelet
stand-in reports Running; kube-router's service account gets exactly its ClusterRole
(RBAC on); and nothing is left behind, whether the run ends, is interrupted (Ctrl-C) or
its process is killed outright. The binaries are built by the project the first time
(about ten minutes of compile on two cores) and come from the cache after that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def binaries(controlplane_binaries):  # type: ignore[no-untyped-def]
    return controlplane_binaries


@pytest.fixture
def plane(binaries, tmp_path: Path) -> Iterator:  # type: ignore[no-untyped-def]
    from kube_router_sctp.controlplane.cluster import ControlPlane
    from kube_router_sctp.dataplane.scenario import KUBE_ROUTER_USER

    with ControlPlane(binaries, tmp_path / "plane", "10.0.2.2", audited_users=[KUBE_ROUTER_USER]) as cp:
        yield cp
    assert not (tmp_path / "plane").exists(), "the run's directory was left behind"
    assert all(not p.running() for p in cp.processes)


def wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s")
        time.sleep(0.5)


def test_controllers_make_endpoints_and_slices_from_a_reported_pod(plane) -> None:  # type: ignore[no-untyped-def]
    from kube_router_sctp.controlplane.kubelet import Kubelet
    from kube_router_sctp.dataplane import workload as w
    from kube_router_sctp.verify import default_manifests

    kubectl = plane.kubectl
    assert plane.version()["gitVersion"] == plane.binaries.version  # the -X version variables
    kubectl.apply_path(default_manifests())
    service = kubectl.get("service", "sctp-expserver", "default")
    # defaulted by the API server, as kube-router v2 reads it
    assert service["spec"]["internalTrafficPolicy"] == "Cluster"
    assert [p["nodePort"] for p in service["spec"]["ports"]] == [32000, 32001, 32002]
    workload = w.plan([w.service_from_api(service)])
    kubelet = Kubelet(kubectl, w.NODE_NAME, w.NODE_IP, w.NODE_POD_CIDR)
    kubelet.register()
    node = kubectl.get("node", w.NODE_NAME)
    assert {"type": "InternalIP", "address": w.NODE_IP} in node["status"]["addresses"]
    wait("the default ServiceAccount", lambda: kubectl.exists("serviceaccount", "default", "default"))
    kubelet.run([p.spec for p in workload.pods])

    def endpoints() -> list[str]:
        item = kubectl.get("endpoints", "sctp-expserver", "default")
        return [a["ip"] for s in item.get("subsets", []) or [] for a in s.get("addresses", [])]

    def slices() -> list[dict]:
        return [
            s
            for s in kubectl.items("endpointslices.discovery.k8s.io", "default")
            if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == "sctp-expserver"
        ]

    wait("Endpoints from the pod", lambda: endpoints() == ["172.20.1.6"])
    wait(
        "an EndpointSlice from the pod",
        lambda: any(e["addresses"] == ["172.20.1.6"] for s in slices() for e in s["endpoints"]),
    )
    (slice_,) = slices()
    assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert {(p["port"], p["protocol"]) for p in slice_["ports"]} == {(32000, "SCTP"), (32001, "TCP"), (32002, "UDP")}

    # the pod replaced: the controllers follow
    kubelet.run([workload.spare.spec])
    kubelet.delete(workload.pods[0].spec)
    wait("Endpoints on the second pod", lambda: endpoints() == ["172.20.1.7"])
    # the Service deleted: the garbage collector takes its EndpointSlices
    kubectl.delete("service", "sctp-expserver", "default")
    wait("the EndpointSlices to go", lambda: not slices())


def test_kube_router_runs_with_its_cluster_role_and_no_more(plane, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kube_router_sctp.controlplane.kubectl import Kubectl, kubeconfig
    from kube_router_sctp.dataplane.scenario import KUBE_ROUTER_USER, api_requests
    from kube_router_sctp.verify import rbac_manifest

    plane.kubectl.apply_path(rbac_manifest("v2.7.1"))
    token = plane.token("kube-system", "kube-router")
    path = tmp_path / "kube-router.kubeconfig"
    path.write_text(kubeconfig(plane.url, plane.ca_pem, token, "kube-router"))
    as_kube_router = Kubectl(path, tmp_path / "cache")
    assert as_kube_router.run("auth", "can-i", "watch", "endpointslices.discovery.k8s.io").strip() == "yes"
    assert as_kube_router.run("auth", "can-i", "list", "services", "--all-namespaces").strip() == "yes"
    for verb, resource in (("create", "services"), ("get", "secrets"), ("delete", "pods"), ("patch", "nodes")):
        said = as_kube_router.run("auth", "can-i", verb, resource, check=False).strip()
        assert said == "no", (verb, resource, said)
    as_kube_router.get("services")  # allowed
    refused = as_kube_router.run("get", "secrets", "--all-namespaces", check=False)
    assert "NAME" not in refused
    requests = api_requests(plane.audit(), KUBE_ROUTER_USER)
    assert requests[("list", "/api/v1/services", 200)] >= 1, requests
    assert requests[("list", "/api/v1/secrets", 403)] == 1, requests


# The child restores Python's Ctrl-C handler: a suite started in the background by a shell
# without job control passes SIGINT on as ignored, and Python keeps an inherited SIG_IGN.
_CHILD = """
import json, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from kube_router_sctp import config
from kube_router_sctp.controlplane import build
from kube_router_sctp.controlplane.cluster import ControlPlane
with ControlPlane(build.binaries(config.load()), Path(sys.argv[1]), "10.0.2.2") as cp:
    print(json.dumps([p.popen.pid for p in cp.processes]), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_no_process_is_left_behind(binaries, tmp_path: Path, sig: int) -> None:  # type: ignore[no-untyped-def]
    workdir = tmp_path / "plane"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(workdir)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        pids = json.loads(line)
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
        os.kill(child.pid, sig)
        child.wait(60)
        wait("every server to end", lambda: not any(_alive(pid) for pid in pids), timeout=30)
        if sig == signal.SIGINT:
            assert child.returncode != 0 and not workdir.exists()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
