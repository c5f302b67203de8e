package gossip

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Message types carried in the first byte of every user message, so new
// kinds of gossip can be added without confusing older agents. They stay
// below frameDeflated, which marks a compressed push/pull frame.
const (
	msgState      byte = 1
	msgKeyring    byte = 2
	msgKeyringAck byte = 3
	msgPods       byte = 4
	// msgClock carries the sender's wall clock in push/pull (see clock.go).
	msgClock byte = 5
	// msgIndex carries, in push/pull, the index of the state frame of the
	// kind in its first byte that comes next (see IndexedState).
	msgIndex byte = 6
	// msgPodsDirect carries pod directory updates sent straight to a node
	// whose policies wait for the pods (see BroadcastPods). It merges as
	// msgPods and is relayed as such, but says the news is awaited: an
	// older agent ignores it and gets the same updates by gossip.
	msgPodsDirect byte = 7
)

func msgName(kind byte) string {
	if kind == msgPods || kind == msgPodsDirect {
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
	// MergeRemoteState merges a full state or an update from a peer. It
	// returns what to relay to others (updates that were news here, or
	// some of them) and whether the state changed.
	MergeRemoteState(buf []byte) (relay [][]byte, changed bool, err error)
}

// IndexedState is a StateExchanger whose full state comes with an index
// of its parts, so that a peer can skip decoding the parts it holds the
// same. The index travels in a frame of its own, which older agents skip.
type IndexedState interface {
	StateExchanger
	// LocalStateIndexed returns the full state and its index; the state
	// is the same LocalState returns.
	LocalStateIndexed() (state, index []byte)
	// MergeIndexedState merges a peer's full state as MergeRemoteState
	// does, reading its index.
	MergeIndexedState(state, index []byte) (relay [][]byte, changed bool, err error)
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
	case msgState, msgPods, msgPodsDirect:
		// memberlist reuses b after we return: the exchanger must not keep it,
		// so hand it a copy.
		buf := append([]byte(nil), b[1:]...)
		d.m.merge(b[0], buf, viaBroadcast)
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

// LocalState frames each replicated state (see frames.go), so push/pull
// carries all of them and a receiver skips kinds it does not know.
func (d *delegate) LocalState(join bool) []byte {
	var out []byte
	largest := 0
	for _, kind := range []byte{msgState, msgPods} {
		ex := d.m.exchanger(kind)
		if ex == nil {
			continue
		}
		var state []byte
		if ix, ok := ex.(IndexedState); ok {
			var index []byte
			state, index = ix.LocalStateIndexed()
			out = appendFrame(out, msgIndex, append([]byte{kind}, index...))
		} else {
			state = ex.LocalState()
		}
		largest = max(largest, len(state))
		out = d.m.deflated.appendStateFrame(out, kind, state)
	}
	// Older agents skip the kind they do not know.
	out = appendFrame(out, msgClock, d.m.clockFrame())
	d.m.noteStateSize(len(out), largest)
	return out
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	// The clock frame comes last; merging the states before it may take a
	// while, which is no part of the peer's clock offset.
	received := d.m.now()
	index := map[byte][]byte{}
	for len(buf) >= 5 {
		kind, n := buf[0], binary.BigEndian.Uint32(buf[1:5])
		if uint64(n) > uint64(len(buf)-5) {
			d.m.log.Warn("rejected gossiped state", zap.String("via", viaPushPull), zap.Error(errors.New("frame length exceeds the message")))
			return
		}
		payload := buf[5 : 5+n]
		switch {
		case kind == msgClock:
			if err := d.m.noteClock(payload, received); err != nil {
				d.m.log.Debug("ignoring a peer's clock", zap.Error(err))
			}
		case kind == msgIndex && n > 0:
			index[payload[0]] = bytes.Clone(payload[1:])
		case kind&frameDeflated != 0 && d.m.exchanger(kind&^frameDeflated) != nil:
			kind &^= frameDeflated
			state, err := d.m.deflated.inflate(kind, payload)
			if err != nil {
				d.m.rejectedState(kind, viaPushPull, err)
				break
			}
			d.m.mergeFull(kind, state, index[kind])
		case n > 0:
			d.m.mergeFull(kind, bytes.Clone(payload), index[kind])
		}
		buf = buf[5+n:]
	}
}

func (m *Membership) exchanger(kind byte) StateExchanger {
	switch kind {
	case msgState:
		return m.state
	case msgPods, msgPodsDirect:
		return m.pods
	}
	return nil
}

// How gossiped state arrived, as logs say.
const (
	viaBroadcast = "broadcast"
	viaPushPull  = "push/pull"
)

// mergeFull folds in a peer's full state of one kind from a push/pull,
// through its index if it came with one.
func (m *Membership) mergeFull(kind byte, state, index []byte) {
	ix, ok := m.exchanger(kind).(IndexedState)
	if !ok || index == nil {
		m.merge(kind, state, viaPushPull)
		return
	}
	m.absorb(kind, viaPushPull, func() ([][]byte, bool, error) { return ix.MergeIndexedState(state, index) })
}

// merge folds remote state of one kind in, relays what was news and
// signals a change. A partly invalid update still merges its valid part.
func (m *Membership) merge(kind byte, buf []byte, via string) {
	ex := m.exchanger(kind)
	if ex == nil {
		return
	}
	m.absorb(kind, via, func() ([][]byte, bool, error) { return ex.MergeRemoteState(buf) })
}

// absorb runs one merge of remote state and acts on its outcome.
func (m *Membership) absorb(kind byte, via string, merge func() ([][]byte, bool, error)) {
	m.metrics.Messages.WithLabelValues("received", msgName(kind)).Inc()
	direct := kind == msgPodsDirect
	if direct {
		// What this node relays goes on by gossip, at gossip's pace.
		kind = msgPods
	}
	relay, changed, err := merge()
	if err != nil {
		m.rejectedState(kind, via, err)
	}
	for _, msg := range relay {
		m.broadcast(kind, msg)
	}
	switch {
	case changed && direct:
		signal(m.podNews)
	case changed && kind == msgPods:
		signal(m.podChanges)
	case changed:
		m.notify()
	}
}

// rejectedState logs gossiped state of a kind that was refused, once in
// repeatWindow for the same reason.
func (m *Membership) rejectedState(kind byte, via string, err error) {
	log := m.log.Debug
	if m.rejected.fresh(msgName(kind)+": "+err.Error(), m.now()) {
		log = m.log.Warn
	}
	log("rejected gossiped state", zap.String("kind", msgName(kind)), zap.String("via", via), zap.Error(err))
}

// broadcast is one queued user message. It invalidates no other, and says
// so by being a memberlist.UniqueBroadcast: the queue then skips comparing
// it with every message queued, which made queueing n messages cost n².
type broadcast []byte

var _ memberlist.UniqueBroadcast = broadcast(nil)

// UniqueBroadcast implements memberlist.UniqueBroadcast.
func (b broadcast) UniqueBroadcast() {}

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}
