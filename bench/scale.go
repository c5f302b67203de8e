package bench

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netns"
)

// ScaleResult is the cost of programming many peers into a real kernel.
type ScaleResult struct {
	Program     time.Duration
	NoopResync  time.Duration
	NoopWrites  int64
	FirstWrites int64
}

// ProgramPeers feeds n synthetic peers through Loom's desired-state path
// into the real kernel of node (a namespace without an agent), then runs a
// resync that has nothing to do. No firewall: nftables writes would not be
// namespaced through the netlink handle.
func ProgramPeers(node *rig.Node, n int) (ScaleResult, error) {
	var res ScaleResult
	h, err := netns.GetFromName(node.NS)
	if err != nil {
		return res, err
	}
	defer h.Close()
	k, err := overlay.NewNetlinkKernelAt(h)
	if err != nil {
		return res, err
	}
	defer k.Close()
	wc := &overlay.WriteCounter{Kernel: k}
	eth0, err := wc.LinkByName("eth0")
	if err != nil {
		return res, err
	}
	vx := overlay.NewVXLAN(wc, overlay.VXLANConfig{Name: fmt.Sprintf("scale.%d", n), VNI: n, Port: 4789 + n%100 + 1, MTU: 1450,
		MAC: overlay.VTEPMAC(node.Name), UnderlayIndex: eth0.Attrs().Index, Local: node.Addr})
	dp := overlay.NewDataplane(overlay.DataplaneConfig{Kernel: wc, Backend: vx, Cluster: netip.MustParsePrefix("10.0.0.0/8")})
	peers := make([]overlay.Peer, n)
	for i := range peers {
		name := fmt.Sprintf("synthetic-%d", i)
		peers[i] = overlay.Peer{Name: name, Underlay: netip.AddrFrom4([4]byte{172, 20, byte(i >> 8), byte(i)}),
			VTEPMAC: overlay.VTEPMAC(name), Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i>>8) + 1, byte(i), 0}), 24)}
	}
	d := overlay.Desired{Subnet: netip.MustParsePrefix("10.0.0.0/24"), Peers: peers}
	start := time.Now()
	if _, err := dp.Apply(d); err != nil {
		return res, err
	}
	res.Program = time.Since(start)
	res.FirstWrites = wc.Writes()
	before := wc.Writes()
	start = time.Now()
	if _, err := dp.Apply(d); err != nil {
		return res, err
	}
	res.NoopResync = time.Since(start)
	res.NoopWrites = wc.Writes() - before
	return res, vx.Teardown()
}
