package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// twinDirectories returns two directories of node "a" holding the same
// records, on one fixed clock, so that what each does with the same
// input can be compared byte for byte.
func twinDirectories(t testing.TB) (*Directory, *Directory) {
	clock := time.Unix(1_700_000_000, 0)
	valid := func(r PodRecord) error {
		if !netip.MustParsePrefix("10.244.0.0/16").Contains(r.IP) {
			return errString("outside the cluster")
		}
		return nil
	}
	var twins [2]*Directory
	for i := range twins {
		d := NewDirectory("a", valid)
		d.now = func() time.Time { return clock }
		d.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"app": "web"}), rec("", "10.244.0.3", nil)})
		b := NewDirectory("b", nil)
		b.now = d.now
		deliver(t, d, b.Publish([]PodRecord{rec("", "10.244.1.2", nil), rec("", "10.244.1.3", map[string]string{"app": "db"})}))
		twins[i] = d
	}
	return twins[0], twins[1]
}

// peerState returns the full state and index of node c's view: it knows
// b's pods as a does, and pods of its own.
func peerState(t testing.TB, alter func(c *Directory)) (state, index []byte) {
	a, _ := twinDirectories(t)
	c := NewDirectory("c", nil)
	c.now = a.now
	if _, _, err := c.MergeRemoteState(a.LocalState()); err != nil {
		t.Fatal(err)
	}
	c.Publish([]PodRecord{rec("", "10.244.2.2", nil)})
	if alter != nil {
		alter(c)
	}
	return c.LocalStateIndexed()
}

// mergeBothWays merges a peer's state into one twin whole and into the
// other through the index, and fails unless both end the same: what they
// relay, whether they changed, their errors and what they then hold.
func mergeBothWays(t *testing.T, state, index []byte) {
	t.Helper()
	whole, indexed := twinDirectories(t)
	relayW, changedW, errW := whole.MergeRemoteState(state)
	relayI, changedI, errI := indexed.MergeIndexedState(state, index)
	if fmt.Sprint(errW) != fmt.Sprint(errI) || changedW != changedI {
		t.Fatalf("whole merge: changed %v, error %v; indexed: changed %v, error %v", changedW, errW, changedI, errI)
	}
	if !slices.EqualFunc(relayW, relayI, bytes.Equal) {
		t.Fatalf("whole merge relays %q, indexed %q", relayW, relayI)
	}
	if w, i := whole.LocalState(), indexed.LocalState(); !bytes.Equal(w, i) {
		t.Fatalf("whole merge leaves\n%s\nindexed\n%s", w, i)
	}
}

// The full state is built the same by every node holding the same
// records, however they came, which is what lets a receiver tell a
// segment it holds alike; and it follows every change.
func TestFullStateIsBuiltAlikeEverywhere(t *testing.T) {
	a, twin := twinDirectories(t)
	first := a.LocalState()
	if !bytes.Equal(first, twin.LocalState()) {
		t.Fatalf("two directories holding the same records build\n%s\nand\n%s", first, twin.LocalState())
	}
	// The same records, put in the other way round.
	restored := NewDirectory("z", nil)
	var recs []PodRecord
	if err := json.Unmarshal(first, &recs); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(recs)
	if _, _, err := restored.mergeRecords(recs); err != nil {
		t.Fatal(err)
	}
	if got := restored.LocalState(); !bytes.Equal(got, first) {
		t.Fatalf("records merged in reverse build\n%s\nwant\n%s", got, first)
	}

	// After a change, what a node holds and what it sends agree.
	for _, step := range []struct {
		name   string
		change func()
	}{
		{"publish", func() { a.Publish([]PodRecord{rec("", "10.244.0.9", nil)}) }},
		{"merge", func() { deliver(t, a, NewDirectory("d", nil).Publish([]PodRecord{rec("", "10.244.3.2", nil)})) }},
		{"forget", func() {
			a.ForgetAfter(func(node string) bool { return node != "d" }, time.Nanosecond)
			a.now = func() time.Time { return time.Now().Add(time.Hour) }
			if gone := a.Forget(); !slices.Equal(gone, []string{"d"}) {
				t.Fatalf("forgot %v, want [d]", gone)
			}
		}},
	} {
		name, change := step.name, step.change
		before := a.LocalState()
		change()
		fresh := NewDirectory("z", nil)
		a.mu.Lock()
		for _, held := range a.records {
			for _, r := range held {
				fresh.put(r)
			}
		}
		a.mu.Unlock()
		if got, want := a.LocalState(), fresh.LocalState(); !bytes.Equal(got, want) || bytes.Equal(got, before) {
			t.Fatalf("after %s the state is\n%s\nwant\n%s", name, got, want)
		}
	}
}

// A merge through the index ends exactly as a whole merge does, for a
// peer in step, one ahead, one holding stale records of this node, and
// an index that does not describe its state.
func TestIndexedMergeIsAWholeMerge(t *testing.T) {
	inStep, inStepIndex := peerState(t, nil)
	cases := map[string]struct{ state, index []byte }{
		"in step": {inStep, inStepIndex},
	}
	add := func(name string, alter func(c *Directory)) {
		state, index := peerState(t, alter)
		cases[name] = struct{ state, index []byte }{state, index}
	}
	add("newer pods of b", func(c *Directory) {
		b := NewDirectory("b", nil)
		b.now = func() time.Time { return time.Unix(1_800_000_000, 0) }
		deliver(t, c, b.Publish([]PodRecord{rec("", "10.244.1.2", map[string]string{"app": "new"})}))
	})
	add("a stale record of a", func(c *Directory) {
		c.mu.Lock()
		c.store(PodRecord{Node: "a", IP: netip.MustParseAddr("10.244.0.7"), Version: 1, Namespace: "x", Name: "old"})
		c.mu.Unlock()
	})
	add("a record refused here", func(c *Directory) {
		c.mu.Lock()
		c.store(PodRecord{Node: "e", IP: netip.MustParseAddr("10.9.0.2"), Version: 1, Namespace: "x"})
		c.mu.Unlock()
	})
	state := cases["newer pods of b"].state
	index := cases["newer pods of b"].index
	cases["no index"] = struct{ state, index []byte }{state, nil}
	cases["truncated index"] = struct{ state, index []byte }{state, index[:len(index)-1]}
	cases["index of another state"] = struct{ state, index []byte }{state, inStepIndex}
	cases["one segment cut in two"] = struct{ state, index []byte }{state, splitFirst(t, state, index)}
	cases["no array"] = struct{ state, index []byte }{[]byte(`{"node":"b"}`), index}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { mergeBothWays(t, c.state, c.index) })
	}
}

// splitFirst returns index with its first segment cut in two at a byte
// that is no boundary between records.
func splitFirst(t *testing.T, state, index []byte) []byte {
	segs, err := splitState(state, index)
	if err != nil {
		t.Fatal(err)
	}
	half := len(segs[0].seg) / 2
	out := appendIndexEntry(nil, segs[0].node, half)
	out = appendIndexEntry(out, segs[0].node, len(segs[0].seg)-half-1)
	for _, s := range segs[1:] {
		out = appendIndexEntry(out, s.node, len(s.seg))
	}
	return out
}

// FuzzIndexedMerge: whatever a peer sends as a full state and its index,
// the merge through the index ends exactly as the whole merge does.
func FuzzIndexedMerge(f *testing.F) {
	state, index := peerState(f, nil)
	f.Add(state, index)
	f.Add(state, []byte{})
	f.Add(state, index[:len(index)/2])
	f.Add([]byte(`[{"node":"b","ip":"10.244.1.2","v":1},{"node":"c","ip":"10.244.2.2","v":1}]`),
		appendIndexEntry(appendIndexEntry(nil, "b", 37), "c", 37))
	f.Add([]byte(`[]`), []byte{})
	f.Fuzz(func(t *testing.T, state, index []byte) { mergeBothWays(t, state, index) })
}
