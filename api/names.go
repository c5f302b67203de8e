package api

import (
	"crypto/sha256"
	"encoding/hex"
)

// HostVethName is the name of the host end of a pod's veth: "loom" and a
// hash of the attachment, so it is stable, unique and at most 15 bytes.
// The agent and the plugin both derive it, so the plugin can make the veth
// while the agent is still storing the allocation.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "loom" + hex.EncodeToString(sum[:])[:11]
}

// maxInterfaceName is IFNAMSIZ minus the terminating NUL: Linux counts
// bytes, not characters, so a name of multi-byte runes can be too long
// while looking short.
const maxInterfaceName = 15

// ValidInterfaceName reports whether name is what Linux accepts as an
// interface name and CNI allows as CNI_IFNAME: 1-15 bytes, no NUL, '/', ':'
// or white space, and not "." or "..". The plugin and the agent check the
// same rule.
func ValidInterfaceName(name string) bool {
	if len(name) == 0 || len(name) > maxInterfaceName || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == 0, c == '/', c == ':':
			return false
		// The kernel's isspace() also counts Latin-1 NBSP (0xa0).
		case c == ' ', c == '\t', c == '\n', c == '\v', c == '\f', c == '\r', c == 0xa0:
			return false
		}
	}
	return true
}
