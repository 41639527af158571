"""The scenarios of ``verify --scenarios``: the SCTP situations operators hit, each run on
the wire after the base proof, on two nodes (``twonode``), against the same control plane.

Every part is decided by real SCTP associations: our own client and server
(``resources/guest/sctp-peer.py``), whose server answers with the pod's address, the
address the association came from and every address the client offered. What each part
is expected to do comes from ``catalogue`` (the release, its patches, its flags); a part
whose result differs is not met, and the run exits with DataplaneError's status.

Evidence per scenario: the IPVS tables and connections, SCTP conntrack entries and
kube-router's NAT rules of the nodes involved, before and after what the scenario does;
for multi-homing and DSR, the SCTP chunks captured on the node (``sctpwire``), since the
verdict turns on which addresses the INIT and INIT-ACK carried and who answered on
which path. Times are measured in the guest where they decide (a client's round trips,
each with its wall-clock time) and on the host otherwise (a watch event to its effect).
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..controlplane.cluster import SERVICE_CIDR
from ..controlplane.kubectl import Kubectl, Obj
from ..controlplane.kubelet import Kubelet, PodSpec
from ..errors import DataplaneError
from . import catalogue as c
from . import sctpwire
from . import twonode as t
from . import workload as w
from .node import Node
from .scenario import parse_ipvs

NAMESPACE = "scenarios"
PORT = 5000  # every scenario Service's port and target port
SYNC_TIMEOUT = 150.0
# A hang guard for a watch event to reach a node's IPVS. v0.3.2 re-syncs every Service on
# each event, one sync at a time: under TCG on a busy host one sync took 40-84 s (v0.3.2,
# 2026-11-30), so a change that arrives mid-sync can need two syncs. Waits end as soon as
# the change shows, so a longer guard costs only the runs that would fail anyway.
CHANGE_TIMEOUT = 200.0
QUICK = 15  # seconds for the guest commands that tidy up after a scenario
# The rest run in "cluster". Multi-homing runs without --masquerade-all: masquerading
# folds both of the client's addresses into the node's one, so the pod could never tell
# the second path from a stranger (and --random-fully picks it another port).
PROFILE_OF = {"local-traffic": "router", "multihoming": "router", "ipv6": "ipv6"}


@dataclass(frozen=True)
class ScenarioPod:
    key: str  # a, b, mh, dsr
    ip: str
    ip6: str
    labels: dict[str, str]

    @property
    def netns(self) -> str:
        return f"pod-{self.key}"

    def spec(self, ipv6: bool, container_id: str = "") -> PodSpec:
        return PodSpec(
            f"sc-{self.key}",
            NAMESPACE,
            self.labels,
            self.ip,
            [("sctp", PORT, "SCTP")],
            ip6=self.ip6 if ipv6 else "",
            container_id=container_id,
        )


PODS = {
    "a": ScenarioPod("a", "172.20.1.20", "fd00:172:20:1::20", {"app": "sc", "member": "a"}),
    "b": ScenarioPod("b", "172.20.1.21", "fd00:172:20:1::21", {"app": "sc", "member": "b"}),
    "mh": ScenarioPod("mh", "172.20.1.22", "fd00:172:20:1::22", {"app": "sc-mh"}),
    "dsr": ScenarioPod("dsr", "172.20.1.23", "fd00:172:20:1::23", {"app": "sc-dsr"}),
}
IPS = {  # the scenarios' external and load-balancer addresses (twonode.EXTERNAL_RANGE)
    "two-nodes": "10.120.20.1",
    "loadbalancer": "10.120.20.4",
    "multihoming": "10.120.20.6",
    "ipv6": "fd00:120:20::7",
    "dsr": "10.120.20.8",
}


# -- results ----------------------------------------------------------------------------------
@dataclass
class PartResult:
    situation: str
    part: str
    question: str
    expected: c.Expectation
    passed: bool | None = None  # None: not run
    seconds: float = 0.0
    detail: str = ""
    measures: dict[str, float] = field(default_factory=dict)  # named times in seconds

    @property
    def met(self) -> bool:
        if self.expected.verdict == "n/a":
            return self.passed is None
        return self.passed is not None and self.passed == self.expected.wanted

    @property
    def result(self) -> str:
        return "n/a" if self.passed is None and self.expected.verdict == "n/a" else _word(self.passed)

    def record(self) -> dict[str, Any]:
        return {
            "situation": self.situation,
            "part": self.part,
            "question": self.question,
            "expected": self.expected.verdict,
            "expected_reason": self.expected.reason,
            "basis": self.expected.basis,
            "result": self.result,
            "met": self.met,
            "seconds": round(self.seconds, 2),
            "detail": self.detail,
            "measures": {k: round(v, 2) for k, v in self.measures.items()},
        }


@dataclass
class SituationResult:
    situation: c.Situation
    expected: c.Expectation
    parts: list[PartResult]
    seconds: float = 0.0
    error: str = ""  # set when the scenario stopped before its parts were all decided
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return not self.error and all(p.met for p in self.parts)

    @property
    def result(self) -> str:
        """pass, fail or n/a, as the table shows it."""
        ran = [p for p in self.parts if p.passed is not None]
        if not ran:
            return "n/a" if self.expected.verdict == "n/a" and not self.error else "fail"
        return "pass" if all(p.passed for p in ran) and not self.error else "fail"

    def record(self) -> dict[str, Any]:
        return {
            "scenario": self.situation.key,
            "number": self.situation.number,
            "title": self.situation.title,
            "expected": self.expected.verdict,
            "expected_reason": self.expected.reason,
            "basis": self.expected.basis,
            "result": self.result,
            "met": self.met,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "parts": [p.record() for p in self.parts],
            "evidence": self.evidence,
        }


def _word(passed: bool | None) -> str:
    return "not run" if passed is None else ("pass" if passed else "fail")


# -- what the SCTP program said ------------------------------------------------------------------
MAX_TALK_LINE = 64 << 10  # sctp-peer.py's longest line: a reply of 4096 bytes, JSON-escaped


def _is_record(value: Any) -> bool:
    """A line as the client prints it: an object with its time ``t``, seconds since the
    epoch (not NaN, an infinity or an integer too large for a float), and text that can
    be written out (JSON's escapes can spell a lone surrogate, which no file takes)."""
    if not isinstance(value, dict):
        return False
    t = value.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < 1e11:
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):  # nested as deep as json.loads could go
        return False
    return True


@dataclass(frozen=True)
class Talk:
    """One client's JSON lines (sctp-peer.py talk)."""

    records: tuple[dict[str, Any], ...]
    status: int = -1

    @classmethod
    def parse(cls, text: str) -> Talk:
        """The client's records in order; the rest of its output (its stderr, the shell's)
        skipped. That output comes from the guest: a line that is no record the client
        prints (too long, nested too deep, no finite time) is skipped too, never trusted,
        which gives its writer nothing it could not have by not writing it."""
        records, status = [], -1
        for line in text.splitlines():
            match = re.fullmatch(r"KRS-TALK status=(\d{1,3})", line)
            if match:
                status = int(match[1])
                continue
            if len(line) > MAX_TALK_LINE:
                continue
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if _is_record(value):
                records.append(value)
        return cls(tuple(records), status)

    @property
    def up(self) -> bool:
        return any(r.get("event") == "up" for r in self.records)

    @property
    def replies(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "seq" in r and "reply" in r]

    @property
    def ended(self) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("event") in ("ended", "failed")), None)

    def fields(self, index: int = 0) -> dict[str, str]:
        """``pod=…``, ``from=…``, ``peers=…`` of a reply."""
        replies = self.replies
        if not replies or index >= len(replies):
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", str(replies[index]["reply"])))

    @property
    def pod(self) -> str:
        return self.fields().get("pod", "")

    @property
    def finished(self) -> bool:
        return any(r.get("event") in ("done", "ended", "failed") for r in self.records)

    def gap_after(self, moment: float, now: float | None = None) -> float:
        """The longest silence between replies from ``moment`` (guest wall clock) on: to
        the talk's last record, or to ``now`` (the guest's clock just before its log was
        read) while the talk has not finished, so that a client stalled in a receive, or
        gone without a word, counts as silent."""
        times = [float(r["t"]) for r in self.replies if float(r["t"]) >= moment]
        end = max((float(r["t"]) for r in self.records), default=moment)
        if now is not None and not self.finished:
            end = max(end, now)
        return max((b - a for a, b in itertools.pairwise([moment, *times, max(end, moment)])), default=0.0)

    def first_reply_after(self, moment: float) -> float:
        later = [float(r["t"]) - moment for r in self.replies if float(r["t"]) > moment]
        return min(later) if later else -1.0

    def summary(self) -> str:
        ended = self.ended
        fate = f"ended at seq {ended.get('seq', 0)}: {ended.get('error')}" if ended else "still up"
        return f"{len(self.replies)} replies, {fate}"


# -- the runner ------------------------------------------------------------------------------------
@dataclass
class Situations:
    node: Node
    kubectl: Kubectl
    kubelet: Kubelet  # node A's
    release: c.Release
    kubeconfig: str
    api_host: str
    selected: list[c.Situation]
    results: list[SituationResult] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)
    cluster: t.TwoNodes | None = None
    kubelet_b: Kubelet | None = None
    containers: dict[str, str] = field(default_factory=dict)  # pod key -> docker:// id

    @property
    def two(self) -> t.TwoNodes:
        assert self.cluster is not None
        return self.cluster

    @property
    def ipv6(self) -> bool:
        return any(s.key == "ipv6" for s in self.runnable)

    @property
    def runnable(self) -> list[c.Situation]:
        return c.applicable(self.selected, self.release)

    # -- running --------------------------------------------------------------------------------
    def run(self) -> None:
        for situation in self.selected:
            if situation not in self.runnable:
                self.results.append(self._result(situation))  # n/a: reported, not run
        if not self.runnable:
            return
        by_profile: dict[str, list[c.Situation]] = {}
        for situation in self.runnable:
            by_profile.setdefault(PROFILE_OF.get(situation.key, "cluster"), []).append(situation)
        try:
            self.set_up()
            for profile in t.PROFILES:
                if profile not in by_profile:
                    continue
                with log.step("scenarios", f"kube-router on both nodes, profile {profile}"):
                    flags = self.two.start(profile)
                    self.evidence[f"kube-router flags ({profile})"] = "\n".join(
                        f"{ns}: {' '.join(f)}" for ns, f in flags.items()
                    )
                    self.wait_for_sync()
                for situation in by_profile[profile]:
                    self.run_one(situation)
        finally:
            self.results.sort(key=lambda r: r.situation.number)
            if self.cluster is not None:
                try:
                    self.two.stop()
                except DataplaneError as exc:  # the guest may be gone: its logs are evidence, not a verdict
                    self.evidence["kube-routers' stop"] = exc.one_line()
                self.evidence.update({f"kube-router log {k} (end)": v for k, v in self.two.logs.items()})

    def _result(self, situation: c.Situation) -> SituationResult:
        found = c.expectations(situation, self.release)
        parts = [PartResult(situation.key, p.key, p.question, found[p.key]) for p in situation.parts]
        return SituationResult(situation, c.summary(situation, self.release), parts)

    def run_one(self, situation: c.Situation) -> None:
        result = self._result(situation)
        self.results.append(result)
        start = time.monotonic()
        method: Callable[[SituationResult], None] = getattr(self, "_" + situation.key.replace("-", "_"))
        with log.step("scenario", f"{situation.number}. {situation.title}"):
            try:
                method(result)
            except DataplaneError as exc:
                result.error = exc.one_line()
                log.error(f"scenario {situation.key} stopped: {result.error}")
                self._evidence_when_stopped(result)
            finally:
                # a scenario's background clients end with it, stopped early or not: one left
                # talking would flood the next scenario's captures and tables
                try:
                    self.two.lib("sc_stop_talks", timeout=QUICK)
                except DataplaneError as exc:
                    result.evidence["background clients' stop"] = exc.one_line()
                result.seconds = time.monotonic() - start
        for part in result.parts:
            mark = "" if part.met else "  <-- unexpected"
            log.info(f"{situation.key}/{part.part}: {part.result} (expected {part.expected.verdict}){mark}")

    def _evidence_when_stopped(self, result: SituationResult) -> None:
        """The nodes' tables at the moment a scenario stopped: what its error points at."""
        try:  # briefly: a node that stopped answering must not hold every later scenario
            self.snapshot(result, "when it stopped", t.NODE_A, t.NODE_B, timeout=QUICK)
        except DataplaneError as exc:  # the guest may be what stopped it
            result.evidence["when it stopped"] = f"(no tables: {exc.one_line()})"

    def decide(
        self, result: SituationResult, key: str, passed: bool, start: float, detail: str, **measures: float
    ) -> None:
        part = next(p for p in result.parts if p.part == key)
        if part.expected.verdict == "n/a":
            return
        part.passed, part.seconds, part.detail = passed, time.monotonic() - start, detail
        part.measures.update(measures)

    def wanted(self, result: SituationResult, key: str) -> bool:
        """Whether a part runs for this release (n/a parts do not)."""
        return next(p for p in result.parts if p.part == key).expected.verdict != "n/a"

    # -- set-up -----------------------------------------------------------------------------------
    def set_up(self) -> None:
        """Node B, the LAN, the scenarios' pods (network namespaces on node A's bridge, the
        DSR pod a real container) and their objects; node B registered."""
        self.cluster = t.TwoNodes(self.node, self.kubeconfig, self.node.kube_router_help())
        self.two.stop()  # the base proof's kube-router, cleaned up before the network changes
        try:
            self.two.build(self.api_host)
        finally:
            self.evidence["scenario network"] = self.two.setup_said
        # What the failover and multi-homing times depend on: this kernel's SCTP conntrack timeouts.
        self.evidence["SCTP conntrack timeouts (node A)"] = self.two.sh_in(
            t.NODE_A, "sh", "-c", "grep -H . /proc/sys/net/netfilter/nf_conntrack_sctp_timeout_*"
        ).output
        if self.ipv6:  # node A was registered dual-stack from the start (a node's podCIDRs are immutable)
            self.two.lib("sc_bridge6", f"{t.BRIDGE_IP6}/64")
        self.kubelet_b = Kubelet(
            self.kubectl,
            t.NODE_B_NAME,
            t.NODE_B_IP,
            t.NODE_B_POD_CIDR,
            node_ip6=t.NODE_B_IP6 if self.ipv6 else "",
            pod_cidr6=t.POD_CIDR6_B if self.ipv6 else "",
        )
        self.kubelet_b.register()
        self.kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
        deadline = time.monotonic() + 60
        while not self.kubectl.exists("serviceaccount", "default", NAMESPACE):
            if time.monotonic() > deadline:
                raise DataplaneError(f"no default ServiceAccount in {NAMESPACE}", "see the controller-manager's log")
            time.sleep(0.5)
        wanted_keys = {"a", "b", "mh"} | ({"dsr"} if any(s.key == "dsr" for s in self.runnable) else set())
        for key in sorted(wanted_keys):
            pod = PODS[key]
            if key == "dsr":
                container, pid = self.node.start_container(f"krs-pod-{key}")
                self.node.sh(f"ip netns attach {pod.netns} {pid}")
                self.containers[key] = f"docker://{container}"
            self.start_pod(pod)

    def start_pod(self, pod: ScenarioPod) -> None:
        shell = self.two.lib("sc_pod", pod.netns, pod.ip, pod.ip6 if self.ipv6 else "-", pod.ip, PORT)
        if shell.code != 0:
            raise DataplaneError(f"pod {pod.key} could not be wired: {shell.output[-300:]}", "see the node's output")
        self.kubelet.run([pod.spec(self.ipv6, self.containers.get(pod.key, ""))])

    def wait_for_sync(self) -> None:
        """Both kube-routers have programmed the API server's own Service."""

        def synced() -> bool:
            return (
                all(("TCP", "10.254.0.1", 443) in parse_ipvs(self.two.ipvs(ns)) for ns in (t.NODE_A, t.NODE_B))
                and self.two.running()
            )

        if self.node.wait_for("both kube-routers' first sync", synced, SYNC_TIMEOUT, interval=2.0) < 0:
            logs = {ns: self.node.engine.logs(cid)[-1500:] for ns, cid in self.two.kube_routers.items()}
            self.evidence["kube-router logs (no first sync)"] = "\n\n".join(f"{k}:\n{v}" for k, v in logs.items())
            raise DataplaneError(
                f"the kube-routers did not both sync within {SYNC_TIMEOUT:.0f}s (profile {self.two.profile})",
                'see "kube-router logs (no first sync)" in the results',
            )

    # -- helpers -------------------------------------------------------------------------------------
    def service(
        self,
        name: str,
        selector: dict[str, str],
        *,
        kind: str = "ClusterIP",
        node_port: int = 0,
        external_ips: Sequence[str] = (),
        annotations: dict[str, str] | None = None,
        **spec: Any,
    ) -> Obj:
        """Apply one SCTP Service (port and target port ``PORT``); return it as the API
        server holds it (defaulted, addresses allocated)."""
        port: dict[str, Any] = {"name": "sctp", "protocol": "SCTP", "port": PORT, "targetPort": PORT}
        if node_port:
            port["nodePort"] = node_port
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations or {}},
            "spec": {"type": kind, "selector": selector, "ports": [port], **spec},
        }
        if external_ips:
            body["spec"]["externalIPs"] = list(external_ips)
        self.kubectl.apply([body])
        return self.kubectl.get("service", name, NAMESPACE)

    def delete_service(self, name: str) -> None:
        self.kubectl.delete("service", name, NAMESPACE)

    def wait_ipvs(self, ns: str, address: str, port: int, pods: set[str], what: str) -> float:
        """Until ``ns``'s IPVS has an SCTP service at address:port with exactly ``pods``."""
        key = ("SCTP", ipvs_host(address), port)
        hosts = {ipvs_host(p) for p in pods}
        took = self.node.wait_for(
            what, lambda: set(parse_ipvs(self.two.ipvs(ns)).get(key, [])) == hosts, CHANGE_TIMEOUT, interval=1.0
        )
        if took < 0:
            raise DataplaneError(
                f"{what}: no SCTP service {address}:{port} -> {', '.join(sorted(pods))} on {ns} "
                f"within {CHANGE_TIMEOUT:.0f}s",
                "see the IPVS tables in the scenario's evidence",
            )
        return took

    def talk_port(self, ns: str, address: str, port: int, tag: str, *args: str | int) -> Talk:
        """One association from ``ns`` to address:port, one message (``args``: more of
        sctp-peer.py talk's options)."""
        shell = self.two.lib(
            "sc_talk_now", ns, "--to", address, "--port", port, "--for", "0.1", "--every", "0.1", "--tag", tag, *args
        )
        return Talk.parse(shell.output)

    def talk_once(self, ns: str, address: str, tag: str = "sc") -> Talk:
        return self.talk_port(ns, address, PORT, tag)

    def talk_background(self, ns: str, name: str, target: str, seconds: float, *args: str | int) -> None:
        self.two.lib(
            "sc_talk",
            ns,
            name,
            "--to",
            target,
            "--port",
            PORT,
            "--for",
            seconds,
            "--every",
            "0.2",
            "--tag",
            name,
            *args,
        )

    def read_talk(self, name: str) -> Talk:
        return Talk.parse(self.two.lib("sc_read", name).output)

    def guest_now(self) -> float:
        return guest_seconds(self.node.sh("date +%s.%N").output)

    def snapshot(self, result: SituationResult, label: str, *namespaces: str, timeout: int = 120) -> None:
        for ns in namespaces:
            result.evidence[f"{ns}: {label}"] = self.two.tables(ns, timeout)

    @contextmanager
    def capture(self, result: SituationResult, ns: str, name: str) -> Iterator[list[sctpwire.Packet]]:
        """SCTP captured in ``ns`` while the block runs; the packets, filled when it ends."""
        packets: list[sctpwire.Packet] = []
        self.two.lib("sc_capture_start", ns, name, "sctp")
        try:
            yield packets
        finally:
            said = self.two.lib("sc_capture_stop", name).output
            raw = said.split("KRS-PCAP-BEGIN", 1)[-1].split("KRS-PCAP-END", 1)[0]
            try:
                packets += sctpwire.read_pcap(base64.b64decode("".join(raw.split())))
            except ValueError as exc:
                result.evidence[f"capture {name}"] = f"(no capture: {exc})"
            else:
                result.evidence[f"capture {name} ({ns})"] = sctpwire.transcript(packets)

    # -- 1. two nodes ----------------------------------------------------------------------------------
    def _two_nodes(self, result: SituationResult) -> None:
        eip, a = IPS["two-nodes"], PODS["a"]
        svc = self.service("sc-two", {"member": "a"}, kind="NodePort", node_port=30500, external_ips=[eip])
        cluster_ip = str(svc["spec"]["clusterIP"])
        self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30500, {a.ip}, "node B's NodePort service")
        self.wait_ipvs(t.NODE_B, eip, PORT, {a.ip}, "node B's ExternalIP service")
        self.snapshot(result, "before", t.NODE_B)

        start = time.monotonic()
        talk = self.talk_port(t.EXT, t.NODE_B_IP, 30500, "two-np")
        self.decide(result, "nodeport-via-b", talk.pod == a.ip, start, _said(talk))
        start = time.monotonic()
        self.two.route_external(eip, t.NODE_B_IP)
        try:
            talk = self.talk_once(t.EXT, eip, "two-eip")
        finally:
            self.two.route_external(eip, None)
        self.decide(result, "externalip-via-b", talk.pod == a.ip, start, _said(talk))
        start = time.monotonic()
        talk = self.talk_once(t.NODE_B, cluster_ip, "two-cip")
        self.decide(result, "clusterip-from-b", talk.pod == a.ip, start, _said(talk))
        self.snapshot(result, "after", t.NODE_B)
        result.evidence["node-b: nat POSTROUTING"] = self.two.iptables(t.NODE_B, "-t", "nat", "-S", "POSTROUTING")
        self.delete_service("sc-two")

    # -- 2. externalTrafficPolicy: Local --------------------------------------------------------------------
    def _local_traffic(self, result: SituationResult) -> None:
        a = PODS["a"]
        local = self.service(
            "sc-local", {"member": "a"}, kind="NodePort", node_port=30510, externalTrafficPolicy="Local"
        )
        self.service("sc-cluster", {"member": "a"}, kind="NodePort", node_port=30511, externalTrafficPolicy="Cluster")
        self.wait_ipvs(t.NODE_A, w.NODE_IP, 30510, {a.ip}, "node A's Local NodePort service")
        self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30511, {a.ip}, "node B's Cluster NodePort service")
        self.snapshot(result, "Local and Cluster Services in place", t.NODE_A, t.NODE_B)
        result.evidence["node-b: routes (BGP)"] = self.two.sh_in(t.NODE_B, "ip", "route").output
        for ns in (t.NODE_A, t.NODE_B):
            result.evidence[f"{ns}: nat POSTROUTING"] = self.two.iptables(ns, "-t", "nat", "-S", "POSTROUTING")

        start = time.monotonic()
        with self.capture(result, t.NODE_A, "local-a"):  # which chunks reached the pod, and which came back
            talk = self.talk_port(t.EXT, w.NODE_IP, 30510, "local-a")
        self.snapshot(result, "after the association to the Local NodePort", t.NODE_A)
        self.decide(result, "local-on-endpoint-node", talk.pod == a.ip, start, _said(talk))
        seen = talk.fields().get("from", "")
        self.decide(result, "client-address-kept", seen == w.CLIENT_IP, start, f"the pod saw {seen or 'nothing'}")
        start = time.monotonic()
        services_b = [f"{p} {addr}:{n}" for (p, addr, n) in parse_ipvs(self.two.ipvs(t.NODE_B)) if n == 30510]
        talk = self.talk_port(t.EXT, t.NODE_B_IP, 30510, "local-b")
        self.decide(
            result,
            "local-not-forwarded",
            not services_b and not talk.replies,
            start,
            f"node B's virtual services at 30510: {', '.join(services_b) or 'none'}; {_said(talk)}",
        )
        start = time.monotonic()
        talk = self.talk_port(t.EXT, t.NODE_B_IP, 30511, "cluster-b")
        seen = talk.fields().get("from", "")
        self.decide(
            result,
            "cluster-via-b",
            talk.pod == a.ip and seen == t.NODE_B_IP,
            start,
            f"{_said(talk)}; the pod saw {seen or 'nothing'}",
        )
        start = time.monotonic()
        talk = self.talk_once(t.NODE_B, str(local["spec"]["clusterIP"]), "local-cip-b")
        self.decide(result, "local-clusterip-on-b", talk.pod == a.ip, start, _said(talk))
        self.delete_service("sc-local")
        self.delete_service("sc-cluster")

    # -- 3. sessionAffinity ----------------------------------------------------------------------------------
    def _affinity(self, result: SituationResult) -> None:
        both = {PODS["a"].ip, PODS["b"].ip}
        sticky = self.service(
            "sc-sticky",
            {"app": "sc"},
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
        )
        spread = self.service("sc-spread", {"app": "sc"})
        sticky_ip, spread_ip = str(sticky["spec"]["clusterIP"]), str(spread["spec"]["clusterIP"])
        self.wait_ipvs(t.NODE_A, sticky_ip, PORT, both, "the ClientIP Service")
        self.wait_ipvs(t.NODE_A, spread_ip, PORT, both, "the None Service")
        for key, address in (("clientip-sticks", sticky_ip), ("none-spreads", spread_ip)):
            start = time.monotonic()
            pods = [self.talk_once(t.NODE_A, address, key).pod for _ in range(10)]
            reached = sorted({p for p in pods if p})
            passed = (
                len(reached) == 1 and len(pods) == 10 and all(pods)
                if key == "clientip-sticks"
                else set(reached) == both
            )
            self.decide(
                result, key, passed, start, f"10 associations reached {', '.join(reached) or 'nothing'}: {pods}"
            )
        start = time.monotonic()
        listing = self.two.ipvs(t.NODE_A)
        line = next((x for x in listing.splitlines() if f"{sticky_ip}:{PORT}" in x), "")
        self.decide(
            result, "timeout-honoured", "persistent 600" in line, start, f"ipvsadm: {line.strip() or 'no line'}"
        )
        result.evidence["node: ipvsadm -Ln"] = listing
        self.delete_service("sc-sticky")
        self.delete_service("sc-spread")

    # -- 4. LoadBalancer -----------------------------------------------------------------------------------------
    def _loadbalancer(self, result: SituationResult) -> None:
        lb, a = IPS["loadbalancer"], PODS["a"]
        svc = self.service("sc-lb", {"member": "a"}, kind="LoadBalancer")
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": lb}]}}
        self.kubectl.replace_raw(f"/api/v1/namespaces/{NAMESPACE}/services/sc-lb/status", svc)
        start = time.monotonic()
        try:
            self.wait_ipvs(t.NODE_A, lb, PORT, {a.ip}, "the load-balancer IP's virtual service")
        except DataplaneError as exc:
            self.decide(result, "served-on-ingress-ip", False, start, exc.message)
        else:
            # Captured: a refused first association (ABORT) was seen here once; the
            # chunks say whose stack sent it.
            with self.capture(result, t.NODE_A, "lb"):
                talk = self.talk_once(t.EXT, lb, "lb")
            self.decide(result, "served-on-ingress-ip", talk.pod == a.ip, start, _said(talk))
        self.snapshot(result, "after", t.NODE_A)
        self.delete_service("sc-lb")

    # -- 5. failover ----------------------------------------------------------------------------------------------
    def _failover(self, result: SituationResult) -> None:
        """Clients through node B's NodePort (the SNAT path: kube-router masquerades what
        it sends to a pod on another node), each from a fixed port."""
        a, b = PODS["a"], PODS["b"]
        self.service("sc-fail", {"app": "sc"}, kind="NodePort", node_port=30520)
        self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30520, {a.ip, b.ip}, "the failover Service on node B")
        self._failover_deleted(result)
        self._failover_not_ready(result)
        self._failover_terminating(result)
        self.delete_service("sc-fail")

    def _pin(self, name_prefix: str, seconds: float, first_port: int) -> dict[str, tuple[str, int]]:
        """Background clients from fixed ports until one is on each pod: {pod ip: (name, port)}."""
        found: dict[str, tuple[str, int]] = {}
        for sport in range(first_port, first_port + 6):
            name = f"{name_prefix}-{sport}"
            self.talk_background(t.EXT, name, t.NODE_B_IP, seconds, "--port", 30520, "--sport", sport)
            pod = self._first_pod(name)
            if pod and pod not in found:
                found[pod] = (name, sport)
            if len(found) == 2:
                break
        return found

    def _first_pod(self, name: str, timeout: float = 10.0) -> str:
        """The pod a background client's first reply names, once there is one: a client
        that starts slowly (Python under TCG, on a busy host) is waited for, not skipped."""
        said = [Talk((), -1)]

        def answered() -> bool:
            said[0] = self.read_talk(name)
            return bool(said[0].pod) or said[0].finished

        self.node.wait_for(f"a first reply to {name}", answered, timeout, interval=0.5)
        return said[0].pod

    def _first_to(
        self, pod_ip: str, avoid: str, since: float, timeout: float = 60.0, sport: int = 0
    ) -> tuple[float, list[str]]:
        """New associations, one a second, until one lands on ``pod_ip``; seconds from
        ``since`` (host clock) and where each landed. -1 if none within ``timeout``."""
        landed: list[str] = []
        while time.monotonic() - since < timeout:
            args: list[str | int] = ["--sport", sport] if sport else []
            talk = self.talk_port(t.EXT, t.NODE_B_IP, 30520, "fo-new", *args)
            landed.append(talk.pod or ("abort" if talk.ended else "none"))
            if talk.pod == pod_ip:
                return time.monotonic() - since, landed
            if talk.pod == avoid:
                landed[-1] = f"{avoid} (the old pod)"
            time.sleep(1.0)
        return -1.0, landed

    def _failover_deleted(self, result: SituationResult) -> None:
        a, b = PODS["a"], PODS["b"]
        pinned = self._pin("fo-del", 120, 40001)
        if set(pinned) != {a.ip, b.ip}:
            raise DataplaneError(f"no client on each pod to fail over (landed: {pinned})", "see the capture")
        self.snapshot(result, "deleted: before", t.NODE_B, t.NODE_A)
        moment, start = self.guest_now(), time.monotonic()
        # Pod A vanishes silently, as when its node is lost: its link goes first, so no
        # SHUTDOWN or ABORT of its own tells the clients (or conntrack) anything.
        self.two.sh_in(t.NODE_A, "ip", "link", "set", f"veth-{a.netns}", "down")
        self.two.lib("sc_stop_pod", a.netns)
        self.kubelet.delete(a.spec(self.ipv6))
        gone = self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30520, {b.ip}, "pod A's destination to go (deleted)")
        took, landed = self._first_to(b.ip, a.ip, start)
        self.decide(
            result,
            "deleted-new-association",
            took >= 0 and f"{a.ip} (the old pod)" not in landed,
            start,
            f"destination gone after {gone:.1f}s; new associations landed: {', '.join(landed)}",
            ipvs_removed=gone,
            new_association=took,
        )
        time.sleep(8)  # the survivor keeps talking through the flush
        now = self.guest_now()
        survivor = self.read_talk(pinned[b.ip][0])
        gap = survivor.gap_after(moment, now)
        self.decide(
            result,
            "deleted-survivor-kept",
            survivor.ended is None and gap < 5.0,
            start,
            f"association on pod B: {survivor.summary()}; longest silence after the deletion {gap:.1f}s",
            longest_silence=gap,
        )
        # The old client gives up (no reply for 5 s) and frees its port; then it comes back from that port.
        self.node.wait_for(
            "the client on pod A to give up", lambda: self.read_talk(pinned[a.ip][0]).ended is not None, 30
        )
        old = self.read_talk(pinned[a.ip][0])
        reconnect, landed = self._first_to(b.ip, a.ip, time.monotonic(), timeout=30.0, sport=pinned[a.ip][1])
        self.decide(
            result,
            "deleted-same-port-reconnect",
            0 <= reconnect < 5.0,
            start,
            f"the client on pod A: {old.summary()}; re-connecting from port {pinned[a.ip][1]}: {', '.join(landed)}",
            same_port_reconnect=reconnect,
        )
        self.snapshot(result, "deleted: after", t.NODE_B, t.NODE_A)
        self.start_pod_again(a)

    def start_pod_again(self, pod: ScenarioPod) -> None:
        self.two.lib("sc_stop_pod", pod.netns)
        self.two.sh_in(t.NODE_A, "ip", "netns", "del", pod.netns)
        self.two.sh_in(t.NODE_A, "ip", "link", "del", f"veth-{pod.netns}")
        self.start_pod(pod)
        self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30520, {PODS["a"].ip, PODS["b"].ip}, "pod A back")

    def _failover_not_ready(self, result: SituationResult) -> None:
        a, b = PODS["a"], PODS["b"]
        pinned = self._pin("fo-nr", 90, 40101)
        moment, start = self.guest_now(), time.monotonic()
        self.kubelet.report_running(a.spec(self.ipv6), ready=False)
        gone = self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30520, {b.ip}, "pod A's destination to go (not ready)")
        took, landed = self._first_to(b.ip, a.ip, start, timeout=30.0)
        now = self.guest_now()
        on_a = self.read_talk(pinned[a.ip][0]) if a.ip in pinned else None
        fate = f"; the association on pod A: {on_a.summary()}" if on_a else ""
        self.decide(
            result,
            "not-ready-removed",
            took >= 0 and f"{a.ip} (the old pod)" not in landed,
            start,
            f"destination gone after {gone:.1f}s; new associations: {', '.join(landed)}{fate}",
            ipvs_removed=gone,
            new_association=took,
            old_association_gap=on_a.gap_after(moment, now) if on_a else -1.0,
        )
        self.snapshot(result, "not ready: after", t.NODE_B)
        self.kubelet.report_running(a.spec(self.ipv6))
        self.wait_ipvs(t.NODE_B, t.NODE_B_IP, 30520, {a.ip, b.ip}, "pod A ready again")

    def _failover_terminating(self, result: SituationResult) -> None:
        a, b = PODS["a"], PODS["b"]
        start = time.monotonic()
        self.kubectl.delete("pod", a.spec(self.ipv6).name, NAMESPACE, grace=300)  # no kubelet confirms it
        time.sleep(15)  # a watch event's worth, then see where new associations go
        self.snapshot(result, "terminating", t.NODE_B)
        result.evidence["EndpointSlices (pod A terminating)"] = json.dumps(
            [s.get("endpoints") for s in self.kubectl.items("endpointslices.discovery.k8s.io", NAMESPACE)], indent=1
        )
        landed = [self.talk_port(t.EXT, t.NODE_B_IP, 30520, "fo-term").pod or "none" for _ in range(6)]
        self.decide(
            result,
            "terminating-removed",
            a.ip not in landed and b.ip in landed,
            start,
            f"six new associations while pod A terminates (still Ready): {', '.join(landed)}",
        )
        self.kubelet.delete(a.spec(self.ipv6))  # the kubelet confirms at last
        self.start_pod_again(a)

    # -- 6. multi-homing -------------------------------------------------------------------------------------------
    def _multihoming(self, result: SituationResult) -> None:
        mh = PODS["mh"]
        eip = IPS["multihoming"]
        svc = self.service("sc-mh", {"app": "sc-mh"}, external_ips=[eip])
        cluster_ip = str(svc["spec"]["clusterIP"])
        self.wait_ipvs(t.NODE_A, cluster_ip, PORT, {mh.ip}, "the multi-homing Service")
        for kind, address in (("clusterip", cluster_ip), ("externalip", eip)):
            for sloppy in (0, 1):
                self._one_homing(result, f"{kind}-sloppy-{'on' if sloppy else 'off'}", address, sloppy)
        self.two.lib("sc_sysctl", t.NODE_A, "net.ipv4.vs.sloppy_sctp=0")
        self.delete_service("sc-mh")

    def _one_homing(self, result: SituationResult, key: str, address: str, sloppy: int) -> None:
        start = time.monotonic()
        self.two.lib("sc_sysctl", t.NODE_A, f"net.ipv4.vs.sloppy_sctp={sloppy}")
        with self.capture(result, t.NODE_A, key) as packets:
            self.talk_background(t.EXT, key, address, 25, "--bind", w.CLIENT_IP, "--bind", t.CLIENT_IP2)
            time.sleep(6)  # heartbeats on both paths (hb_interval 1 s)
            cut = self.guest_now()
            self.two.cut_primary_path()
            time.sleep(22)
            talk = self.read_talk(key)
        self.two.restore_primary_path([SERVICE_CIDR, t.EXTERNAL_RANGE, t.SERVICE_CIDR6, t.EXTERNAL_RANGE6])
        beats = sctpwire.heartbeats(packets)
        offered = sctpwire.init_addresses(packets)
        recovered = talk.first_reply_after(cut + 0.5)
        gap = talk.gap_after(cut)
        passed = talk.up and talk.ended is None and recovered >= 0 and gap < 8.0
        beat_text = ", ".join(f"{n} {s}->{d} x{k}" for (n, s, d), k in sorted(beats.items())) or "none"
        self.decide(
            result,
            key,
            passed,
            start,
            f"{talk.summary()}; after the cut: first reply {recovered:.1f}s, longest silence {gap:.1f}s; "
            f"INIT offered {offered.get('INIT', ())}, INIT_ACK {offered.get('INIT_ACK', ())}; chunks: {beat_text}",
            failover=recovered,
            longest_silence=gap,
        )
        result.evidence[f"{key}: the pod's associations"] = self.two.sh_in(
            t.NODE_A, "cat", f"/run/krs/serve-{PODS['mh'].netns}-{PORT}.log"
        ).output[-3000:]
        self.snapshot(result, f"{key}: after", t.NODE_A)

    # -- 7. IPv6 and dual-stack ------------------------------------------------------------------------------------
    def _ipv6(self, result: SituationResult) -> None:
        a = PODS["a"]
        eip6 = IPS["ipv6"]
        v6 = self.service(
            "sc-v6",
            {"member": "a"},
            kind="NodePort",
            node_port=30530,
            external_ips=[eip6],
            ipFamilyPolicy="SingleStack",
            ipFamilies=["IPv6"],
        )
        dual = self.service("sc-dual", {"member": "a"}, ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
        cip6 = str(v6["spec"]["clusterIP"])
        self.wait_ipvs(t.NODE_A, cip6, PORT, {a.ip6}, "the IPv6 ClusterIP service")
        for key, ns, address, port in (
            ("clusterip-v6", t.NODE_A, cip6, PORT),
            ("nodeport-v6", t.EXT, t.NODE_A_IP6, 30530),
            ("externalip-v6", t.EXT, eip6, PORT),
        ):
            start = time.monotonic()
            talk = self.talk_port(ns, address, port, key)
            self.decide(result, key, talk.pod == a.ip, start, _said(talk))
        start = time.monotonic()
        for ip in dual["spec"].get("clusterIPs", []):  # both families programmed before a word is sent
            self.wait_ipvs(t.NODE_A, ip, PORT, {a.ip6 if ":" in ip else a.ip}, f"the dual-stack Service's {ip}")
        said = [self.talk_once(t.NODE_A, ip, "dual") for ip in dual["spec"].get("clusterIPs", [])]
        self.decide(
            result,
            "dual-stack",
            len(said) == 2 and all(s.pod == a.ip for s in said),
            start,
            "; ".join(f"{ip}: {_said(s)}" for ip, s in zip(dual["spec"].get("clusterIPs", []), said, strict=False)),
        )
        self.snapshot(result, "after", t.NODE_A)
        self.delete_service("sc-v6")
        self.delete_service("sc-dual")

    # -- 8. DSR --------------------------------------------------------------------------------------------------------
    def _dsr(self, result: SituationResult) -> None:
        pod, eip = PODS["dsr"], IPS["dsr"]
        annotations = {"kube-router.io/service.dsr": "tunnel", "kube-router.io/service.scheduler": "mh"}
        self.service("sc-dsr", {"app": "sc-dsr"}, external_ips=[eip], annotations=annotations)

        def fwmark_service(ns: str) -> bool:  # DSR services are fwmark services: no address:port
            listing = self.two.ipvs(ns)
            return any(line.startswith("FWM") for line in listing.splitlines()) and pod.ip in listing

        took = {
            ns: self.node.wait_for(f"{ns}'s DSR service", functools.partial(fwmark_service, ns), CHANGE_TIMEOUT)
            for ns in (t.NODE_A, t.NODE_B)
        }
        time.sleep(3)  # the pod's tunnel is configured in the same sync, after the service
        self.snapshot(result, "DSR Service in place", t.NODE_A, t.NODE_B)
        if any(v < 0 for v in took.values()):
            raise DataplaneError(
                f"no fwmark service for the DSR pod within {CHANGE_TIMEOUT:.0f}s on "
                f"{', '.join(ns for ns, v in took.items() if v < 0)}",
                "see the IPVS tables and kube-router's log in the scenario's evidence",
            )
        result.evidence["DSR pod: ip addr"] = self.two.sh_in(pod.netns, "ip", "addr").output
        drops = "node A's rules for conntrack's INVALID state (packets, bytes)"
        result.evidence[f"{drops}: before dsr-echo"] = self._invalid_rules(t.NODE_A)
        start = time.monotonic()
        with self.capture(result, t.NODE_A, "dsr-echo"):
            talk = self.talk_once(t.EXT, eip, "dsr")
        self.decide(result, "dsr-echo", talk.pod == pod.ip, start, _said(talk))
        result.evidence[f"{drops}: after dsr-echo"] = self._invalid_rules(t.NODE_A)
        if self.wanted(result, "sloppy-sctp-set"):
            start = time.monotonic()
            values = {
                ns: self.two.lib("sc_sysctl", ns, "net.ipv4.vs.sloppy_sctp").output.strip()
                for ns in (t.NODE_A, t.NODE_B)
            }
            self.decide(
                result, "sloppy-sctp-set", set(values.values()) == {"1"}, start, f"net.ipv4.vs.sloppy_sctp: {values}"
            )
        if self.wanted(result, "director-switch-survives"):
            self._director_switch(result, eip)
        self.delete_service("sc-dsr")

    def _invalid_rules(self, ns: str) -> str:
        return invalid_state_rules(self.two.iptables(ns, "-L", "-v", "-n", "-x"))

    def _director_switch(self, result: SituationResult, eip: str) -> None:
        start = time.monotonic()
        with self.capture(result, t.NODE_B, "dsr-switch-node-b"):
            self.talk_background(t.EXT, "dsr-switch", eip, 20)
            time.sleep(5)
            moved = self.guest_now()
            self.two.route_external(eip, t.NODE_B_IP)
            time.sleep(17)
            talk = self.read_talk("dsr-switch")
        self.two.route_external(eip, None)
        gap = talk.gap_after(moved)
        self.decide(
            result,
            "director-switch-survives",
            talk.up and talk.ended is None and gap < 5.0,
            start,
            f"{talk.summary()}; longest silence after the move to node B {gap:.1f}s",
            longest_silence=gap,
        )


def ipvs_host(address: str) -> str:
    """An address as ipvsadm -Ln prints it (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def guest_seconds(said: str) -> float:
    """The guest's ``date +%s.%N``: refused unless it is seconds since the epoch."""
    text = said.strip()
    if not re.fullmatch(r"\d{1,11}(?:\.\d{1,9})?", text):
        raise DataplaneError(f"the node's clock said {text[:40]!r}, not the time in seconds", "see the node's console")
    return float(text)


def _said(talk: Talk) -> str:
    if talk.replies:
        return f"reply {talk.replies[0]['reply']!r}"
    ended = talk.ended
    return f"no reply ({ended.get('error') if ended else 'no output'})"


def invalid_state_rules(listing: str) -> str:
    """The rules of ``iptables -L -v -n -x`` that match conntrack's INVALID state, each
    with its chain and counters: whether a node dropped a reply that matched no
    connection (DSR's INIT-ACK from the pod's own address) is read from them."""
    chain, found = "", list[str]()
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["Chain"] and len(words) > 1:
            chain = words[1]
        elif "INVALID" in words and len(found) < 20:  # the image under test writes these rules
            found.append(f"{chain}: {' '.join(words)}"[:300])
    return "\n".join(found) or "(no rule matches conntrack's INVALID state)"
