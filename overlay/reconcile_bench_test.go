package overlay

import (
	"fmt"
	"net/netip"
	"testing"
)

func syntheticPeers(n int) []Peer {
	out := make([]Peer, n)
	for i := range out {
		name := fmt.Sprintf("peer-%d", i)
		out[i] = Peer{Name: name, Underlay: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), VTEPMAC: VTEPMAC(name),
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i>>8) + 1, byte(i), 0}), 24)}
	}
	return out
}

// BenchmarkDesiredDiff5000 is a no-op reconcile of 5,000 peers against the
// in-memory kernel: the cost of Loom's own diffing, without netlink.
func BenchmarkDesiredDiff5000(b *testing.B) {
	f := newFixture(b)
	d := Desired{Subnet: netip.MustParsePrefix("10.0.0.0/24"), Peers: syntheticPeers(5000)}
	if _, err := f.dp.Apply(d); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := f.dp.Apply(d)
		if err != nil || res.Writes != 0 {
			b.Fatalf("no-op reconcile wrote %d (%v)", res.Writes, err)
		}
	}
}
