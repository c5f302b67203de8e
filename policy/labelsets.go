package policy

import (
	"encoding/binary"
	"slices"
)

// labelSets lets the pods that carry the same labels share one map: the
// replicas of a workload carry the same set, and at 100,000 pods a map
// and its strings for each pod were most of what the pod directory, or
// a view of the cluster, held. A shared map is never written to (no code
// writes to a pod's labels). In the directory, each set counts the
// records that carry it, so that a set none carries any more is let go.
type labelSets struct {
	sets map[string]*labelSet
	// key is room to encode a set's key in, reused.
	key []byte
}

type labelSet struct {
	labels map[string]string
	refs   int
}

func newLabelSets() *labelSets { return &labelSets{sets: map[string]*labelSet{}} }

// share returns the map to keep for labels: the one already kept for
// the same set, else labels itself, which is kept from now on.
func (s *labelSets) share(labels map[string]string) map[string]string {
	if len(labels) == 0 {
		return labels
	}
	s.key = appendLabelSetKey(s.key[:0], labels)
	// Looking up by string(s.key) copies nothing; only a new set's key is.
	if e, ok := s.sets[string(s.key)]; ok {
		e.refs++
		return e.labels
	}
	s.sets[string(s.key)] = &labelSet{labels: labels, refs: 1}
	return labels
}

// drop notes that a record carrying labels, as share returned them, is
// gone or replaced.
func (s *labelSets) drop(labels map[string]string) {
	if len(labels) == 0 {
		return
	}
	s.key = appendLabelSetKey(s.key[:0], labels)
	if e, ok := s.sets[string(s.key)]; ok {
		if e.refs--; e.refs == 0 {
			delete(s.sets, string(s.key))
		}
	}
}

// appendLabelSetKey appends an encoding of a set of labels, the same for
// equal sets (see appendMapKey).
func appendLabelSetKey(out []byte, labels map[string]string) []byte {
	return appendMapKey(out, labels, appendLengthPrefixed)
}

// appendMapKey appends an encoding of m, the same for equal maps: sorted
// by key, each key prefixed by its length and followed by its value as
// appendValue encodes it (which must tell values apart on its own, as a
// length prefix does).
func appendMapKey[V any](out []byte, m map[string]V, appendValue func([]byte, V) []byte) []byte {
	var room [16]string
	keys := room[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = appendLengthPrefixed(out, k)
		out = appendValue(out, m[k])
	}
	return out
}

func appendLengthPrefixed(out []byte, s string) []byte {
	out = binary.AppendUvarint(out, uint64(len(s)))
	return append(out, s...)
}
