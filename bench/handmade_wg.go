package bench

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/loomnet/loom/integration/rig"
	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// BuildHandWireGuard builds, between two rig nodes without agents, a
// WireGuard tunnel by hand with the implementation Loom uses here (the
// userspace device of `loomd wireguard-device`, or the kernel's where
// present would be Loom's choice too): one device per node with the
// other's pod subnet as allowed IPs, a route to it, and a routed pod.
func BuildHandWireGuard(nodes [2]*rig.Node, loomd, dir string, mtu int) ([2]HandPod, error) {
	var pods [2]HandPod
	var keys [2]wgtypes.Key
	for i := range keys {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return pods, err
		}
		keys[i] = k
	}
	for i, n := range nodes {
		if err := rig.SetKnob(n.NS, "/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
			return pods, err
		}
		sock := filepath.Join(dir, fmt.Sprintf("hand-wg-%d.sock", i))
		cmd := exec.Command("nsenter", "--net=/run/netns/"+n.NS, "--", loomd, "wireguard-device", "--name", "hand-wg",
			"--mtu", fmt.Sprint(mtu), "--socket", sock)
		// Ended by the rig, which kills every process in its namespaces.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return pods, fmt.Errorf("start hand-made WireGuard: %w", err)
		}
		go cmd.Wait()
		port := 51820
		other := 1 - i
		if err := overlay.ConfigureUserspaceWireGuard(sock, wgtypes.Config{
			PrivateKey: &keys[i], ListenPort: &port, ReplacePeers: true,
			Peers: []wgtypes.PeerConfig{{
				PublicKey:  keys[other].PublicKey(),
				Endpoint:   &net.UDPAddr{IP: nodes[other].Addr.AsSlice(), Port: port},
				AllowedIPs: []net.IPNet{*prefixNet(handSubnet(other))},
			}},
		}); err != nil {
			return pods, err
		}
		if err := withHandle(n.NS, func(h *netlink.Handle) error {
			dev, err := h.LinkByName("hand-wg")
			if err != nil {
				return err
			}
			if err := h.AddrAdd(dev, &netlink.Addr{IPNet: host32(handSubnet(i).Addr())}); err != nil {
				return err
			}
			if err := h.LinkSetUp(dev); err != nil {
				return err
			}
			return h.RouteReplace(&netlink.Route{LinkIndex: dev.Attrs().Index, Dst: prefixNet(handSubnet(other)), Scope: netlink.SCOPE_LINK})
		}); err != nil {
			return pods, err
		}
		podNS, err := n.NewPodNS(fmt.Sprintf("handwg%d", i))
		if err != nil {
			return pods, err
		}
		pods[i] = HandPod{NS: podNS.NS, IP: handSubnet(i).Addr().Next().Next()}
		if err := addHandPod(n.NS, pods[i], handSubnet(i).Addr(), mtu, 1); err != nil {
			return pods, err
		}
	}
	return pods, nil
}
