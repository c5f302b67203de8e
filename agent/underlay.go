package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrUnderlayChanged is what Run returns when --iface changed under it: the
// address loomd advertises left the interface and another took its place
// (a new DHCP lease), the interface was deleted and created again (a
// network restart rebuilding a bond or VLAN), so the tunnel device, bound
// to the old interface, cannot be made again, or its MTU changed (jumbo
// frames turned on or off) and the overlay's, derived from it, no longer
// fits. Gossip advertises the
// address it was started with, and the device names the interface it was
// resolved to; neither changes while loomd runs. loomd starts again in
// place; the data plane and the pods stay, as in any restart.
var ErrUnderlayChanged = errors.New("the underlay interface changed; loomd must start again to use it")

// underlaySettle is how long address and link changes must stop before the
// interface is read: a DHCP client removes the old address and adds the
// new one in separate steps, and a network restart deletes and creates.
const underlaySettle = time.Second

// underlayChange is what checkUnderlay found: nothing to do (zero), or
// why loomd must start again.
type underlayChange struct {
	// movedTo is the interface's new address when the advertised one left.
	movedTo netip.Addr
	// recreated: the interface has another index than at start.
	recreated bool
	// mtu is the interface's new MTU when the overlay's is derived from
	// it (no --mtu) and no longer fits.
	mtu int
}

func (c underlayChange) restart() bool { return c.movedTo.IsValid() || c.recreated || c.mtu != 0 }

// watchUnderlay follows --iface and calls changed once loomd must start
// again (see ErrUnderlayChanged). The interface's addresses are followed
// only when loomd advertises the address it found there: one given with
// --advertise-addr need not be on any interface (a NAT's public address).
func (a *Agent) watchUnderlay(ctx context.Context, changed func(underlayChange)) {
	events := make(chan struct{}, 1)
	notify := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	if err := overlay.WatchUnderlay(ctx, a.cfg.Iface, notify, a.notificationsLost("underlay addresses and links")); err != nil {
		a.log.Warn("cannot watch the underlay interface; it is checked on the periodic resync only", zap.Error(err))
	}
	go func() {
		settle := time.NewTimer(time.Hour)
		defer settle.Stop()
		resync := time.NewTicker(a.cfg.ResyncInterval)
		defer resync.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-events:
				settle.Reset(underlaySettle)
				continue
			case <-settle.C:
			case <-resync.C:
			}
			if c := a.checkUnderlay(); c.restart() {
				changed(c)
				return
			}
		}
	}()
}

// checkUnderlay reads --iface, records whether it still holds the
// advertised address (when that came from it), and says whether loomd
// must start again.
func (a *Agent) checkUnderlay() underlayChange {
	l, err := a.kernel.LinkByName(a.cfg.Iface)
	if errors.Is(err, overlay.ErrLinkNotFound) {
		a.setUnderlayProblem(fmt.Sprintf("underlay interface %s is gone", a.cfg.Iface))
		return underlayChange{}
	}
	if err != nil {
		a.log.Warn("read the underlay interface", zap.String("iface", a.cfg.Iface), zap.Error(err))
		return underlayChange{}
	}
	same := underlayChange{recreated: l.Attrs().Index != a.cfg.underlay.Attrs().Index}
	if a.cfg.MTU == 0 && l.Attrs().MTU-a.cfg.overhead() != a.cfg.mtu {
		same.mtu = l.Attrs().MTU
	}
	followed := a.cfg.takenFromIface()
	if !followed.IsValid() {
		a.setUnderlayProblem("")
		return same
	}
	addrs, err := a.kernel.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		a.log.Warn("read the underlay interface's addresses", zap.String("iface", a.cfg.Iface), zap.Error(err))
		return underlayChange{}
	}
	if slices.ContainsFunc(addrs, func(ad netlink.Addr) bool { return ipEquals(ad, followed) }) {
		a.setUnderlayProblem("")
		return same
	}
	a.setUnderlayProblem(fmt.Sprintf("underlay address %s is no longer on %s", followed, a.cfg.Iface))
	// Without an address there is nothing to start again with yet.
	return underlayChange{movedTo: firstUnderlay(addrs, followed.Is6())}
}

// takenFromIface is the address loomd took from --iface and so follows:
// the advertised one when --advertise-addr is not set, the tunnel's
// source when the advertised one is a NAT's; none when the advertised
// address was given and is this node's own.
func (r *resolved) takenFromIface() netip.Addr {
	if r.AdvertiseAddr == "" || r.source != r.advertise {
		return r.source
	}
	return netip.Addr{}
}

func ipEquals(ad netlink.Addr, ip netip.Addr) bool {
	a, ok := netip.AddrFromSlice(ad.IP)
	return ok && a.Unmap() == ip
}

// setUnderlayProblem records why peers cannot reach this node through
// --iface ("" when they can), logging each change. It is a readiness
// reason.
func (a *Agent) setUnderlayProblem(why string) {
	a.stateMu.Lock()
	was := a.underlayProblem
	a.underlayProblem = why
	a.stateMu.Unlock()
	switch {
	case why == was:
	case why == "":
		a.log.Info("underlay interface is usable again", zap.Stringer("underlay", a.cfg.advertise), zap.String("iface", a.cfg.Iface))
	default:
		a.log.Error("peers cannot reach this node", zap.String("reason", why))
	}
}

// firstUnderlay is the first address of an interface, of the family
// asked for, that peers could reach and that stays: not link-local, and
// for IPv6 no privacy address (it changes every day), none the kernel
// marked deprecated and none that failed duplicate address detection.
func firstUnderlay(addrs []netlink.Addr, ipv6 bool) netip.Addr {
	const unstable = unix.IFA_F_TEMPORARY | unix.IFA_F_DEPRECATED | unix.IFA_F_DADFAILED
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || ip.Unmap().Is6() != ipv6 || ad.Flags&unstable != 0 {
			continue
		}
		if ip = ip.Unmap(); reachableUnderlay(ip) {
			return ip
		}
	}
	return netip.Addr{}
}

// reachableUnderlay reports whether peers could reach a node at a: a
// unicast address that is neither loopback nor link-local (a link-local
// one names no interface off the node).
func reachableUnderlay(a netip.Addr) bool {
	return a.IsGlobalUnicast()
}

// familyName is "IPv4" or "IPv6", for messages.
func familyName(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}
