"""The checks of the dataplane proof, run in order on one node against one kube-router.

Nine cells (ClusterIP from the node, NodePort and ExternalIP from the external host;
SCTP, TCP and UDP), each a real message echoed by the pod, then: the IPVS table holds
SCTP services for every address; the 2019 ExternalIP failure reproduced by writing the
service firewall's ipset entry the way unpatched kube-router did; a NetworkPolicy that
allows one SCTP port and not another; an Endpoints change followed; the Service's
deletion leaving nothing behind; kube-router's log free of protocol errors.

Each check gives an ``Outcome`` with what was expected of this image: a candidate must
pass everything; a negative control (unpatched kube-router) must fail the SCTP cells and
pass the TCP and UDP ones, and its other checks are reported without a verdict, since
they measure SCTP features the control does not claim.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import log
from ..errors import DataplaneError
from . import manifests as m
from .kubeapi import Store
from .node import (
    CLUSTER_IP,
    EXTERNAL_IP,
    EXTERNAL_NS,
    NODE,
    NODE_IP,
    POD_IP,
    PORTS,
    SECOND_POD_IP,
    SECOND_POD_NAME,
    UNLISTED_SCTP_PORT,
    Node,
    Probe,
)

PROTOCOLS = ("SCTP", "TCP", "UDP")
# (address kind, where the client runs, the address it sends to)
ADDRESSES = (
    ("ClusterIP", NODE, CLUSTER_IP),
    ("NodePort", EXTERNAL_NS, NODE_IP),
    ("ExternalIP", EXTERNAL_NS, EXTERNAL_IP),
)
CLIENT = {NODE: "node (root netns)", EXTERNAL_NS: "external host"}
ATTEMPTS = 3  # a cell passes on its first echo; a fresh association each attempt
SYNC_TIMEOUT = 150.0  # first sync: kube-router starts, lists everything, programs IPVS
CHANGE_TIMEOUT = 90.0  # a watch event to its effect in the kernel


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

    @property
    def met(self) -> bool:
        return self.expected is None or self.passed == self.expected

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2), "met": self.met}


@dataclass
class Scenario:
    node: Node
    store: Store
    control: bool
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

    # -- first sync ------------------------------------------------------------------------
    def wait_for_first_sync(self) -> None:
        """kube-router is ready when IPVS holds the TCP ClusterIP service with the pod behind
        it: TCP works in every image, so the wait means the same for candidate and control."""
        took = self.node.wait_for(
            "kube-router's first sync",
            lambda: POD_IP in _reals(self.node.ipvs(), "TCP", CLUSTER_IP, PORTS["TCP"]),
            SYNC_TIMEOUT,
            interval=2.0,
        )
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

    # -- IPVS --------------------------------------------------------------------------------
    def check_ipvs_services(self) -> None:
        start = time.monotonic()
        table = self.node.ipvs()
        port = PORTS["SCTP"]
        missing = [f"{addr}:{port}" for _, _, addr in ADDRESSES if POD_IP not in _reals(table, "SCTP", addr, port)]
        detail = "SCTP services with the pod behind them for " + ", ".join(a for _, _, a in ADDRESSES)
        if missing:
            detail = f"no SCTP service (with {POD_IP} behind it) for {', '.join(missing)}"
        self.add(
            Outcome(
                "ipvsadm lists SCTP services (cluster IP, node IP, external IP)",
                not missing,
                self.expect(sctp=True),
                time.monotonic() - start,
                detail,
            )
        )

    # -- the nine cells ---------------------------------------------------------------------
    def check_cells(self) -> None:
        for protocol in PROTOCOLS:
            for kind, ns, address in ADDRESSES:
                self.add(self.cell(kind, ns, address, protocol))

    def cell(self, kind: str, ns: str, address: str, protocol: str, *, expect_pod: str = POD_IP) -> Outcome:
        port = PORTS[protocol]
        start = time.monotonic()
        probe, attempts = self.send(ns, protocol, address, port, f"krs-{kind.lower()}-{protocol.lower()}", expect_pod)
        detail = _describe(probe, attempts, f"{CLIENT[ns]} -> {address}:{port}/{protocol}")
        return Outcome(
            f"{kind} {protocol}",
            probe.ok,
            self.expect(sctp=protocol == "SCTP", gated_in_control=True),
            time.monotonic() - start,
            detail,
            kind="cell",
            address=kind,
            protocol=protocol,
        )

    def send(
        self, ns: str, protocol: str, address: str, port: int, tag: str, expect_pod: str, attempts: int = ATTEMPTS
    ) -> tuple[Probe, int]:
        """Up to ``attempts`` messages, each a new association/connection, until one comes
        back from ``expect_pod``; returns the last probe and how many were sent."""
        probe = Probe(False, "", 0, "")
        for attempt in range(1, attempts + 1):
            probe = self.node.probe(ns, protocol, address, port, f"{tag}-{attempt}-{time.monotonic_ns() % 10**6}")
            if probe.ok and f"pod={expect_pod} " in probe.reply + " ":
                return probe, attempt
            if probe.ok:  # an echo, but from the wrong pod
                probe = Probe(False, probe.reply, probe.ms, probe.output)
        return probe, attempts

    # -- the 2019 ExternalIP failure, reproduced -------------------------------------------
    def capture_firewall(self, when: str) -> None:
        self.evidence[f"ipset list ({when})"] = self.node.in_kube_router("ipset", "list").output
        chain = self.node.in_kube_router("iptables", "-L", "KUBE-ROUTER-SERVICES", "-v", "-n", "-x").output
        self.evidence[f"iptables -L KUBE-ROUTER-SERVICES -v -n -x ({when})"] = chain

    def rejects(self) -> int:
        """Packets the service firewall's REJECT rule has counted so far."""
        listing = self.node.in_kube_router("iptables", "-L", "KUBE-ROUTER-SERVICES", "-v", "-n", "-x").output
        return sum(int(line.split()[0]) for line in listing.splitlines() if " REJECT " in f" {line} ")

    def check_externalip_root_cause(self) -> None:
        """With the SCTP entry of the service firewall's ipset written as ``udp`` (what
        unpatched kube-router wrote once its IPVS protocol conversions were fixed), an SCTP
        INIT to the external IP must be rejected and counted; with the entry put back, it
        must pass. This isolates that one entry as the cause of the 2019 failure."""
        start = time.monotonic()
        name = "ExternalIP SCTP fails with the 2019 ipset entry (udp) and passes with the right one"
        port = PORTS["SCTP"]
        found = _sctp_entry(self.node.in_kube_router("ipset", "list").output, EXTERNAL_IP, port)
        if found is None:
            detail = f"no SCTP entry for {EXTERNAL_IP}:{port} in any ipset: nothing to reproduce"
            self.add(Outcome(name, False, self.expect(sctp=True), time.monotonic() - start, detail))
            return
        ipset, entry = found
        wrong = f"{EXTERNAL_IP},udp:{port}"
        steps: list[str] = [f"ipset {ipset} holds {entry}"]
        before = self.rejects()
        self.node.in_kube_router("sh", "-c", f"ipset del {ipset} {entry} && ipset add {ipset} {wrong}")
        broken, _ = self.send(EXTERNAL_NS, "SCTP", EXTERNAL_IP, port, "krs-rootcause-udp", POD_IP, attempts=1)
        after = self.rejects()
        self.evidence["root cause: ipset with the 2019 entry"] = self.node.in_kube_router("ipset", "list", ipset).output
        self.evidence["root cause: REJECT counters with the 2019 entry"] = self.node.in_kube_router(
            "iptables", "-L", "KUBE-ROUTER-SERVICES", "-v", "-n", "-x"
        ).output
        right = f"{EXTERNAL_IP},132:{port}"  # by number: the guest's ipset may lack /etc/protocols
        self.node.in_kube_router("sh", "-c", f"ipset del {ipset} {wrong} && ipset add {ipset} {right}")
        fixed, _ = self.send(EXTERNAL_NS, "SCTP", EXTERNAL_IP, port, "krs-rootcause-sctp", POD_IP, attempts=2)
        steps += [
            f"as {wrong}: {'echoed' if broken.ok else 'no echo'}, REJECT counted {after - before} packet(s)",
            f"as {right}: {'echoed ' + repr(fixed.reply) if fixed.ok else 'no echo'}",
        ]
        passed = not broken.ok and after > before and fixed.ok
        self.add(Outcome(name, passed, self.expect(sctp=True), time.monotonic() - start, "; ".join(steps)))

    # -- NetworkPolicy ------------------------------------------------------------------------
    def check_network_policy(self) -> None:
        """A policy allowing SCTP 32000 to the pod: 32000 still reaches it (directly and as a
        NodePort), 32003 (open in the pod, not in the policy) is blocked. Before the policy,
        32003 must pass, so the block is the policy's doing."""
        start = time.monotonic()
        name = f"NetworkPolicy: SCTP {PORTS['SCTP']} allowed, SCTP {UNLISTED_SCTP_PORT} blocked"
        sctp, other = PORTS["SCTP"], UNLISTED_SCTP_PORT
        baseline, _ = self.send(EXTERNAL_NS, "SCTP", POD_IP, other, "krs-np-before", POD_IP, attempts=2)
        self.store.apply(m.network_policy(port=sctp, protocol="SCTP"))

        def blocked() -> bool:
            return not self.node.probe(EXTERNAL_NS, "SCTP", POD_IP, other, "krs-np-wait", wait=3).ok

        took = self.node.wait_for("the NetworkPolicy to block SCTP 32003", blocked, CHANGE_TIMEOUT, interval=1.0)
        allowed, _ = self.send(EXTERNAL_NS, "SCTP", POD_IP, sctp, "krs-np-allowed", POD_IP)
        nodeport, _ = self.send(EXTERNAL_NS, "SCTP", NODE_IP, sctp, "krs-np-nodeport", POD_IP)
        self.evidence["iptables -S (NetworkPolicy in force)"] = _policy_rules(
            self.node.in_kube_router("iptables", "-S").output
        )
        self.store.delete("NetworkPolicy", "default", "allow-sctp")
        reopened = self.node.wait_for(
            "the NetworkPolicy's removal to reopen SCTP 32003",
            lambda: self.node.probe(EXTERNAL_NS, "SCTP", POD_IP, other, "krs-np-after", wait=3).ok,
            CHANGE_TIMEOUT,
        )
        parts = [
            f"before the policy {other}: {'echoed' if baseline.ok else 'NO ECHO'}",
            f"{other} blocked after {took:.0f}s" if took >= 0 else f"{other} NOT blocked",
            f"pod:{sctp} {'echoed' if allowed.ok else 'NO ECHO'}",
            f"NodePort {sctp} {'echoed' if nodeport.ok else 'NO ECHO'}",
            f"policy removed: {other} open again" if reopened >= 0 else f"policy removed: {other} STILL blocked",
        ]
        passed = baseline.ok and took >= 0 and allowed.ok and nodeport.ok and reopened >= 0
        self.add(Outcome(name, passed, self.expect(sctp=True), time.monotonic() - start, "; ".join(parts)))

    # -- Endpoints change --------------------------------------------------------------------
    def check_endpoints_change(self) -> None:
        """The pod moves to 172.20.1.7: the Pod, the Endpoints (read up to v2.5) and the
        EndpointSlice (v2.0 and later) change as a cluster's controllers would change them."""
        start = time.monotonic()
        name = f"Endpoints change followed ({POD_IP} -> {SECOND_POD_IP})"
        self.store.apply(m.pod(SECOND_POD_NAME, pod_ip=SECOND_POD_IP))
        self.store.apply(m.endpoints(pod_ip=SECOND_POD_IP, pod_name=SECOND_POD_NAME))
        self.store.apply(m.endpoint_slice(pod_ip=SECOND_POD_IP, pod_name=SECOND_POD_NAME))
        self.store.delete("Pod", "default", m.POD_NAME)
        took = self.node.wait_for(
            "the TCP ClusterIP service to follow the new pod",
            lambda: _reals(self.node.ipvs(), "TCP", CLUSTER_IP, PORTS["TCP"]) == [SECOND_POD_IP],
            CHANGE_TIMEOUT,
        )
        table = self.node.ipvs()
        self.evidence["ipvsadm -Ln (after the Endpoints change)"] = table
        port = PORTS["SCTP"]
        stale = [a for _, _, a in ADDRESSES if _reals(table, "SCTP", a, port) != [SECOND_POD_IP]]
        cluster, _ = self.send(NODE, "SCTP", CLUSTER_IP, port, "krs-ep-cluster", SECOND_POD_IP)
        external, _ = self.send(EXTERNAL_NS, "SCTP", EXTERNAL_IP, port, "krs-ep-external", SECOND_POD_IP)
        parts = [
            f"kube-router followed in {took:.0f}s" if took >= 0 else "kube-router did NOT follow (TCP)",
            f"SCTP services not (only) on the new pod: {', '.join(stale)}" if stale else "SCTP services moved",
            f"ClusterIP SCTP: {cluster.reply or 'NO ECHO'}",
            f"ExternalIP SCTP: {external.reply or 'NO ECHO'}",
        ]
        passed = took >= 0 and not stale and cluster.ok and external.ok
        self.add(Outcome(name, passed, self.expect(sctp=True), time.monotonic() - start, "; ".join(parts)))

    # -- Service deletion ----------------------------------------------------------------------
    def check_service_deletion(self) -> None:
        start = time.monotonic()
        name = "Service deleted: no virtual services, ipset entries or VIPs left"
        self.store.delete("Service", "default", m.SERVICE_NAME)
        self.store.delete("Endpoints", "default", m.SERVICE_NAME)
        self.store.delete("EndpointSlice", "default", f"{m.SERVICE_NAME}-stand-in")
        ports = set(PORTS.values())
        took = self.node.wait_for(
            "the Service's virtual services to go",
            lambda: not _services(self.node.ipvs(), ports),
            CHANGE_TIMEOUT,
        )
        time.sleep(2)  # the firewall's ipsets are refreshed after IPVS in the same sync
        table = self.node.ipvs()
        ipsets = self.node.in_kube_router("ipset", "list").output
        dummy = self.node.sh("ip -4 -o addr show dev kube-dummy-if 2>/dev/null").output
        left = [f"IPVS {s}" for s in _services(table, ports)]
        left += [f"ipset {e}" for e in _set_entries(ipsets, ports)]
        left += [f"VIP {ip} on kube-dummy-if" for ip in (CLUSTER_IP, EXTERNAL_IP) if f" {ip}/" in dummy]
        self.evidence["ipvsadm -Ln (after the Service was deleted)"] = table
        detail = f"gone in {took:.0f}s" if took >= 0 else "virtual services NOT removed"
        if left:
            detail += "; left over: " + ", ".join(left)
        self.add(Outcome(name, took >= 0 and not left, self.expect(sctp=False), time.monotonic() - start, detail))

    # -- the log -------------------------------------------------------------------------------
    def check_log(self) -> None:
        start = time.monotonic()
        text = self.node.kube_router_logs()
        errors = [line for line in text.splitlines() if _ERROR_LINE.match(line)]
        protocol = [line for line in errors if _PROTOCOL_WORDS.search(line)]
        self.evidence["kube-router errors and warnings"] = "\n".join(errors) or "(none)"
        # How this release handled the SCTP port: unpatched ones log a protocol they do not know.
        sctp_port = f":{PORTS['SCTP']} "
        about = [line for line in text.splitlines() if sctp_port in line and "service" in line.lower()]
        self.evidence[f"kube-router log lines about port {PORTS['SCTP']} (first 12)"] = "\n".join(about[:12])
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
_SERVICE_LINE = re.compile(r"^(TCP|UDP|SCTP)\s+(\S+):(\d+)\s")
_REAL_LINE = re.compile(r"^\s+->\s+(\S+):(\d+)\s")
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


def _reals(table: str, protocol: str, address: str, port: int) -> list[str]:
    return parse_ipvs(table).get((protocol, address, port), [])


def _services(table: str, ports: Iterable[int]) -> list[str]:
    wanted = set(ports)
    return [f"{p} {a}:{n}" for (p, a, n) in parse_ipvs(table) if n in wanted]


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


def _set_entries(listing: str, ports: Iterable[int]) -> list[str]:
    wanted = {str(p) for p in ports}
    return [
        member
        for members in parse_ipsets(listing).values()
        for member in members
        if member.rsplit(":", 1)[-1] in wanted and "," in member
    ]


def _policy_rules(rules: str) -> str:
    return "\n".join(line for line in rules.splitlines() if "KUBE-NWPLCY" in line or "KUBE-POD-FW" in line)


def _describe(probe: Probe, attempts: int, path: str) -> str:
    if probe.ok:
        return f"{path}: {probe.reply!r} in {probe.ms} ms" + (f" (attempt {attempts})" if attempts > 1 else "")
    said = " ".join(probe.output.split())[:160] or "no answer"
    return f"{path}: no echo after {attempts} attempt(s) ({said})"
