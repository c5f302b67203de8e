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
// left no deletion behind). The holders are stored, so that a handover
// while loomd was down is seen at its first reconcile. Called with dpMu
// held.
func (a *Agent) sweepHandedOver(own netip.Prefix, peers []overlay.Peer) {
	changed := false
	note := func(subnet netip.Prefix, holder string) {
		was, ok := a.holders[subnet]
		if ok && was == holder {
			return
		}
		if ok {
			a.conntrack.Forget(subnet)
		}
		a.holders[subnet] = holder
		changed = true
	}
	note(own, a.cfg.NodeName)
	for _, p := range peers {
		note(p.Subnet, p.Name)
	}
	if changed && a.store != nil {
		if err := a.store.SaveHolders(a.holders); err != nil {
			a.log.Warn("remember the subnets' holders; a handover while loomd is down would leave flows behind", zap.Error(err))
		}
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
