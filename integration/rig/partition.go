package rig

import "net/netip"

// Partition moves the given nodes' switch ports to a second bridge, cutting
// them off from every node left on the first: a network split, with each
// side still connected within itself.
func (r *Rig) Partition(side ...*Node) error {
	if _, err := Run("ip", "-n", r.Switch, "link", "show", "br1"); err != nil {
		if err := ipn(r.Switch, "link", "add", "br1", "type", "bridge"); err != nil {
			return err
		}
		if err := ipn(r.Switch, "link", "set", "br1", "up"); err != nil {
			return err
		}
	}
	for _, n := range side {
		if err := ipn(r.Switch, "link", "set", n.port, "master", "br1"); err != nil {
			return err
		}
	}
	return nil
}

// Heal puts every node back on the first bridge.
func (r *Rig) Heal() error {
	for _, n := range r.Nodes() {
		if err := ipn(r.Switch, "link", "set", n.port, "master", "br0"); err != nil {
			return err
		}
	}
	return nil
}

// RoutedSegment is the second underlay segment, reached through a router
// namespace: nodes on it share no L2 segment with those on the switch.
// RoutedSegment6 is the same in a rig with Options.IPv6Underlay.
var (
	RoutedSegment  = netip.MustParsePrefix("10.201.0.0/24")
	RoutedSegment6 = netip.MustParsePrefix("fd00:201::/64")
)

// RoutedPrefix is the routed segment of this rig's underlay family.
func (r *Rig) RoutedPrefix() netip.Prefix {
	if r.opts.IPv6Underlay {
		return RoutedSegment6
	}
	return RoutedSegment
}

// RouterAddr is the router's address on the switch: the nodes there reach
// the routed segment through it, and NAT tests use it as the public
// address of a node behind it.
func (r *Rig) RouterAddr() netip.Addr { return withLastByte(r.underlay, 254) }

// withLastByte is the address of prefix p whose last byte is b.
func withLastByte(p netip.Prefix, b byte) netip.Addr {
	s := p.Addr().AsSlice()
	s[len(s)-1] = b
	a, _ := netip.AddrFromSlice(s)
	return a
}

// AddRoutedNode creates a node on a second segment behind a router
// namespace, so it is routed, not bridged, to the nodes on the switch. The
// router and the routes to it are set up with the first such node.
func (r *Rig) AddRoutedNode(name string) (*Node, error) {
	routed := r.RoutedPrefix()
	inside := withLastByte(routed, 254) // the router on the routed segment
	router := r.Prefix + "-rt"
	if _, err := Run("ip", "netns", "add", router); err == nil {
		if err := runSteps([][]string{
			{r.Switch, "link", "add", "br9", "type", "bridge"},
			{r.Switch, "link", "set", "br9", "up"},
			{r.Switch, "link", "add", "rt0", "type", "veth", "peer", "name", "eth0", "netns", router},
			{r.Switch, "link", "set", "rt0", "master", "br0", "up"},
			{r.Switch, "link", "add", "rt1", "type", "veth", "peer", "name", "eth1", "netns", router},
			{r.Switch, "link", "set", "rt1", "master", "br9", "up"},
			addrAddStep(router, "eth0", netip.PrefixFrom(r.RouterAddr(), r.underlay.Bits())),
			addrAddStep(router, "eth1", netip.PrefixFrom(inside, routed.Bits())),
			{router, "link", "set", "eth0", "up"},
			{router, "link", "set", "eth1", "up"},
			{router, "link", "set", "lo", "up"},
		}); err != nil {
			return nil, err
		}
		forwarding := "/proc/sys/net/ipv4/ip_forward"
		if r.opts.IPv6Underlay {
			forwarding = "/proc/sys/net/ipv6/conf/all/forwarding"
		}
		if err := SetKnob(router, forwarding, "1"); err != nil {
			return nil, err
		}
		for _, n := range r.Nodes() {
			if err := ipn(n.NS, r.routeToRoutedSegment()...); err != nil {
				return nil, err
			}
		}
		r.routed = true
	}
	n, err := r.AddNode(name)
	if err != nil {
		return nil, err
	}
	switchAddr := n.Addr.AsSlice() // the same host byte on the routed segment
	addr := withLastByte(routed, switchAddr[len(switchAddr)-1])
	if err := runSteps([][]string{
		{r.Switch, "link", "set", n.port, "master", "br9"},
		{n.NS, "addr", "flush", "dev", "eth0"},
		addrAddStep(n.NS, "eth0", netip.PrefixFrom(addr, routed.Bits())),
		{n.NS, "route", "add", "default", "via", inside.String()},
	}); err != nil {
		return nil, err
	}
	n.Addr = addr
	return n, nil
}

// routeToRoutedSegment is the route (ip arguments) a node on the switch
// takes to the routed segment.
func (r *Rig) routeToRoutedSegment() []string {
	return []string{"route", "add", r.RoutedPrefix().String(), "via", r.RouterAddr().String()}
}
