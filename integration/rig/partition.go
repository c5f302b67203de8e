package rig

import (
	"errors"
	"net/netip"
)

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
var RoutedSegment = netip.MustParsePrefix("10.201.0.0/24")

// AddRoutedNode creates a node on a second segment behind a router
// namespace, so it is routed, not bridged, to the nodes on the switch. The
// router and the routes to it are set up with the first such node.
func (r *Rig) AddRoutedNode(name string) (*Node, error) {
	if r.opts.IPv6Underlay {
		return nil, errors.New("AddRoutedNode: the routed segment is IPv4 only")
	}
	router := r.Prefix + "-rt"
	if _, err := Run("ip", "netns", "add", router); err == nil {
		for _, s := range [][]string{
			{r.Switch, "link", "add", "br9", "type", "bridge"},
			{r.Switch, "link", "set", "br9", "up"},
			{r.Switch, "link", "add", "rt0", "type", "veth", "peer", "name", "eth0", "netns", router},
			{r.Switch, "link", "set", "rt0", "master", "br0", "up"},
			{r.Switch, "link", "add", "rt1", "type", "veth", "peer", "name", "eth1", "netns", router},
			{r.Switch, "link", "set", "rt1", "master", "br9", "up"},
			{router, "addr", "add", "10.200.0.254/24", "dev", "eth0"},
			{router, "addr", "add", "10.201.0.254/24", "dev", "eth1"},
			{router, "link", "set", "eth0", "up"},
			{router, "link", "set", "eth1", "up"},
			{router, "link", "set", "lo", "up"},
		} {
			if err := ipn(s[0], s[1:]...); err != nil {
				return nil, err
			}
		}
		if _, err := Run("ip", "netns", "exec", router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
			return nil, err
		}
		for _, n := range r.Nodes() {
			if err := ipn(n.NS, "route", "add", RoutedSegment.String(), "via", "10.200.0.254"); err != nil {
				return nil, err
			}
		}
		r.routed = true
	}
	n, err := r.AddNode(name)
	if err != nil {
		return nil, err
	}
	base := RoutedSegment.Addr().As4()
	base[3] = n.Addr.As4()[3]
	addr := netip.AddrFrom4(base)
	for _, s := range [][]string{
		{r.Switch, "link", "set", n.port, "master", "br9"},
		{n.NS, "addr", "flush", "dev", "eth0"},
		{n.NS, "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0"},
		{n.NS, "route", "add", "default", "via", "10.201.0.254"},
	} {
		if err := ipn(s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	n.Addr = addr
	return n, nil
}
