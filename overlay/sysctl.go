package overlay

import (
	"fmt"
	"os"
	"strings"
)

// EnableForwarding turns on IPv4 forwarding in the agent's network
// namespace: a node routes between pods, its tunnel and its underlay.
func EnableForwarding() error {
	_, err := SetSysctl(IPForwardKey, "1")
	return err
}

// SetSysctl sets /proc/sys/<key> to value in the caller's network
// namespace, writing only when it differs; it reports whether it wrote.
func SetSysctl(key, value string) (bool, error) {
	path := "/proc/sys/" + key
	cur, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(cur)) == value {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return false, fmt.Errorf("set %s = %s: %w", path, value, err)
	}
	return true, nil
}

// Anti-spoofing modes for pod veths.
const (
	AntiSpoofNFTables = "nftables"
	AntiSpoofRPFilter = "rp_filter"
)
