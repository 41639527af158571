"""The SCTP situations operators hit (issue 15), and what each release is expected to do
in each, before anything is sent.

A situation ("scenario" on the command line: ``verify --scenarios``) is a list of parts;
each part is one question the wire answers (an association echoes, a pod sees the
client's address, an association survives a failover). Each part's expected verdict for
an image comes from that image's release, the series patches it carries (its labels) and
the flags its ``kube-router --help`` lists, never from a run:

- ``pass`` or ``fail``, with the reason and what it rests on: ``code`` (read in the
  release's source or the series' patch, cited) or ``inference`` (reasoned from the code
  and the kernel, not yet seen on a wire: a run that disagrees fails, and the table is
  corrected with the run's evidence, never the other way round);
- ``n/a``, with the reason the release has no such feature; the part is not run.

The sources are cited as ``TAG:path:line`` of upstream kube-router, or the series' patch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..validate import semver_of

Verdict = Literal["pass", "fail", "n/a"]
Basis = Literal["code", "inference"]

# Series patches the expectations turn on, by the words of their file names (the image's
# patches label lists the files applied; the numbers differ between lines).
PROTOCOL_PATCH = "create-and-recognise-sctp-ipvs-services"
FLUSH_PATCH = "graceful-flush-sctp-conntrack"
# Revision 2 of every series: the flush deletes only the gone destination's entries.
FLUSH_PER_DESTINATION_PATCH = "graceful-flush-sctp-conntrack-per-destination"
SLOPPY_DSR_PATCH = "dsr-maglev-sloppy-sctp"
NATIVE_SINCE = (2, 8, 0)
# The pod firewall drops conntrack's INVALID state from this release on (v1.3.2 pod.go:193).
INVALID_DROP_SINCE = (1, 3, 2)
_PATCH_NAME = re.compile(r"\d{4}-([a-z0-9.-]+)\.patch")


@dataclass(frozen=True)
class Release:
    """What the expectations read about one image: its kube-router release, the series
    patches applied (empty for native releases and for negative controls) and the flags
    its ``--help`` lists."""

    version: str
    patches: tuple[str, ...] = ()
    help_text: str = ""

    @property
    def _semver(self) -> tuple[int, int, int]:
        v = semver_of(self.version)
        return (v.major, v.minor, v.patch)

    @property
    def native(self) -> bool:
        return self._semver >= NATIVE_SINCE

    def has(self, patch_words: str) -> bool:
        """A patch ``NNNN-[area-]WORDS.patch`` was applied: the words end its name, whole,
        so neither ``…-WORDS-reverted`` nor a longer patch that contains them counts."""
        for name in self.patches:
            match = _PATCH_NAME.fullmatch(name)
            if match and (match[1] == patch_words or match[1].endswith(f"-{patch_words}")):
                return True
        return False

    @property
    def sctp(self) -> bool:
        """kube-router creates SCTP virtual services: natively, or through the series."""
        return self.native or self.has(PROTOCOL_PATCH)

    @property
    def flushes_sctp_conntrack(self) -> bool:
        """Only the series flushes SCTP conntrack; upstream flushes UDP only (v2.9.0
        network_service_graceful.go:53)."""
        return self.has(FLUSH_PATCH) or self.flush_keeps_other_destinations

    @property
    def flush_keeps_other_destinations(self) -> bool:
        """The series' flush since revision 2: only the entries NATed to the destination
        that went (--reply-src); revision 1 flushed the whole service address and port."""
        return self.has(FLUSH_PER_DESTINATION_PATCH)

    @property
    def sloppy_sctp_for_dsr(self) -> bool:
        return self.has(SLOPPY_DSR_PATCH)

    @property
    def drops_invalid_state(self) -> bool:
        """The pod firewall drops packets in conntrack's INVALID state (v1.3.2+)."""
        return self._semver >= INVALID_DROP_SINCE

    @property
    def v2(self) -> bool:
        return self._semver >= (2, 0, 0)

    @property
    def ipv6(self) -> bool:
        """--enable-ipv6 (v2.x); v0.3.2 hard-codes AF_INET."""
        return "--enable-ipv6" in self.help_text if self.help_text else self.v2

    @property
    def maglev(self) -> bool:
        """The ``mh`` scheduler annotation: v2.x; v0.3.2 knows rr, lc, dh and sh only."""
        return self.v2

    @property
    def strict_ip_validation(self) -> bool:
        """v2.8.0+: external and LB IPs outside the configured ranges are dropped."""
        if self.help_text:
            return "--strict-external-ip-validation" in self.help_text
        return self.native


@dataclass(frozen=True)
class Expectation:
    verdict: Verdict
    reason: str
    basis: Basis = "code"

    @property
    def wanted(self) -> bool | None:
        """What a part's ``passed`` must be; None for n/a (the part is not run)."""
        return None if self.verdict == "n/a" else self.verdict == "pass"

    def text(self) -> str:
        if self.verdict == "pass" and not self.reason:
            return "pass"
        mark = "" if self.basis == "code" else " (inference: the wire decides)"
        return f"{self.verdict}: {self.reason}{mark}"


@dataclass(frozen=True)
class Part:
    key: str
    question: str


@dataclass(frozen=True)
class Situation:
    key: str  # the name --scenarios takes
    number: int  # the numbering
    title: str
    parts: tuple[Part, ...]
    needs_two_nodes: bool = False


SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "two-nodes",
        1,
        "Two nodes: traffic entering node B reaches a pod on node A and back",
        (
            Part("nodeport-via-b", "an association to node B's NodePort echoes from the pod on node A"),
            Part("externalip-via-b", "an association to the ExternalIP, routed to node B, echoes from node A's pod"),
            Part("clusterip-from-b", "an association from node B to the ClusterIP echoes from node A's pod"),
        ),
        needs_two_nodes=True,
    ),
    Situation(
        "local-traffic",
        2,
        "externalTrafficPolicy: Local (and Cluster for comparison)",
        (
            Part("local-on-endpoint-node", "Local: node A (local endpoint) answers on its NodePort"),
            Part("client-address-kept", "Local: the pod sees the external client's own address"),
            Part(
                "local-not-forwarded", "Local: node B (no local endpoint) forwards nothing and has no virtual service"
            ),
            Part("cluster-via-b", "Cluster: node B forwards to node A's pod, which sees node B's address"),
            Part("local-clusterip-on-b", "Local: the ClusterIP still works from node B (ETP is for external traffic)"),
        ),
        needs_two_nodes=True,
    ),
    Situation(
        "affinity",
        3,
        "sessionAffinity: ClientIP with two endpoints",
        (
            Part("clientip-sticks", "ClientIP: ten new associations from one client all land on one pod"),
            Part("none-spreads", "None: ten new associations reach both pods"),
            Part("timeout-honoured", "ClientIP: IPVS persistence uses the Service's timeoutSeconds (600)"),
        ),
    ),
    Situation(
        "loadbalancer",
        4,
        "LoadBalancer: served on status.loadBalancer.ingress",
        (Part("served-on-ingress-ip", "an association to the ingress IP echoes from the pod"),),
    ),
    Situation(
        "failover",
        5,
        "Failover of an established association when its endpoint goes away",
        (
            Part("deleted-new-association", "pod A deleted: new associations reach pod B, never A (time measured)"),
            Part("deleted-survivor-kept", "pod A deleted: an association already on pod B keeps exchanging messages"),
            Part("deleted-same-port-reconnect", "pod A deleted: a client re-connecting from its fixed port reaches B"),
            Part("not-ready-removed", "pod A not ready (still running): new associations reach pod B"),
            Part("terminating-removed", "pod A terminating (still ready): new associations reach pod B"),
        ),
        needs_two_nodes=True,
    ),
    Situation(
        "multihoming",
        6,
        "Multi-homing: a client with two addresses; the primary path is cut",
        (
            Part("clusterip-sloppy-off", "ClusterIP, sloppy_sctp=0: the association survives the cut"),
            Part("clusterip-sloppy-on", "ClusterIP, sloppy_sctp=1: the association survives the cut"),
            Part("externalip-sloppy-off", "ExternalIP, sloppy_sctp=0: the association survives the cut"),
            Part("externalip-sloppy-on", "ExternalIP, sloppy_sctp=1: the association survives the cut"),
        ),
    ),
    Situation(
        "ipv6",
        7,
        "IPv6 and dual-stack",
        (
            Part("clusterip-v6", "an association to the IPv6 ClusterIP echoes"),
            Part("nodeport-v6", "an association to the node's IPv6 address at the NodePort echoes"),
            Part("externalip-v6", "an association to the IPv6 ExternalIP echoes"),
            Part("dual-stack", "a dual-stack Service echoes on its IPv4 and its IPv6 ClusterIP"),
        ),
    ),
    Situation(
        "dsr",
        8,
        "DSR (kube-router.io/service.dsr=tunnel) with an SCTP port",
        (
            Part(
                "dsr-echo",
                "an association to the DSR ExternalIP comes up and echoes, the pod answering the client directly",
            ),
            Part("sloppy-sctp-set", "with the mh scheduler, net.ipv4.vs.sloppy_sctp is 1 on the directors"),
            Part("director-switch-survives", "an association set up through node A's director survives a move to B's"),
        ),
        needs_two_nodes=True,
    ),
)
BY_KEY = {s.key: s for s in SITUATIONS}

# Reasons, each said once.
_NO_SCTP = "kube-router creates no SCTP virtual services (no series protocol patch: an unpatched release)"
_FLUSH_COLLATERAL = (
    "the series' revision-1 flush deletes every conntrack entry of the service address and port "
    "(conntrack -D --orig-dst VIP -p sctp --dport PORT), the surviving pod's too; a DATA chunk creates no "
    "new entry (nf_conntrack_proto_sctp sctp_new), so the survivor's chunks are INVALID and miss the SNAT "
    "(seen on v2.7.1 revision 1)"
)
_FLUSH_PER_DESTINATION = (
    "the series flushes only the entries NATed to the gone destination (--reply-src ENDPOINT --reply-port-src "
    "PORT), so the survivor's entry and its SNAT binding stay"
)
_REUSED_CLOSED_ENTRY = (
    "without a flush the old association's conntrack entry stays, but node B's own stack answers the client's "
    "next chunk with ABORT (its IPVS connection went with the destination), the entry turns CLOSED, and "
    "conntrack takes a new INIT on a CLOSED entry as a new association, which IPVS schedules to pod B "
    "(seen on v2.7.1 without the flush patch, 2026-11-30: 2.9 s)"
)
_TERMINATING_KEPT = (
    "v2.x keeps serving-but-terminating endpoints as full-weight destinations "
    "(buildEndpointSliceInfo keeps serving || ready; v2.7.1:1030, v2.9.0:1050)"
)
_NO_SLOPPY = (
    "IPVS creates a connection only for an INIT unless sloppy_sctp=1 (ip_vs_proto_sctp.c sctp_conn_schedule); "
    "nothing on the path rewrites the INIT's address parameters, so chunks from the client's second address "
    "find no IPVS connection and reach the node's own SCTP stack, which answers ABORT (seen on v2.7.1)"
)
_SLOPPY = (
    "sloppy_sctp=1 lets the client's chunks from its second address make an IPVS connection, but "
    "not the pod's chunks towards that address: the pod heartbeats the second address from its own "
    "address (captured on v2.7.1, 2026-11-30: HEARTBEAT 172.20.1.22->10.101.51.85, never NATed to the "
    "VIP, since the connection IPVS scheduled is keyed by the first address), the client knows no such "
    "peer and answers ABORT, and after the cut nothing the pod sends reaches the client as the VIP"
)


def expectations(situation: Situation, release: Release) -> dict[str, Expectation]:
    """Every part of ``situation`` for ``release``."""
    if situation.key == "ipv6" and not release.ipv6:
        why = "IPv4 only: AddressFamily AF_INET is hard-coded (v0.3.2:1030, :1912, :2003), no --enable-ipv6"
        return {p.key: Expectation("n/a", why) for p in situation.parts}
    if not release.sctp:
        return {p.key: Expectation("fail", _NO_SCTP) for p in situation.parts}
    return {p.key: _expect(situation.key, p.key, release) for p in situation.parts}


def _expect(situation: str, part: str, r: Release) -> Expectation:
    if situation == "local-traffic" and part == "local-clusterip-on-b" and not r.v2:
        return Expectation(
            "fail",
            "v0.3.2 skips the whole service, ClusterIP included, on a node without a local endpoint "
            "(network_services_controller.go:886-889, hasActiveEndpoints :821)",
        )
    if situation == "affinity" and part == "timeout-honoured" and not r.v2:
        return Expectation(
            "fail", "v0.3.2 hard-codes the persistence timeout to 10800 s (ipvsSetPersistence :1808-1819, 180*60)"
        )
    if situation == "failover":
        return _failover(part, r)
    if situation == "multihoming":
        if part.endswith("sloppy-off"):
            return Expectation("fail", _NO_SLOPPY, "inference")
        return Expectation("fail", _SLOPPY, "inference")
    if situation == "ipv6":
        return Expectation("pass", "--enable-ipv6 with a dual-stack --service-cluster-ip-range", "inference")
    if situation == "dsr":
        return _dsr(part, r)
    return Expectation("pass", "")


def _failover(part: str, r: Release) -> Expectation:
    if part == "deleted-survivor-kept":
        if r.flush_keeps_other_destinations:
            return Expectation("pass", _FLUSH_PER_DESTINATION, "inference")
        if r.flushes_sctp_conntrack:
            return Expectation("fail", _FLUSH_COLLATERAL)
        return Expectation("pass", "no SCTP conntrack flush: the survivor's entries stay", "code")
    if part == "deleted-same-port-reconnect":
        if r.flushes_sctp_conntrack:
            return Expectation("pass", "the series flushes the gone destination's SCTP conntrack entries")
        return Expectation("pass", _REUSED_CLOSED_ENTRY)
    if part == "terminating-removed" and r.v2:
        return Expectation("fail", _TERMINATING_KEPT)
    if part == "terminating-removed":
        return Expectation(
            "pass", "v0.3.2 reads v1 Endpoints, from which the controller drops terminating pods (:1487-1505)"
        )
    return Expectation("pass", "")


# The pod answers an INIT that came through the tunnel from its own address (SCTP picks the
# INIT-ACK's source by route), but lists the VIP among its addresses in that INIT-ACK, and
# the client's Linux SCTP finds its association by those addresses: what decides is
# whether the node forwards a reply that matches no conntrack entry.
_DSR_FORWARDED = (
    "the pod answers the INIT from its own address, not the VIP, and the client accepts that "
    "INIT-ACK by the VIP it lists among its addresses; v0.3.2's node forwards it, having no rule "
    "that drops conntrack's INVALID state (captured on v0.3.2, 2026-11-30, on 6.1 and 6.12: INIT "
    "to 10.120.20.8, INIT-ACK from 172.20.1.23 forwarded, COOKIE-ECHO to the VIP)"
)
_DSR_DROPPED = (
    "the pod answers the INIT from its own address, not the VIP; that INIT-ACK matches no "
    "conntrack entry, and the pod firewall's rule dropping conntrack's INVALID state (since "
    "v1.3.2; v2.9.0 network_policy_controller.go:609) drops it on node A (captured on v2.7.1, "
    "2026-11-30: the rule counted 9 packets of 340 bytes, one per INIT-ACK, during the "
    "association's attempt; the client re-sent its INIT)"
)


def _dsr(part: str, r: Release) -> Expectation:
    if part == "dsr-echo":
        if r.drops_invalid_state:
            return Expectation("fail", _DSR_DROPPED)
        return Expectation("pass", _DSR_FORWARDED, "inference")
    if not r.maglev:
        return Expectation("n/a", "v0.3.2 has no mh (Maglev) scheduler annotation (only rr, lc, dh, sh; :1411-1420)")
    if part == "sloppy-sctp-set":
        if r.sloppy_sctp_for_dsr:
            return Expectation("pass", "the series sets sloppy_sctp=1 for SCTP DSR services with mh (patch 0005)")
        return Expectation("fail", "upstream sets only sloppy_tcp (setupSloppyTCP, v2.9.0:407)")
    return Expectation("fail", "no DSR association comes up to move (dsr-echo)", "inference")


def select(names: Sequence[str] | None) -> list[Situation]:
    """The situations ``--scenarios`` names (comma-separated entries allowed, ``all``),
    in the issue's order; an unknown name is a ValueError naming the known ones."""
    if not names:
        return []
    wanted: list[str] = []
    for entry in names:
        wanted += [n.strip() for n in entry.split(",") if n.strip()]
    if "all" in wanted:
        return list(SITUATIONS)
    unknown = [n for n in wanted if n not in BY_KEY]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: all, {', '.join(BY_KEY)}")
    return [s for s in SITUATIONS if s.key in wanted]


def applicable(situations: Sequence[Situation], release: Release) -> list[Situation]:
    """The situations with at least one part the release can run (``all`` means these)."""
    return [s for s in situations if any(e.verdict != "n/a" for e in expectations(s, release).values())]


def summary(situation: Situation, release: Release) -> Expectation:
    """The situation's expected verdict as one: n/a when every part is, pass when every
    part that runs must pass, else fail with the failing parts' reasons."""
    found = expectations(situation, release)
    if all(e.verdict == "n/a" for e in found.values()):
        return next(iter(found.values()))
    failing = {k: e for k, e in found.items() if e.verdict == "fail"}
    if not failing:
        inferred = any(e.basis == "inference" for e in found.values() if e.verdict == "pass")
        return Expectation("pass", "", "inference" if inferred else "code")
    basis: Basis = "inference" if any(e.basis == "inference" for e in failing.values()) else "code"
    reasons = "; ".join(f"{k}: {e.reason}" for k, e in failing.items())
    return Expectation("fail", reasons, basis)
