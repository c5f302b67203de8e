package gossip

import (
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
}

// Live reports whether the peer should be reachable right now.
func (p Peer) Live() bool { return p.State == PeerAlive || p.State == PeerSuspect }
