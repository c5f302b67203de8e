package gossip

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// keepingState keeps every buffer it is handed, relays those that start
// with an even byte and rejects the rest, so a fuzzed message reaches
// both the relay and the rejection paths.
type keepingState struct{ kept [][]byte }

func (k *keepingState) LocalState() []byte { return []byte("state") }
func (k *keepingState) MergeRemoteState(b []byte) ([][]byte, error) {
	k.kept = append(k.kept, b)
	if len(b) > 0 && b[0]%2 == 0 {
		return [][]byte{b}, nil
	}
	return nil, errors.New("rejected")
}

// FuzzGossipMessage feeds arbitrary bytes to the two ways gossip reaches
// the agent, a user message and a push/pull state: whatever a peer (or a
// holder of the key gone rogue) sends, nothing panics, and the state
// handed on is a copy, never memberlist's buffer, which it reuses.
func FuzzGossipMessage(f *testing.F) {
	peer := &Membership{name: "peer", now: time.Now}
	f.Add(appendFrame(appendFrame(nil, msgState, []byte{2, 1}), msgClock, peer.clockFrame()))
	f.Add([]byte{msgPods, 4, 5, 6})
	f.Add([]byte{msgKeyring, '{', '}'})
	f.Add([]byte{msgState, 0, 0, 0, 200, 1})
	f.Add(appendFrame(nil, 99, []byte("future kind")))
	f.Add([]byte{msgClock, 0, 0, 0, 3, 1, 2, 3})
	f.Fuzz(func(t *testing.T, msg []byte) {
		state, pods := &keepingState{}, &keepingState{}
		m := &Membership{name: "here", log: zap.NewNop(), metrics: NewMetrics(), state: state, pods: pods,
			now: time.Now, peers: map[string]Peer{"peer": {}}, changes: make(chan struct{}, 1),
			queue: &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 3 }, RetransmitMult: 3}}
		d := &delegate{m}
		buf := bytes.Clone(msg)
		d.NotifyMsg(buf)
		d.MergeRemoteState(buf, false)
		d.MergeRemoteState(buf, true)
		for i := range buf {
			buf[i] ^= 0xff // memberlist reusing its buffer
		}
		for _, kept := range append(state.kept, pods.kept...) {
			if len(kept) > 0 && !bytes.Contains(msg, kept) {
				t.Fatalf("an exchanger kept %x, which is not in the message: memberlist's buffer, not a copy", kept)
			}
		}
	})
}
