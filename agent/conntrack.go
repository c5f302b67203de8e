package agent

import (
	"net/netip"

	"github.com/loomnet/loom/overlay"
	"go.uber.org/zap"
)

// forgetFlows queues the connection tracking entries of a pod address this
// node gave up (DEL, GC), so the next pod that gets the address starts
// with no flows of its predecessor's (see overlay.ConntrackSweeper).
func (a *Agent) forgetFlows(ip netip.Addr) {
	a.conntrack.Forget(netip.PrefixFrom(ip, ip.BitLen()))
}

// sweepHandedOver queues the entries of subnets that changed hands since
// the last reconcile: the new holder's pods get the old holder's
// addresses, whose flows this node may still track (a dead node's pods
// left no deletion behind). Called with dpMu held.
func (a *Agent) sweepHandedOver(own netip.Prefix, peers []overlay.Peer) {
	note := func(subnet netip.Prefix, holder string) {
		if was, ok := a.holders[subnet]; ok && was != holder {
			a.conntrack.Forget(subnet)
		}
		a.holders[subnet] = holder
	}
	note(own, a.cfg.NodeName)
	for _, p := range peers {
		note(p.Subnet, p.Name)
	}
}

// conntrackSwept logs and counts one sweep; a failure is warned once
// until it changes (a kernel without connection tracking over netlink
// would fail every sweep the same way).
func (a *Agent) conntrackSwept(deleted uint, prefixes []netip.Prefix, err error) {
	a.metrics.conntrackDeleted.Add(float64(deleted))
	a.stateMu.Lock()
	fresh := newFailure(a.sweepErr, err)
	a.sweepErr = err
	a.stateMu.Unlock()
	switch {
	case fresh:
		a.log.Warn("delete connection tracking entries of addresses given up", zap.Int("prefixes", len(prefixes)), zap.Error(err))
	case err == nil && deleted > 0:
		a.log.Debug("deleted connection tracking entries of addresses given up", zap.Uint("entries", deleted), zap.Int("prefixes", len(prefixes)))
	}
}
