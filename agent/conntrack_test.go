package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/loomnet/loom/overlay"
)

// TestSubnetHandoverSweepsItsFlows: a subnet whose holder changed has its
// flows deleted; one that stays, or comes back to its holder after a gap,
// does not.
func TestSubnetHandoverSweepsItsFlows(t *testing.T) {
	k := overlay.NewFakeKernel()
	a := &Agent{cfg: &resolved{Config: Config{NodeName: "self"}}, holders: map[netip.Prefix]string{},
		conntrack: overlay.NewConntrackSweeper(k, nil)}
	own, s2, s3 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("10.244.3.0/24")
	peer := func(name string, subnet netip.Prefix) overlay.Peer { return overlay.Peer{Name: name, Subnet: subnet} }
	for _, step := range [][]overlay.Peer{
		{peer("b", s2), peer("c", s3)},
		{peer("b", s2)},                 // c dies: no sweep
		{peer("b", s2), peer("c", s3)},  // c is back: no sweep
		{peer("b", s2), peer("d", s3)},  // d took c's subnet
		{peer("b", own), peer("d", s3)}, // b now holds this node's old subnet...
	} {
		a.sweepHandedOver(own, step)
	}
	a.sweepHandedOver(s2, []overlay.Peer{peer("d", s3)}) // ...and this node b's
	a.conntrack.Sweep()
	got := k.Swept()
	slices.SortFunc(got, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	if want := []netip.Prefix{own, s2, s3}; !slices.Equal(got, want) {
		t.Fatalf("swept %v, want %v", got, want)
	}
}
