"""What each release is expected to do in each scenario, read from its release, its
series patches (the image's label) and its flags, before anything is sent."""

from __future__ import annotations

import pytest

from kube_router_sctp.dataplane import catalogue as c

V032_PATCHES = (
    "0001-proxy-tolerate-missing-policy-routing-tables.patch",
    "0002-proxy-go1.19-gofmt-and-vet-fixes.patch",
    "0003-proxy-create-and-recognise-sctp-ipvs-services.patch",
    "0004-firewall-sctp-ipset-entries.patch",
    "0005-netpol-sctp-policy-ports.patch",
    "0006-graceful-flush-sctp-conntrack-per-destination.patch",
    "0007-tests-sctp-unit-tests.patch",
)
V271_PATCHES = (
    "0001-proxy-create-and-recognise-sctp-ipvs-services.patch",
    "0002-firewall-sctp-ipset-entries.patch",
    "0003-netpol-sctp-node-port-rule.patch",
    "0004-graceful-flush-sctp-conntrack-per-destination.patch",
    "0005-dsr-maglev-sloppy-sctp.patch",
    "0006-tests-sctp-unit-tests.patch",
)
V271_HELP = "  --enable-ipv6\n  --loadbalancer-ip-range strings\n  --service-external-ip-range strings\n"
V290_HELP = V271_HELP + "  --strict-external-ip-validation\n"

V032 = c.Release("v0.3.2", V032_PATCHES, "  --cluster-cidr string\n  --masquerade-all\n")
V271 = c.Release("v2.7.1", V271_PATCHES, V271_HELP)
V290 = c.Release("v2.9.0", (), V290_HELP)
V271_NO_FLUSH = c.Release("v2.7.1", tuple(p for p in V271_PATCHES if "conntrack" not in p), V271_HELP)
V271_NOSCTP = c.Release("v2.7.1", (), V271_HELP)
# An image of the series' revision 1, whose flush took the whole service (its patch's name).
V271_REV1 = c.Release("v2.7.1", tuple(p.replace("-per-destination", "") for p in V271_PATCHES), V271_HELP)


def verdicts(situation: str, release: c.Release) -> dict[str, str]:
    return {k: e.verdict for k, e in c.expectations(c.BY_KEY[situation], release).items()}


def test_every_scenario_of_the_issue_is_there_in_its_order() -> None:
    assert [s.number for s in c.SITUATIONS] == list(range(1, 9))
    assert [s.key for s in c.SITUATIONS] == [
        "two-nodes",
        "local-traffic",
        "affinity",
        "loadbalancer",
        "failover",
        "multihoming",
        "ipv6",
        "dsr",
    ]
    for situation in c.SITUATIONS:
        keys = [p.key for p in situation.parts]
        assert keys and len(keys) == len(set(keys)), situation.key


def test_the_release_facts_come_from_version_patches_and_flags() -> None:
    assert V032.sctp and V032.flushes_sctp_conntrack and not V032.ipv6 and not V032.maglev
    assert V271.sctp and V271.flushes_sctp_conntrack and V271.sloppy_sctp_for_dsr and V271.ipv6
    assert not V271.strict_ip_validation and V290.strict_ip_validation
    assert V290.native and V290.sctp and not V290.flushes_sctp_conntrack and not V290.sloppy_sctp_for_dsr
    assert not V271_NOSCTP.sctp and V271_NO_FLUSH.sctp and not V271_NO_FLUSH.flushes_sctp_conntrack


def test_ipv6_is_not_applicable_to_v032_and_expected_on_v2() -> None:
    assert set(verdicts("ipv6", V032).values()) == {"n/a"}
    assert "AF_INET" in c.summary(c.BY_KEY["ipv6"], V032).reason
    assert set(verdicts("ipv6", V271).values()) == {"pass"} == set(verdicts("ipv6", V290).values())


def test_failover_turns_on_the_flush_patch() -> None:
    """The negative control of the failover: the same release without the flush."""
    with_flush, without = verdicts("failover", V271), verdicts("failover", V271_NO_FLUSH)
    assert with_flush["deleted-survivor-kept"] == "pass" and without["deleted-survivor-kept"] == "pass"
    # the wire: without the flush the old entry turned CLOSED on node B's ABORT and a new INIT re-used it
    assert with_flush["deleted-same-port-reconnect"] == "pass" == without["deleted-same-port-reconnect"]
    assert "CLOSED" in c.expectations(c.BY_KEY["failover"], V271_NO_FLUSH)["deleted-same-port-reconnect"].reason
    assert verdicts("failover", V290) == without  # upstream flushes UDP only
    # v2.x keeps serving-but-terminating endpoints; v0.3.2's Endpoints drop them
    assert with_flush["terminating-removed"] == "fail" and verdicts("failover", V032)["terminating-removed"] == "pass"
    survivor = c.expectations(c.BY_KEY["failover"], V271)["deleted-survivor-kept"]
    assert survivor.basis == "inference" and "--reply-src" in survivor.text()


def test_the_revision_1_flush_is_expected_to_kill_the_survivor() -> None:
    """Revision 1 flushed the whole service: seen on the wire, so an image of it is judged by it."""
    assert V271_REV1.flushes_sctp_conntrack and not V271_REV1.flush_keeps_other_destinations
    assert V271.flush_keeps_other_destinations and V032.flush_keeps_other_destinations
    old = c.expectations(c.BY_KEY["failover"], V271_REV1)
    assert old["deleted-survivor-kept"].verdict == "fail" and old["deleted-survivor-kept"].basis == "code"
    assert old["deleted-same-port-reconnect"].verdict == "pass"


def test_dsr_sloppy_sctp_is_the_series_claim() -> None:
    # the series' sloppy_sctp is set (seen on the wire), but SCTP DSR itself fails from v1.3.2 on:
    # the pod answers the INIT from its own address, and that INIT-ACK never leaves the node
    # (captured on v2.7.1 and v2.9.0); v0.3.2's node forwards it and the client accepts it (captured)
    assert verdicts("dsr", V271) == {"dsr-echo": "fail", "sloppy-sctp-set": "pass", "director-switch-survives": "fail"}
    assert verdicts("dsr", V290) == {"dsr-echo": "fail", "sloppy-sctp-set": "fail", "director-switch-survives": "fail"}
    assert verdicts("dsr", V032) == {"dsr-echo": "pass", "sloppy-sctp-set": "n/a", "director-switch-survives": "n/a"}
    # the pod firewall's INVALID drop came with v1.3.2 (pod.go:193), not with v1.3.1
    assert [c.Release(v).drops_invalid_state for v in ("v1.3.1", "v1.3.2", "v1.4.0")] == [False, True, True]


def test_v032_differs_where_its_code_does() -> None:
    assert verdicts("local-traffic", V032)["local-clusterip-on-b"] == "fail"
    assert verdicts("local-traffic", V271)["local-clusterip-on-b"] == "pass"
    assert verdicts("affinity", V032)["timeout-honoured"] == "fail"
    assert verdicts("affinity", V290)["timeout-honoured"] == "pass"
    # through IPVS NAT a multi-homed association dies with the path, whatever sloppy_sctp says (the wire, v2.7.1)
    assert set(verdicts("multihoming", V032).values()) == {"fail"}


def test_an_unpatched_release_fails_everything_it_could_run() -> None:
    for situation in c.SITUATIONS:
        if situation.key == "ipv6":
            continue
        assert set(verdicts(situation.key, V271_NOSCTP).values()) == {"fail"}, situation.key
    assert "no SCTP virtual services" in c.summary(c.BY_KEY["two-nodes"], V271_NOSCTP).reason


def test_summary_is_pass_only_when_every_part_must_pass() -> None:
    assert c.summary(c.BY_KEY["two-nodes"], V271).verdict == "pass"
    assert c.summary(c.BY_KEY["two-nodes"], V271).basis == "code"
    failover = c.summary(c.BY_KEY["failover"], V271)
    assert failover.verdict == "fail" and "terminating-removed" in failover.reason
    assert "deleted-survivor-kept" in c.summary(c.BY_KEY["failover"], V271_REV1).reason
    assert c.summary(c.BY_KEY["multihoming"], V271).basis == "inference"


def test_scenarios_are_selected_by_name_all_or_comma_list() -> None:
    assert c.select(None) == [] and c.select([]) == []
    assert [s.key for s in c.select(["all"])] == [s.key for s in c.SITUATIONS]
    assert [s.key for s in c.select(["failover,two-nodes", "dsr"])] == ["two-nodes", "failover", "dsr"]
    with pytest.raises(ValueError, match="unknown scenario.*bogus.*known: all, two-nodes"):
        c.select(["two-nodes,bogus"])
    # "all" means what the release can run: v0.3.2 has no IPv6
    assert "ipv6" not in [s.key for s in c.applicable(c.SITUATIONS, V032)]
    assert "ipv6" in [s.key for s in c.applicable(c.SITUATIONS, V271)]


def test_expectations_read_as_one_line() -> None:
    assert c.Expectation("pass", "").text() == "pass"
    assert c.Expectation("n/a", "why").wanted is None
    assert c.Expectation("fail", "why", "inference").text() == "fail: why (inference: the wire decides)"


def test_a_patch_counts_by_the_words_that_end_its_name() -> None:
    """The label names the files applied: a longer or reverted patch holding the words is not the patch."""
    assert c.Release("v2.7.1", ("0004-graceful-flush-sctp-conntrack-per-destination.patch",)).flushes_sctp_conntrack
    reverted = c.Release("v2.7.1", ("0009-graceful-flush-sctp-conntrack-per-destination-reverted.patch",))
    assert not reverted.flushes_sctp_conntrack and not reverted.flush_keeps_other_destinations
    short = c.Release("v2.7.1", ("0004-graceful-flush-sctp-conntrack-per-dest.patch",))
    assert not short.flushes_sctp_conntrack
    assert not c.Release("v2.7.1", ("x-create-and-recognise-sctp-ipvs-services-REVERTED",)).sctp
    assert V271.sctp and V032.sctp  # NNNN-proxy-create-and-recognise-… counts
