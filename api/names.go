package api

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
