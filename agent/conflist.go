package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/loomnet/loom/internal/atomicfile"
	"go.uber.org/zap"
)

// ConflistName is the file loomd writes into --cni-conf-dir.
const ConflistName = "10-loom.conflist"

// PluginConf is the "loom" plugin's entry in the conflist.
type PluginConf struct {
	Type   string `json:"type"`
	Socket string `json:"socket"`
	MTU    int    `json:"mtu"`
}

// chainedCapabilities are the runtime capabilities the well-known chained
// plugins need, so runtimes pass them hostPorts and bandwidth annotations.
var chainedCapabilities = map[string]map[string]bool{
	"portmap":   {"portMappings": true},
	"bandwidth": {"bandwidth": true},
}

// conflist is the network configuration list runtimes load. cniVersion
// stays 1.0.0 for runtimes whose libcni predates 1.1; newer ones read
// cniVersions and pick 1.1.0.
type conflist struct {
	CNIVersion  string   `json:"cniVersion"`
	CNIVersions []string `json:"cniVersions"`
	Name        string   `json:"name"`
	Plugins     []any    `json:"plugins"`
}

func (a *Agent) chain() []any {
	plugins := []any{PluginConf{Type: "loom", Socket: a.cfg.Socket, MTU: a.cfg.mtu}}
	for _, name := range a.cfg.CNIChain {
		p := map[string]any{"type": name}
		if caps, ok := chainedCapabilities[name]; ok {
			p["capabilities"] = caps
		}
		plugins = append(plugins, p)
	}
	return plugins
}

func (a *Agent) conflistBytes() ([]byte, error) {
	return json.MarshalIndent(conflist{
		CNIVersion:  "1.0.0",
		CNIVersions: []string{"1.0.0", "1.1.0"},
		Name:        "loom",
		Plugins:     a.chain(),
	}, "", "  ")
}

// writeConflist writes the conflist atomically (temp file, fsync, rename),
// once the node can serve pods: a runtime that sees the file may start
// pods at once. Until it is written the node is not ready, since no pod
// can start on it; a failure is logged when it first appears or changes,
// and the caller retries. The file is loomd's: each reconcile reads it
// back and restores it if something removed or changed it (a reset, a
// config tool purging the directory), as it repairs the kernel's drift.
func (a *Agent) writeConflist() error {
	want, err := a.conflistBytes()
	if err != nil {
		return err
	}
	want = append(want, '\n')
	path := filepath.Join(a.cfg.CNIConfDir, ConflistName)
	a.stateMu.Lock()
	written, prev := a.confWritten, a.confErr
	a.stateMu.Unlock()
	if written {
		if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
			return nil
		}
	}
	err = a.storeConflist(path, want)
	a.stateMu.Lock()
	a.confWritten, a.confErr = err == nil, err
	a.stateMu.Unlock()
	switch {
	case newFailure(prev, err):
		a.log.Error("cannot write the CNI config; no pod can start here until it is written; retrying",
			zap.String("file", path), zap.Error(err))
	case err == nil && written:
		a.log.Warn("CNI config was removed or changed by something else; restored", zap.String("file", path))
		a.metrics.drift.WithLabelValues("cni_config").Inc()
	case err == nil && prev != nil:
		a.log.Info("CNI config written", zap.String("file", path))
	}
	return err
}

func (a *Agent) storeConflist(path string, b []byte) error {
	if err := os.MkdirAll(a.cfg.CNIConfDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", a.cfg.CNIConfDir, err)
	}
	return atomicfile.WriteFile(path, b, 0o644)
}
