"""The scenarios' plumbing that needs no node: each node's kube-router flags per profile,
what the SCTP client's lines say (replies, silences, an association's end), and how a
scenario result reaches the verdict, the tables and PATH.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kube_router_sctp.cli import main
from kube_router_sctp.dataplane import catalogue as c
from kube_router_sctp.dataplane import situations as s
from kube_router_sctp.dataplane import twonode as t
from kube_router_sctp.verify import Run, failures, markdown_run, write_results

V271_HELP = (
    "  --cluster-cidr string\n  --enable-cni\n  --enable-overlay\n  --enable-pod-egress\n  --enable-ipv4\n"
    "  --enable-ipv6\n  --loadbalancer-ip-range strings\n  --service-cluster-ip-range strings\n"
    "  --service-external-ip-range strings\n"
)


def test_profiles_give_each_node_its_name_and_only_the_flags_its_release_has() -> None:
    cluster = t.profile_flags(V271_HELP, "cluster", "k8s03")
    assert "--hostname-override=k8s03" in cluster and "--hostname-override=k8s02" not in cluster
    assert "--masquerade-all=true" in cluster and "--run-router=false" in cluster
    assert "--service-cluster-ip-range=10.254.0.0/16" in cluster
    assert "--loadbalancer-ip-range=10.120.20.0/24" in cluster
    router = t.profile_flags(V271_HELP, "router", "k8s02")
    assert "--run-router=true" in router and "--masquerade-all=false" in router
    assert {"--enable-cni=false", "--enable-overlay=false", "--enable-pod-egress=false"} <= set(router)
    ipv6 = t.profile_flags(V271_HELP, "ipv6", "k8s02")
    assert "--service-cluster-ip-range=10.254.0.0/16,fd00:10:254::/108" in ipv6 and "--enable-ipv6=true" in ipv6
    assert "--service-external-ip-range=10.120.20.0/24,fd00:120:20::/64" in ipv6
    old = t.profile_flags("  --cluster-cidr string\n", "router", "k8s02")
    assert not any(f.startswith(("--enable-", "--service-", "--loadbalancer-")) for f in old)
    assert "--cluster-cidr=172.20.0.0/16" in old


def test_the_two_node_network_script_gets_every_value_it_names() -> None:
    """guestscripts.render refuses a placeholder without a value and a value without a
    placeholder: the script and the topology agree."""
    from kube_router_sctp import guestscripts

    script = guestscripts.render("scenario-net.sh", **t.network_values(4242, "10.0.2.2"))
    assert "NODE_B_PID=4242" in script and "API_HOST=10.0.2.2" in script
    assert "SERVICE_RANGES='10.254.0.0/16 fd00:10:254::/108'" in script
    assert "@" not in "".join(line for line in script.splitlines() if line.startswith(("NODE_", "API_")))


TALK = "\n".join(
    [
        '{"t": 100.0, "event": "up", "ms": 3, "local": ["10.101.50.85:40001"], "peers": ["10.254.0.9:5000"]}',
        '{"t": 100.2, "seq": 1, "rtt_ms": 1.5, "reply": "x-1 pod=172.20.1.20 port=5000 from=10.101.50.118 peers=a,b"}',
        '{"t": 100.4, "seq": 2, "rtt_ms": 1.1, "reply": "x-2 pod=172.20.1.20 port=5000 from=10.101.50.118 peers=a,b"}',
        '{"t": 104.9, "seq": 3, "rtt_ms": 4000.0, "reply": "x-3 pod=172.20.1.20 port=5000 from=x peers=a"}',
        '{"t": 105.0, "event": "ended", "seq": 4, "error": "Connection reset by peer"}',
        "python3: a line that is no JSON",
        "KRS-TALK status=1",
    ]
)


def test_the_clients_lines_tell_replies_silences_and_the_end() -> None:
    talk = s.Talk.parse(TALK)
    assert talk.up and talk.status == 1 and len(talk.replies) == 3
    assert talk.pod == "172.20.1.20" and talk.fields()["from"] == "10.101.50.118"
    assert talk.ended == {"t": 105.0, "event": "ended", "seq": 4, "error": "Connection reset by peer"}
    assert round(talk.gap_after(100.3), 1) == 4.5  # 100.4 -> 104.9
    assert round(talk.first_reply_after(100.3), 1) == 0.1
    assert talk.first_reply_after(106.0) == -1.0
    assert talk.summary() == "3 replies, ended at seq 4: Connection reset by peer"
    silent = s.Talk.parse('{"t": 10.0, "event": "up"}\n{"t": 30.0, "event": "done", "messages": 0}')
    assert silent.gap_after(12.0) == 18.0 and silent.ended is None
    assert silent.gap_after(12.0, now=99.0) == 18.0  # it finished: the time of the read does not count


def test_a_client_stalled_without_a_word_is_silent_until_the_log_is_read() -> None:
    """A survivor stuck in a receive (or killed) prints nothing more: its silence runs to
    the moment its log was read, not to its last reply, or it would pass as kept."""
    stalled = s.Talk.parse(
        '{"t": 10.0, "event": "up"}\n{"t": 10.2, "seq": 1, "rtt_ms": 1.0, "reply": "x pod=p"}\n'
        '{"t": 12.0, "seq": 2, "rtt_ms": 1.0, "reply": "x pod=p"}'
    )
    assert not stalled.finished and stalled.ended is None
    assert stalled.gap_after(11.0) == pytest.approx(1.0)
    assert stalled.gap_after(11.0, now=20.0) == pytest.approx(8.0)
    assert s.ipvs_host("fd00:10:254::5") == "[fd00:10:254::5]" and s.ipvs_host("10.0.0.1") == "10.0.0.1"


def _result(key: str, release: c.Release, passed: dict[str, bool | None]) -> s.SituationResult:
    situation = c.BY_KEY[key]
    found = c.expectations(situation, release)
    parts = [
        s.PartResult(key, p.key, p.question, found[p.key], passed.get(p.key), 1.0, "seen", {"failover": 2.5})
        for p in situation.parts
    ]
    return s.SituationResult(situation, c.summary(situation, release), parts, seconds=30.0)


V271 = c.Release("v2.7.1", ("0001-proxy-create-and-recognise-sctp-ipvs-services.patch",), V271_HELP)
V032 = c.Release("v0.3.2", ("0003-proxy-create-and-recognise-sctp-ipvs-services.patch",), "")


def test_a_part_is_met_only_by_its_expected_verdict_and_not_run_is_never_met() -> None:
    two = _result("two-nodes", V271, {"nodeport-via-b": True, "externalip-via-b": True, "clusterip-from-b": True})
    assert two.met and two.result == "pass"
    two.parts[1].passed = False
    assert not two.met and two.result == "fail"
    unrun = _result("two-nodes", V271, {})
    assert not unrun.met and unrun.result == "fail"
    ipv6 = _result("ipv6", V032, {})
    assert ipv6.met and ipv6.result == "n/a" and all(p.result == "n/a" for p in ipv6.parts)


def test_a_run_with_scenarios_reports_them_in_its_verdict_tables_and_json(tmp_path: Path) -> None:
    run = Run("candidate", "img", kube_router_version="v2.7.1")
    run.outcomes = []
    run.scenarios = ["two-nodes", "multihoming"]
    good = {"nodeport-via-b": True, "externalip-via-b": True, "clusterip-from-b": True}
    run.situations = [_result("two-nodes", V271, good)]
    problems = failures([run])
    assert "candidate img: scenarios not run: multihoming" in problems
    run.situations.append(_result("multihoming", V271, {"clusterip-sloppy-off": True, "clusterip-sloppy-on": True}))
    problems = failures([run])
    assert "candidate img: scenario multihoming/clusterip-sloppy-off: pass, expected fail" in problems
    assert "candidate img: scenario multihoming/externalip-sloppy-on: not run, expected fail" in problems
    text = markdown_run(run)
    assert "| 1. Two nodes: traffic entering node B reaches a pod on node A and back | pass | pass | 30 s |" in text
    assert "| multihoming / clusterip-sloppy-off | **PASS** | fail: IPVS creates a connection" in text
    assert "failover 2.5 s" in text
    run.situations[0].evidence["node-b: before"] = "## ipvsadm -Ln\nSCTP 10.101.50.118:30500 rr"
    md, js = write_results(tmp_path / "v2.7.1", [run])
    assert "### Evidence: scenario two-nodes" in md.read_text()
    record = json.loads(js.read_text())
    assert record["met"] is False
    (two, multi) = record["runs"][0]["scenarios"]
    assert two["result"] == "pass" and two["parts"][0]["measures"] == {"failover": 2.5}
    assert multi["parts"][0]["expected"] == "fail" and multi["parts"][0]["basis"] == "inference"


def test_an_unknown_scenario_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(main, ["verify", "krs-test-absent:none", "--scenarios", "two-nodes,bogus"])
    assert result.exit_code == 2, result.output
    assert "unknown scenario(s) bogus" in result.stderr and "known: all, two-nodes" in result.stderr


def test_node_bs_own_xtables_lock_replaces_the_default_mount() -> None:
    from kube_router_sctp.dataplane.node import kube_router_mounts

    assert kube_router_mounts({}) == {"/lib/modules": "/lib/modules:ro", "/run/xtables.lock": "/run/xtables.lock"}
    own = kube_router_mounts({"/run/krs/node-b.xtables.lock": "/run/xtables.lock", "/var/run/docker.sock": "/d"})
    targets = [t.split(":", 1)[0] for t in own.values()]
    assert sorted(targets) == sorted(set(targets))  # Docker refuses two mounts at one path
    assert own["/run/krs/node-b.xtables.lock"] == "/run/xtables.lock" and "/run/xtables.lock" not in own


def test_the_invalid_state_rules_are_read_with_their_chain_and_counters() -> None:
    header = "    pkts      bytes target     prot opt in     out     source               destination"
    drop = (
        "  7  924 DROP  all  --  *  *  0.0.0.0/0  0.0.0.0/0  /* rule to drop invalid state for pod */ ctstate INVALID"
    )
    accept = "      40     5120 ACCEPT  all  --  *  *  0.0.0.0/0  0.0.0.0/0  ctstate RELATED,ESTABLISHED"
    chains = ["Chain INPUT (policy ACCEPT 0 packets, 0 bytes)", header, "Chain KUBE-NWPLCY-COMMON (2 references)"]
    listing = "\n".join([*chains, header, drop, accept])
    assert s.invalid_state_rules(listing) == (
        "KUBE-NWPLCY-COMMON: 7 924 DROP all -- * * 0.0.0.0/0 0.0.0.0/0 /* rule to drop invalid state for pod */ "
        "ctstate INVALID"
    )
    assert s.invalid_state_rules(listing.split("Chain KUBE")[0]) == "(no rule matches conntrack's INVALID state)"
