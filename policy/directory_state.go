package policy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// A push/pull carries the whole directory, and at 100,000 pods encoding
// it took a node about 0.2 s and decoding a peer's about 0.5 s, every
// push/pull, though nearly all of it was the same on both sides. So the
// full state is built from one segment per node (that node's records,
// sorted by address, as the JSON array's elements) and kept between
// push/pulls: only the segments of nodes whose records changed are
// encoded again. An index beside it names each segment's node and
// length, and a receiver decodes only the segments that differ from its
// own. The state itself stays the JSON array of records older agents
// read; they skip the index's gossip frame.

// fullState is the cached full state and where each node's segment is
// in it. Guarded by Directory.mu.
type fullState struct {
	// bytes is the JSON array of every record, nil until built.
	bytes []byte
	// index is the encoded index of bytes (see appendIndexEntry).
	index []byte
	// segments locates each node's segment in bytes.
	segments map[string]span
	// stale names the nodes whose records changed since bytes was built.
	stale map[string]bool
}

type span struct{ start, end int }

// staleNode notes that node's records changed. Called with mu held.
func (d *Directory) staleNode(node string) {
	if d.full.stale == nil {
		d.full.stale = map[string]bool{}
	}
	d.full.stale[node] = true
}

// LocalState implements gossip.StateExchanger: every record, tombstones
// included, so a node that missed a deletion learns it.
func (d *Directory) LocalState() []byte {
	state, _ := d.LocalStateIndexed()
	return state
}

// LocalStateIndexed returns the full state and its index (see
// MergeIndexedState). The state is shared: callers must not modify it.
func (d *Directory) LocalStateIndexed() (state, index []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buildState()
	return d.full.bytes, d.full.index
}

// buildState brings the cached full state up to date, encoding only the
// stale nodes' segments. Called with mu held.
func (d *Directory) buildState() {
	if d.full.bytes != nil && len(d.full.stale) == 0 {
		return
	}
	was := d.full
	nodes := slices.Sorted(maps.Keys(d.records))
	state := make([]byte, 0, len(was.bytes)+64)
	state = append(state, '[')
	var index []byte
	segments := make(map[string]span, len(nodes))
	for _, node := range nodes {
		if len(d.records[node]) == 0 {
			continue
		}
		if len(segments) > 0 {
			state = append(state, ',')
		}
		start := len(state)
		if s, ok := was.segments[node]; ok && !was.stale[node] {
			state = append(state, was.bytes[s.start:s.end]...)
		} else {
			state = d.appendSegment(state, node)
		}
		segments[node] = span{start, len(state)}
		index = appendIndexEntry(index, node, len(state)-start)
	}
	state = append(state, ']')
	d.full = fullState{bytes: state, index: index, segments: segments}
}

// appendSegment appends node's records, sorted by address, as JSON array
// elements. Called with mu held.
func (d *Directory) appendSegment(out []byte, node string) []byte {
	held := d.records[node]
	recs := make([]PodRecord, 0, len(held))
	for _, ip := range slices.SortedFunc(maps.Keys(held), func(a, b netip.Addr) int { return a.Compare(b) }) {
		recs = append(recs, held[ip])
	}
	b, err := json.Marshal(recs)
	if err != nil {
		// Records hold strings, numbers and addresses: Marshal cannot fail.
		panic(fmt.Sprintf("encode pod records of %s: %v", node, err))
	}
	return append(out, b[1:len(b)-1]...)
}

// appendIndexEntry appends one segment's node name and length.
func appendIndexEntry(out []byte, node string, length int) []byte {
	out = binary.AppendUvarint(out, uint64(len(node)))
	out = append(out, node...)
	return binary.AppendUvarint(out, uint64(length))
}

// indexEntry is one segment as a peer's index gives it.
type indexEntry struct {
	node string
	seg  []byte
}

// splitState cuts a peer's full state into the segments its index names,
// checking that they are the array's elements exactly: one after another,
// a comma between two, the brackets around all.
func splitState(state, index []byte) ([]indexEntry, error) {
	if len(state) < 2 || state[0] != '[' || state[len(state)-1] != ']' {
		return nil, errors.New("the state is no JSON array")
	}
	var out []indexEntry
	pos := 1
	for len(index) > 0 {
		n, k := binary.Uvarint(index)
		if k <= 0 || n > uint64(len(index)-k) {
			return nil, errors.New("bad node name length in the index")
		}
		node := string(index[k : k+int(n)])
		index = index[k+int(n):]
		length, k := binary.Uvarint(index)
		if k <= 0 {
			return nil, errors.New("bad segment length in the index")
		}
		index = index[k:]
		if len(out) > 0 {
			if state[pos] != ',' {
				return nil, errors.New("the index's segments are not the array's elements")
			}
			pos++
		}
		if length == 0 || length > uint64(len(state)-1-pos) {
			return nil, errors.New("a segment in the index lies outside the state")
		}
		out = append(out, indexEntry{node, state[pos : pos+int(length)]})
		pos += int(length)
	}
	if pos != len(state)-1 {
		return nil, errors.New("the index does not cover the state")
	}
	return out, nil
}

// MergeIndexedState merges a peer's full state as MergeRemoteState does,
// decoding only the segments that differ from this node's: a segment
// equal to its own is the same records, which would change nothing. A
// state whose index does not match it is merged whole.
func (d *Directory) MergeIndexedState(state, index []byte) ([][]byte, bool, error) {
	if len(state) > maxDirectoryUpdate {
		return d.MergeRemoteState(state)
	}
	segs, err := splitState(state, index)
	if err != nil {
		return d.MergeRemoteState(state)
	}
	d.mu.Lock()
	d.buildState()
	differ := []byte{'['}
	for _, e := range segs {
		if s, ok := d.full.segments[e.node]; ok && bytes.Equal(d.full.bytes[s.start:s.end], e.seg) {
			continue
		}
		if len(differ) > 1 {
			differ = append(differ, ',')
		}
		differ = append(differ, e.seg...)
	}
	d.mu.Unlock()
	if len(differ) == 1 {
		return nil, false, nil
	}
	in, err := decodeRecords(append(differ, ']'))
	if err != nil {
		// A segment that is no list of records: the whole state says what.
		return d.MergeRemoteState(state)
	}
	return d.mergeRecords(in)
}
