package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VXLANConfig describes the node's VXLAN device.
type VXLANConfig struct {
	// Name is the device name, "loom.<vni>".
	Name string
	VNI  int
	// Port is the UDP destination port (4789 is IANA's).
	Port int
	// MTU of the device: underlay MTU minus 50 bytes of encapsulation.
	MTU int
	// MAC is the VTEP MAC, derived from the node name.
	MAC net.HardwareAddr
	// UnderlayIndex is the link index of the underlay interface.
	UnderlayIndex int
	// Local is the underlay address packets are sent from.
	Local netip.Addr
}

// DeviceName returns the VXLAN device name for a VNI.
func DeviceName(vni int) string { return fmt.Sprintf("loom.%d", vni) }

// VXLAN is the default backend: flannel-style L3 over one VXLAN device with
// learning off and every entry programmed from gossip.
type VXLAN struct {
	k   Kernel
	cfg VXLANConfig
	// index is the device's link index; read by the kernel watcher while
	// the reconciler may be replacing the device.
	index atomic.Int64
	// unchanged holds what AddPeers listed when it had nothing to write,
	// for the RemoveStale that follows in the same reconcile: in a no-op
	// resync the kernel's entries are what was just listed, and at
	// thousands of peers a second pair of dumps is most of the cost. Only
	// the reconciler (under its lock) touches it.
	unchanged *l2Entries
}

// l2Entries are the device's neighbour and FDB entries as listed.
type l2Entries struct{ neighs, fdbs []netlink.Neigh }

var _ Backend = (*VXLAN)(nil)

// NewVXLAN returns the VXLAN backend.
func NewVXLAN(k Kernel, cfg VXLANConfig) *VXLAN { return &VXLAN{k: k, cfg: cfg} }

// Name implements Backend.
func (v *VXLAN) Name() string { return "vxlan" }

// DeviceIndex implements Backend.
func (v *VXLAN) DeviceIndex() int { return int(v.index.Load()) }

func (v *VXLAN) matches(l netlink.Link) bool {
	x, ok := l.(*netlink.Vxlan)
	return ok && x.VxlanId == v.cfg.VNI && x.Port == v.cfg.Port &&
		x.VtepDevIndex == v.cfg.UnderlayIndex && !x.Learning &&
		x.SrcAddr.Equal(ipOf(v.cfg.Local)) && bytes.Equal(x.HardwareAddr, v.cfg.MAC)
}

// EnsureDevice implements Backend. A device of the right name but the wrong
// kind or parameters is recreated: reusing it would silently send pod
// traffic with the wrong VNI, port or source.
func (v *VXLAN) EnsureDevice(overlayIP netip.Addr) (bool, error) {
	l, changed, err := ensureLink(v.k, v.cfg.Name, v.matches, func() error {
		dev := &netlink.Vxlan{
			LinkAttrs:    netlink.LinkAttrs{Name: v.cfg.Name, MTU: v.cfg.MTU, HardwareAddr: v.cfg.MAC},
			VxlanId:      v.cfg.VNI,
			VtepDevIndex: v.cfg.UnderlayIndex,
			SrcAddr:      ipOf(v.cfg.Local),
			Port:         v.cfg.Port,
			Learning:     false,
		}
		if err := v.k.LinkAdd(dev); err != nil {
			// Only "file exists" sends us looking for the device in the way.
			if errors.Is(err, unix.EEXIST) {
				if other := v.tunnelHolder(); other != "" {
					return fmt.Errorf("create %s: VXLAN device %s already uses VNI %d on UDP port %d (another overlay on this node?): give Loom another --vni or --vxlan-port, or delete %s",
						v.cfg.Name, other, v.cfg.VNI, v.cfg.Port, other)
				}
			}
			// iproute2 words it "Unknown device type": the kernel has no
			// VXLAN driver, and nothing Loom retries will change that.
			if errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("create %s: this kernel has no VXLAN driver (module vxlan not built, or not loadable here: run 'modprobe vxlan' on the host), or use --backend wireguard: %w", v.cfg.Name, err)
			}
			return fmt.Errorf("create %s (vni %d, port %d): %w", v.cfg.Name, v.cfg.VNI, v.cfg.Port, err)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	v.index.Store(int64(l.Attrs().Index))
	linkChanged, err := ensureDeviceUp(v.k, l, v.cfg.MTU, overlayIP)
	return changed || linkChanged, err
}

// tunnelHolder names another VXLAN device that uses this backend's VNI and
// port: the kernel refuses a second one with a bare "file exists", which
// reads as if Loom's own device were in the way.
func (v *VXLAN) tunnelHolder() string {
	links, err := v.k.LinkList()
	if err != nil {
		return ""
	}
	for _, l := range links {
		if x, ok := l.(*netlink.Vxlan); ok && x.Name != v.cfg.Name && x.VxlanId == v.cfg.VNI && x.Port == v.cfg.Port {
			return x.Name
		}
	}
	return ""
}

// ensureLink returns the device name, replacing one that reusable refuses
// (wrong kind or parameters, or nobody serving it) and making it with
// create when there is none. changed reports whether it did either.
func ensureLink(k Kernel, name string, reusable func(netlink.Link) bool, create func() error) (l netlink.Link, changed bool, err error) {
	l, err = k.LinkByName(name)
	switch {
	case errors.Is(err, ErrLinkNotFound):
		l = nil
	case err != nil:
		return nil, false, fmt.Errorf("look up %s: %w", name, err)
	}
	if l != nil && !reusable(l) {
		if err := k.LinkDel(l); err != nil {
			return nil, false, fmt.Errorf("delete %s, which cannot be reused: %w", name, err)
		}
		l, changed = nil, true
	}
	if l != nil {
		return l, changed, nil
	}
	if err := create(); err != nil {
		return nil, false, err
	}
	if l, err = k.LinkByName(name); err != nil {
		return nil, false, fmt.Errorf("look up created %s: %w", name, err)
	}
	return l, true, nil
}

// deleteLink removes the device name if it exists.
func deleteLink(k Kernel, name string) error {
	l, err := k.LinkByName(name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return k.LinkDel(l)
}

// ensureDeviceUp gives an overlay device its MTU, the node's overlay
// address as its only address, and brings it up; it reports whether it
// had to change anything.
func ensureDeviceUp(k Kernel, l netlink.Link, mtu int, overlayIP netip.Addr) (bool, error) {
	name, changed := l.Attrs().Name, false
	if l.Attrs().MTU != mtu {
		if err := k.LinkSetMTU(l, mtu); err != nil {
			return changed, fmt.Errorf("set %s mtu %d: %w", name, mtu, err)
		}
		changed = true
	}
	addrChanged, err := ensureOnlyAddr(k, l, netip.PrefixFrom(overlayIP, 32))
	if err != nil {
		return changed, err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := k.LinkSetUp(l); err != nil {
			return changed, fmt.Errorf("set %s up: %w", name, err)
		}
		changed = true
	}
	return changed || addrChanged, nil
}

// ensureOnlyAddr makes want the only IPv4 address of l.
func ensureOnlyAddr(k Kernel, l netlink.Link, want netip.Prefix) (bool, error) {
	addrs, err := k.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	changed, have := false, false
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			have = true
			continue
		}
		if err := k.AddrDel(l, &a); err != nil {
			return changed, fmt.Errorf("remove stray address %s from %s: %w", a.IPNet, l.Attrs().Name, err)
		}
		changed = true
	}
	if !have {
		if err := k.AddrReplace(l, &netlink.Addr{IPNet: ipNetOf(want)}); err != nil {
			return changed, fmt.Errorf("add %s to %s: %w", want, l.Attrs().Name, err)
		}
		changed = true
	}
	return changed, nil
}

func (v *VXLAN) neigh(p Peer) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: v.DeviceIndex(), Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: ipOf(p.OverlayIP()), HardwareAddr: p.VTEPMAC}
}

func (v *VXLAN) fdb(p Peer) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: v.DeviceIndex(), Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: ipOf(p.Underlay), HardwareAddr: p.VTEPMAC}
}

// AddPeers implements Backend: neighbour (overlay IP -> VTEP MAC), then FDB
// (VTEP MAC -> underlay IP), so the kernel never has to resolve anything.
func (v *VXLAN) AddPeers(peers []Peer) (int, error) {
	v.unchanged = nil
	l2, err := v.listL2()
	if err != nil {
		return 0, err
	}
	neighs, fdbs := l2.neighs, l2.fdbs
	// MACs compare as their raw bytes: formatting thousands of them is a
	// visible share of a no-op reconcile.
	haveNeigh := make(map[netip.Addr]string, len(neighs))
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 {
			haveNeigh[addrOf(n.IP)] = string(n.HardwareAddr)
		}
	}
	haveFDB := make(map[string]netip.Addr, len(fdbs))
	for _, f := range fdbs {
		haveFDB[string(f.HardwareAddr)] = addrOf(f.IP)
	}
	writes := 0
	var errs []error
	for _, p := range peers {
		if haveNeigh[p.OverlayIP()] != string(p.VTEPMAC) {
			if err := v.k.NeighSet(v.neigh(p)); err != nil {
				errs = append(errs, fmt.Errorf("set neighbour %s -> %s for %s: %w", p.OverlayIP(), p.VTEPMAC, p.Name, err))
				continue
			}
			writes++
		}
		if dst, ok := haveFDB[string(p.VTEPMAC)]; !ok || dst != p.Underlay {
			if err := v.k.NeighSet(v.fdb(p)); err != nil {
				errs = append(errs, fmt.Errorf("set fdb %s -> %s for %s: %w", p.VTEPMAC, p.Underlay, p.Name, err))
				continue
			}
			writes++
		}
	}
	if writes == 0 && len(errs) == 0 {
		v.unchanged = &l2
	}
	return writes, errors.Join(errs...)
}

// listL2 lists the device's neighbour and FDB entries.
func (v *VXLAN) listL2() (l2Entries, error) {
	neighs, err := v.k.NeighList(v.DeviceIndex(), netlink.FAMILY_V4)
	if err != nil {
		return l2Entries{}, fmt.Errorf("list neighbours of %s: %w", v.cfg.Name, err)
	}
	fdbs, err := v.k.NeighList(v.DeviceIndex(), unix.AF_BRIDGE)
	if err != nil {
		return l2Entries{}, fmt.Errorf("list fdb of %s: %w", v.cfg.Name, err)
	}
	return l2Entries{neighs, fdbs}, nil
}

// PeerRoutes implements Backend: the peer's subnet via its overlay address,
// onlink on the VXLAN device.
func (v *VXLAN) PeerRoutes(peers []Peer) []netlink.Route {
	out := make([]netlink.Route, 0, len(peers))
	for _, p := range peers {
		out = append(out, netlink.Route{
			LinkIndex: v.DeviceIndex(), Dst: ipNetOf(p.Subnet), Gw: ipOf(p.OverlayIP()),
			Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol, Table: mainTable, MTU: p.RouteMTU,
		})
	}
	return out
}

// RemoveStale implements Backend: every FDB and neighbour entry on the
// device that no live peer wants is removed, whoever made it.
func (v *VXLAN) RemoveStale(peers []Peer) (int, error) {
	wantNeigh := make(map[netip.Addr]string, len(peers))
	wantFDB := make(map[string]netip.Addr, len(peers))
	for _, p := range peers {
		wantNeigh[p.OverlayIP()] = string(p.VTEPMAC)
		wantFDB[string(p.VTEPMAC)] = p.Underlay
	}
	removed := 0
	var errs []error
	l2 := v.unchanged
	v.unchanged = nil
	if l2 == nil {
		fresh, err := v.listL2()
		if err != nil {
			return 0, err
		}
		l2 = &fresh
	}
	for _, f := range l2.fdbs {
		if dst, ok := wantFDB[string(f.HardwareAddr)]; ok && dst == addrOf(f.IP) {
			continue
		}
		if err := v.k.NeighDel(&f); err != nil {
			errs = append(errs, fmt.Errorf("remove stale fdb %s -> %s: %w", f.HardwareAddr, f.IP, err))
			continue
		}
		removed++
	}
	for _, n := range l2.neighs {
		if mac, ok := wantNeigh[addrOf(n.IP)]; ok && mac == string(n.HardwareAddr) && n.State&netlink.NUD_PERMANENT != 0 {
			continue
		}
		if err := v.k.NeighDel(&n); err != nil {
			errs = append(errs, fmt.Errorf("remove stale neighbour %s: %w", n.IP, err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// Teardown implements Backend.
func (v *VXLAN) Teardown() error { return deleteLink(v.k, v.cfg.Name) }
