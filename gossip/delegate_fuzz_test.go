package gossip

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// keepingState keeps every buffer it is handed, and a copy of it,
// relays those that start with an even byte and rejects the rest, so a
// fuzzed message reaches both the relay and the rejection paths.
type keepingState struct{ kept, copies [][]byte }

func (k *keepingState) LocalState() []byte { return []byte("state") }
func (k *keepingState) MergeRemoteState(b []byte) ([][]byte, bool, error) {
	k.kept, k.copies = append(k.kept, b), append(k.copies, bytes.Clone(b))
	if len(b) > 0 && b[0]%2 == 0 {
		return [][]byte{b}, true, nil
	}
	return nil, false, errors.New("rejected")
}

// keepingIndexedState is a keepingState that takes indexes too, and keeps
// them as it keeps states.
type keepingIndexedState struct{ keepingState }

func (k *keepingIndexedState) LocalStateIndexed() ([]byte, []byte) { return []byte("state"), nil }
func (k *keepingIndexedState) MergeIndexedState(state, index []byte) ([][]byte, bool, error) {
	k.kept, k.copies = append(k.kept, index), append(k.copies, bytes.Clone(index))
	return k.MergeRemoteState(state)
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
	f.Add(appendFrame(nil, 99|frameDeflated, []byte("future compressed kind")))
	deflated, err := deflate([]byte(`[{"node":"peer","ip":"10.244.1.2","v":1}]`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(appendFrame(nil, msgPods|frameDeflated, deflated))
	f.Add(appendFrame(nil, msgPods|frameDeflated, deflated[:len(deflated)/2]))
	f.Add([]byte{msgClock, 0, 0, 0, 3, 1, 2, 3})
	f.Add(appendFrame(appendFrame(nil, msgIndex, []byte{msgPods, 1, 'b', 2}), msgPods, []byte("[{},{}]")))
	f.Add(appendFrame(appendFrame(nil, msgIndex, []byte{msgPods}), msgPods|frameDeflated, deflated))
	f.Fuzz(func(t *testing.T, msg []byte) {
		state, pods := &keepingState{}, &keepingIndexedState{}
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
		copies := append(state.copies, pods.copies...)
		for i, kept := range append(state.kept, pods.kept...) {
			if !bytes.Equal(kept, copies[i]) {
				t.Fatalf("an exchanger was handed %x, which changed to %x with memberlist's buffer: not a copy", copies[i], kept)
			}
		}
	})
}
