package overlay

import (
	"crypto/sha256"
	"net"
	"net/netip"

	"github.com/loomnet/loom/policy"
)

// RouteProtocol tags every route Loom installs (see /etc/iproute2/rt_protos),
// so resync can tell its own routes from everyone else's and never touches
// a route it did not make outside its own devices.
const RouteProtocol = 0x4c // 'L'

// mainTable is the kernel's main routing table.
const mainTable = 254

// PodGateway is the link-local address every pod uses as its default
// gateway; the host side of each pod veth answers for it.
var PodGateway = netip.MustParseAddr("169.254.1.1")

// Peer is a remote node as the data plane needs it.
type Peer struct {
	Name     string
	Underlay netip.Addr
	VTEPMAC  net.HardwareAddr
	Subnet   netip.Prefix
	// WGPublicKey is the peer's WireGuard public key (WireGuard backend).
	WGPublicKey []byte
	// RouteMTU is the MTU of the route to the peer's subnet, smaller than
	// the device's when the peer's underlay carries less than this node's;
	// 0 leaves the device's.
	RouteMTU int
}

// OverlayIP is the peer's overlay address: the first address of its subnet.
func (p Peer) OverlayIP() netip.Addr { return p.Subnet.Addr() }

// PodRoute is one local pod: its address and the host end of its veth.
type PodRoute struct {
	IP     netip.Addr
	HostIf string
}

// Desired is everything the data plane should hold. Apply makes the kernel
// match it exactly, on Loom's own devices and for Loom-tagged routes.
type Desired struct {
	// Subnet is this node's pod subnet; its first address is the node's
	// overlay address.
	Subnet netip.Prefix
	// Peers are the live remote nodes that own a subnet.
	Peers []Peer
	// Pods are this node's attached pods.
	Pods []PodRoute
	// NodeAddrs are the underlay addresses of every member node, this one
	// included: pod traffic to them is not masqueraded.
	NodeAddrs []netip.Addr
	// NodeOverlays are the overlay addresses of member nodes, this one
	// included.
	NodeOverlays []netip.Addr
	// Policy is compiled network policy for this node's pods; nil means
	// none is enforced.
	Policy *policy.Compiled
	// KeepFirewall leaves the firewall a run before this one left as the
	// kernel holds it, its rules and policies that run's, but for its
	// member nodes (NodeAddrs, NodeOverlays): the policies to enforce are
	// not known yet. Without such a firewall the rest of Desired is
	// written, Policy included.
	KeepFirewall bool
	// Adopt adds and repairs but removes nothing: a restarted agent that has
	// not heard from its peers yet must not withdraw routes it cannot yet
	// prove stale.
	Adopt bool
}

// IsPodVethName reports whether name has the shape of api.HostVethName.
func IsPodVethName(name string) bool {
	if len(name) != 15 || name[:4] != "loom" {
		return false
	}
	for _, c := range name[4:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// VTEPMAC derives a node's VTEP MAC from its name, so it survives reboots
// and reinstalls without state: locally administered, unicast.
func VTEPMAC(nodeName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("loom-vtep/" + nodeName))
	mac := net.HardwareAddr(append([]byte(nil), sum[:6]...))
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func ipNetOf(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: ipOf(p.Addr()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
