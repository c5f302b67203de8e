package gossip

import (
	"encoding/binary"
	"errors"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Message types carried in the first byte of every user message, so new
// kinds of gossip can be added without confusing older agents.
const (
	msgState      byte = 1
	msgKeyring    byte = 2
	msgKeyringAck byte = 3
	msgPods       byte = 4
	// msgClock carries the sender's wall clock in push/pull (see clock.go).
	msgClock byte = 5
)

func msgName(kind byte) string {
	if kind == msgPods {
		return "pods"
	}
	return "state"
}

// StateExchanger is the replicated state (the lease table) that rides on
// gossip as opaque bytes. It lives outside this package so that gossip never
// imports ipam; the agent wires the two together.
type StateExchanger interface {
	// LocalState returns the full state for a push/pull exchange.
	LocalState() []byte
	// MergeRemoteState merges a full state or an update from a peer and
	// returns what to relay to others (updates that were news here).
	MergeRemoteState(buf []byte) (relay [][]byte, err error)
}

// delegate implements memberlist.Delegate. memberlist calls it from several
// goroutines; it never calls back into memberlist and never blocks.
type delegate struct {
	m *Membership
}

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	d.m.localMu.Lock()
	defer d.m.localMu.Unlock()
	if len(d.m.localMeta) > limit {
		// Encode already refuses records above MetaMaxSize; this only guards a
		// smaller limit memberlist might pass in the future.
		d.m.log.Error("node record exceeds metadata limit", zap.Int("bytes", len(d.m.localMeta)), zap.Int("limit", limit))
		return nil
	}
	return d.m.localMeta
}

func (d *delegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	switch b[0] {
	case msgState, msgPods:
		// memberlist reuses b after we return: the exchanger must not keep it,
		// so hand it a copy.
		buf := append([]byte(nil), b[1:]...)
		d.m.merge(b[0], buf, "broadcast")
	case msgKeyring, msgKeyringAck:
		body := append([]byte(nil), b[1:]...)
		go d.m.handleKeyringMessage(b[0], body)
	default:
		d.m.log.Debug("ignoring gossip message of unknown type", zap.Uint8("type", b[0]))
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.queue.GetBroadcasts(overhead, limit)
}

// LocalState frames each replicated state as a message type, a 4-byte
// big-endian length and the state, so push/pull carries all of them and a
// receiver skips kinds it does not know.
func (d *delegate) LocalState(join bool) []byte {
	var out []byte
	for _, kind := range []byte{msgState, msgPods} {
		ex := d.m.exchanger(kind)
		if ex == nil {
			continue
		}
		out = appendFrame(out, kind, ex.LocalState())
	}
	// Older agents skip the kind they do not know.
	return appendFrame(out, msgClock, d.m.clockFrame())
}

func appendFrame(out []byte, kind byte, payload []byte) []byte {
	out = append(out, kind)
	out = binary.BigEndian.AppendUint32(out, uint32(len(payload)))
	return append(out, payload...)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	for len(buf) >= 5 {
		kind, n := buf[0], binary.BigEndian.Uint32(buf[1:5])
		if uint64(n) > uint64(len(buf)-5) {
			d.m.log.Warn("rejected gossiped state", zap.String("via", "push/pull"), zap.Error(errors.New("frame length exceeds the message")))
			return
		}
		switch {
		case kind == msgClock:
			if err := d.m.noteClock(buf[5 : 5+n]); err != nil {
				d.m.log.Debug("ignoring a peer's clock", zap.Error(err))
			}
		case n > 0:
			d.m.merge(kind, append([]byte(nil), buf[5:5+n]...), "push/pull")
		}
		buf = buf[5+n:]
	}
}

func (m *Membership) exchanger(kind byte) StateExchanger {
	switch kind {
	case msgState:
		return m.state
	case msgPods:
		return m.pods
	}
	return nil
}

// merge folds remote state of one kind in, relays what was news and
// signals a change. A partly invalid update still merges its valid part.
func (m *Membership) merge(kind byte, buf []byte, via string) {
	ex := m.exchanger(kind)
	if ex == nil {
		return
	}
	m.metrics.Messages.WithLabelValues("received", msgName(kind)).Inc()
	relay, err := ex.MergeRemoteState(buf)
	if err != nil {
		log := m.log.Debug
		if m.rejected.fresh(msgName(kind)+": "+err.Error(), m.now()) {
			log = m.log.Warn // then quiet for repeatWindow
		}
		log("rejected gossiped state", zap.String("kind", msgName(kind)), zap.String("via", via), zap.Error(err))
	}
	for _, msg := range relay {
		m.broadcast(kind, msg)
	}
	if len(relay) > 0 {
		m.notify()
	}
}

// broadcast is one queued user message.
type broadcast []byte

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}
