package agent

import (
	"net/netip"

	"github.com/loomnet/loom/overlay"
	"go.uber.org/zap"
)

// restorePodDirectory puts back the other nodes' pods saved at the last
// run. Their agents may be down too (every agent restarted at once): until
// they are back, these records are the only word on their pods' labels,
// and policies that select them would otherwise refuse their connections.
func (a *Agent) restorePodDirectory() {
	saved, err := a.store.LoadDirectory()
	if err == nil && len(saved) > 0 {
		var n int
		n, err = a.policy.dir.Restore(saved)
		a.log.Info("restored the pods of other nodes saved at the last run", zap.Int("pods", n))
	}
	if err != nil {
		a.log.Warn("read the pods of other nodes saved at the last run; policies learn them again from gossip", zap.Error(err))
	}
}

// savePodDirectory writes what changed in the pod directory since the last
// save: only the records that changed, so a fabric's pod churn costs a
// small write per reconcile. A failed write is kept for the next one.
func (a *Agent) savePodDirectory() {
	changes := a.policy.dir.Unsaved()
	if changes.Empty() {
		return
	}
	err := a.store.SaveDirectory(changes.Put, changes.Delete)
	if err != nil {
		a.policy.dir.Unwritten(changes)
	}
	if newFailure(a.podDirSaveErr, err) {
		a.log.Warn("save the pods of other nodes; a restart while their agents are down leaves them out of policies", zap.Error(err))
	}
	a.podDirSaveErr = err
}

// podSubnets are the subnets whose pods policies may select, by node:
// the programmed peers', and while the data plane is adopted after a
// restart, those held at the last run by nodes not heard from yet (unless
// a peer heard from holds one now: it changed hands meanwhile). A record
// of an address outside its node's subnets is ignored, so no node places
// its labels on another's pods. Called with dpMu held.
func (a *Agent) podSubnets(peers []overlay.Peer, adopting bool) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	heard := map[string]bool{}
	held := map[netip.Prefix]bool{}
	for _, p := range peers {
		out[p.Name] = append(out[p.Name], p.Subnet)
		heard[p.Name], held[p.Subnet] = true, true
	}
	if !adopting {
		return out
	}
	for subnet, holder := range a.holders {
		if !heard[holder] && !held[subnet] && holder != a.cfg.NodeName {
			out[holder] = append(out[holder], subnet)
		}
	}
	return out
}
