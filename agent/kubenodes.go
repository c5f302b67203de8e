package agent

import (
	"sync"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/policy"
	"go.uber.org/zap"
)

// kubeNodes follows, from the Kubernetes source's views, which Node
// objects exist and which have existed since loomd started. A Loom node
// that is dead and whose Node object the cluster deleted (scaled away,
// replaced) will not come back: its subnet is released at once rather
// than kept for --lease-ttl, so a cluster that replaces many nodes does
// not run out of subnets. Nodes never seen as Node objects (hosts outside
// the cluster in the same fabric) are never released this way.
type kubeNodes struct {
	// mu guards current and seen.
	mu      sync.Mutex
	current map[string]bool
	seen    map[string]bool
}

// update takes the Node names of a view; a view without them (a helper
// that may not list nodes) changes nothing.
func (k *kubeNodes) update(v policy.ClusterView) {
	if !v.NodesListed {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen == nil {
		k.seen = map[string]bool{}
	}
	k.current = make(map[string]bool, len(v.Nodes))
	for _, n := range v.Nodes {
		k.current[n] = true
		k.seen[n] = true
	}
}

// deleted reports whether name was a Node object and is no longer one.
func (k *kubeNodes) deleted(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.seen[name] && !k.current[name]
}

// forget drops the deleted names membership no longer knows (it forgot
// the peer, long gone): without it every Node name a cluster that
// replaces its nodes ever had would stay.
func (k *kubeNodes) forget(known func(name string) bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name := range k.seen {
		if !k.current[name] && !known(name) {
			delete(k.seen, name)
		}
	}
}

// releaseDeletedNodes releases the claims of dead peers whose Node object
// was deleted, and reports whether it released any.
func (a *Agent) releaseDeletedNodes(peers []gossip.Peer) bool {
	changed := false
	for _, p := range peers {
		if p.State != gossip.PeerDead || !a.kubeNodes.deleted(p.Record.Name) {
			continue
		}
		released, err := a.releaseClaims(p.Record.Name)
		if err != nil {
			a.log.Warn("release the subnet of a deleted Kubernetes node", zap.String("node", p.Record.Name), zap.Error(err))
			continue
		}
		if len(released) > 0 {
			a.log.Info("Kubernetes deleted this dead node; its subnets are free", zap.String("node", p.Record.Name), zap.Strings("subnets", released))
			changed = true
		}
	}
	return changed
}
