package netpol

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cloudnativelabs/kube-router/v2/pkg/svcip"
	"github.com/cloudnativelabs/kube-router/v2/pkg/utils"
	v1core "k8s.io/api/core/v1"
)

// sctpInsert is one rule inserted into a chain of the filter table.
type sctpInsert struct {
	chain string
	pos   int
	rule  string
}

// sctpRecordingIPTables records inserted rules and reports every chain and rule as missing; the embedded interface
// is never called.
type sctpRecordingIPTables struct {
	utils.IPTablesHandler
	inserts []sctpInsert
}

func (r *sctpRecordingIPTables) ChainExists(_, _ string) (bool, error)         { return true, nil }
func (r *sctpRecordingIPTables) Exists(_, _ string, _ ...string) (bool, error) { return false, nil }
func (r *sctpRecordingIPTables) Insert(_, chain string, pos int, rulespec ...string) error {
	r.inserts = append(r.inserts, sctpInsert{chain: chain, pos: pos, rule: strings.Join(rulespec, " ")})
	return nil
}

// inputRulePosition returns the position the rule containing all of parts was inserted at in KUBE-ROUTER-INPUT.
func (r *sctpRecordingIPTables) inputRulePosition(t *testing.T, parts ...string) int {
	t.Helper()
	for _, ins := range r.inserts {
		if ins.chain != kubeInputChainName {
			continue
		}
		found := true
		for _, part := range parts {
			if !strings.Contains(ins.rule, part) {
				found = false
				break
			}
		}
		if found {
			return ins.pos
		}
	}
	t.Errorf("no KUBE-ROUTER-INPUT rule with %q was inserted", parts)
	return -1
}

func TestSCTPNodePortWhitelistRule(t *testing.T) {
	ipRanges, err := svcip.NewValidator(svcip.Config{
		ClusterIPCIDRs:  []string{"10.96.0.0/12"},
		ExternalIPCIDRs: []string{"198.51.100.0/24"},
		EnableIPv4:      true,
	})
	if err != nil {
		t.Fatalf("svcip.NewValidator() failed: %v", err)
	}
	ipt := &sctpRecordingIPTables{}
	npc := &NetworkPolicyControllerIptables{
		NetworkPolicyControllerBase: &NetworkPolicyControllerBase{
			ipRanges:             ipRanges,
			serviceNodePortRange: "30000:32767",
		},
		iptablesCmdHandlers: map[v1core.IPFamily]utils.IPTablesHandler{v1core.IPv4Protocol: ipt},
	}
	if err := npc.ensureTopLevelChains(); err != nil {
		t.Fatalf("ensureTopLevelChains() failed: %v", err)
	}

	udp := ipt.inputRulePosition(t, "-p udp", "--dports 30000:32767", "-j RETURN")
	sctp := ipt.inputRulePosition(t, "-p sctp", "-m addrtype --dst-type LOCAL", "--dports 30000:32767", "-j RETURN")
	external := ipt.inputRulePosition(t, "-d 198.51.100.0/24", "-j RETURN")
	if sctp != udp+1 {
		t.Errorf("SCTP node port rule inserted at position %d, want %d (right after the UDP one)", sctp, udp+1)
	}
	if external != sctp+1 {
		t.Errorf("external IP range rule inserted at position %d, want %d (after the SCTP node port rule)",
			external, sctp+1)
	}
}

func TestSCTPPolicyRuleArguments(t *testing.T) {
	npc := &NetworkPolicyControllerIptables{NetworkPolicyControllerBase: &NetworkPolicyControllerBase{
		filterTableRules: map[v1core.IPFamily]*bytes.Buffer{v1core.IPv4Protocol: {}},
	}}
	if err := npc.appendRuleToPolicyChain("KUBE-NWPLCY-SCTPTEST", "sctp test", "", "", "SCTP", "3868", "",
		v1core.IPv4Protocol); err != nil {
		t.Fatalf("appendRuleToPolicyChain() failed: %v", err)
	}
	rules := npc.filterTableRules[v1core.IPv4Protocol].String()
	for _, line := range strings.Split(strings.TrimSpace(rules), "\n") {
		fields := strings.Fields(line)
		proto, dport := -1, -1
		for i, f := range fields {
			switch f {
			case "-p":
				proto = i
			case "--dport":
				dport = i
			}
		}
		// iptables loads the sctp match for --dport from "-p sctp" (any case) when -p comes first
		if proto < 0 || !strings.EqualFold(fields[proto+1], "sctp") || dport < proto || fields[dport+1] != "3868" {
			t.Errorf("policy rule %q does not match SCTP port 3868 with -p sctp ... --dport 3868", line)
		}
	}
}
