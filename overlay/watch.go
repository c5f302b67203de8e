package overlay

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watch subscribes to the kernel's link, route, neighbour and IPv4 netconf
// notifications in the current network namespace and calls notify whenever
// something that may be Loom's changed: a Loom link deleted or set down, a
// Loom-tagged route deleted, any entry on the tunnel device, IPv4
// forwarding switched off. Drift made by
// hand is thus repaired within one reconcile instead of waiting for the
// periodic resync. notify must not block. Watch returns once subscribed;
// it stops when ctx ends. A subscription the kernel ends (its reader fell
// behind a burst of changes) is reported through onError and opened
// again, and notify is called then: what changed meanwhile went unseen.
//
// A pod veth's own life is not drift: it is born down (ADD attaches it),
// and Loom itself sets it down and deletes it on DEL (detaching says which
// ones). Only someone else setting a pod veth down asks for a repair;
// reconciling on every veth event would make each ADD wait for a
// reconcile it does not need.
func Watch(ctx context.Context, deviceIndex func() int, detaching func(hostIf string) bool, notify func(), onError func(error)) error {
	return keepSubscribed(ctx, func(ctx context.Context, lost func(error)) error {
		return watchKernel(ctx, deviceIndex, detaching, notify, lost)
	}, notify, onError)
}

// watchKernel opens Watch's subscriptions once; see subscribeFunc.
func watchKernel(ctx context.Context, deviceIndex func() int, detaching func(hostIf string) bool, notify func(), lost func(error)) error {
	done := ctx.Done()
	var last lastError
	links := make(chan netlink.LinkUpdate, 256)
	routes := make(chan netlink.RouteUpdate, 1024)
	neighs := make(chan netlink.NeighUpdate, 1024)
	const buf = 1 << 20
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: last.set, ReceiveBufferSize: buf}); err != nil {
		return fmt.Errorf("subscribe to link changes: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: last.set, ReceiveBufferSize: buf}); err != nil {
		return fmt.Errorf("subscribe to route changes: %w", err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{ErrorCallback: last.set, ReceiveBufferSize: buf}); err != nil {
		return fmt.Errorf("subscribe to neighbour changes: %w", err)
	}
	if err := watchForwarding(done, notify, lost); err != nil {
		return err
	}
	go func() {
		// Until all are closed: a reader blocked on a full channel would
		// never see done.
		for links != nil || routes != nil || neighs != nil {
			select {
			case u, ok := <-links:
				if !ok {
					links = nil
					lost(last.get())
				} else if linkNeedsRepair(u, detaching) {
					notify()
				}
			case u, ok := <-routes:
				if !ok {
					routes = nil
					lost(last.get())
				} else if u.Type == unix.RTM_DELROUTE && u.Protocol == RouteProtocol || u.LinkIndex == deviceIndex() && u.LinkIndex != 0 {
					notify()
				}
			case u, ok := <-neighs:
				if !ok {
					neighs = nil
					lost(last.get())
				} else if u.LinkIndex == deviceIndex() && u.LinkIndex != 0 {
					notify()
				}
			}
		}
	}()
	return nil
}

// linkNeedsRepair decides whether a link notification may be drift of
// Loom's: see Watch.
func linkNeedsRepair(u netlink.LinkUpdate, detaching func(string) bool) bool {
	name := u.Attrs().Name
	if !strings.HasPrefix(name, "loom") {
		return false
	}
	down := u.IfInfomsg.Flags&unix.IFF_UP == 0
	if !IsPodVethName(name) {
		return u.Header.Type == unix.RTM_DELLINK || down
	}
	// Change has IFF_UP set when this message reports the flag flipping;
	// a new link reports every bit (^0), so it must be excluded.
	flipped := u.Header.Type == unix.RTM_NEWLINK && u.Change != ^uint32(0) && u.Change&unix.IFF_UP != 0
	return flipped && down && !detaching(name)
}

// WatchUnderlay calls notify after an address that is not link-local is
// added to or removed from any interface of the current network
// namespace, and after the link named iface is created, changed or
// deleted: the agent re-reads its underlay interface then. Pod veths,
// created all the time, carry only link-local addresses on the host (the
// pods' gateway, the kernel's IPv6 one) and are not iface, so they do not
// count. notify must not block. It stops when ctx ends; a subscription
// the kernel ends is reported through onError and opened again, and
// notify is called then.
func WatchUnderlay(ctx context.Context, iface string, notify func(), onError func(error)) error {
	return keepSubscribed(ctx, func(ctx context.Context, lost func(error)) error {
		return watchUnderlay(ctx, iface, notify, lost)
	}, notify, onError)
}

// watchUnderlay opens WatchUnderlay's subscriptions once; see
// subscribeFunc.
func watchUnderlay(ctx context.Context, iface string, notify func(), lost func(error)) error {
	done := ctx.Done()
	var last lastError
	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: last.set}); err != nil {
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	links := make(chan netlink.LinkUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: last.set}); err != nil {
		return fmt.Errorf("subscribe to link changes: %w", err)
	}
	go func() {
		// Until both are closed: a subscription blocked on a full channel
		// would never see its done.
		for addrs != nil || links != nil {
			select {
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					lost(last.get())
				} else if !u.LinkAddress.IP.IsLinkLocalUnicast() {
					notify()
				}
			case u, ok := <-links:
				if !ok {
					links = nil
					lost(last.get())
				} else if u.Attrs().Name == iface {
					notify()
				}
			}
		}
	}()
	return nil
}

// WatchFirewall calls tampered when another process changes Loom's
// nftables table: deletes it (`nft flush ruleset`, which the nftables
// service runs on every reload, takes every table, and with Loom's its
// masquerade, anti-spoofing, VXLAN guard and network policy), flushes it,
// or deletes or adds chains or rules in it. The agent then writes the
// whole table again at once; nothing else would notice a table that is
// there but emptied. Loom's own changes (committed by one of this
// process's threads) are skipped, and so are set elements, which Loom
// changes on every pod. It stops when ctx ends. A subscription the kernel
// ends is reported through onError and opened again, and missed is called
// then: a change to the table may have gone unseen.
func WatchFirewall(ctx context.Context, tampered, missed func(), onError func(error)) error {
	return keepSubscribed(ctx, func(ctx context.Context, lost func(error)) error {
		return watchFirewall(ctx, tampered, lost)
	}, missed, onError)
}

// watchFirewall opens WatchFirewall's subscription once; see
// subscribeFunc.
func watchFirewall(ctx context.Context, tampered func(), lost func(error)) error {
	// The group carries every nftables change of the namespace, each set
	// element its own message: one batch of a few thousand elements (a
	// large policy, kube-proxy's sets) overflowed the default buffer
	// before the reader took any of it.
	c, err := nftables.New(nftables.WithSockOptions(largeBatchBuffers))
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	// Table events only would do, but nftables v0.3.0 filters messages
	// with (flags&1)<<type: any filter without NEWTABLE (type 0) lets
	// nothing through, and one with it lets everything through.
	mon := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectTables), nftables.WithMonitorEventBuffer(64))
	batches, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		return fmt.Errorf("monitor nftables: %w", err)
	}
	go func() { <-ctx.Done(); mon.Close() }()
	go func() {
		var reason error
		for b := range batches {
			if b.GeneratedBy == nil {
				continue
			}
			if b.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				// The monitor's last batch: its reader has stopped.
				reason = b.GeneratedBy.Error
				continue
			}
			if g, ok := b.GeneratedBy.Data.(*nftables.GenMsg); ok && ownThread(g.ProcPID) {
				continue
			}
			for _, ev := range b.Changes {
				if changesLoomTable(ev) {
					tampered()
					break
				}
			}
		}
		lost(reason)
	}()
	return nil
}

// ownThread reports whether the kernel's process ID of an nftables
// generation is one of this process's threads: the kernel records the
// task that committed it, which for a Go program is any of its threads.
func ownThread(tid uint32) bool {
	if tid == 0 {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
	return err == nil
}

// changesLoomTable reports whether a monitored change is to Loom's table,
// its chains or its rules. A change the library could only partly parse
// (someone else's rule with an expression it does not know) still names
// its table.
func changesLoomTable(ev *nftables.MonitorEvent) bool {
	var t *nftables.Table
	switch d := ev.Data.(type) {
	case *nftables.Table:
		t = d
	case *nftables.Chain:
		t = d.Table
	case *nftables.Rule:
		t = d.Table
	}
	return t != nil && t.Name == FirewallTable && (t.Family == nftables.TableFamilyIPv4 || t.Family == nftables.TableFamilyIPv6)
}
