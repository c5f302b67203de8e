package overlay

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// setNodes6 holds the IPv6 underlay addresses of member nodes.
const setNodes6 = "nodes6"

// loomTable6 is Loom's ip6 table. It exists only on a node whose tunnel
// runs over IPv6 and holds nothing but the VXLAN port's guard: pods are
// IPv4, so everything else stays in the ip table.
func loomTable6() *nftables.Table {
	return &nftables.Table{Name: FirewallTable, Family: nftables.TableFamilyIPv6}
}

func nodeSet6() *nftables.Set {
	return &nftables.Set{Table: loomTable6(), Name: setNodes6, KeyType: nftables.TypeIP6Addr}
}

// guardsIPv6 reports whether spec needs the ip6 table.
func (s FirewallSpec) guardsIPv6() bool { return s.TunnelIPv6 && s.VXLANPort > 0 }

// writeIPv6Guard adds to c's batch the ip6 table replaced whole, when spec
// guards an IPv6 tunnel, or else the deletion of one left from before (the
// underlay changed family, or the guard was turned off). Its one chain
// drops VXLAN packets from anyone but member nodes, as vxlan-ingress does
// for IPv4. An IPv4 node touches no ip6 table otherwise: its kernel may
// have IPv6 turned off.
func writeIPv6Guard(c *nftables.Conn, spec FirewallSpec) error {
	t := loomTable6()
	if !spec.guardsIPv6() {
		if ok, err := hasLoomTable(c, nftables.TableFamilyIPv6); ok && err == nil {
			c.DelTable(t)
		}
		return nil
	}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	nodes := nodeSet6()
	if err := c.AddSet(nodes, addrElements(spec.NodeAddrs, true)); err != nil {
		return fmt.Errorf("build nftables set %s: %w", setNodes6, err)
	}
	ch := c.AddChain(&nftables.Chain{
		Name: ChainVXLANIngress, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(spec.VXLANPort))},
		// The IPv6 source address: 16 bytes at offset 8.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	return nil
}
