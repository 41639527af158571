package proxy

import (
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cloudnativelabs/kube-router/v2/pkg/utils"
	"github.com/moby/ipvs"
	v1 "k8s.io/api/core/v1"
)

// These tests only use names that upstream kube-router has had since v2.0, so that they also run unchanged against
// releases with native SCTP support.

func TestSCTPServiceProtocolToIPVS(t *testing.T) {
	cases := map[string]uint16{
		"tcp":  syscall.IPPROTO_TCP,
		"udp":  syscall.IPPROTO_UDP,
		"sctp": 132,
	}
	for name, want := range cases {
		if got := convertSvcProtoToSysCallProto(name); got != want {
			t.Errorf("convertSvcProtoToSysCallProto(%q) = %d, want %d", name, got, want)
		}
	}
	if got := convertSvcProtoToSysCallProto("icmp"); got != syscall.IPPROTO_NONE {
		t.Errorf("convertSvcProtoToSysCallProto(\"icmp\") = %d, want IPPROTO_NONE", got)
	}
}

func TestSCTPIPVSProtocolToService(t *testing.T) {
	cases := map[uint16]string{
		syscall.IPPROTO_TCP: "tcp",
		syscall.IPPROTO_UDP: "udp",
		132:                 "sctp",
	}
	for proto, want := range cases {
		if got := convertSysCallProtoToSvcProto(proto); got != want {
			t.Errorf("convertSysCallProtoToSvcProto(%d) = %q, want %q", proto, got, want)
		}
		if back := convertSvcProtoToSysCallProto(convertSysCallProtoToSvcProto(proto)); back != proto {
			t.Errorf("protocol %d does not survive a round trip, got %d", proto, back)
		}
	}
}

func TestSCTPIPVSServiceString(t *testing.T) {
	svc := &ipvs.Service{Address: net.ParseIP("10.96.0.20"), Protocol: 132, Port: 3868}
	got := strings.ToLower(ipvsServiceString(svc))
	for _, want := range []string{"sctp", "10.96.0.20", "3868"} {
		if !strings.Contains(got, want) {
			t.Errorf("ipvsServiceString() = %q, want it to contain %q", got, want)
		}
	}
}

// sctpTestIPVS returns a mock that reports the given IPVS services and counts deletions.
func sctpTestIPVS(services []*ipvs.Service, deleted *[]*ipvs.Service) *LinuxNetworkingMock {
	return &LinuxNetworkingMock{
		ipvsGetServicesFunc: func() ([]*ipvs.Service, error) { return services, nil },
		ipvsDelServiceFunc: func(svc *ipvs.Service) error {
			*deleted = append(*deleted, svc)
			return nil
		},
		ipvsGetDestinationsFunc: func(_ *ipvs.Service) ([]*ipvs.Destination, error) { return nil, nil },
	}
}

func TestSCTPStaleServiceCleanupKeepsActiveService(t *testing.T) {
	svc := &ipvs.Service{Address: net.ParseIP("10.96.0.20"), Protocol: 132, Port: 3868}
	var deleted []*ipvs.Service
	nsc := &NetworkServicesController{ln: sctpTestIPVS([]*ipvs.Service{svc}, &deleted), fwMarkMap: map[uint32]string{}}

	active := map[string][]string{generateIPPortID("10.96.0.20", "sctp", "3868"): {}}
	if err := nsc.cleanupStaleIPVSConfig(active); err != nil {
		t.Fatalf("cleanupStaleIPVSConfig() failed: %v", err)
	}
	if len(deleted) != 0 {
		t.Errorf("an SCTP IPVS service whose Service still exists was deleted")
	}
}

func TestSCTPStaleServiceCleanupRemovesGoneService(t *testing.T) {
	svc := &ipvs.Service{Address: net.ParseIP("10.96.0.20"), Protocol: 132, Port: 3868}
	var deleted []*ipvs.Service
	nsc := &NetworkServicesController{ln: sctpTestIPVS([]*ipvs.Service{svc}, &deleted), fwMarkMap: map[uint32]string{}}

	if err := nsc.cleanupStaleIPVSConfig(map[string][]string{}); err != nil {
		t.Fatalf("cleanupStaleIPVSConfig() failed: %v", err)
	}
	if len(deleted) != 1 {
		t.Errorf("an SCTP IPVS service without a Service was not deleted (%d deletions)", len(deleted))
	}
}

// sctpRecordingIPSet keeps the entries handed to RefreshSet; the embedded interface is never called.
type sctpRecordingIPSet struct {
	utils.IPSetHandler
	entries map[string][][]string
}

func (s *sctpRecordingIPSet) RefreshSet(setName string, entries [][]string, _ string) {
	s.entries[setName] = entries
}
func (s *sctpRecordingIPSet) Restore() error               { return nil }
func (s *sctpRecordingIPSet) RestoreSets(_ []string) error { return nil }

// sctpTestNode is a dual-stack node; the embedded interface is never called.
type sctpTestNode struct {
	utils.NodeAware
}

func (sctpTestNode) IsIPv4Capable() bool        { return true }
func (sctpTestNode) IsIPv6Capable() bool        { return true }
func (sctpTestNode) GetPrimaryNodeIP() net.IP   { return net.ParseIP("10.0.0.1") }
func (sctpTestNode) GetNodeIPv4Addrs() []net.IP { return []net.IP{net.ParseIP("10.0.0.1")} }

func TestSCTPServiceFirewallIPSetEntries(t *testing.T) {
	services := []*ipvs.Service{
		{Address: net.ParseIP("10.96.0.20"), Protocol: 132, Port: 3868},
		{Address: net.ParseIP("10.96.0.20"), Protocol: syscall.IPPROTO_TCP, Port: 80},
		{Address: net.ParseIP("fd00::20"), Protocol: 132, Port: 3868},
	}
	var deleted []*ipvs.Service
	v4 := &sctpRecordingIPSet{entries: map[string][][]string{}}
	v6 := &sctpRecordingIPSet{entries: map[string][][]string{}}
	nsc := &NetworkServicesController{
		krNode:        sctpTestNode{},
		ln:            sctpTestIPVS(services, &deleted),
		ipsetMutex:    &sync.Mutex{},
		fwMarkMap:     map[uint32]string{},
		ipSetHandlers: map[v1.IPFamily]utils.IPSetHandler{v1.IPv4Protocol: v4, v1.IPv6Protocol: v6},
	}
	nsc.setServiceMap(serviceInfoMap{
		"default/diameter:sctp": &serviceInfo{clusterIPs: []string{"10.96.0.20", "fd00::20"}, port: 3868,
			protocol: "sctp"},
		"default/diameter:http": &serviceInfo{clusterIPs: []string{"10.96.0.20"}, port: 80, protocol: "tcp"},
	})

	if err := nsc.syncIpvsFirewall(); err != nil {
		t.Fatalf("syncIpvsFirewall() failed: %v", err)
	}
	checkSCTPIPSetEntries(t, v4.entries[serviceIPPortsSetName], "10.96.0.20,132:3868", "10.96.0.20,tcp:80")
	checkSCTPIPSetEntries(t, v6.entries[serviceIPPortsSetName], "fd00::20,132:3868")
}

func checkSCTPIPSetEntries(t *testing.T, entries [][]string, want ...string) {
	t.Helper()
	got := make(map[string]bool)
	for _, entry := range entries {
		if len(entry) > 0 {
			got[entry[0]] = true
			if strings.Contains(entry[0], "sctp") {
				t.Errorf("ipset entry %q names sctp, which musl's ipset cannot resolve", entry[0])
			}
		}
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("service firewall ipset lacks entry %q, has %v", w, entries)
		}
	}
}
