package api

import "regexp"

var ifNameRE = regexp.MustCompile(`^[^/:\s]{1,15}$`)

// ValidInterfaceName reports whether name is what Linux accepts as an
// interface name and CNI allows as CNI_IFNAME: 1-15 bytes, no '/', ':' or
// white space, and not "." or "..". The plugin and the agent check the same
// rule.
func ValidInterfaceName(name string) bool {
	return ifNameRE.MatchString(name) && name != "." && name != ".."
}
