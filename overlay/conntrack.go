package overlay

import (
	"cmp"
	"context"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// A pass reads the whole connection tracking table, which the kernel
// walks bucket by bucket whatever it holds: about 10 ms of CPU with the
// default 262,144 buckets, even for an empty namespace. So addresses given
// up in a burst (a node draining its pods, a peer's deletions arriving by
// gossip) make one pass once the burst has been quiet for sweepQuiet, and
// steady churn one pass every sweepMaxDelay: at most half a percent of a
// core. Addresses go round-robin, so a just-freed one is given out again
// only once the allocator came round the subnet; from a full subnet
// sooner, and then that ADD sweeps first (SweepIfPending).
const (
	sweepQuiet    = 250 * time.Millisecond
	sweepMaxDelay = 2 * time.Second
)

// ConntrackSweeper deletes the connection tracking entries of pod
// addresses that were given up. The kernel keeps an entry for minutes
// (UDP) to days (established TCP) after its pod is gone; a pod that later
// gets the address would inherit the flows, and with them the verdict
// "established" that network policy and the firewall accept without
// looking further: a pod no policy allows could talk on its predecessor's
// flows. Calico and Cilium clear them for the same reason.
type ConntrackSweeper struct {
	k       Kernel
	onSwept func(deleted uint, prefixes []netip.Prefix, err error)

	// mu guards pending, when the oldest of it was queued (first) and when
	// the newest was (last).
	mu          sync.Mutex
	pending     map[netip.Prefix]bool
	first, last time.Time
	wake        chan struct{}
}

// NewConntrackSweeper returns a sweeper deleting through k; onSwept hears
// of every pass (for logs and metrics).
func NewConntrackSweeper(k Kernel, onSwept func(deleted uint, prefixes []netip.Prefix, err error)) *ConntrackSweeper {
	return &ConntrackSweeper{k: k, onSwept: onSwept, pending: map[netip.Prefix]bool{}, wake: make(chan struct{}, 1)}
}

// Forget queues the entries of p (a pod's /32, or a subnet that changed
// hands) for deletion. It never blocks: gossip callbacks call it.
func (s *ConntrackSweeper) Forget(p netip.Prefix) {
	now := time.Now()
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.first = now
	}
	s.last = now
	s.pending[p] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run deletes what is queued until ctx ends.
func (s *ConntrackSweeper) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			wait := min(time.Until(s.last.Add(sweepQuiet)), time.Until(s.first.Add(sweepMaxDelay)))
			s.mu.Unlock()
			if wait <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		s.Sweep()
	}
}

// SweepIfPending sweeps at once when addr's entries are still queued: a
// pod about to get an address freed a moment ago (a full subnet) must not
// start with its predecessor's flows. Otherwise it does nothing.
func (s *ConntrackSweeper) SweepIfPending(addr netip.Addr) {
	s.mu.Lock()
	pending := false
	for p := range s.pending {
		pending = pending || p.Contains(addr)
	}
	s.mu.Unlock()
	if pending {
		s.Sweep()
	}
}

// Sweep deletes what is queued now.
func (s *ConntrackSweeper) Sweep() {
	s.mu.Lock()
	batch := slices.SortedFunc(maps.Keys(s.pending), func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	clear(s.pending)
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	n, err := s.k.ConntrackDelete(batch)
	if s.onSwept != nil {
		s.onSwept(n, batch, err)
	}
}

// flowFilter matches a connection tracking entry with an address inside
// one of its prefixes, in either direction, before or after NAT. Pods'
// addresses are looked up in a set, so a pass for thousands of them (a
// peer's node drained) costs a lookup per entry, not a scan.
type flowFilter struct {
	addrs map[netip.Addr]bool
	nets  []netip.Prefix
}

func newFlowFilter(prefixes []netip.Prefix) flowFilter {
	f := flowFilter{addrs: map[netip.Addr]bool{}}
	for _, p := range prefixes {
		if p.IsSingleIP() {
			f.addrs[p.Addr()] = true
		} else {
			f.nets = append(f.nets, p)
		}
	}
	return f
}

var _ netlink.CustomConntrackFilter = flowFilter{}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	for _, ip := range []net.IP{flow.Forward.SrcIP, flow.Forward.DstIP, flow.Reverse.SrcIP, flow.Reverse.DstIP} {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if f.addrs[a] || slices.ContainsFunc(f.nets, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return true
		}
	}
	return false
}
