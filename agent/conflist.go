package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/loomnet/loom/internal/atomicfile"
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
// pods at once.
func (a *Agent) writeConflist() error {
	a.stateMu.Lock()
	done := a.confWritten
	a.stateMu.Unlock()
	if done {
		return nil
	}
	b, err := a.conflistBytes()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.cfg.CNIConfDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", a.cfg.CNIConfDir, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.CNIConfDir, ConflistName), append(b, '\n'), 0o644); err != nil {
		return err
	}
	a.stateMu.Lock()
	a.confWritten = true
	a.stateMu.Unlock()
	return nil
}
