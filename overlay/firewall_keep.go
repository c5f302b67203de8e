package overlay

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
)

// Keep implements Firewaller. It leaves the table a run before this one
// left as it is, its rules and policies those of that run, but makes its
// member-node sets follow spec: a node that joined or changed address
// while the policies to enforce are not known is a member all the same,
// and its VXLAN packets must not be dropped by the guards. The sets'
// elements are read back from the kernel, since this run never wrote
// them. Without such a table (a new node, or it was removed), or once
// this run wrote its own (which is repaired like any, if changed behind
// its back), it is Apply.
func (f *NFTables) Keep(spec FirewallSpec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wroteOwn {
		return f.apply(spec)
	}
	c, ok, err := openInKernel()
	if err != nil {
		return false, err
	}
	if !ok {
		return f.apply(spec)
	}
	f.lastRun = true
	nodes, overlays := addrSets(loomTable())
	members := []memberSet{{nodes, spec.NodeAddrs, false}, {overlays, spec.NodeOverlays, false}}
	if spec.guardsIPv6() {
		// The last run may have had no IPv6 guard (its underlay was IPv4):
		// then there is none to keep up to date.
		if ok, err := hasLoomTable(c, nftables.TableFamilyIPv6); err == nil && ok {
			members = append(members, memberSet{nodeSet6(), spec.NodeAddrs, true})
		}
	}
	var changes []setChange
	for _, m := range members {
		held, err := setAddrs(c, m.set)
		if err != nil {
			return false, err
		}
		if ch := addrChange(m.set, held, m.want, m.ipv6); len(ch.add)+len(ch.del) > 0 {
			changes = append(changes, ch)
		}
	}
	if len(changes) == 0 {
		return false, nil
	}
	if err := commitChanges(c, changes); err != nil {
		return true, fmt.Errorf("update member nodes of the firewall kept from the last run: %w", err)
	}
	return true, nil
}

// memberSet is a set of member nodes' addresses and the addresses of a
// family it should hold.
type memberSet struct {
	set  *nftables.Set
	want []netip.Addr
	ipv6 bool
}

// setAddrs reads back the addresses a set of Loom's table holds.
func setAddrs(c *nftables.Conn, set *nftables.Set) ([]netip.Addr, error) {
	elems, err := c.GetSetElements(set)
	if err != nil {
		return nil, fmt.Errorf("read nftables set %s: %w", set.Name, err)
	}
	addrs := make([]netip.Addr, 0, len(elems))
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("read nftables set %s: element %x is not an address", set.Name, e.Key)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}
