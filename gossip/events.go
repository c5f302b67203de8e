package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// events implements memberlist.EventDelegate. memberlist calls it while
// holding its node lock, so it only updates the peer table and signals.
type events struct {
	m *Membership
}

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node)   { e.update(n, PeerAlive, "peer joined") }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.update(n, PeerAlive, "peer updated") }

// NotifyLeave fires for both failures and departures. memberlist does not
// update n.State before calling it, so a departure is recognised by the
// leaving flag the node gossiped just before it left.
func (e *events) NotifyLeave(n *memberlist.Node) {
	state := PeerDead
	if rec, err := DecodeNodeRecord(n.Meta); err == nil && rec.Leaving {
		state = PeerLeft
	}
	e.update(n, state, "peer "+state.String())
}

func (e *events) update(n *memberlist.Node, state PeerState, what string) {
	if n.Name == e.m.name {
		return
	}
	rec, err := DecodeNodeRecord(n.Meta)
	if err == nil && rec.Name != n.Name {
		err = errNameMismatch(rec.Name, n.Name)
	}
	if err == nil && e.m.validate != nil {
		err = e.m.validate(rec)
	}
	if err != nil {
		e.m.metrics.Rejected.Inc()
		e.m.log.Warn("ignoring peer with invalid node record", zap.String("node", n.Name), zap.String("addr", n.Addr.String()), zap.Error(err))
		e.m.peersMu.Lock()
		delete(e.m.peers, n.Name)
		e.m.peersMu.Unlock()
		e.m.notify()
		return
	}
	now := time.Now()
	e.m.peersMu.Lock()
	old, known := e.m.peers[n.Name]
	p := Peer{Record: rec, State: state, Since: now}
	if known && old.State == state {
		p.Since = old.Since
	}
	e.m.peers[n.Name] = p
	e.m.peersMu.Unlock()
	if !known || old.State != state || old.Record.Subnet != rec.Subnet || old.Record.Underlay != rec.Underlay {
		e.m.log.Info(what, zap.String("node", n.Name), zap.Stringer("underlay", rec.Underlay),
			zap.String("subnet", subnetString(rec)), zap.Stringer("vtep", rec.VTEPMAC))
	}
	e.m.notify()
}

func subnetString(r NodeRecord) string {
	if !r.HasSubnet() {
		return "none"
	}
	return r.Subnet.String()
}
