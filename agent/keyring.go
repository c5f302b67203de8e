package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/gossip"
	"github.com/loomnet/loom/internal/atomicfile"
	"go.uber.org/zap"
)

// keyringFile is where the agent keeps its current gossip keys, so a key
// rotated at run time survives a restart. It takes precedence over
// --gossip-key-file, which only seeds it.
const keyringFile = "keyring"

func (a *Agent) keyringPath() string { return filepath.Join(a.cfg.StateDir, keyringFile) }

// loadPersistedKeyring replaces the configured keys with the persisted
// ring, if there is one.
func (a *Agent) loadPersistedKeyring() error {
	if len(a.cfg.keys) == 0 {
		return nil // --insecure-gossip
	}
	b, err := os.ReadFile(a.keyringPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	keys, err := ParseKeys(string(b))
	if err != nil {
		return fmt.Errorf("persisted keyring %s: %w (remove it to start from --gossip-key-file)", a.keyringPath(), err)
	}
	a.cfg.keys = keys
	a.log.Info("using the persisted gossip keyring", zap.String("file", a.keyringPath()), zap.Int("keys", len(keys)))
	return nil
}

// persistKeyring writes the keys, primary first, atomically and 0600.
func (a *Agent) persistKeyring(keys [][]byte) {
	var b strings.Builder
	b.WriteString("# Loom gossip keyring, primary first; managed by 'loomctl keyring'.\n")
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	if err := atomicfile.WriteFile(a.keyringPath(), []byte(b.String()), 0o600); err != nil {
		a.log.Error("persist gossip keyring", zap.Error(err))
	}
}

func (a *Agent) handleKeyring(w http.ResponseWriter, r *http.Request) {
	var req api.KeyringRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err)
		return
	}
	var key []byte
	switch req.Op {
	case gossip.KeyringList:
	case gossip.KeyringInstall, gossip.KeyringUse, gossip.KeyringRemove:
		keys, err := ParseKeys(req.Key)
		if err != nil || len(keys) != 1 {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Errorf("key: want one base64 key (loomctl keygen): %v", err))
			return
		}
		key = keys[0]
	default:
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Errorf("unknown keyring operation %q (list, install, use, remove)", req.Op))
		return
	}
	if len(a.cfg.keys) == 0 {
		writeError(w, http.StatusConflict, api.CodeBadRequest, errors.New("gossip encryption is off (--insecure-gossip); there is no keyring"))
		return
	}
	results := a.members.Keyring(req.Op, key, 10*time.Second)
	sort.Slice(results, func(i, j int) bool { return results[i].Node < results[j].Node })
	out := api.KeyringResponse{}
	for _, r := range results {
		out.Results = append(out.Results, api.KeyringNodeResult{Node: r.Node, Error: r.Error, Keys: r.Keys})
	}
	writeJSON(w, http.StatusOK, out)
}
