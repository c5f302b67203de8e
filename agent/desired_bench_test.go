package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/ipam"
	"github.com/loomnet/loom/overlay"
)

// fabricOf returns n live peers, each holding a subnet, and a lease table
// with their claims plus history: as many released claims of nodes long
// replaced (an autoscaled fabric after a while).
func fabricOf(b *testing.B, n int) ([]gossip.Peer, *ipam.LeaseTable, time.Time) {
	b.Helper()
	space, err := ipam.NewSubnetSpace(netip.MustParsePrefix("10.0.0.0/8"), 24)
	if err != nil {
		b.Fatal(err)
	}
	leases := ipam.NewLeaseTable(space)
	now := time.Unix(2_000_000_000, 0)
	peers := make([]gossip.Peer, n)
	var claims []ipam.Claim
	for i := range peers {
		name := fmt.Sprintf("node-%d", i)
		subnet := space.Nth(i + 1)
		peers[i] = gossip.Peer{State: gossip.PeerAlive, Since: now.Add(-time.Hour), Record: gossip.NodeRecord{
			Name: name, Underlay: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), VTEPMAC: overlay.VTEPMAC(name), Subnet: subnet}}
		claims = append(claims,
			ipam.Claim{Subnet: subnet, Owner: name, Epoch: uint64(i + 1000), Version: 1, State: ipam.LeaseActive},
			ipam.Claim{Subnet: subnet, Owner: "replaced-" + name, Epoch: uint64(i + 1), Version: 3, State: ipam.LeaseReleased})
	}
	if _, err := leases.Merge(claims...); err != nil {
		b.Fatal(err)
	}
	return peers, leases, now
}

// BenchmarkDesiredState5000 is the agent's side of every reconcile at
// 5,000 peers: membership and the lease table to the desired data plane.
func BenchmarkDesiredState5000(b *testing.B) {
	peers, leases, now := fabricOf(b, 5000)
	local := localRecord("vxlan")
	own := netip.MustParsePrefix("10.0.0.0/24")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, _, _ := desiredState(local, own, peers, leases, nil, now, 10*time.Second)
		if len(d.Peers) != len(peers) {
			b.Fatalf("%d peers programmed, want %d", len(d.Peers), len(peers))
		}
	}
}
