package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/loomnet/loom/ipam"
	"go.uber.org/zap"
)

// TestSavedClaimsRestoreWhileYoung: the lease table saved at the last run
// is restored when younger than --lease-ttl, and ignored when older: peers
// may have forgotten the newer versions of its claims by then.
func TestSavedClaimsRestoreWhileYoung(t *testing.T) {
	const ttl = time.Hour
	node2 := ipam.Claim{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Owner: "node2", Epoch: 2, Version: 1, State: ipam.LeaseActive}
	for _, tc := range []struct {
		name    string
		savedAt time.Time
		want    bool
	}{
		{"saved a minute ago", time.Now().Add(-time.Minute), true},
		{"saved two lease TTLs ago", time.Now().Add(-2 * ttl), false},
		{"saved in the future (a clock stepped back)", time.Now().Add(2 * ttl), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ipam.OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := st.SaveClaims(ipam.SavedClaims{At: tc.savedAt, Claims: []ipam.Claim{node2}}); err != nil {
				t.Fatal(err)
			}
			space, _ := ipam.NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
			a := &Agent{cfg: &resolved{Config: Config{NodeName: "node1", LeaseTTL: ttl}}, log: zap.NewNop(),
				store: st, leases: ipam.NewLeaseTable(space)}
			a.restoreClaims()
			_, held := a.leases.Holder(node2.Subnet, time.Now())
			if held != tc.want || a.restoredOwners["node2"] != tc.want {
				t.Fatalf("node2's subnet held: %v, node2 to reserve if unheard: %v; want %v", held, a.restoredOwners["node2"], tc.want)
			}
		})
	}
}
