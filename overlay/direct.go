package overlay

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// Direct wraps a tunnelling backend and routes peers that share an L2
// segment with this node (their underlay address is on-link on the
// underlay interface) straight to their underlay address, without
// encapsulation; every other peer goes through the tunnel. Nothing but
// the choice per peer changes: the tunnel device, the reconciler and the
// firewall stay the same.
type Direct struct {
	Backend
	k         Kernel
	underlay  string
	onLinkMu  sync.Mutex // guards onLink
	onLink    []netip.Prefix
	linkIndex int
}

var _ Backend = (*Direct)(nil)

// NewDirect returns tunnel with direct routing to on-link peers over the
// named underlay interface.
func NewDirect(k Kernel, tunnel Backend, underlay string) *Direct {
	return &Direct{Backend: tunnel, k: k, underlay: underlay}
}

// Name implements Backend.
func (d *Direct) Name() string { return d.Backend.Name() + "+direct" }

// EnsureDevice implements Backend and re-reads which prefixes are on-link,
// since the underlay's addresses may change.
func (d *Direct) EnsureDevice(overlayIP netip.Addr) (bool, error) {
	changed, err := d.Backend.EnsureDevice(overlayIP)
	if err != nil {
		return changed, err
	}
	l, err := d.k.LinkByName(d.underlay)
	if err != nil {
		return changed, fmt.Errorf("underlay %s: %w", d.underlay, err)
	}
	addrs, err := d.k.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return changed, fmt.Errorf("list addresses of %s: %w", d.underlay, err)
	}
	var onLink []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p.Bits() < p.Addr().BitLen() && !p.Addr().IsLinkLocalUnicast() {
			onLink = append(onLink, p.Masked())
		}
	}
	d.onLinkMu.Lock()
	d.onLink, d.linkIndex = onLink, l.Attrs().Index
	d.onLinkMu.Unlock()
	return changed, nil
}

// split returns the peers reached directly and those left to the tunnel.
func (d *Direct) split(peers []Peer) (direct, tunnelled []Peer) {
	d.onLinkMu.Lock()
	defer d.onLinkMu.Unlock()
	for _, p := range peers {
		isDirect := false
		for _, pre := range d.onLink {
			isDirect = isDirect || pre.Contains(p.Underlay)
		}
		if isDirect {
			direct = append(direct, p)
		} else {
			tunnelled = append(tunnelled, p)
		}
	}
	return direct, tunnelled
}

// AddPeers implements Backend: only tunnelled peers need L2 entries.
func (d *Direct) AddPeers(peers []Peer) (int, error) {
	_, tunnelled := d.split(peers)
	return d.Backend.AddPeers(tunnelled)
}

// PeerRoutes implements Backend: direct peers' subnets via their underlay
// address on the underlay interface, the rest through the tunnel.
func (d *Direct) PeerRoutes(peers []Peer) []netlink.Route {
	direct, tunnelled := d.split(peers)
	routes := d.Backend.PeerRoutes(tunnelled)
	d.onLinkMu.Lock()
	idx := d.linkIndex
	d.onLinkMu.Unlock()
	for _, p := range direct {
		rt := netlink.Route{LinkIndex: idx, Dst: ipNetOf(p.Subnet), Protocol: RouteProtocol, Table: mainTable, MTU: p.RouteMTU}
		if p.Underlay.Is6() {
			// An IPv4 route through an IPv6 neighbour (RFC 5549; Linux
			// 5.2 and later): the pod's packet goes to the peer's MAC,
			// found by neighbour discovery, unencapsulated.
			rt.Via = &netlink.Via{AddrFamily: netlink.FAMILY_V6, Addr: ipOf(p.Underlay)}
		} else {
			rt.Gw = ipOf(p.Underlay)
		}
		routes = append(routes, rt)
	}
	return routes
}

// RemoveStale implements Backend: a peer that became direct loses its
// tunnel entries like a peer that left.
func (d *Direct) RemoveStale(peers []Peer) (int, error) {
	_, tunnelled := d.split(peers)
	return d.Backend.RemoveStale(tunnelled)
}
