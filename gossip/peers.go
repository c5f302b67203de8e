package gossip

import (
	"net/netip"
	"time"
)

// PeerState is what this node believes about a peer's liveness.
type PeerState int

// Peer states. Only Alive and Suspect peers are reachable in the data plane;
// Dead peers stay in the table so the agent can apply its grace period.
const (
	PeerAlive PeerState = iota
	PeerSuspect
	PeerDead
	PeerLeft
)

// String returns the state as operators see it in loomctl and logs.
func (s PeerState) String() string {
	switch s {
	case PeerAlive:
		return "alive"
	case PeerSuspect:
		return "suspect"
	case PeerDead:
		return "dead"
	case PeerLeft:
		return "left"
	}
	return "unknown"
}

// Peer is one remote node as the membership layer last saw it.
type Peer struct {
	Record NodeRecord
	State  PeerState
	// Since is when State last changed.
	Since time.Time
	// ClockOffset is how far its clock was ahead of this node's (negative:
	// behind) at its last push/pull; zero until one, and from agents that
	// do not send their time.
	ClockOffset time.Duration
}

// Live reports whether the peer should be reachable right now.
func (p Peer) Live() bool { return p.State == PeerAlive || p.State == PeerSuspect }

// Forget drops a peer that is dead or has left from the table, so nodes
// replaced long ago stop being listed, followed and contacted. A peer
// that comes back is added again by its next announcement. It reports
// whether the peer was dropped.
func (m *Membership) Forget(name string) bool {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	p, ok := m.peers[name]
	if !ok || p.Live() {
		return false
	}
	delete(m.peers, name)
	return true
}

// Known reports whether the named node is in the peer table, in any
// state: it has not been forgotten (see Forget).
func (m *Membership) Known(name string) bool {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	_, ok := m.peers[name]
	return ok
}

// Live reports whether the named peer is alive (or suspected, not yet
// declared dead) as far as this node knows.
func (m *Membership) Live(name string) bool {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	p, ok := m.peers[name]
	return ok && p.Live()
}

// LivePeerAt returns the name of a live peer whose record advertises the
// underlay address addr.
func (m *Membership) LivePeerAt(addr netip.Addr) (string, bool) {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	for name, p := range m.peers {
		if p.Live() && p.Record.Underlay.Unmap() == addr.Unmap() {
			return name, true
		}
	}
	return "", false
}
