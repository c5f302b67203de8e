package ipam

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func claimsN(n int) []Claim {
	space, _ := NewSubnetSpace(netip.MustParsePrefix("10.0.0.0/8"), 24)
	out := make([]Claim, n)
	for i := range out {
		out[i] = Claim{Subnet: space.Nth(i), Owner: fmt.Sprintf("node-%d", i), Epoch: uint64(i + 1), Version: 1, State: LeaseActive}
	}
	return out
}

// BenchmarkLeaseMerge5000 merges a full table of 5,000 leases received by
// push/pull into a table that already has them (the steady state).
func BenchmarkLeaseMerge5000(b *testing.B) {
	space, _ := NewSubnetSpace(netip.MustParsePrefix("10.0.0.0/8"), 24)
	tab := NewLeaseTable(space)
	claims := claimsN(5000)
	tab.Merge(claims...)
	state := EncodeClaims(claims)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := tab.MergeRemoteState(state); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPickFree5000(b *testing.B) {
	space, _ := NewSubnetSpace(netip.MustParsePrefix("10.0.0.0/8"), 24)
	tab := NewLeaseTable(space)
	tab.Merge(claimsN(5000)...)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tab.PickFree("newcomer", time.Unix(1, 0))
	}
}
