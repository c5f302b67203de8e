package agent

import (
	"maps"
	"slices"
	"time"

	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/ipam"
	"go.uber.org/zap"
)

// The lease table is kept on disk as well as in memory. After every agent
// stopped (a power cut), the first back learns from gossip only the
// claims of nodes that are back too: a newcomer would take the subnet of
// a node still down, which then came back to a conflict it loses.

// restoreClaims merges the lease table saved at the last run. Its claims
// are the table's as it was: newer versions from gossip supersede them.
// A table saved longer than --lease-ttl ago is not restored: peers
// forget a claim two lease TTLs after it ended, and a claim they forgot
// (its subnet given to another node since) must not come back from it.
func (a *Agent) restoreClaims() {
	saved, ok, err := a.store.LoadClaims()
	if err != nil {
		a.log.Warn("read the subnet claims saved at the last run; the lease table learns them again from gossip", zap.Error(err))
		return
	}
	if !ok {
		return
	}
	if age := time.Since(saved.At); age > a.cfg.LeaseTTL || age < -a.cfg.LeaseTTL {
		a.log.Info("the subnet claims saved at the last run are older than --lease-ttl; not restored", zap.Time("saved", saved.At))
		return
	}
	if _, err := a.leases.Merge(saved.Claims...); err != nil {
		a.log.Warn("some subnet claims saved at the last run do not fit this node's configuration; not restored", zap.Error(err))
	}
	a.restoredOwners = map[string]bool{}
	for _, c := range saved.Claims {
		if c.Owner != a.cfg.NodeName && c.State == ipam.LeaseActive {
			a.restoredOwners[c.Owner] = true
		}
	}
	a.log.Info("restored the subnet claims saved at the last run", zap.Int("claims", len(saved.Claims)), zap.Time("saved", saved.At))
}

// claimsRefresh bounds how old the saved table's time may grow while the
// table does not change, so a restart finds it young enough to restore.
func (a *Agent) claimsRefresh() time.Duration { return min(time.Hour, a.cfg.LeaseTTL/4) }

// saveClaims writes the lease table when it changed since the last save,
// when that save is claimsRefresh old, or when force is set (at exit).
// Only the loop (and Run, after it) calls it.
func (a *Agent) saveClaims(force bool) {
	now := time.Now()
	changes := a.leases.Changes()
	// Never saved: claimsSavedAt is zero, long past the refresh.
	if !force && changes == a.claimsSavedChanges && now.Sub(a.claimsSavedAt) < a.claimsRefresh() {
		return
	}
	err := a.store.SaveClaims(ipam.SavedClaims{At: now, Claims: a.leases.Claims()})
	if newFailure(a.claimsSaveErr, err) {
		a.log.Warn("save the subnet claims; after a restart of every agent, a node still down could lose its subnet to a newcomer", zap.Error(err))
	}
	a.claimsSaveErr = err
	if err == nil {
		a.claimsSavedChanges, a.claimsSavedAt = changes, now
	}
}

// reserveUnheard reserves the active claims restored at start whose owner
// membership still does not know once it has settled: such a node has
// been down since before this agent started. Its subnet stays blocked for
// --lease-ttl, as a node seen to die has its blocked, and is then free,
// rather than blocked for ever by a claim nobody would reserve. It returns
// the reservations made.
func (a *Agent) reserveUnheard(peers []gossip.Peer, now time.Time) []ipam.Claim {
	if len(a.restoredOwners) == 0 || !a.settled(peers) {
		return nil
	}
	var update []ipam.Claim
	for _, owner := range slices.Sorted(maps.Keys(a.restoredOwners)) {
		delete(a.restoredOwners, owner)
		if a.members.Known(owner) {
			continue // seen alive or dead: handled as any peer is
		}
		for _, c := range a.leases.ClaimsBy(owner) {
			if c.State != ipam.LeaseActive {
				continue
			}
			c.Version++
			c.State, c.Expires = ipam.LeaseReserved, now.Add(a.cfg.LeaseTTL).Unix()
			update = append(update, c)
			a.log.Info("lease reserved for a node not heard from since this agent started", zap.String("node", c.Owner),
				zap.Stringer("subnet", c.Subnet), zap.Time("until", time.Unix(c.Expires, 0)))
		}
	}
	return update
}
