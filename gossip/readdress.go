package gossip

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// A node that comes back at another underlay address (a new DHCP lease, a
// moved VM) under the same name is refused by every peer that still holds
// it at the old one: memberlist takes a new address for a name only once
// the old entry is dead (and DeadNodeReclaimTime has passed), and after
// that only from a message the node itself sends. Nobody can gossip to the
// new address before it is taken, so left alone the node is taken back at
// its next push/pull, up to a full push/pull interval (10 s on lan, 60 s
// on wan) after its old self was declared dead. Instead, while any peer's
// view still holds this node elsewhere, the node pushes and pulls with
// every live peer each announceInterval, so it is taken back within about
// a second of its old entry's death.
const (
	announceInterval = time.Second
	// announceSlowAfter bounds the fast rounds. By then the old entry is
	// dead on every profile; a conflict that lasts longer is another
	// live node running under this name, which is logged, and the rounds
	// go on at announceSlowInterval.
	announceSlowAfter    = 3 * time.Minute
	announceSlowInterval = 15 * time.Second
)

// addressAnnouncer pushes this node's address at peers that hold an old
// one. Its rounds run in one goroutine at a time.
type addressAnnouncer struct {
	m *Membership

	// mu guards running, stale and conflicts.
	mu      sync.Mutex
	running bool
	// stale is set when a peer's view (from a push/pull) held this node
	// at another address since the current round started.
	stale bool
	// conflicts remembers, per peer name, the address last logged as
	// conflicting, so each change is logged once rather than on every
	// gossip message.
	conflicts map[string]string

	done     chan struct{}
	stopOnce sync.Once
}

func newAddressAnnouncer(m *Membership) *addressAnnouncer {
	return &addressAnnouncer{m: m, conflicts: map[string]string{}, done: make(chan struct{})}
}

func (a *addressAnnouncer) stop() { a.stopOnce.Do(func() { close(a.done) }) }

// conflictDelegate implements memberlist.ConflictDelegate. memberlist calls
// it holding its node lock: it must not call back into memberlist.
type conflictDelegate struct{ a *addressAnnouncer }

var _ memberlist.ConflictDelegate = conflictDelegate{}

// NotifyConflict is called when a message gives a known node name another
// address than the one held for it. memberlist logs every such message;
// Loom says what it means once per new address.
func (d conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	a := d.a
	if existing.Name == a.m.name {
		// A peer still speaks of this node at its old address.
		a.sawStale(other.Addr)
		return
	}
	a.mu.Lock()
	logged := a.conflicts[existing.Name] == other.Address()
	a.conflicts[existing.Name] = other.Address()
	a.mu.Unlock()
	if !logged {
		a.m.log.Warn("peer announces a new underlay address; it is taken once the old one is declared dead",
			zap.String("node", existing.Name), zap.String("old", existing.Addr.String()), zap.String("new", other.Addr.String()))
	}
}

// mergeDelegate implements memberlist.MergeDelegate, which memberlist calls
// with a peer's whole view on every push/pull started by a join.
type mergeDelegate struct{ a *addressAnnouncer }

var _ memberlist.MergeDelegate = mergeDelegate{}

// NotifyMerge never refuses a merge (foreign clusters are kept out by the
// keyring and the record checks); it only looks for this node in the view.
func (d mergeDelegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if p.Name == d.a.m.name && !d.a.isSelf(p.Addr, p.Port) {
			d.a.sawStale(p.Addr)
		}
	}
	return nil
}

func (a *addressAnnouncer) isSelf(addr net.IP, port uint16) bool {
	ip, ok := netip.AddrFromSlice(addr)
	return ok && ip.Unmap() == a.m.advertise && int(port) == a.m.port
}

// sawStale records that a peer holds this node at old, and starts the
// rounds unless they run already.
func (a *addressAnnouncer) sawStale(old net.IP) {
	a.mu.Lock()
	a.stale = true
	start := !a.running
	a.running = true
	a.mu.Unlock()
	if !start {
		return
	}
	a.m.log.Warn("peers still hold this node at another underlay address; announcing the new one until they take it",
		zap.String("old", old.String()), zap.Stringer("new", a.m.advertise))
	go a.run()
}

// run pushes and pulls with every live peer each round until a whole
// round saw no peer holding this node elsewhere.
func (a *addressAnnouncer) run() {
	started := time.Now()
	interval, warned := announceInterval, false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-a.done:
			return
		case <-timer.C:
		}
		if !warned && time.Since(started) > announceSlowAfter {
			warned, interval = true, announceSlowInterval
			a.m.log.Error("peers still hold this node's name at another underlay address; if another live node runs as this name, give one of them another --node-name",
				zap.String("node", a.m.name), zap.Duration("for", time.Since(started).Round(time.Second)))
		}
		a.mu.Lock()
		a.stale = false
		a.mu.Unlock()
		ml := a.m.started.Load()
		if ml == nil {
			// A push/pull can arrive while memberlist is still starting.
			timer.Reset(interval)
			continue
		}
		var targets []string
		for _, n := range ml.Members() {
			if n.Name != a.m.name && n.State == memberlist.StateAlive {
				targets = append(targets, n.Address())
			}
		}
		if len(targets) > 0 {
			// Failures are a peer that went away meanwhile; the next round
			// tries the live ones again.
			ml.Join(targets)
		}
		a.mu.Lock()
		done := !a.stale && len(targets) > 0
		if done {
			a.running = false
		}
		a.mu.Unlock()
		if done {
			a.m.log.Info("peers hold this node at its underlay address", zap.Stringer("underlay", a.m.advertise),
				zap.Duration("after", time.Since(started).Round(time.Millisecond)))
			return
		}
		timer.Reset(interval)
	}
}
