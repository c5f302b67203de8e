package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/loomnet/loom/overlay"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// ErrUnderlayMoved is what Run returns when the address loomd advertises
// left --iface and another took its place (a new DHCP lease): peers reach
// the node only at the address memberlist was started with, which cannot
// change while it runs. loomd starts again in place to advertise the new
// one; the data plane and the pods stay, as in any restart.
var ErrUnderlayMoved = errors.New("the address of the underlay interface changed; loomd must start again to advertise the new one")

// underlaySettle is how long address changes must stop before the
// interface is read: a DHCP client removes the old address and adds the
// new one in separate steps.
const underlaySettle = time.Second

// watchUnderlay follows the addresses of --iface when loomd advertises the
// address it found there. An address given with --advertise-addr need not
// be on any interface (a NAT's public address), so it is not followed.
// moved is called once the interface holds another address and not the
// advertised one.
func (a *Agent) watchUnderlay(ctx context.Context, moved func(to netip.Addr)) {
	if a.cfg.AdvertiseAddr != "" {
		return
	}
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if err := overlay.WatchAddresses(ctx, notify, func(err error) {
		a.log.Warn("address change notifications lost; the underlay address is checked on the periodic resync only", zap.Error(err))
	}); err != nil {
		a.log.Warn("cannot watch address changes; the underlay address is checked on the periodic resync only", zap.Error(err))
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
			case <-changed:
				settle.Reset(underlaySettle)
				continue
			case <-settle.C:
			case <-resync.C:
			}
			if to := a.checkUnderlay(); to.IsValid() {
				moved(to)
				return
			}
		}
	}()
}

// checkUnderlay reads --iface and records whether it still holds the
// advertised address. It returns the interface's address when that is
// another one, and nothing while the advertised address is there or the
// interface has none.
func (a *Agent) checkUnderlay() netip.Addr {
	var addrs []netlink.Addr
	l, err := a.kernel.LinkByName(a.cfg.Iface)
	if err == nil {
		addrs, err = a.kernel.AddrList(l)
	}
	if err != nil && !errors.Is(err, overlay.ErrLinkNotFound) {
		a.log.Warn("read the underlay interface's addresses", zap.String("iface", a.cfg.Iface), zap.Error(err))
		return netip.Addr{}
	}
	held := false
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a.cfg.advertise {
			held = true
		}
	}
	a.stateMu.Lock()
	was := a.underlayLost
	a.underlayLost = !held
	a.stateMu.Unlock()
	switch {
	case held && was:
		a.log.Info("underlay address is back", zap.Stringer("underlay", a.cfg.advertise), zap.String("iface", a.cfg.Iface))
	case !held && !was:
		a.log.Error("underlay address is no longer on the underlay interface; peers cannot reach this node",
			zap.Stringer("underlay", a.cfg.advertise), zap.String("iface", a.cfg.Iface))
	}
	if held {
		return netip.Addr{}
	}
	return firstIPv4(addrs)
}

// underlayLostReason is the readiness reason while the advertised address
// is gone, empty otherwise. Callers hold stateMu.
func (a *Agent) underlayLostReason() string {
	if !a.underlayLost {
		return ""
	}
	return fmt.Sprintf("underlay address %s is no longer on %s", a.cfg.advertise, a.cfg.Iface)
}

// firstIPv4 is the first address of an interface peers could reach:
// IPv4, not link-local.
func firstIPv4(addrs []netlink.Addr) netip.Addr {
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap().Is4() && !ip.Unmap().IsLinkLocalUnicast() {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}
