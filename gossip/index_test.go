package gossip

import (
	"bytes"
	"testing"

	"go.uber.org/zap"
)

// indexedState is a fixedState with an index, keeping the indexes it is
// handed.
type indexedState struct {
	fixedState
	index   []byte
	indexes [][]byte
}

func (s *indexedState) LocalStateIndexed() ([]byte, []byte) { return s.state, s.index }
func (s *indexedState) MergeIndexedState(state, index []byte) ([][]byte, bool, error) {
	s.indexes = append(s.indexes, index)
	return s.fixedState.MergeRemoteState(state)
}

// An indexed state's index travels in a frame of its own before it, and
// reaches a receiver's MergeIndexedState with the state; a receiver
// without indexes merges the state alone, and a state that came without
// an index is merged whole.
func TestIndexTravelsBeforeItsState(t *testing.T) {
	state, index := directoryLike(4096), []byte("index")
	for _, size := range []int{len(state), deflateAbove + 1} {
		state := directoryLike(size)
		sender := framesNode("sender", &indexedState{fixedState: fixedState{state: state}, index: index}, zap.NewNop())
		buf := (&delegate{sender}).LocalState(false)
		kinds := frameKinds(t, buf)
		if len(kinds) != 3 || kinds[0] != msgIndex || kinds[1]&^frameDeflated != msgPods {
			t.Fatalf("frame kinds %x, want the index, then the pods", kinds)
		}
		indexed := &indexedState{}
		(&delegate{framesNode("receiver", indexed, zap.NewNop())}).MergeRemoteState(buf, false)
		if len(indexed.merged) != 1 || !bytes.Equal(indexed.merged[0], state) || len(indexed.indexes) != 1 || !bytes.Equal(indexed.indexes[0], index) {
			t.Fatalf("a %d-byte state: the receiver merged %d states with indexes %q, want the sender's state with its index", size, len(indexed.merged), indexed.indexes)
		}
		plain := &fixedState{}
		(&delegate{framesNode("older", plain, zap.NewNop())}).MergeRemoteState(buf, false)
		if len(plain.merged) != 1 || !bytes.Equal(plain.merged[0], state) {
			t.Fatalf("a %d-byte state: a receiver without indexes merged %d states, want the sender's", size, len(plain.merged))
		}
	}
	unindexed := (&delegate{framesNode("older", &fixedState{state: state}, zap.NewNop())}).LocalState(false)
	indexed := &indexedState{}
	(&delegate{framesNode("receiver", indexed, zap.NewNop())}).MergeRemoteState(unindexed, false)
	if len(indexed.merged) != 1 || len(indexed.indexes) != 0 {
		t.Fatalf("a state without an index: merged %d, %d of them through an index; want 1 merged whole", len(indexed.merged), len(indexed.indexes))
	}
}

// A large state unchanged since the last push/pull is not compressed
// again, and the same frame coming back from a peer in step is not
// decompressed: each took about 30 ms at 100,000 pods. A changed state
// goes compressed anew.
func TestUnchangedStateIsCompressedOnce(t *testing.T) {
	pods := &fixedState{state: directoryLike(deflateAbove + 1)}
	m := framesNode("node", pods, zap.NewNop())
	d := &delegate{m}
	compressed := func() *byte { return &m.deflated.last[msgPods].z[0] }
	d.LocalState(false)
	first := compressed()
	buf := d.LocalState(false)
	if compressed() != first {
		t.Fatal("an unchanged state was compressed again")
	}
	d.MergeRemoteState(buf, false)
	if len(pods.merged) != 1 || &pods.merged[0][0] != &pods.state[0] {
		t.Fatal("this node's own frame, coming back, was decompressed instead of taken as the state it compressed")
	}

	pods.state = bytes.Replace(pods.state, []byte("worker-000"), []byte("worker-999"), 1)
	buf = d.LocalState(false)
	if compressed() == first {
		t.Fatal("a changed state was sent as the old one's frame")
	}
	other := &fixedState{}
	(&delegate{framesNode("peer", other, zap.NewNop())}).MergeRemoteState(buf, false)
	if len(other.merged) != 1 || !bytes.Equal(other.merged[0], pods.state) {
		t.Fatal("a peer did not get the changed state")
	}
}
