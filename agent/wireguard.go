package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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
	if err == nil {
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("WireGuard key %s: %v (move it aside to make a new one)", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgtypes.Key{}, fmt.Errorf("read WireGuard key: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate WireGuard key: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return wgtypes.Key{}, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("store WireGuard key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return wgtypes.Key{}, fmt.Errorf("store WireGuard key: %w", err)
	}
	return k, nil
}
