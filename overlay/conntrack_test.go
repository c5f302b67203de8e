package overlay

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestFlowFilterMatchesEitherDirectionAndNAT(t *testing.T) {
	f := newFlowFilter([]netip.Prefix{netip.MustParsePrefix("10.244.1.5/32"), netip.MustParsePrefix("10.244.7.0/24")})
	flow := func(fs, fd, rs, rd string) *netlink.ConntrackFlow {
		var c netlink.ConntrackFlow
		c.Forward.SrcIP, c.Forward.DstIP = net.ParseIP(fs), net.ParseIP(fd)
		c.Reverse.SrcIP, c.Reverse.DstIP = net.ParseIP(rs), net.ParseIP(rd)
		return &c
	}
	for _, c := range []struct {
		flow *netlink.ConntrackFlow
		want bool
	}{
		{flow("10.244.1.5", "10.244.2.9", "10.244.2.9", "10.244.1.5"), true},   // the pod's own flow
		{flow("10.244.2.9", "10.96.0.10", "10.244.1.5", "10.244.2.9"), true},   // a Service DNAT to the pod
		{flow("10.244.7.33", "10.244.2.9", "10.244.2.9", "10.244.7.33"), true}, // in a handed-over subnet
		{flow("10.244.1.6", "10.244.2.9", "10.244.2.9", "10.244.1.6"), false},  // the neighbour
		{flow("192.0.2.1", "192.0.2.2", "192.0.2.2", "192.0.2.1"), false},      // nodes
	} {
		if got := f.MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%v -> %v: match %v, want %v", c.flow.Forward.SrcIP, c.flow.Forward.DstIP, got, c.want)
		}
	}
}

func TestConntrackSweeperBatches(t *testing.T) {
	k := NewFakeKernel()
	var passes int
	s := NewConntrackSweeper(k, func(uint, []netip.Prefix, error) { passes++ })
	a, b := netip.MustParsePrefix("10.244.1.5/32"), netip.MustParsePrefix("10.244.7.0/24")
	s.Forget(a)
	s.Forget(b)
	s.Forget(a)
	s.Sweep()
	s.Sweep() // nothing left: no pass
	if got := k.Swept(); !slices.Equal(got, []netip.Prefix{a, b}) || passes != 1 {
		t.Fatalf("swept %v in %d passes, want [%v %v] in one", got, passes, a, b)
	}
}

// TestSweepIfPending: an address about to be given out again is swept at
// once if its entries are still queued, and nothing else is swept for it.
func TestSweepIfPending(t *testing.T) {
	k := NewFakeKernel()
	s := NewConntrackSweeper(k, nil)
	s.SweepIfPending(netip.MustParseAddr("10.244.1.5"))
	if len(k.Swept()) != 0 {
		t.Fatal("swept with nothing queued")
	}
	s.Forget(netip.MustParsePrefix("10.244.1.5/32"))
	s.SweepIfPending(netip.MustParseAddr("10.244.1.6"))
	if len(k.Swept()) != 0 {
		t.Fatal("swept for another address")
	}
	s.SweepIfPending(netip.MustParseAddr("10.244.1.5"))
	if got := k.Swept(); len(got) != 1 {
		t.Fatalf("swept %v, want the queued address at once", got)
	}
}

// TestConntrackSweeperWaitsForTheBurstToEnd: a pass comes only once the
// addresses given up have been quiet for a while, and sweeps them all.
func TestConntrackSweeperWaitsForTheBurstToEnd(t *testing.T) {
	k := NewFakeKernel()
	passes := make(chan []netip.Prefix, 10)
	s := NewConntrackSweeper(k, func(_ uint, p []netip.Prefix, _ error) { passes <- p })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	start := time.Now()
	for i := range 5 {
		s.Forget(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, 1, byte(i + 1)}), 32))
		time.Sleep(sweepQuiet / 5)
	}
	swept := 0
	for swept < 5 {
		select {
		case p := <-passes:
			if swept == 0 && time.Since(start) < sweepQuiet {
				t.Fatalf("first pass %v after the first address was given up: not waiting for quiet", time.Since(start))
			}
			swept += len(p)
		case <-time.After(10 * sweepMaxDelay):
			t.Fatalf("%d of 5 addresses swept", swept)
		}
	}
}

// BenchmarkFlowFilter10000: a pass after a peer drained 10,000 pods, over
// one flow (what a table of a million entries costs is this times a
// million).
func BenchmarkFlowFilter10000(b *testing.B) {
	var prefixes []netip.Prefix
	for i := range 10000 {
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}), 32))
	}
	f := newFlowFilter(append(prefixes, netip.MustParsePrefix("10.245.7.0/24")))
	var flow netlink.ConntrackFlow
	flow.Forward.SrcIP, flow.Forward.DstIP = net.ParseIP("10.246.1.2"), net.ParseIP("10.246.3.4")
	flow.Reverse.SrcIP, flow.Reverse.DstIP = flow.Forward.DstIP, flow.Forward.SrcIP
	for b.Loop() {
		if f.MatchConntrackFlow(&flow) {
			b.Fatal("matched")
		}
	}
}
