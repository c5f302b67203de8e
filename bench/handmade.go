package bench

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/loomnet/loom/integration/rig"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// HandPod is a pod of a hand-made baseline.
type HandPod struct {
	NS string
	IP netip.Addr
}

var handMACs = [2]net.HardwareAddr{{0x02, 0x99, 0, 0, 0, 1}, {0x02, 0x99, 0, 0, 0, 2}}

// HandVXLANPort is the UDP port of the hand-made VXLAN tunnels.
const HandVXLANPort = 4789

func handSubnet(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", i+1)) }

func host32(a netip.Addr) *net.IPNet { return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)} }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

var handGateway = host32(netip.MustParseAddr("169.254.1.1"))

// BuildHandTunnel builds between two rig nodes that run no agent what Loom
// builds, with plain netlink calls as an operator would by hand: one VXLAN
// device per node (same MTU, port, learning off), a routed pod per node
// behind a veth with a link-local gateway, and per peer a permanent
// neighbour, an FDB entry and an onlink route. It is the kernel's own cost
// of the overlay, what flannel's VXLAN backend gets.
func BuildHandTunnel(nodes [2]*rig.Node, mtu int) ([2]HandPod, error) {
	return buildHand(nodes, mtu, handOptions{})
}

// BuildHandDirect builds the same routed pods with each pod subnet routed
// via the other node's underlay address, no tunnel: the baseline for
// --direct-routing.
func BuildHandDirect(nodes [2]*rig.Node, mtu int) ([2]HandPod, error) {
	return buildHand(nodes, mtu, handOptions{direct: true})
}

// handOptions are how a hand-made baseline differs from the plain tunnel.
type handOptions struct {
	// direct routes the pod subnets via the peer's underlay address.
	direct bool
	// udpCsum computes the tunnel's outer UDP checksums.
	udpCsum bool
	// vethQueues, when above 1, is the number of queues of each pod veth.
	vethQueues int
}

func buildHand(nodes [2]*rig.Node, mtu int, opts handOptions) ([2]HandPod, error) {
	var pods [2]HandPod
	for i, n := range nodes {
		if err := rig.SetKnob(n.NS, "/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
			return pods, err
		}
		podNS, err := n.NewPodNS(fmt.Sprintf("hand%d", i))
		if err != nil {
			return pods, err
		}
		pods[i] = HandPod{NS: podNS.NS, IP: handSubnet(i).Addr().Next().Next()}
		if err := withHandle(n.NS, func(h *netlink.Handle) error {
			eth0, err := h.LinkByName("eth0")
			if err != nil {
				return err
			}
			if opts.direct {
				lo, _ := h.LinkByName("lo")
				h.AddrAdd(lo, &netlink.Addr{IPNet: host32(handSubnet(i).Addr())})
				return h.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(handSubnet(1 - i)), Gw: nodes[1-i].Addr.AsSlice()})
			}
			return addHandVXLAN(h, eth0, n.Addr, nodes[1-i].Addr, i, mtu, opts.udpCsum)
		}); err != nil {
			return pods, err
		}
		if err := addHandPod(n.NS, pods[i], handSubnet(i).Addr(), mtu, opts.vethQueues); err != nil {
			return pods, err
		}
	}
	return pods, nil
}

func withHandle(nsName string, f func(*netlink.Handle) error) error {
	h, err := nsHandle(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	return f(h)
}

// nsHandle opens a netlink handle in the named network namespace.
func nsHandle(nsName string) (*netlink.Handle, error) {
	nsh, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	return netlink.NewHandleAt(nsh)
}

func addHandVXLAN(h *netlink.Handle, eth0 netlink.Link, local, remote netip.Addr, i, mtu int, udpCsum bool) error {
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "hand.1", MTU: mtu, HardwareAddr: handMACs[i]},
		VxlanId: 42, VtepDevIndex: eth0.Attrs().Index, SrcAddr: local.AsSlice(), Port: HandVXLANPort, UDPCSum: udpCsum}
	if err := h.LinkAdd(vx); err != nil {
		return fmt.Errorf("hand vxlan: %w", err)
	}
	dev, err := h.LinkByName("hand.1")
	if err != nil {
		return err
	}
	h.LinkSetUp(dev)
	h.AddrAdd(dev, &netlink.Addr{IPNet: host32(handSubnet(i).Addr())})
	peerOverlay := handSubnet(1 - i).Addr().AsSlice()
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: peerOverlay, HardwareAddr: handMACs[1-i]}); err != nil {
		return err
	}
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: remote.AsSlice(), HardwareAddr: handMACs[1-i]}); err != nil {
		return err
	}
	return h.RouteReplace(&netlink.Route{LinkIndex: dev.Attrs().Index, Dst: prefixNet(handSubnet(1 - i)), Gw: peerOverlay, Flags: int(netlink.FLAG_ONLINK)})
}

// addHandPod wires a routed pod: a veth whose far end goes into the pod's
// namespace, a /32 route to it on the node, and in the pod its address and
// a default route via the link-local gateway. queues above 1 gives both
// veth ends that many queues.
func addHandPod(nodeNS string, pod HandPod, overlay netip.Addr, mtu, queues int) error {
	pnsh, err := netns.GetFromName(pod.NS)
	if err != nil {
		return err
	}
	defer pnsh.Close()
	err = withHandle(nodeNS, func(h *netlink.Handle) error {
		attrs := netlink.LinkAttrs{Name: "handveth", MTU: mtu}
		if queues > 1 {
			attrs.NumTxQueues, attrs.NumRxQueues = queues, queues
		}
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "handpeer"}); err != nil {
			return err
		}
		host, _ := h.LinkByName("handveth")
		peer, _ := h.LinkByName("handpeer")
		if err := h.LinkSetNsFd(peer, int(pnsh)); err != nil {
			return err
		}
		h.LinkSetUp(host)
		h.AddrAdd(host, &netlink.Addr{IPNet: handGateway, Scope: int(netlink.SCOPE_LINK)})
		return h.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: host32(pod.IP), Scope: netlink.SCOPE_LINK, Src: overlay.AsSlice()})
	})
	if err != nil {
		return err
	}
	return withHandle(pod.NS, func(ph *netlink.Handle) error {
		pl, err := ph.LinkByName("handpeer")
		if err != nil {
			return err
		}
		ph.LinkSetName(pl, "eth0")
		pl, _ = ph.LinkByName("eth0")
		ph.LinkSetUp(pl)
		if lo, err := ph.LinkByName("lo"); err == nil {
			ph.LinkSetUp(lo)
		}
		ph.AddrAdd(pl, &netlink.Addr{IPNet: host32(pod.IP)})
		ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: handGateway, Scope: netlink.SCOPE_LINK})
		return ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: handGateway.IP})
	})
}

// HandBuilder builds a hand-made baseline between two rig nodes that run
// no agent, with pods of the given MTU.
type HandBuilder func(nodes [2]*rig.Node, mtu int) ([2]HandPod, error)

// WithConntrack returns build on nodes that also have the NAT chain
// flannel's --ip-masq installs (pods' traffic leaving the pod network is
// masqueraded). Pod to pod traffic is not rewritten, but with a NAT hook in
// its namespace the kernel tracks every connection through the node, as on
// any node that runs kube-proxy or masquerades: the baseline that isolates
// what Loom's rules cost from what connection tracking costs.
func WithConntrack(build HandBuilder) HandBuilder {
	return func(nodes [2]*rig.Node, mtu int) ([2]HandPod, error) {
		pods, err := build(nodes, mtu)
		if err != nil {
			return pods, err
		}
		return pods, addHandMasquerade(nodes)
	}
}

// addHandMasquerade adds flannel's masquerade rule to the hand-made nodes.
func addHandMasquerade(nodes [2]*rig.Node) error {
	return nftOnNodes(nodes, "add table ip handmasq; "+
		"add chain ip handmasq post { type nat hook postrouting priority srcnat; }; "+
		"add rule ip handmasq post ip saddr 10.99.0.0/16 ip daddr != 10.99.0.0/16 masquerade")
}

// nftOnNodes runs one nft command on both hand-made nodes.
func nftOnNodes(nodes [2]*rig.Node, rules string) error {
	for _, n := range nodes {
		if _, err := n.Exec("nft", rules); err != nil {
			return err
		}
	}
	return nil
}
