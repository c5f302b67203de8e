// Package cniplugin is the "loom" CNI plugin: it asks the local agent for
// an address and wires the pod side of the veth. It holds no state; the
// agent owns allocations and the host side.
package cniplugin

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/loomnet/loom/api"
)

// apiTimeout bounds each call to the agent; runtimes give a whole ADD a
// few minutes at most, and a wedged agent must not hang pod creation.
const apiTimeout = 15 * time.Second

// ErrCodeSubnetExhausted is the plugin-specific error code (>= 100, as the
// spec reserves) for "no free address on this node".
const ErrCodeSubnetExhausted uint = 100

// NetConf is the "loom" plugin's configuration from the conflist.
type NetConf struct {
	types.NetConf
	// Socket is the agent's unix socket.
	Socket string `json:"socket"`
	// MTU is informational; the agent's answer is authoritative.
	MTU int `json:"mtu,omitempty"`
}

// parseConf decodes and validates stdin. Failures carry the spec's codes:
// 6 for undecodable JSON, 7 for a config that decodes but is wrong.
func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to decode network configuration", err.Error())
	}
	if conf.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network configuration has no cniVersion", "")
	}
	// skel has already refused versions the plugin does not support.
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	if conf.MTU < 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid mtu %d", conf.MTU), "")
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
		}
	}
	return conf, nil
}
