package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/loomnet/loom/api"
	"github.com/loomnet/loom/internal/atomicfile"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wireGuardKeyFile holds the node's WireGuard private key, made once.
const wireGuardKeyFile = "wireguard.key"

// loadWireGuardKey returns the node's private key from the state
// directory, generating and storing it (0600) on first use. A key file
// that exists but does not parse is an error: a new key would silently
// change the node's identity for every peer.
func loadWireGuardKey(stateDir string) (wgtypes.Key, error) {
	path := filepath.Join(stateDir, wireGuardKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return makeWireGuardKey(stateDir)
	case err != nil:
		return wgtypes.Key{}, fmt.Errorf("read WireGuard key: %w", err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key %s: %v (move it aside to make a new one)", path, err)
	}
	return k, nil
}

// makeWireGuardKey generates a private key and stores it in the state
// directory, replacing any earlier one atomically.
func makeWireGuardKey(stateDir string) (wgtypes.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate WireGuard key: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("create state directory: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, wireGuardKeyFile), []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("store WireGuard key: %w", err)
	}
	return k, nil
}

// rotateWireGuardKey makes and stores a new key pair, puts it on the
// device and gossips the new public key; peers reconfigure as soon as
// they see it, so traffic pauses for about one gossip round and one
// handshake.
func (a *Agent) rotateWireGuardKey() (string, error) {
	if a.wg == nil {
		return "", errors.New("this node does not run the wireguard backend")
	}
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	k, err := makeWireGuardKey(a.cfg.StateDir)
	if err != nil {
		return "", err
	}
	pub := k.PublicKey()
	a.wg.SetPrivateKey(k)
	a.stateMu.Lock()
	a.wgPublic = pub[:]
	a.stateMu.Unlock()
	if err := a.members.SetLocalRecord(a.record()); err != nil {
		return "", fmt.Errorf("gossip the new WireGuard key: %w", err)
	}
	a.log.Info("WireGuard key rotated", zap.String("public_key", pub.String()))
	a.trigger()
	return pub.String(), nil
}

// handleWireGuardRotate serves POST /v1/wireguard/rotate.
func (a *Agent) handleWireGuardRotate(w http.ResponseWriter, r *http.Request) {
	pub, err := a.rotateWireGuardKey()
	if err != nil {
		writeError(w, http.StatusConflict, api.CodeBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, api.WireGuardRotateResponse{PublicKey: pub})
}
