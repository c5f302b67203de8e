package gossip

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Keyring operations, applied on every live node.
const (
	KeyringList    = "list"
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// KeyringResult is one node's answer to a keyring operation.
type KeyringResult struct {
	Node  string `json:"node"`
	Error string `json:"error,omitempty"`
	// Keys are the fingerprints of the node's keys after the operation,
	// primary first.
	Keys []string `json:"keys"`
}

// KeyFingerprint names a key without revealing it.
func KeyFingerprint(k []byte) string {
	sum := sha256.Sum256(k)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

type keyringRequest struct {
	ID  string `json:"id"`
	Op  string `json:"op"`
	Key []byte `json:"key,omitempty"`
	// From is the node to answer.
	From string `json:"from"`
}

type keyringAck struct {
	ID     string        `json:"id"`
	Result KeyringResult `json:"result"`
}

// keyringState is the part of Membership that runs keyring operations.
type keyringState struct {
	ring     *memberlist.Keyring
	onChange func(keys [][]byte)

	// mu guards pending, the waiters for acks by request ID.
	mu      sync.Mutex
	pending map[string]chan KeyringResult
}

// applyKeyring changes the local keyring. Removing the primary key is
// refused: the node would stop being able to send.
func (m *Membership) applyKeyring(op string, key []byte) KeyringResult {
	res := KeyringResult{Node: m.name}
	kr := m.keyring.ring
	if kr == nil {
		res.Error = "gossip encryption is off on this node"
		return res
	}
	var err error
	switch op {
	case KeyringList:
	case KeyringInstall:
		err = kr.AddKey(key)
	case KeyringUse:
		found := false
		for _, k := range kr.GetKeys() {
			found = found || bytes.Equal(k, key)
		}
		if !found {
			err = errors.New("key is not installed; install it everywhere first")
		} else {
			err = kr.UseKey(key)
		}
	case KeyringRemove:
		if bytes.Equal(kr.GetPrimaryKey(), key) {
			err = errors.New("key is the primary key; use another key first")
		} else {
			err = kr.RemoveKey(key)
		}
	default:
		err = fmt.Errorf("unknown keyring operation %q", op)
	}
	if err != nil {
		res.Error = err.Error()
	} else if op != KeyringList && m.keyring.onChange != nil {
		m.keyring.onChange(orderedKeys(kr))
		m.log.Info("gossip keyring changed", zap.String("op", op), zap.String("key", KeyFingerprint(key)))
	}
	for _, k := range orderedKeys(kr) {
		res.Keys = append(res.Keys, KeyFingerprint(k))
	}
	return res
}

// orderedKeys returns the keys with the primary first.
func orderedKeys(kr *memberlist.Keyring) [][]byte {
	primary := kr.GetPrimaryKey()
	out := [][]byte{primary}
	for _, k := range kr.GetKeys() {
		if !bytes.Equal(k, primary) {
			out = append(out, k)
		}
	}
	return out
}

// Keyring runs op on this node and every live peer and returns each
// node's result. Nodes that do not answer within timeout are reported as
// such. The operation travels encrypted with the current keyring, so only
// holders of a valid key can change it.
func (m *Membership) Keyring(op string, key []byte, timeout time.Duration) []KeyringResult {
	results := []KeyringResult{m.applyKeyring(op, key)}
	idb := make([]byte, 8)
	rand.Read(idb)
	id := base64.RawURLEncoding.EncodeToString(idb)
	ch := make(chan KeyringResult, 64)
	m.keyring.mu.Lock()
	m.keyring.pending[id] = ch
	m.keyring.mu.Unlock()
	defer func() {
		m.keyring.mu.Lock()
		delete(m.keyring.pending, id)
		m.keyring.mu.Unlock()
	}()
	req, _ := json.Marshal(keyringRequest{ID: id, Op: op, Key: key, From: m.name})
	msg := append([]byte{msgKeyring}, req...)
	waiting := map[string]bool{}
	for _, n := range m.ml.Members() {
		if n.Name == m.name {
			continue
		}
		if err := m.ml.SendReliable(n, msg); err != nil {
			results = append(results, KeyringResult{Node: n.Name, Error: "unreachable: " + err.Error()})
			continue
		}
		waiting[n.Name] = true
	}
	deadline := time.After(timeout)
	for len(waiting) > 0 {
		select {
		case r := <-ch:
			if waiting[r.Node] {
				delete(waiting, r.Node)
				results = append(results, r)
			}
		case <-deadline:
			for n := range waiting {
				results = append(results, KeyringResult{Node: n, Error: "no answer within " + timeout.String()})
			}
			return results
		}
	}
	return results
}

// handleKeyringMessage runs off memberlist's goroutine: it may block and
// send, which a delegate callback must not.
func (m *Membership) handleKeyringMessage(kind byte, body []byte) {
	ml := m.started.Load()
	if ml == nil {
		return // arrived while starting; the sender reports no answer
	}
	switch kind {
	case msgKeyring:
		var req keyringRequest
		if err := json.Unmarshal(body, &req); err != nil {
			m.log.Warn("malformed keyring request", zap.Error(err))
			return
		}
		res := m.applyKeyring(req.Op, req.Key)
		ack, _ := json.Marshal(keyringAck{ID: req.ID, Result: res})
		for _, n := range ml.Members() {
			if n.Name == req.From {
				if err := ml.SendReliable(n, append([]byte{msgKeyringAck}, ack...)); err != nil {
					m.log.Warn("answer keyring request", zap.String("node", n.Name), zap.Error(err))
				}
				return
			}
		}
	case msgKeyringAck:
		var ack keyringAck
		if err := json.Unmarshal(body, &ack); err != nil {
			return
		}
		m.keyring.mu.Lock()
		ch := m.keyring.pending[ack.ID]
		m.keyring.mu.Unlock()
		if ch != nil {
			select {
			case ch <- ack.Result:
			default:
			}
		}
	}
}
