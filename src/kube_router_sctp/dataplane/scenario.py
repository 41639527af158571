"""The checks of the dataplane proof, run in order on one node against one kube-router.

One cell per Service port and address (ClusterIP from the node; NodePort and each
ExternalIP from the external host), each a real message echoed by a pod behind the
Service; then, for the subject Service (the first with an SCTP port; the 2019 report's
``sctp-expserver`` by default): the IPVS table holds SCTP services for every SCTP
target; the 2019 ExternalIP failure reproduced by writing the service firewall's ipset
entry the way unpatched kube-router did; a NetworkPolicy that allows one SCTP port and
not another; its pod replaced by another (the real controllers move Endpoints and
EndpointSlices) and kube-router following; the Service deleted, leaving nothing behind;
kube-router's API requests all authorized under its ClusterRole, as the API server's
audit log records them; kube-router's log free of protocol errors.

Each check gives an ``Outcome`` with what was expected of this image: a candidate must
pass everything; a negative control (unpatched kube-router) must fail the SCTP cells and
pass the TCP and UDP ones, and its other checks are reported without a verdict, since
they measure SCTP features the control does not claim.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import log
from ..controlplane.cluster import KUBERNETES_SERVICE_IP
from ..controlplane.kubectl import Kubectl
from ..controlplane.kubelet import Kubelet
from ..errors import DataplaneError
from . import workload as w
from .node import Node, Probe

KUBE_ROUTER_USER = "system:serviceaccount:kube-system:kube-router"
KUBERNETES_SERVICE = ("TCP", KUBERNETES_SERVICE_IP, 443)  # the API server's own Service
ATTEMPTS = 3  # a cell passes on its first echo; a fresh association each attempt
SYNC_TIMEOUT = 150.0  # first sync: kube-router starts, lists everything, programs IPVS
CHANGE_TIMEOUT = 90.0  # a watch event to its effect in the kernel
POLICY_NAME = "allow-sctp"


@dataclass
class Outcome:
    name: str
    passed: bool
    expected: bool | None  # None: reported, no verdict
    seconds: float
    detail: str = ""
    kind: str = "check"  # "cell" or "check"
    address: str = ""  # cells: ClusterIP, NodePort, ExternalIP
    protocol: str = ""
    service: str = ""  # cells: namespace/name
    port: int = 0  # cells: the Service port
    target: str = ""  # cells: the address and port sent to

    @property
    def met(self) -> bool:
        return self.expected is None or self.passed == self.expected

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2), "met": self.met}


@dataclass
class Scenario:
    node: Node
    kubectl: Kubectl
    kubelet: Kubelet
    workload: w.Workload
    control: bool
    audit: Callable[[], list[dict[str, Any]]] = list  # the API server's audit events
    outcomes: list[Outcome] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)
    sync_seconds: float = 0.0

    # -- running -------------------------------------------------------------------------
    def run(self) -> None:
        self.wait_for_first_sync()
        self.check_ipvs_services()
        self.check_cells()
        self.capture_firewall("after the cells")
        self.check_externalip_root_cause()
        self.check_network_policy()
        self.check_endpoints_change()
        self.check_service_deletion()
        self.check_api_access()
        self.check_log()

    def expect(self, sctp: bool, gated_in_control: bool = False) -> bool | None:
        """A candidate must pass; the control must fail what needs SCTP (gated only for
        the cells) and pass the rest."""
        if not self.control:
            return True
        if gated_in_control:
            return not sctp
        return None

    def add(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        mark = "pass" if outcome.passed else "FAIL"
        verdict = "" if outcome.met else "  <-- unexpected"
        log.info(f"{outcome.name}: {mark} ({outcome.seconds:.1f}s) {outcome.detail[:160]}{verdict}")
        return outcome

    # -- what is where ---------------------------------------------------------------------
    @property
    def subject(self) -> w.Service:
        return self.workload.subject

    def backend_ips(self, service: w.Service) -> set[str]:
        return {pod.ip for pod in self.workload.backends(service)}

    def targets(self, service: w.Service | None = None, protocol: str | None = None) -> list[w.Target]:
        return [
            t
            for t in self.workload.targets()
            if (service is None or t.service == service) and (protocol is None or t.protocol == protocol)
        ]

    def _first_sctp_port(self) -> w.ServicePort | None:
        return next((p for p in self.subject.ports if p.protocol == "SCTP"), None)

    # -- first sync ------------------------------------------------------------------------
    def wait_for_first_sync(self) -> None:
        """kube-router is ready when IPVS holds every TCP and UDP target with its pods behind
        it (both work in every image, so the wait means the same for candidate and
        control); with no TCP or UDP port anywhere, when it holds the API server's own
        Service."""
        plain = [t for t in self.workload.targets() if t.protocol != "SCTP"]

        def synced() -> bool:
            table = parse_ipvs(self.node.ipvs())
            if not plain:
                return KUBERNETES_SERVICE in table
            return all(
                self.backend_ips(t.service) & set(table.get((t.protocol, t.address, t.dst_port), [])) for t in plain
            )

        took = self.node.wait_for("kube-router's first sync", synced, SYNC_TIMEOUT, interval=2.0)
        if took < 0:
            raise DataplaneError(
                f"kube-router did not program IPVS within {SYNC_TIMEOUT:.0f}s of starting",
                'see its log in the results (evidence "kube-router log (end)")',
            )
        # --nodeport-bindon-all-ip and the firewall's ipsets are written in the same sync;
        # give the sync a moment to finish after its first IPVS service appeared.
        time.sleep(3)
        self.sync_seconds = took + 3
        self.evidence["ipvsadm -Ln (after the first sync)"] = self.node.ipvs()
        # The kernel's own listing: it also shows services of a protocol ipvsadm cannot
        # print (unpatched releases create SCTP ports with protocol 0).
        self.evidence["/proc/net/ip_vs (after the first sync)"] = self.node.sh("cat /proc/net/ip_vs").output
        self.evidence["Endpoints and EndpointSlices (made by the controllers)"] = self._endpoints_listing()

    def _endpoints_listing(self) -> str:
        lines = []
        for item in self.kubectl.items("endpoints"):
            meta = item.get("metadata", {})
            addresses = [a.get("ip") for s in item.get("subsets", []) or [] for a in s.get("addresses", []) or []]
            lines.append(f"Endpoints {meta.get('namespace')}/{meta.get('name')}: {', '.join(addresses) or '-'}")
        for item in self.kubectl.items("endpointslices.discovery.k8s.io"):
            meta = item.get("metadata", {})
            ready = [
                f"{a}{'' if e.get('conditions', {}).get('ready') else ' (not ready)'}"
                for e in item.get("endpoints", []) or []
                for a in e.get("addresses", [])
            ]
            owner = meta.get("labels", {}).get("endpointslice.kubernetes.io/managed-by", "?")
            lines.append(
                f"EndpointSlice {meta.get('namespace')}/{meta.get('name')} ({owner}): {', '.join(ready) or '-'}"
            )
        return "\n".join(lines)

    # -- IPVS --------------------------------------------------------------------------------
    def check_ipvs_services(self) -> None:
        sctp = self.targets(protocol="SCTP")
        if not sctp:
            return
        start = time.monotonic()
        table = parse_ipvs(self.node.ipvs())
        missing = [
            f"{t.address}:{t.dst_port}"
            for t in sctp
            if not self.backend_ips(t.service) & set(table.get(("SCTP", t.address, t.dst_port), []))
        ]
        kinds = sorted({t.kind for t in sctp}, key=[w.CLUSTER_IP, w.NODE_PORT, w.EXTERNAL_IP].index)
        detail = f"SCTP services with their pods behind them for {', '.join(f'{t.address}:{t.dst_port}' for t in sctp)}"
        if missing:
            detail = f"no SCTP service (with its pods behind it) for {', '.join(missing)}"
        name = f"ipvsadm lists SCTP services ({', '.join(kinds)})"
        self.add(Outcome(name, not missing, self.expect(sctp=True), time.monotonic() - start, detail))

    # -- the cells ---------------------------------------------------------------------------
    def check_cells(self) -> None:
        for target in self.workload.targets():
            self.add(self.cell(target))

    def cell(self, target: w.Target) -> Outcome:
        start = time.monotonic()
        tag = f"krs-{target.kind.lower()}-{target.protocol.lower()}-{target.port.port}"
        probe, attempts = self.send(
            target.client, target.protocol, target.address, target.dst_port, tag, self.backend_ips(target.service)
        )
        where = f"{w.CLIENT[target.client]} -> {target.address}:{target.dst_port}/{target.protocol}"
        return Outcome(
            f"{target.service.name} {target.port.port}/{target.protocol} via {target.kind} {target.address}",
            probe.ok,
            self.expect(sctp=target.protocol == "SCTP", gated_in_control=True),
            time.monotonic() - start,
            _describe(probe, attempts, where),
            kind="cell",
            address=target.kind,
            protocol=target.protocol,
            service=target.service.key,
            port=target.port.port,
            target=f"{target.address}:{target.dst_port}",
        )

    def send(
        self, ns: str, protocol: str, address: str, port: int, tag: str, pods: set[str], attempts: int = ATTEMPTS
    ) -> tuple[Probe, int]:
        """Up to ``attempts`` messages, each a new association/connection, until one comes
        back from one of ``pods``; returns the last probe and how many were sent."""
        probe = Probe(False, "", 0, "")
        for attempt in range(1, attempts + 1):
            probe = self.node.probe(ns, protocol, address, port, f"{tag}-{attempt}-{time.monotonic_ns() % 10**6}")
            if probe.ok and any(f"pod={ip} " in probe.reply + " " for ip in pods):
                return probe, attempt
            if probe.ok:  # an echo, but from a pod not behind the Service
                probe = Probe(False, probe.reply, probe.ms, probe.output)
        return probe, attempts

    # -- the 2019 ExternalIP failure, reproduced -------------------------------------------
    def capture_firewall(self, when: str) -> None:
        self.evidence[f"ipset list ({when})"] = self.node.in_kube_router("ipset", "list").output
        chain = self.node.in_kube_router("iptables", "-L", "KUBE-ROUTER-SERVICES", "-v", "-n", "-x").output
        self.evidence[f"iptables -L KUBE-ROUTER-SERVICES -v -n -x ({when})"] = chain

    def rejects(self) -> int:
        """Packets the service firewall's REJECT rule has counted so far."""
        return rejected(self.node.in_kube_router("iptables", "-L", "KUBE-ROUTER-SERVICES", "-v", "-n", "-x").output)

    def check_externalip_root_cause(self) -> None:
        """With the SCTP entry of the service firewall's ipset written as ``udp`` (what
        unpatched kube-router wrote once its IPVS protocol conversions were fixed), an SCTP
        INIT to the external IP must be rejected and counted; with the entry put back, it
        must pass. This isolates that one entry as the cause of the 2019 failure."""
        sctp = self._first_sctp_port()
        if sctp is None or not self.subject.external_ips:
            return  # needs an SCTP port behind an external IP
        external, port, pods = self.subject.external_ips[0], sctp.port, self.backend_ips(self.subject)
        start = time.monotonic()
        name = "ExternalIP SCTP fails with the 2019 ipset entry (udp) and passes with the right one"
        found = _sctp_entry(self.node.in_kube_router("ipset", "list").output, external, port)
        if found is None:
            detail = f"no SCTP entry for {external}:{port} in any ipset: nothing to reproduce"
            self.add(Outcome(name, False, self.expect(sctp=True), time.monotonic() - start, detail))
            return
        ipset, entry = found
        wrong = f"{external},udp:{port}"
        steps: list[str] = [f"ipset {ipset} holds {entry}"]
        before = self.rejects()
        self.node.in_kube_router("sh", "-c", f"ipset del {ipset} {entry} && ipset add {ipset} {wrong}")
        broken, _ = self.send(w.EXTERNAL, "SCTP", external, port, "krs-rootcause-udp", pods, attempts=1)
        after = self.rejects()
        self.evidence["root cause: ipset with the 2019 entry"] = self.node.in_kube_router("ipset", "list", ipset).output
        self.evidence["root cause: REJECT counters with the 2019 entry"] = self.node.in_kube_router(
            "iptables", "-L", "KUBE-ROUTER-SERVICES", "-v", "-n", "-x"
        ).output
        right = f"{external},132:{port}"  # by number: the guest's ipset may lack /etc/protocols
        self.node.in_kube_router("sh", "-c", f"ipset del {ipset} {wrong} && ipset add {ipset} {right}")
        fixed, _ = self.send(w.EXTERNAL, "SCTP", external, port, "krs-rootcause-sctp", pods, attempts=2)
        steps += [
            f"as {wrong}: {'echoed' if broken.ok else 'no echo'}, REJECT counted {after - before} packet(s)",
            f"as {right}: {'echoed ' + repr(fixed.reply) if fixed.ok else 'no echo'}",
        ]
        passed = not broken.ok and after > before and fixed.ok
        self.add(Outcome(name, passed, self.expect(sctp=True), time.monotonic() - start, "; ".join(steps)))

    # -- NetworkPolicy ------------------------------------------------------------------------
    def network_policy(self, port: int) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": POLICY_NAME, "namespace": self.subject.namespace},
            "spec": {
                "podSelector": {"matchLabels": dict(self.subject.selector)},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "SCTP", "port": port}]}],
            },
        }

    def check_network_policy(self) -> None:
        """A policy allowing the subject's SCTP target port to its pods: that port still
        reaches the pod (directly and as a NodePort), another SCTP port the pod serves is
        blocked. Before the policy, that other port must pass, so the block is the
        policy's doing."""
        sctp = self._first_sctp_port()
        if sctp is None:
            return
        pod = self.workload.backends(self.subject)[0]
        allowed_port, other = sctp.target_port, pod.unlisted
        start = time.monotonic()
        name = f"NetworkPolicy: SCTP {allowed_port} allowed, SCTP {other} blocked"
        ips = {pod.ip}
        baseline, _ = self.send(w.EXTERNAL, "SCTP", pod.ip, other, "krs-np-before", ips, attempts=2)
        self.kubectl.apply([self.network_policy(allowed_port)])

        def blocked() -> bool:
            return not self.node.probe(w.EXTERNAL, "SCTP", pod.ip, other, "krs-np-wait", wait=3).ok

        took = self.node.wait_for(f"the NetworkPolicy to block SCTP {other}", blocked, CHANGE_TIMEOUT, interval=1.0)
        allowed, _ = self.send(w.EXTERNAL, "SCTP", pod.ip, allowed_port, "krs-np-allowed", ips)
        parts = [
            f"before the policy {other}: {'echoed' if baseline.ok else 'NO ECHO'}",
            f"{other} blocked after {took:.0f}s" if took >= 0 else f"{other} NOT blocked",
            f"pod:{allowed_port} {'echoed' if allowed.ok else 'NO ECHO'}",
        ]
        passed = baseline.ok and took >= 0 and allowed.ok
        if sctp.node_port:
            nodeport, _ = self.send(
                w.EXTERNAL, "SCTP", w.NODE_IP, sctp.node_port, "krs-np-nodeport", self.backend_ips(self.subject)
            )
            parts.append(f"NodePort {sctp.node_port} {'echoed' if nodeport.ok else 'NO ECHO'}")
            passed = passed and nodeport.ok
        self.evidence["iptables -S (NetworkPolicy in force)"] = _policy_rules(
            self.node.in_kube_router("iptables", "-S").output
        )
        self.kubectl.delete("networkpolicy", POLICY_NAME, self.subject.namespace)
        reopened = self.node.wait_for(
            f"the NetworkPolicy's removal to reopen SCTP {other}",
            lambda: self.node.probe(w.EXTERNAL, "SCTP", pod.ip, other, "krs-np-after", wait=3).ok,
            CHANGE_TIMEOUT,
        )
        parts.append(
            f"policy removed: {other} open again" if reopened >= 0 else f"policy removed: {other} STILL blocked"
        )
        passed = passed and reopened >= 0
        self.add(Outcome(name, passed, self.expect(sctp=True), time.monotonic() - start, "; ".join(parts)))

    # -- Endpoints change --------------------------------------------------------------------
    def check_endpoints_change(self) -> None:
        """A second pod comes up and the first goes (its servers stopped, the Pod deleted):
        the endpoints and EndpointSlice controllers move the Service's endpoints, and
        kube-router must move its virtual services after them."""
        old = self.workload.backends(self.subject)[0]
        spare = self.workload.spare
        start = time.monotonic()
        name = f"Endpoints change followed ({old.ip} -> {spare.ip})"
        self.kubelet.run([spare.spec])
        self.node.stop_pod(old)
        self.kubelet.delete(old.spec)
        self.workload.pods = [p for p in self.workload.pods if p is not old] + [spare]
        wanted = sorted(self.backend_ips(self.subject))
        # TCP or UDP moves in every image; SCTP only where kube-router has SCTP services.
        probe_target = next(
            (t for t in self.targets(self.subject) if t.kind == w.CLUSTER_IP and t.protocol != "SCTP"),
            self.targets(self.subject)[0],
        )
        key = (probe_target.protocol, probe_target.address, probe_target.dst_port)
        took = self.node.wait_for(
            f"the {probe_target.protocol} ClusterIP service to follow the new pod",
            lambda: sorted(parse_ipvs(self.node.ipvs()).get(key, [])) == wanted,
            CHANGE_TIMEOUT,
        )
        table = self.node.ipvs()
        self.evidence["ipvsadm -Ln (after the Endpoints change)"] = table
        self.evidence["Endpoints and EndpointSlices (after the Endpoints change)"] = self._endpoints_listing()
        sctp = self.targets(self.subject, "SCTP")
        parsed = parse_ipvs(table)
        stale = [
            f"{t.address}:{t.dst_port}"
            for t in sctp
            if sorted(parsed.get(("SCTP", t.address, t.dst_port), [])) != wanted
        ]
        parts = [
            f"kube-router followed in {took:.0f}s"
            if took >= 0
            else f"kube-router did NOT follow ({probe_target.protocol})",
            f"SCTP services not (only) on the new pods: {', '.join(stale)}" if stale else "SCTP services moved",
        ]
        passed = took >= 0 and not stale
        for kind in (w.CLUSTER_IP, w.EXTERNAL_IP):
            target = next((t for t in sctp if t.kind == kind), None)
            if target is None:
                continue
            client_ns = w.NODE if kind == w.CLUSTER_IP else w.EXTERNAL
            probe, _ = self.send(
                client_ns, "SCTP", target.address, target.dst_port, f"krs-ep-{kind.lower()}", {spare.ip}
            )
            parts.append(f"{kind} SCTP: {probe.reply or 'NO ECHO'}")
            passed = passed and probe.ok
        self.add(Outcome(name, passed, self.expect(sctp=bool(sctp)), time.monotonic() - start, "; ".join(parts)))

    # -- Service deletion ----------------------------------------------------------------------
    def check_service_deletion(self) -> None:
        start = time.monotonic()
        name = "Service deleted: no virtual services, ipset entries or VIPs left"
        subject = self.subject
        gone = {(t.address, t.dst_port) for t in self.targets(subject)}
        # --nodeport-bindon-all-ip puts the node ports on every local address
        node_ports = {p.node_port for p in subject.ports if p.node_port}
        self.kubectl.delete("service", subject.name, subject.namespace)
        took = self.node.wait_for(
            "the Service's virtual services to go",
            lambda: not _services(self.node.ipvs(), gone, node_ports),
            CHANGE_TIMEOUT,
        )
        time.sleep(2)  # the firewall's ipsets are refreshed after IPVS in the same sync
        table = self.node.ipvs()
        ipsets = self.node.in_kube_router("ipset", "list").output
        dummy = self.node.sh("ip -4 -o addr show dev kube-dummy-if 2>/dev/null").output
        others = {ip for s in self.workload.services if s != subject for ip in (s.cluster_ip, *s.external_ips)}
        vips = [ip for ip in (subject.cluster_ip, *subject.external_ips) if ip not in others]
        left = [f"IPVS {s}" for s in _services(table, gone, node_ports)]
        left += [f"ipset {e}" for e in _set_entries(ipsets, gone, node_ports)]
        left += [f"VIP {ip} on kube-dummy-if" for ip in vips if f" {ip}/" in dummy]
        self.evidence["ipvsadm -Ln (after the Service was deleted)"] = table
        detail = f"gone in {took:.0f}s" if took >= 0 else "virtual services NOT removed"
        if left:
            detail += "; left over: " + ", ".join(left)
        self.add(Outcome(name, took >= 0 and not left, self.expect(sctp=False), time.monotonic() - start, detail))

    # -- the API, as the API server saw kube-router use it -----------------------------------
    def check_api_access(self) -> None:
        """Every request kube-router made (the audit log, by its service account): none
        refused, and Services plus Endpoints or EndpointSlices listed and watched."""
        start = time.monotonic()
        made = api_requests(self.audit(), KUBE_ROUTER_USER)
        self.evidence["kube-router's API requests (audit log: verb, path, status, count)"] = "\n".join(
            f"{verb:6} {path} {code} x{count}" for (verb, path, code), count in sorted(made.items())
        )
        refused = sorted({f"{verb} {path} ({code})" for (verb, path, code) in made if code in (401, 403)})
        watched = {path for (verb, path, code) in made if verb == "watch" and code == 200}
        endpoints = {p for p in watched if p.endswith(("/endpoints", "/endpointslices"))}
        services = {p for p in watched if p.endswith("/services")}
        groups = sorted({_group_version(path) for (_, path, _) in made})
        detail = f"{sum(made.values())} request(s) to {', '.join(groups) or 'nothing'}"
        if refused:
            detail += f"; REFUSED: {', '.join(refused[:6])}"
        if not (services and endpoints):
            detail += "; Services and Endpoints/EndpointSlices NOT both watched"
        passed = bool(made) and not refused and bool(services and endpoints)
        name = "kube-router's API requests all authorized (RBAC, its ClusterRole)"
        self.add(Outcome(name, passed, self.expect(sctp=False), time.monotonic() - start, detail))

    # -- the log -------------------------------------------------------------------------------
    def check_log(self) -> None:
        start = time.monotonic()
        text = self.node.kube_router_logs()
        errors = [line for line in text.splitlines() if _ERROR_LINE.match(line)]
        protocol = [line for line in errors if _PROTOCOL_WORDS.search(line)]
        self.evidence["kube-router errors and warnings"] = "\n".join(errors) or "(none)"
        sctp = self._first_sctp_port()
        if sctp is not None:
            # How this release handled the SCTP port: unpatched ones log a protocol they do not know.
            mark = f":{sctp.port} "
            about = [line for line in text.splitlines() if mark in line and "service" in line.lower()]
            self.evidence[f"kube-router log lines about port {sctp.port} (first 12)"] = "\n".join(about[:12])
        running = self.node.kube_router_running()
        detail = f"{len(errors)} error/warning line(s), {len(protocol)} about protocols"
        if protocol:
            detail += f"; first: {protocol[0][:200]}"
        if not running:
            detail += "; kube-router is NOT running"
        self.add(
            Outcome(
                "kube-router logs no protocol errors (and still runs)",
                not protocol and running,
                self.expect(sctp=True),
                time.monotonic() - start,
                detail,
            )
        )


# -- reading the kernel's tables ---------------------------------------------------------------
_SERVICE_LINE = re.compile(r"^(TCP|UDP|SCTP)\s+(\S+):(\d{1,5})\s")  # a port: no int() of 5000 digits
_REAL_LINE = re.compile(r"^\s+->\s+(\S+):(\d{1,5})\s")
_ERROR_LINE = re.compile(r"^[EFW]\d{4} |panic|fatal", re.IGNORECASE)
# Words of a protocol problem; "sctp" only as a word of its own, not in object names such
# as sctp-expserver or allow-sctp.
_PROTOCOL_WORDS = re.compile(r"protocol|\bunknown\b|(?<![-\w])sctp(?![-\w])|ipproto|\b132\b", re.IGNORECASE)


def parse_ipvs(table: str) -> dict[tuple[str, str, int], list[str]]:
    """``ipvsadm -Ln`` as {(protocol, address, port): [real server addresses]}."""
    services: dict[tuple[str, str, int], list[str]] = {}
    current: tuple[str, str, int] | None = None
    for line in table.splitlines():
        service = _SERVICE_LINE.match(line)
        if service:
            current = (service[1], service[2], int(service[3]))
            services[current] = []
            continue
        real = _REAL_LINE.match(line)
        if real and current is not None and real[1] != "RemoteAddress":
            services[current].append(real[1])
    return services


def rejected(listing: str) -> int:
    """The packet counts of the REJECT rules of ``iptables -L -v -n -x``; a line that
    does not start with a count (the image's iptables prints it) counts nothing."""
    counts = [re.match(r"\s*(\d{1,19})\s", line) for line in listing.splitlines() if " REJECT " in f" {line} "]
    return sum(int(match[1]) for match in counts if match)


def _services(table: str, wanted: Iterable[tuple[str, int]], any_address: Iterable[int] = ()) -> list[str]:
    """The virtual services at any of ``wanted`` (address, port), or on any address at a
    port of ``any_address``, as ``PROTO addr:port``."""
    pairs, ports = set(wanted), set(any_address)
    return [f"{p} {a}:{n}" for (p, a, n) in parse_ipvs(table) if (a, n) in pairs or n in ports]


def parse_ipsets(listing: str) -> dict[str, list[str]]:
    """``ipset list`` as {set name: [members]} (member options such as timeout dropped)."""
    sets: dict[str, list[str]] = {}
    name, in_members = "", False
    for line in listing.splitlines():
        if line.startswith("Name: "):
            name, in_members = line[6:].strip(), False
            sets[name] = []
        elif line.startswith("Members:"):
            in_members = True
        elif in_members and line.strip() and name:
            sets[name].append(line.split()[0])
    return sets


def _sctp_entry(listing: str, address: str, port: int) -> tuple[str, str] | None:
    """The (set, member) that lets SCTP to ``address``:``port`` through, if any."""
    pattern = re.compile(rf"^{re.escape(address)},(sctp|132):{port}$")
    for name, members in parse_ipsets(listing).items():
        for member in members:
            if pattern.match(member):
                return name, member
    return None


def _set_entries(listing: str, wanted: Iterable[tuple[str, int]], any_address: Iterable[int] = ()) -> list[str]:
    """Members ``address,proto:port`` of any set that name one of ``wanted`` (address,
    port), or any address at a port of ``any_address``."""
    pairs, ports = {(a, str(p)) for a, p in wanted}, {str(p) for p in any_address}
    found = []
    for members in parse_ipsets(listing).values():
        for member in members:
            address, _, rest = member.partition(",")
            port = rest.rsplit(":", 1)[-1]
            if rest and ((address, port) in pairs or port in ports):
                found.append(member)
    return found


def _policy_rules(rules: str) -> str:
    return "\n".join(line for line in rules.splitlines() if "KUBE-NWPLCY" in line or "KUBE-POD-FW" in line)


def _describe(probe: Probe, attempts: int, path: str) -> str:
    if probe.ok:
        return f"{path}: {probe.reply!r} in {probe.ms} ms" + (f" (attempt {attempts})" if attempts > 1 else "")
    said = " ".join(probe.output.split())[:160] or "no answer"
    return f"{path}: no echo after {attempts} attempt(s) ({said})"


# -- the audit log -------------------------------------------------------------------------------
def api_requests(events: Sequence[dict[str, Any]], user: str) -> Counter[tuple[str, str, int]]:
    """{(verb, path without query, status): count} of one user's requests, each request
    counted once (a watch is logged when it starts and again when it ends)."""
    seen: dict[str, tuple[str, str, int]] = {}
    for event in events:
        if event.get("user", {}).get("username") != user:
            continue
        path = str(event.get("requestURI", "")).split("?", 1)[0]
        code = int(event.get("responseStatus", {}).get("code", 0) or 0)
        seen[str(event.get("auditID"))] = (str(event.get("verb", "")), path, code)
    return Counter(seen.values())


def _group_version(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) > 1:
        return f"core/{parts[1]}"
    if parts[:1] == ["apis"] and len(parts) > 2:
        return f"{parts[1]}/{parts[2]}"
    return path
