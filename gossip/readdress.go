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
//
// The same views tell a node started under a name another live node
// already runs as (cloned machines keep their hostname): peers hold the
// name alive elsewhere, and a ping there naming it is answered. Such a
// node must not serve: it would take the other's subnet as its own.
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

	// mu guards running, stale, warned, conflicts and heldAt.
	mu      sync.Mutex
	running bool
	// stale is set when a peer's view (from a push/pull) held this node
	// at another address since the current round started.
	stale bool
	// conflicts remembers, per peer name, the address last logged as
	// conflicting, so each change is logged once rather than on every
	// gossip message.
	conflicts map[string]string
	// warned is set once this run of rounds has logged that peers hold
	// this node elsewhere.
	warned bool
	// heldAt is the other address a peer last held this node's name at,
	// alive or suspect: an old self not yet declared dead, or another live
	// node running under this name.
	heldAt netip.Addr

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
		// Someone speaks of this node as alive at another address: a peer
		// relaying an old self, or another node running under this name
		// speaking of itself. Only peers' views (NotifyMerge) tell which,
		// so this starts the rounds that fetch them.
		a.start()
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
			d.a.viewHolds(p.Addr, p.State == memberlist.StateAlive || p.State == memberlist.StateSuspect)
		}
	}
	return nil
}

func (a *addressAnnouncer) isSelf(addr net.IP, port uint16) bool {
	ip, ok := netip.AddrFromSlice(addr)
	return ok && ip.Unmap() == a.m.advertise && int(port) == a.m.port
}

// viewHolds records that a peer's view holds this node at old, alive
// there or already declared dead or gone, and starts the rounds unless
// they run already.
func (a *addressAnnouncer) viewHolds(old net.IP, alive bool) {
	a.mu.Lock()
	a.stale = true
	if ip, ok := netip.AddrFromSlice(old); ok && alive {
		a.heldAt = ip.Unmap()
	}
	warn := !a.warned
	a.warned = true
	a.mu.Unlock()
	if warn {
		a.m.log.Warn("peers still hold this node at another underlay address; announcing the new one until they take it",
			zap.String("old", old.String()), zap.Stringer("new", a.m.advertise))
	}
	a.start()
}

// start runs the rounds unless they run already.
func (a *addressAnnouncer) start() {
	a.mu.Lock()
	start := !a.running
	a.running = true
	a.mu.Unlock()
	if start {
		go a.run()
	}
}

// run pushes and pulls with every live peer each round until a whole
// round saw no peer holding this node elsewhere. While a peer holds this
// node's name alive elsewhere, each round also pings that address by the
// name: an answer means another live node runs under it.
func (a *addressAnnouncer) run() {
	started := time.Now()
	warned := false
	ticker := time.NewTicker(announceInterval)
	defer ticker.Stop()
	for {
		if !warned && time.Since(started) > announceSlowAfter {
			warned = true
			ticker.Reset(announceSlowInterval)
			a.m.log.Error("peers still hold this node's name at another underlay address; if another live node runs as this name, give one of them another --node-name",
				zap.String("node", a.m.name), zap.Duration("for", time.Since(started).Round(time.Second)))
		}
		if ml := a.m.started.Load(); ml != nil {
			if a.round(ml, started) {
				return
			}
		}
		select {
		case <-a.done:
			return
		case <-ticker.C:
		}
	}
}

// round is one push/pull with every live peer, with the ping for a
// duplicate name alongside; it reports whether the rounds are over.
func (a *addressAnnouncer) round(ml *memberlist.Memberlist, started time.Time) bool {
	type verdict struct {
		other netip.Addr
		inUse bool
	}
	pinged := make(chan verdict, 1)
	go func() {
		other, inUse := a.m.NameInUse(1)
		pinged <- verdict{other, inUse}
	}()
	a.mu.Lock()
	a.stale = false
	a.mu.Unlock()
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
	v := <-pinged
	a.mu.Lock()
	done := v.inUse || !a.stale && len(targets) > 0
	warned := a.warned
	if done {
		a.running, a.warned = false, false
	}
	a.mu.Unlock()
	switch {
	case v.inUse:
		if a.m.onNameInUse != nil {
			a.m.onNameInUse(v.other)
		}
	case done && warned:
		a.m.log.Info("peers hold this node at its underlay address", zap.Stringer("underlay", a.m.advertise),
			zap.Duration("after", time.Since(started).Round(time.Millisecond)))
	}
	return done
}

// NameInUse reports whether another live node runs under this node's name:
// a peer held the name at another address, and a ping there, naming this
// node, is answered (memberlist answers only pings for its own name). An
// old self that has gone stays silent; each of tries waits up to the
// profile's probe timeout for it.
func (m *Membership) NameInUse(tries int) (netip.Addr, bool) {
	a := m.announcer
	a.mu.Lock()
	other := a.heldAt
	a.mu.Unlock()
	ml := m.started.Load()
	if !other.IsValid() || ml == nil {
		return netip.Addr{}, false
	}
	to := &net.UDPAddr{IP: other.AsSlice(), Port: m.port}
	for range tries {
		if _, err := ml.Ping(m.name, to); err == nil {
			return other, true
		}
	}
	return netip.Addr{}, false
}
