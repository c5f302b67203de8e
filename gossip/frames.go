package gossip

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"go.uber.org/zap"
)

// A push/pull state is a sequence of frames: a message type, a 4-byte
// big-endian length and the payload. A receiver skips the kinds it does
// not know, so new kinds never confuse older agents.

// frameDeflated marks a frame whose state is compressed (DEFLATE). An
// older agent takes it for a kind it does not know and skips it.
const frameDeflated byte = 0x80

// deflateAbove is the size above which a state goes compressed. memberlist
// refuses a whole push/pull whose user state is more than 20 MiB
// (pushPullStateLimit), a join's included, so no node could join a fabric
// whose pod directory encodes to more: about 80,000 pods with
// Kubernetes-like names and labels. The directory compresses about
// tenfold. A state this size or smaller goes plain, which agents without
// compression read too: any two such frames and the clock fit the limit.
const deflateAbove = 8 << 20

// pushPullStateLimit is memberlist's limit on the user state of one
// push/pull (maxPushStateBytes, not exported).
const pushPullStateLimit = 20 << 20

// maxInflatedState bounds what one compressed frame may inflate to, so a
// peer cannot make this node allocate without bound.
const maxInflatedState = 64 << 20

func appendFrame(out []byte, kind byte, payload []byte) []byte {
	out = append(out, kind)
	out = binary.BigEndian.AppendUint32(out, uint32(len(payload)))
	return append(out, payload...)
}

// deflatedFrames keeps the last compressed frame of each state kind:
// compressing a large state took longer than anything else in a
// push/pull whose state had not changed since the last one, and a peer
// in step sends the very same frame back.
type deflatedFrames struct {
	mu   sync.Mutex
	last map[byte]deflatedFrame
}

type deflatedFrame struct{ state, z []byte }

// appendStateFrame frames a replicated state, compressed if it is large.
func (f *deflatedFrames) appendStateFrame(out []byte, kind byte, state []byte) []byte {
	if len(state) <= deflateAbove {
		return appendFrame(out, kind, state)
	}
	f.mu.Lock()
	last, ok := f.last[kind]
	f.mu.Unlock()
	if !ok || !bytes.Equal(last.state, state) {
		z, err := deflate(state)
		if err != nil {
			return appendFrame(out, kind, state)
		}
		last = deflatedFrame{state, z}
		f.mu.Lock()
		if f.last == nil {
			f.last = map[byte]deflatedFrame{}
		}
		f.last[kind] = last
		f.mu.Unlock()
	}
	return appendFrame(out, kind|frameDeflated, last.z)
}

// inflate returns the state a compressed frame of kind holds: the one
// this node compressed last if the frame is the same.
func (f *deflatedFrames) inflate(kind byte, z []byte) ([]byte, error) {
	f.mu.Lock()
	last, ok := f.last[kind]
	f.mu.Unlock()
	if ok && bytes.Equal(last.z, z) {
		return last.state, nil
	}
	return inflate(z, maxInflatedState)
}

func deflate(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	// Speed over ratio: every push/pull compresses the state anew.
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// inflate decompresses a frame's state, refusing one that inflates to
// more than limit bytes.
func inflate(z []byte, limit int64) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(z))
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("decompresses to more than %d bytes", limit)
	}
	return b, nil
}

// noteStateSize records the size of this node's push/pull state (sent
// bytes, and the largest state before compression) and says so, once in
// a while, when peers are about to refuse it or refuse it: memberlist
// refuses more than pushPullStateLimit sent, and an agent more than
// maxInflatedState of one state.
func (m *Membership) noteStateSize(sent, largest int) {
	m.metrics.StateBytes.Set(float64(sent))
	share := max(float64(sent)/pushPullStateLimit, float64(largest)/maxInflatedState)
	if share <= 0.6 || !m.rejected.fresh("push/pull state size", m.now()) {
		return
	}
	log, what := m.log.Warn, "this node's gossip state is close to the most peers take in one full sync"
	if share > 1 {
		log, what = m.log.Error, "this node's gossip state is more than peers take in one full sync: they refuse its full syncs, and nodes cannot join through it"
	}
	log(what, zap.Int("bytes", sent), zap.Int("limit", pushPullStateLimit),
		zap.Int("largest_uncompressed", largest), zap.Int("uncompressed_limit", maxInflatedState))
}
