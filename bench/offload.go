package bench

import (
	"fmt"
	"runtime"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/integration/rig"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
)

// VXLANVariant is one kernel option set tried on the hand-made VXLAN
// tunnel, to learn which the overlay should use by default.
type VXLANVariant struct {
	Name string
	// UDPCsum computes outer UDP checksums on transmit (off by default).
	UDPCsum bool
	// Features are ethtool features switched on every node's underlay
	// interface and pod veth host end, e.g. rx-udp-gro-forwarding, gro.
	Features map[string]bool
	// UnderlayMTU, when set, is the underlay's MTU; the tunnel and pods
	// get 50 bytes less.
	UnderlayMTU int
	// Conntrack turns connection tracking on in the nodes, as flannel's
	// masquerade rule does (WithConntrack).
	Conntrack bool
	// UntrackTunnel keeps the tunnel's own UDP packets between the two
	// nodes out of connection tracking with raw-priority notrack chains
	// (what Calico does): no entry per inner flow and direction, at the
	// price of a base chain on prerouting and output.
	UntrackTunnel bool
	// ThreadedNAPI turns GRO on for every veth the pods' packets are
	// received on (pod, node and switch ends), which gives each a NAPI
	// instance, and runs those in kernel threads the scheduler may put on
	// another CPU: by default a veth's receive work runs on the sending
	// CPU, so one stream keeps one core busy end to end.
	ThreadedNAPI bool
	// VethQueues, when above 1, gives each pod veth that many queues, and
	// so (with ThreadedNAPI) as many NAPI threads for streams to spread
	// over.
	VethQueues int
	// Against is the variant this one is compared with; empty: defaults.
	Against string
}

// VXLANVariants are the options measured by make bench.
var VXLANVariants = []VXLANVariant{
	{Name: "defaults"},
	{Name: "outer UDP checksum on", UDPCsum: true},
	{Name: "underlay rx-udp-gro-forwarding on", Features: map[string]bool{"rx-udp-gro-forwarding": true}},
	{Name: "GRO on veths and underlay (rx-gro)", Features: map[string]bool{"rx-gro": true}},
	{Name: "underlay MTU 9000", UnderlayMTU: 9000},
	{Name: "threaded NAPI on every veth (GRO on)", ThreadedNAPI: true},
	{Name: "threaded NAPI, pod veths with a queue per CPU", ThreadedNAPI: true, VethQueues: runtime.NumCPU()},
	{Name: handConntrackOn, Conntrack: true},
	{Name: "conntrack on, tunnel packets untracked (raw notrack)", Conntrack: true, UntrackTunnel: true, Against: handConntrackOn},
}

const handConntrackOn = "conntrack on (flannel's masquerade rule)"

// BuildHandVariant builds the hand-made VXLAN tunnel with v applied. The
// switch ports of the two nodes follow a larger underlay MTU.
func BuildHandVariant(r *rig.Rig, nodes [2]*rig.Node, v VXLANVariant) ([2]HandPod, error) {
	mtu := 1450
	if v.UnderlayMTU != 0 {
		mtu = v.UnderlayMTU - 50
		for _, n := range nodes {
			if err := setMTU(r.Switch, n.SwitchPort(), v.UnderlayMTU); err != nil {
				return [2]HandPod{}, err
			}
			if err := setMTU(n.NS, "eth0", v.UnderlayMTU); err != nil {
				return [2]HandPod{}, err
			}
		}
	}
	pods, err := buildHand(nodes, mtu, handOptions{udpCsum: v.UDPCsum, vethQueues: v.VethQueues})
	if err != nil {
		return pods, err
	}
	if v.Conntrack {
		if err := addHandMasquerade(nodes); err != nil {
			return pods, err
		}
	}
	if v.UntrackTunnel {
		peers := nodes[0].Addr.String() + ", " + nodes[1].Addr.String()
		if err := nftOnNodes(nodes, fmt.Sprintf("add table ip handnotrack; "+
			"add chain ip handnotrack pre { type filter hook prerouting priority raw; }; "+
			"add chain ip handnotrack out { type filter hook output priority raw; }; "+
			"add rule ip handnotrack pre udp dport %[1]d ip saddr { %[2]s } notrack; "+
			"add rule ip handnotrack out udp dport %[1]d ip daddr { %[2]s } notrack", HandVXLANPort, peers)); err != nil {
			return pods, err
		}
	}
	if len(v.Features) > 0 {
		for _, n := range nodes {
			for _, dev := range []string{"eth0", "handveth"} {
				if err := setFeatures(n.NS, dev, v.Features); err != nil {
					return pods, fmt.Errorf("%s on %s of %s: %w", v.Name, dev, n.Name, err)
				}
			}
		}
	}
	if v.ThreadedNAPI {
		if err := threadedNAPI(r, nodes, pods); err != nil {
			return pods, fmt.Errorf("%s: %w", v.Name, err)
		}
	}
	return pods, nil
}

// threadedNAPI gives every veth end on the path between the two hand-made
// pods GRO (a NAPI instance) and threaded NAPI.
func threadedNAPI(r *rig.Rig, nodes [2]*rig.Node, pods [2]HandPod) error {
	type dev struct{ ns, name string }
	var devs []dev
	for i, n := range nodes {
		devs = append(devs, dev{n.NS, "eth0"}, dev{n.NS, "handveth"}, dev{pods[i].NS, "eth0"}, dev{r.Switch, n.SwitchPort()})
	}
	for _, d := range devs {
		if err := setFeatures(d.ns, d.name, map[string]bool{"rx-gro": true}); err != nil {
			return fmt.Errorf("GRO on %s in %s: %w", d.name, d.ns, err)
		}
		if err := rig.SetKnob(d.ns, "/sys/class/net/"+d.name+"/threaded", "1"); err != nil {
			return fmt.Errorf("threaded NAPI on %s in %s: %w", d.name, d.ns, err)
		}
	}
	return nil
}

func setMTU(nsName, dev string, mtu int) error {
	return withHandle(nsName, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return err
		}
		return h.LinkSetMTU(l, mtu)
	})
}

// setFeatures switches ethtool features of dev inside a namespace: the
// ethtool ioctl works on the calling thread's namespace.
func setFeatures(nsName, dev string, features map[string]bool) error {
	return ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer e.Close()
		return e.Change(dev, features)
	})
}
