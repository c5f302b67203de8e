package agent

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/loomnet/loom/overlay"
)

// TestPodSubnetsWhileAdopting: after a restart, before membership has
// spoken, the subnets held at the last run stand in for peers not heard
// from yet; a peer heard from counts with the subnet it has now, this
// node with none, and a subnet a peer heard from holds now is no longer
// its last holder's.
func TestPodSubnetsWhileAdopting(t *testing.T) {
	p := netip.MustParsePrefix
	a := &Agent{cfg: &resolved{Config: Config{NodeName: "node1"}}, holders: map[netip.Prefix]string{
		p("10.244.1.0/24"): "node1", p("10.244.2.0/24"): "node2", p("10.244.3.0/24"): "node3", p("10.244.4.0/24"): "node3",
		p("10.244.6.0/24"): "node4",
	}}
	peers := []overlay.Peer{{Name: "node2", Subnet: p("10.244.5.0/24")}, {Name: "node5", Subnet: p("10.244.6.0/24")}}
	settled := a.podSubnets(peers, false)
	if want := map[string][]netip.Prefix{"node2": {p("10.244.5.0/24")}, "node5": {p("10.244.6.0/24")}}; !maps.EqualFunc(settled, want, slices.Equal) {
		t.Fatalf("settled: %v, want %v", settled, want)
	}
	adopting := a.podSubnets(peers, true)
	slices.SortFunc(adopting["node3"], netip.Prefix.Compare)
	want := map[string][]netip.Prefix{"node2": {p("10.244.5.0/24")}, "node5": {p("10.244.6.0/24")}, "node3": {p("10.244.3.0/24"), p("10.244.4.0/24")}}
	if !maps.EqualFunc(adopting, want, slices.Equal) {
		t.Fatalf("adopting: %v, want %v", adopting, want)
	}
}
