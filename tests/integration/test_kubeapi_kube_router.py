"""A real kube-router against the Kubernetes API stand-in: its informers list and watch
what that release reads, continue from the list's resourceVersion, and its firewall
acts on a NetworkPolicy added and removed while it runs.

The host has no IPVS or SCTP and refuses privileged containers, so only the network
policy controller runs, with NET_ADMIN in a network namespace of its own; the stand-in
listens on that Docker network's gateway. The policy selects one of two pods by label,
so a decoded-but-empty label map (the reflect2 trap of old vendored code under new Go)
would show as the wrong pod set.

The image is ``kube-router:v0.3.2-sctp.1-debian-candidate`` unless
KRS_TEST_KUBE_ROUTER_IMAGE names another; KRS_TEST_KUBE_ROUTER_BINARY adds a run of that
kube-router binary (e.g. a v2.7.1 build) inside the same image.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kube_router_sctp.dataplane import manifests as m
from kube_router_sctp.dataplane.kubeapi import KubeAPIStandIn, Store
from tests.support import env

pytestmark = [pytest.mark.docker]

IMAGE = os.environ.get("KRS_TEST_KUBE_ROUTER_IMAGE", "kube-router:v0.3.2-sctp.1-debian-candidate")
BINARY = os.environ.get("KRS_TEST_KUBE_ROUTER_BINARY", "")
SUBNETS = ("172.30.250.0/24", "172.30.251.0/24", "10.213.77.0/24", "10.213.78.0/24")
LABEL = {"io.github.kube-router-sctp.role": "kubeapi-check"}
OTHER_POD_IP = "172.20.1.7"

CORE = {"/api/v1/pods", "/api/v1/services", "/api/v1/nodes", "/api/v1/namespaces"}
NETPOL = "/apis/networking.k8s.io/v1/networkpolicies"


@dataclass(frozen=True)
class Case:
    name: str
    binary: str  # "" runs the image's own kube-router
    informed: frozenset[str]  # the collections its informers list and watch


ENDPOINTS, SLICES = "/api/v1/endpoints", "/apis/discovery.k8s.io/v1/endpointslices"
CASES = [
    Case("image", "", frozenset(CORE | {NETPOL, ENDPOINTS})),  # v0.3.x-v1.x read Endpoints
    Case("binary", BINARY, frozenset(CORE | {NETPOL})),  # v2.0-v2.5 both, v2.6+ EndpointSlices
]


@dataclass
class Rig:
    case: Case
    api: KubeAPIStandIn
    engine: Any
    container: str
    listed_at: int

    def exec(self, *command: str) -> str:
        run = self.engine.api.exec_create(self.container, list(command))
        return str(self.engine.api.exec_start(run["Id"]).decode(errors="replace"))

    def logs(self) -> str:
        return str(self.engine.api.logs(self.container).decode(errors="replace"))

    def running(self) -> bool:
        return bool(self.engine.api.inspect_container(self.container)["State"]["Running"])

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if not self.running():
                pytest.fail(f"kube-router exited while waiting for {what}:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:.0f} s; kube-router says:\n{self.logs()[-4000:]}")
            time.sleep(0.5)


def _network(engine: Any) -> tuple[str, str, str]:
    """A bridge network of our own with a known subnet: (name, gateway, the node's address).
    kube-router v2 insists that the Node's InternalIP is on one of its interfaces."""
    import docker.errors
    import docker.types

    name = f"krs-kubeapi-{uuid.uuid4().hex[:8]}"
    for subnet in SUBNETS:
        prefix = subnet.rsplit(".", 1)[0]
        pool = docker.types.IPAMPool(subnet=subnet, gateway=f"{prefix}.1")
        try:
            engine.api.create_network(
                name, driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[pool]), labels=LABEL
            )
        except docker.errors.APIError:
            continue  # the subnet is taken on this host; try the next
        return name, f"{prefix}.1", f"{prefix}.10"
    pytest.skip(f"none of the subnets {', '.join(SUBNETS)} is free for a test network")


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    case: Case = request.param
    if case.name == "binary" and not case.binary:
        pytest.skip("set KRS_TEST_KUBE_ROUTER_BINARY to a kube-router binary (e.g. a v2.7.1 build) to run it too")
    if case.binary and not Path(case.binary).is_file():
        pytest.skip(f"KRS_TEST_KUBE_ROUTER_BINARY={case.binary} is not a file")
    engine = env.docker_engine()
    if engine.image(IMAGE) is None:
        pytest.skip(f"needs the image {IMAGE} (build it with build.py, or set KRS_TEST_KUBE_ROUTER_IMAGE)")
    network, gateway, node_ip = _network(engine)
    container = ""
    api: KubeAPIStandIn | None = None
    try:
        try:
            api = KubeAPIStandIn(Store(), gateway, 0, bookmark_interval=5).start()
        except OSError as exc:
            pytest.skip(
                f"the stand-in cannot listen on the Docker network's gateway {gateway} "
                f"(is the daemon on another host?): {exc}"
            )
        other = m.pod("other", pod_ip=OTHER_POD_IP, host_ip=node_ip, labels={"app": "other"})
        api.store.load([*m.topology_2019(node_ip=node_ip), other])
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        binds = {str(kubeconfig): {"bind": "/kubeconfig", "mode": "ro"}}
        entrypoint = None
        if case.binary:
            binds[str(Path(case.binary).resolve())] = {"bind": "/kube-router-under-test", "mode": "ro"}
            entrypoint = ["/kube-router-under-test"]
        host_config = engine.api.create_host_config(cap_add=["NET_ADMIN", "NET_RAW"], network_mode=network, binds=binds)
        networking = engine.api.create_networking_config(
            {network: engine.api.create_endpoint_config(ipv4_address=node_ip)}
        )
        flags = [
            "--kubeconfig=/kubeconfig",
            "--run-firewall=true",
            "--run-service-proxy=false",
            "--run-router=false",
            f"--hostname-override={m.NODE_NAME}",
            "--v=3",
        ]
        created = engine.api.create_container(
            IMAGE,
            command=flags,
            entrypoint=entrypoint,
            host_config=host_config,
            networking_config=networking,
            labels=LABEL,
        )
        container = created["Id"]
        listed_at = api.store.resource_version
        engine.api.start(container)
        yield Rig(case, api, engine, container, listed_at)
    finally:
        if container:
            engine.api.remove_container(container, force=True)
        if api is not None:
            api.stop()
        engine.api.remove_network(network)


def _informed(rig: Rig) -> dict[str, tuple[set[str], set[str]]]:
    """Per collection path: the resourceVersions its lists used and its watches resumed from."""
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for record in rig.api.requests:
        if record.method == "GET" and record.status == 200:
            lists, watches = seen.setdefault(record.path, (set(), set()))
            (watches if record.watch else lists).add(record.query.get("resourceVersion", ""))
    return seen


@pytest.mark.parametrize("rig", CASES, ids=lambda c: c.name, indirect=True)
def test_kube_router_syncs_from_the_stand_in_and_applies_a_network_policy(rig: Rig) -> None:
    case = rig.case
    rig.wait(
        "list and watch of every informer",
        lambda: case.informed <= set(_informed(rig)) and all(_informed(rig)[path][1] for path in case.informed),
    )
    informed = _informed(rig)
    for path in case.informed:
        lists, watches = informed[path]
        # a list (served at the store's version), then a watch that continues exactly there
        assert lists and watches == {str(rig.listed_at)}, (path, lists, watches)
    assert informed.keys() & {ENDPOINTS, SLICES}, "neither Endpoints nor EndpointSlices were listed"
    rig.wait("the firewall's first sync", lambda: "sync iptables took" in rig.logs())
    assert any(r.path == f"/api/v1/nodes/{m.NODE_NAME}" and r.status == 200 for r in rig.api.requests)
    assert "KUBE-DST-" not in rig.exec("ipset", "list", "-n")

    rig.api.store.apply(m.network_policy())  # SCTP 32000 to app=sctp-socket, from anywhere

    def policy_set() -> str:
        sets = [s for s in rig.exec("ipset", "list").split("\n\n") if s.startswith("Name: KUBE-DST-")]
        return sets[0] if sets else ""

    rig.wait("the policy's ipset", lambda: m.POD_IP in policy_set())
    assert OTHER_POD_IP not in policy_set(), "the pod selector matched a pod without app=sctp-socket"
    rules = rig.exec("iptables", "-S")
    assert any("-p sctp" in r and "--dport 32000" in r and "KUBE-NWPLCY-" in r for r in rules.splitlines()), rules

    rig.api.store.delete("NetworkPolicy", "default", "allow-sctp")
    rig.wait("the policy's rules to go", lambda: "--dport 32000" not in rig.exec("iptables", "-S"))
    errors = [line for line in rig.logs().splitlines() if line.startswith(("E", "F", "panic"))]
    # v1.x logs the disabled metrics port (the default) at error level
    assert not [e for e in errors if "Metrics port must be" not in e], rig.logs()[-3000:]
